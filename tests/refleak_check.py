"""The refleak plugin's own check (scripts/run-refleak.sh runs it first).

Not collected by the ordinary suite (its name does not start with
``test_``): it needs a debug build of Python. Run on its own with
``--refleak 3:3 --refleak-each``, exactly the tests named ``test_leak_*``
must fail, each named, and the others pass: a plugin that cannot see one
missing Py_DECREF a run, or that flags a test that leaks nothing, fails the
refleak run before it judges the real tests.
"""

import ctypes

_kept = []
_target = object()


def test_clean():
    data = [object() for _ in range(100)]
    assert len(data) == 100


def test_clean_fixture(tmp_path):
    (tmp_path / "x").write_text("x")


def test_leak_missing_decref():
    # what a C function that forgets one Py_DECREF does: the reference
    # count of a live object grows, nothing is allocated
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(_target))


def test_leak_kept_object():
    # what a cache that grows without bound does
    _kept.append(object())
