"""The package ships py.typed and a stub of the C core: mypy checks the
package and a sample of user code against them.

These tests assert mypy's exact messages: mypy is pinned in pyproject's
``test`` extra, so a new mypy release cannot turn them red by itself.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def mypy(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental",
         "--cache-dir", os.devnull, "--ignore-missing-imports", *args],
        cwd=ROOT, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def test_stub_and_package_type_check():
    assert os.path.exists(os.path.join(ROOT, "pylogicaldecoding", "py.typed"))
    code, out = mypy("pylogicaldecoding")
    assert code == 0, out


def test_user_code_type_checks():
    code, out = mypy(os.path.join(HERE, "typing", "sample.py"))
    assert code == 0, out


def test_misuse_is_caught():
    bad = os.path.join(HERE, "typing", "bad_sample.py")
    with open(bad, "w") as f:
        f.write("import pylogicaldecoding as pld\n"
                "r = pld.Reader(slot='s')\n"
                "r.ack(1.5)\n"
                "x: str = pld.parse_lsn('0/1')\n"
                "r.connection.send_query('SELECT 1', True)\n")
    try:
        code, out = mypy(bad)
    finally:
        os.unlink(bad)
    assert code == 1
    assert 'bad_sample.py:3: error: Argument 1 to "ack"' in out
    assert "bad_sample.py:4: error: Incompatible types in assignment" in out
    # send_query() has no copy flag: START_REPLICATION is the reader's
    assert 'bad_sample.py:5: error: Too many arguments for "send_query"' in out
