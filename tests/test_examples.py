"""The examples as a new user runs them, and the embedded server's cleanup
when its process is killed with SIGTERM or SIGHUP."""

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Child:
    """A Python subprocess whose output lines are read by a thread, so the
    test can wait for a line with a deadline."""

    def __init__(self, args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable] + args, cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, pattern, timeout=90):
        """Return the match of the first new line matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError("no line matching %r within %s s; output:\n%s"
                                     % (pattern, timeout, "".join(self.seen)))
            if line is None:
                raise AssertionError("the process ended (status %s) before a line "
                                     "matching %r; output:\n%s"
                                     % (self.proc.wait(), pattern, "".join(self.seen)))
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def next_event(child):
    """The first line of the next "got event:" block the example prints."""
    child.wait_line(r"^got event:$")
    return child.wait_line(r"\S.*").group(0)


def postgres_pids(data_dir):
    """PIDs of the processes whose command line names ``data_dir``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if data_dir in cmdline:
            pids.append(int(entry))
    return pids


def assert_cleaned_up(child, signum, base_dir):
    child.proc.send_signal(signum)
    try:
        status = child.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        raise AssertionError("the process did not end within 60 s of %s"
                             % signal.Signals(signum).name)
    # the signal still ends the process, as without the handler
    assert status == -signum, (status, "".join(child.seen))
    assert postgres_pids(os.path.join(base_dir, "data")) == []
    assert not os.path.exists(base_dir)


def test_connect_example_prints_readme_events_and_cleans_up_on_sigterm():
    child = Child(["examples/connect.py", "--slot", "example_test"])
    try:
        m = child.wait_line(r"^\s+(\S*psql .*)$")
        psql = shlex.split(m.group(1))
        base_dir = os.path.dirname(psql[psql.index("-h") + 1])
        assert postgres_pids(os.path.join(base_dir, "data"))
        # the example creates its slot after printing the command: wait for
        # it, as a user would see the prompt before typing
        deadline = time.monotonic() + 60
        while subprocess.run(
                psql + ["-tAc", "SELECT 1 FROM pg_replication_slots WHERE "
                        "slot_name = 'example_test' AND active"],
                capture_output=True, text=True, timeout=60).stdout.strip() != "1":
            assert time.monotonic() < deadline, "the example never streamed"
            time.sleep(0.1)
        # the README's first steps, typed into psql
        subprocess.run(psql, check=True, capture_output=True, timeout=60,
                       input="CREATE TABLE data(id serial primary key, data text);\n"
                             "INSERT INTO data(data) VALUES('1');\n", text=True)
        # the first event is the INSERT's transaction, not an empty one for
        # the CREATE TABLE (the README shows none)
        assert next_event(child).startswith("BEGIN")
        assert next_event(child) == \
            "table public.data: INSERT: id[integer]:1 data[text]:'1'"
        assert next_event(child).startswith("COMMIT")
        assert_cleaned_up(child, signal.SIGTERM, base_dir)
    finally:
        child.kill()


SERVER_ONLY = textwrap.dedent("""
    import time
    from pylogicaldecoding.testing import Server
    srv = Server()
    print("base_dir", srv.base_dir, flush=True)
    time.sleep(600)
""")


def test_embedded_server_cleans_up_on_sighup():
    child = Child(["-c", SERVER_ONLY])
    try:
        base_dir = child.wait_line(r"^base_dir (.*)$").group(1)
        assert postgres_pids(os.path.join(base_dir, "data"))
        assert_cleaned_up(child, signal.SIGHUP, base_dir)
    finally:
        child.kill()


def test_connect_example_demo():
    proc = subprocess.run([sys.executable, "examples/connect.py", "--demo"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = re.findall(r"got event:\n(\S+)", proc.stdout)
    # no empty BEGIN/COMMIT pair for the CREATE TABLE: the first event is
    # the INSERT's transaction
    assert events[:3] == ["BEGIN", "table", "COMMIT"], proc.stdout
    assert "replayed after the ack: 0 transactions" in proc.stdout
