"""Reference-leak hunting on a debug build of CPython, as ``python -m test
-R 3:3`` does it: each test module (as CPython does) or each test
(``--refleak-each``) runs WARMUP + RUNS times in a row; after the warm-up
runs (caches filled, session and module fixtures made), the growth of
``sys.gettotalrefcount()`` and ``sys.getallocatedblocks()`` over each of the
RUNS runs is recorded, and the module (its last test) or the test fails when
every one of them grew (CPython's rule, which ignores one-off growth such as
a cache filled late).

    python -m pytest -p refleak_plugin --refleak 3:3 tests/test_core.py
    python -m pytest -p refleak_plugin --refleak 3:3 --refleak-each \
        tests/test_core.py -k keepalive      # which test of a module leaks

Used by scripts/run-refleak.sh, which builds the C core for python3.X-dbg.
Not a test module (its name does not start with ``test_``).
"""

import gc
import sys

import pytest
from _pytest.runner import runtestprotocol


def pytest_addoption(parser):
    parser.addoption("--refleak", metavar="WARMUP:RUNS", default=None,
                     help="run each test module WARMUP+RUNS times and fail it "
                          "when references or memory blocks grew in each of "
                          "the last RUNS runs (needs a debug build of Python)")
    parser.addoption("--refleak-each", action="store_true",
                     help="with --refleak: repeat and judge each test alone")


def pytest_configure(config):
    spec = config.getoption("refleak")
    if not spec:
        return
    if not hasattr(sys, "gettotalrefcount"):
        raise pytest.UsageError("--refleak needs a debug build of Python "
                                "(sys.gettotalrefcount), e.g. python3.11-dbg")
    warmup, runs = (int(x) for x in spec.split(":"))
    config.pluginmanager.register(
        _Hunter(warmup, runs, config.getoption("refleak_each")), "refleak-hunter")


def _snapshot():
    # as CPython's dash_R: forget what caches hold, then count
    sys._clear_type_cache()
    gc.collect()
    return sys.gettotalrefcount(), sys.getallocatedblocks()


def _leaks(deltas):
    return len(deltas) > 0 and all(d >= 1 for d in deltas)


class _Hunter:
    def __init__(self, warmup, runs, each):
        self.warmup = warmup
        self.runs = runs
        self.each = each

    def _groups(self, items):
        if self.each:
            return [[item] for item in items]
        groups = []
        for item in items:
            if groups and groups[-1][0].path == item.path:
                groups[-1].append(item)
            else:
                groups.append([item])
        return groups

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise session.Interrupted("%d error(s) during collection"
                                      % session.testsfailed)
        if session.config.option.collectonly:
            return True
        groups = self._groups(session.items)
        for g, group in enumerate(groups):
            after = groups[g + 1][0] if g + 1 < len(groups) else None
            self._run_group(group, after)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        return True

    def _run_group(self, group, after):
        total = self.warmup + self.runs
        kept = {}           # item -> the reports to show
        refs, blocks = [], []
        # between two runs, what the group's first test needs stays set up
        # (module and session fixtures); the tests' own are made anew
        wrap = group[0].parent
        before = _snapshot()
        for i in range(total):
            last = i == total - 1
            failed = False
            for j, item in enumerate(group):
                if i:
                    item._initrequest()   # fresh fixtures, as pytest-rerunfailures does
                if j + 1 < len(group):
                    nextitem = group[j + 1]
                else:
                    nextitem = after if last else wrap
                reports = runtestprotocol(item, nextitem=nextitem, log=False)
                if any(r.failed for r in reports):
                    failed = True
                    kept[item] = reports
                elif last or item not in kept:
                    kept[item] = reports
            now = _snapshot()
            if i >= self.warmup:
                refs.append(now[0] - before[0])
                blocks.append(now[1] - before[1])
            before = now
            if failed:
                if not last:
                    group[-1].session._setupstate.teardown_exact(after)
                break
        leaked = []
        if _leaks(refs):
            leaked.append("references: %s" % refs)
        if _leaks(blocks):
            leaked.append("memory blocks: %s" % blocks)
        for item in group:
            item.ihook.pytest_runtest_logstart(nodeid=item.nodeid,
                                               location=item.location)
            for report in kept.get(item, []):
                if leaked and item is group[-1] and report.when == "call" \
                        and report.passed:
                    report.outcome = "failed"
                    report.longrepr = (
                        "%s leaked over %d runs (after %d warm-up runs): %s"
                        % ("this test" if len(group) == 1 else
                           "the %d tests of %s" % (len(group), item.path.name),
                           self.runs, self.warmup, "; ".join(leaked)))
                item.ihook.pytest_runtest_logreport(report=report)
            item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid,
                                                location=item.location)
