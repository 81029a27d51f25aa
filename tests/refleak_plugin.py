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

What is cleared or forgotten before each count (each is pytest's or the
standard library's, never ours): the type attribute cache and re's pattern
cache, the finalizers pytest keeps for function fixtures already torn down,
and the log sections pytest adds to a test's report. Anything else that
grows every run fails the test.

To find what grows: ``PLD_REFLEAK_VERBOSE=1`` prints every module's (or
test's) deltas; ``PLD_REFLEAK_TYPES=1`` also the objects tracked by the
garbage collector that each run added, by type (containers by length).
"""

import functools
import gc
import os
import re
import sys

import pytest
from _pytest.runner import CallInfo, runtestprotocol


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
    # as CPython's dash_R: forget what caches hold, then count. re's cache
    # keeps up to 512 patterns, and tests compile patterns that name their
    # own fresh slot (pytest.raises(match=...)): each run adds one.
    re.purge()
    sys._clear_type_cache()
    gc.collect()
    return sys.gettotalrefcount(), sys.getallocatedblocks()


def _forget_finished_fixtures(items):
    """Drop what pytest keeps of the function fixtures already torn down.

    A function-scoped fixture that uses a module- or session-scoped one
    (``dsn`` uses ``pg_server``) leaves ``partial(its_def.finish,
    request=...)`` on the latter's finalizer list until that one ends: in an
    ordinary run a few objects per test, once; here they would grow with
    every repetition (4 requests, partials and methods per run of a test
    using ``dsn``, ``sql``, ``slot_name``, ``table``), ~215 references a
    run of test_core.py. Calling such a finalizer is a no-op (``finish``
    returns at once when ``cached_result`` is None), so only those are
    dropped: nothing that would have run is skipped.
    """
    seen = set()
    for fixturedef in (d for item in items
                       for defs in item._fixtureinfo.name2fixturedefs.values()
                       for d in defs):
        if id(fixturedef) in seen:
            continue
        seen.add(id(fixturedef))
        if fixturedef.scope == "function" or not fixturedef._finalizers:
            continue
        fixturedef._finalizers[:] = [
            fin for fin in fixturedef._finalizers
            if not _finished_fixture_finalizer(fin)]


def _finished_fixture_finalizer(fin):
    if not isinstance(fin, functools.partial):
        return False
    owner = getattr(fin.func, "__self__", None)
    return (getattr(fin.func, "__name__", None) == "finish"
            and owner is not None and getattr(owner, "scope", None) == "function"
            and owner.cached_result is None)


def _census():
    counts = {}
    for o in gc.get_objects():
        t = type(o).__name__
        if isinstance(o, (list, dict, tuple, set)):
            t += "[%d]" % min(len(o), 9)
        counts[t] = counts.get(t, 0) + 1
    return counts


def _grown(a, b):
    d = [(b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)]
    return sorted((x for x in d if x[0]), reverse=True)[:12]


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

    def _measure(self, group, kept):
        """Run ``group`` WARMUP+RUNS times; return the growth of references
        and of memory blocks in each measured run, and whether a test
        failed (the runs stop at the first failing one). ``kept`` gets each
        test's reports of its last run."""
        total = self.warmup + self.runs
        # as CPython's dash_R: the lists are made at full size and the
        # deltas pooled, so that keeping a count adds no reference itself
        refs, blocks = [0] * self.runs, [0] * self.runs
        pool = {value: value for value in range(-1000, 1000)}
        # Every run, the last one included, ends with the group's module and
        # session fixtures still set up, so that each measured run does the
        # same work: tearing the module down inside the last run would free
        # what the module holds and hide a leak as large (it did: a whole
        # module run alone always "shrank" in its last run). The module is
        # torn down after the count, as pytest would have at the last test.
        wrap = group[0].parent
        failed = False
        d = None            # bound before the first count, not in the loop
        before = _snapshot()
        for i in range(total):
            for j, item in enumerate(group):
                item._initrequest()   # fresh fixtures, as pytest-rerunfailures does
                # what pytest's capture and logging plugins added to the
                # item's report (captured log lines: a WARNING per failed
                # stream in test_errors.py) would grow each run
                item._report_sections = []
                nextitem = group[j + 1] if j + 1 < len(group) else wrap
                reports = runtestprotocol(item, nextitem=nextitem, log=False)
                # replaced every run, so that each run frees what the one
                # before kept (keeping the first run's would free them in
                # the last run only)
                kept[item] = reports
                failed = failed or any(r.failed for r in reports)
            _forget_finished_fixtures(group)
            now = _snapshot()
            if i >= self.warmup:
                d = now[0] - before[0]
                refs[i - self.warmup] = pool.setdefault(d, d)
                d = now[1] - before[1]
                blocks[i - self.warmup] = pool.setdefault(d, d)
                d = None
            before = now
            if os.environ.get("PLD_REFLEAK_TYPES"):
                types = _census()
                if i:
                    sys.stderr.write("\nrun %d grew: %s\n" % (i, _grown(prev_types, types)))
                prev_types = types
                types = None
            if failed:
                break
        if os.environ.get("PLD_REFLEAK_VERBOSE"):
            sys.stderr.write("\nrefleak %s: references %s, blocks %s\n"
                             % (group[0].nodeid if len(group) == 1
                                else group[0].path.name, refs, blocks))
        return refs, blocks, failed

    def _judge(self, refs, blocks):
        leaked = []
        if _leaks(refs):
            leaked.append("references: %s" % refs)
        if _leaks(blocks):
            leaked.append("memory blocks: %s" % blocks)
        return "; ".join(leaked)

    def _run_group(self, group, after):
        kept = {}           # item -> the reports to show
        refs, blocks, failed = self._measure(group, kept)
        leaked = {}         # item -> what it leaked
        whole = self._judge(refs, blocks)
        if whole and not failed and len(group) > 1:
            # a module grew: find the tests that grow alone (the module's
            # fixtures still set up), to name them
            for item in group:
                r, b, failed = self._measure([item], kept)
                if failed:
                    break
                alone = self._judge(r, b)
                if alone:
                    leaked[item] = "this test leaked over %d runs (after %d " \
                        "warm-up runs, in a run of %s that leaked %s): %s" % (
                            self.runs, self.warmup, item.path.name, whole, alone)
        if whole and not leaked:
            leaked[group[-1]] = "%s leaked over %d runs (after %d warm-up " \
                "runs): %s%s" % (
                    "this test" if len(group) == 1 else
                    "the %d tests of %s" % (len(group), group[-1].path.name),
                    self.runs, self.warmup, whole,
                    "" if len(group) == 1 else
                    " (no test of it leaked alone: rerun it with --refleak-each"
                    " and PLD_REFLEAK_VERBOSE=1)")
        # the teardown pytest would have done after the group's last test
        last = group[-1]
        # (only the fixtures: the teardown hooks of the plugins already ran)
        call = CallInfo.from_call(
            lambda: last.session._setupstate.teardown_exact(after), "teardown")
        down = last.ihook.pytest_runtest_makereport(item=last, call=call)
        if down.failed:
            kept[last] = [r for r in kept.get(last, []) if r.when != "teardown"] \
                + [down]
        for item in group:
            item.ihook.pytest_runtest_logstart(nodeid=item.nodeid,
                                               location=item.location)
            for report in kept.get(item, []):
                if item in leaked and report.when == "call" and report.passed:
                    report.outcome = "failed"
                    report.longrepr = leaked[item]
                item.ihook.pytest_runtest_logreport(report=report)
            item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid,
                                                location=item.location)
