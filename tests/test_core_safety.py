"""The C core under hostile servers and user code: no deadlock, every wait
bounded, no use after free, no crash before __init__, fork-safe.

A deadlock or an endless wait would hang the suite: those scenarios run in
a child interpreter with a timeout, so that they fail instead."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import pylogicaldecoding._core as core

from fakeserver import FakeWalSender, keepalive, xlogdata

HERE = os.path.dirname(os.path.abspath(__file__))


def run_isolated(code, timeout=60):
    """Run ``code`` in a fresh interpreter (tests/ on its path); fail the
    test if it does not exit in time (a deadlock) or exits in error.
    Return its stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [HERE] + [p for p in sys.path if p])
    # the sanitizer run preloads its runtime for this process only
    if os.environ.get("PLD_TEST_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["PLD_TEST_PRELOAD"]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], env=env,
            capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail("still running after %d s (a deadlock or an endless "
                    "wait); output: %r" % (timeout, e.stdout))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# -- 1. the lock and the GIL --

STALLED_END = """
    import signal, threading, time
    import pylogicaldecoding._core as core
    from fakeserver import FakeWalSender, xlogdata

    class R(core.ReaderBase):
        def event(self, msg):
            self.ack()

    # CopyDone and CommandComplete, never ReadyForQuery, socket kept open
    srv = FakeWalSender([xlogdata(0x10, b"a")], end_copy="no-ready",
                        on_copy_done="silent", hold=30)
    r = R()
    r.keepalive_interval = 0.05
    r.recv_timeout = 2
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    errors = []
    polls = [0]

    def touch():
        r.received_lsn, r.flushed_lsn, r.status_count, r.server_wal_end
        try:
            r.ack()
        except core.Error:
            pass
        polls[0] += 1

    def stream():
        try:
            r._stream()
        except core.Error as e:
            errors.append(e)
"""


def test_stalled_stream_end_blocks_no_other_thread():
    """A server that ends the stream and then stalls: another thread
    reading the positions and acking is never blocked, and the stream
    ends (ConnectionLost) within recv_timeout."""
    out = run_isolated(STALLED_END + """
    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 20
    while t.is_alive() and time.monotonic() < deadline:
        touch()
        time.sleep(0.001)
    t.join(1)
    assert not t.is_alive(), "the stream did not end"
    assert errors and isinstance(errors[0], core.ConnectionLost), errors
    assert r.received_lsn == 0x10 and r.closed
    print("polls", polls[0])
    """)
    assert int(out.split()[-1]) > 10


def test_signal_handler_touching_the_reader_during_stalled_end():
    """A signal handler reading the positions while the stream thread
    waits for the server does not deadlock its own thread."""
    out = run_isolated(STALLED_END + """
    signal.signal(signal.SIGALRM, lambda *a: touch())
    signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
    stream()
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    assert errors and isinstance(errors[0], core.ConnectionLost), errors
    print("polls", polls[0])
    """)
    assert int(out.split()[-1]) > 5


# -- 2. every wait bounded --

@pytest.mark.parametrize("answer", ["no-ready", "silent"])
def test_end_copy_returns_within_its_timeout(answer):
    """end_copy(timeout) returns False by its deadline, the connection
    closed, whether the server stalls after CommandComplete or says
    nothing at all."""
    out = run_isolated("""
    import time
    import pylogicaldecoding._core as core
    from fakeserver import streaming_reader
    r, srv = streaming_reader([], hold=30, on_copy_done=%r)
    t0 = time.monotonic()
    ok = r.end_copy(timeout=0.5)
    print(ok, r.closed, time.monotonic() - t0)
    """ % answer)
    ok, closed, elapsed = out.split()
    assert (ok, closed) == ("False", "True")
    assert 0.4 < float(elapsed) < 10


def test_stop_returns_when_the_server_stalls_after_copy_done():
    """stop(): _stream() returns within its end-of-stream timeout (5 s)
    even if the server never sends ReadyForQuery; the connection is
    closed."""
    out = run_isolated("""
    import threading, time
    import pylogicaldecoding._core as core
    from fakeserver import FakeWalSender
    class R(core.ReaderBase):
        def event(self, msg):
            pass
    srv = FakeWalSender([], hold=30, on_copy_done="no-ready")
    r = R()
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    threading.Timer(0.2, r.stop).start()
    t0 = time.monotonic()
    r._stream()
    print(r.closed, time.monotonic() - t0)
    """)
    closed, elapsed = out.split()
    assert closed == "True"
    assert float(elapsed) < 15


def test_execute_timeout():
    """execute(timeout=) gives up on a server that does not answer:
    ConnectionLost, the connection closed."""
    srv = FakeWalSender([], hold=30, answer_queries=False)
    r = core.ReaderBase()
    srv.connect(r)
    t0 = time.monotonic()
    with pytest.raises(core.ConnectionLost, match="no answer"):
        r.execute("IDENTIFY_SYSTEM", timeout=0.3)
    assert time.monotonic() - t0 < 10
    assert r.closed
    with pytest.raises(ValueError):
        core.ReaderBase().execute("x", timeout=-1)
