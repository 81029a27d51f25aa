"""Ctrl-C and signal handlers on a process running Reader.start()."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from readers import slot_row, wait_for, wait_inactive

CHILD = textwrap.dedent("""
    import signal, sys
    import pylogicaldecoding as pld

    class R(pld.Reader):
        def event(self, msg):
            pass

    # nothing wakes the loop for a long time: no status update due, and
    # the server pings only at half its wal_sender_timeout (60 s)
    r = R(sys.argv[1], slot=sys.argv[2], status_interval=3600)
    if sys.argv[3] == "handler":
        signal.signal(signal.SIGTERM, lambda *a: r.stop())
    r.start()
    print("returned normally", flush=True)
""")


def _default_sigint():
    # A shell without job control starts background jobs with SIGINT
    # ignored, and an ignored SIGINT is inherited: Python then installs no
    # KeyboardInterrupt handler and the child never sees Ctrl-C. A user's
    # terminal delivers it; give the child the terminal's disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(dsn, slot, mode):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, dsn, slot, mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)


def wait_streaming(sql, slot, proc):
    wait_for(lambda: proc.poll() is not None
             or (slot_row(sql, slot) or {}).get("active"),
             what="the child to stream")
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.2)     # let it settle into poll()


def test_ctrl_c_is_keyboard_interrupt(dsn, sql, slot_name):
    proc = spawn(dsn, slot_name, "plain")
    try:
        wait_streaming(sql, slot_name, proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0
    # well before anything else would have woken the loop (30 s and more)
    assert elapsed < 20, elapsed
    # the connection was closed: the slot is free at once
    wait_inactive(sql, slot_name, timeout=30)


def test_signal_handler_can_stop(dsn, sql, slot_name):
    proc = spawn(dsn, slot_name, "handler")
    try:
        wait_streaming(sql, slot_name, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "returned normally"
    wait_inactive(sql, slot_name, timeout=30)
