"""The Connection type of the C core, used directly: connect and commands,
blocking and not, its errors, misuse, fork safety, and the stream on it
following it (`reader.connection`)."""

import gc
import os
import select
import socket
import threading
import time

import pytest

import pylogicaldecoding as pld
import pylogicaldecoding._core as core


def replication_params(dsn):
    params = core.conninfo_parse(dsn)
    params["replication"] = "database"
    return list(params), [str(v) for v in params.values()]


def drive_connect(conn, deadline):
    """connect_poll() until connected, waiting on fileno() with select()
    as an event loop does; every call returns at once."""
    state = 2
    while state:
        assert time.monotonic() < deadline, "still connecting"
        rl, wl = ([conn.fileno()], []) if state == 1 else ([], [conn.fileno()])
        select.select(rl, wl, [], 0.5)
        t0 = time.monotonic()
        state = conn.connect_poll()
        assert time.monotonic() - t0 < 1.0, "connect_poll() blocked"
    return state


def run_nonblocking(conn, command, deadline):
    if conn.send_query(command):
        while conn.flush():
            select.select([], [conn.fileno()], [], 0.5)
    result = None
    while result is None:
        assert time.monotonic() < deadline, "no answer"
        select.select([conn.fileno()], [], [], 0.5)
        result = conn.poll_result()
    return result


@pytest.fixture
def silent_listener():
    """A TCP port that accepts connections and never answers: a server
    that is there but does not speak (a connect hangs on the startup)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def test_nonblocking_connect_and_commands(dsn):
    conn = core.Connection()
    assert conn.status == "closed" and conn.closed and conn.owner_pid is None
    keys, values = replication_params(dsn)
    conn.connect_start(keys, values)
    assert conn.status == "connecting" and conn.closed
    with pytest.raises(pld.InterfaceError, match="being opened"):
        conn.execute("SELECT 1")
    deadline = time.monotonic() + 30
    assert drive_connect(conn, deadline) == 0
    assert conn.status == "ready" and not conn.closed
    assert conn.owner_pid == os.getpid()
    assert conn.server_version >= 100000 and conn.backend_pid > 0

    names, rows = run_nonblocking(conn, "IDENTIFY_SYSTEM", deadline)
    assert names == ("systemid", "timeline", "xlogpos", "dbname")
    assert len(rows) == 1
    # a command runs: the blocking path and a second one are refused
    conn.send_query("SELECT 41 + 1 AS answer")
    assert conn.status == "command"
    with pytest.raises(pld.InterfaceError, match="command is running"):
        conn.execute("SELECT 1")
    with pytest.raises(pld.InterfaceError, match="command is running"):
        conn.send_query("SELECT 1")
    result = None
    while result is None:
        select.select([conn.fileno()], [], [], 0.5)
        result = conn.poll_result()
    assert result == (("answer",), [("42",)]) and conn.status == "ready"

    # server errors come from pylogicaldecoding.errors, with the SQLSTATE
    conn.send_query("SELECT * FROM no_such_table")
    with pytest.raises(pld.ProgrammingError, match="no_such_table") as info:
        while conn.poll_result() is None:
            select.select([conn.fileno()], [], [], 0.5)
    assert info.value.pgcode == "42P01"
    with pytest.raises(pld.DataError) as info:
        conn.execute("SELECT 1/0")
    assert info.value.pgcode == "22012"
    assert conn.execute("SELECT 1", timeout=10)[1] == [("1",)]  # usable
    conn.close()
    assert conn.status == "closed" and conn.closed and conn.owner_pid is None
    conn.close()                                # twice: nothing


def test_blocking_connect_and_execute(dsn):
    conn = core.Connection()
    keys, values = replication_params(dsn)
    conn.connect(keys, values)
    with pytest.raises(pld.ProgrammingError, match="already open"):
        conn.connect(keys, values)
    with pytest.raises(pld.ProgrammingError, match="already open"):
        conn.connect_start(keys, values)
    assert conn.execute("SELECT 2 AS two, NULL AS n") == (
        ("two", "n"), [("2", None)])
    with pytest.raises(ValueError, match="timeout"):
        conn.execute("SELECT 1", timeout=-1)
    # a command that outlasts its timeout: the connection is closed
    with pytest.raises(pld.ConnectionLost, match="no answer"):
        conn.execute("SELECT pg_sleep(5)", timeout=0.2)
    assert conn.closed


def test_connect_to_a_silent_server_never_blocks(silent_listener):
    """The non-blocking connect to a server that does not answer: every
    step returns at once; connect_timeout is the caller's (as AsyncReader
    enforces it), who then closes."""
    conn = core.Connection()
    conn.connect_start(["host", "port", "connect_timeout", "user",
                        "sslmode", "gssencmode"],
                       ["127.0.0.1", str(silent_listener), "1", "x",
                        "disable", "disable"])
    deadline = time.monotonic() + 1.0          # connect_timeout=1
    state, steps = 2, 0
    while state and time.monotonic() < deadline:
        rl, wl = ([conn.fileno()], []) if state == 1 else ([], [conn.fileno()])
        select.select(rl, wl, [], max(0.0, deadline - time.monotonic()))
        t0 = time.monotonic()
        state = conn.connect_poll()
        assert time.monotonic() - t0 < 0.5, "connect_poll() blocked"
        steps += 1
    assert state == 1 and steps >= 1           # waiting for the answer
    assert conn.status == "connecting"
    conn.close()
    assert conn.status == "closed"


def test_blocking_connect_honours_connect_timeout_without_the_gil(
        silent_listener):
    """connect() waits with the GIL released: another thread runs; it
    gives up after connect_timeout with an OperationalError."""
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    t = threading.Thread(target=ticker)
    t.start()
    conn = core.Connection()
    t0 = time.monotonic()
    try:
        with pytest.raises(pld.OperationalError, match="timeout"):
            conn.connect(["host", "port", "connect_timeout", "user",
                          "sslmode", "gssencmode"],
                         ["127.0.0.1", str(silent_listener), "1", "x",
                          "disable", "disable"])
    finally:
        done.set()
        t.join()
    assert time.monotonic() - t0 < 30
    assert len([x for x in ticks if x > t0 + 0.1]) > 10
    assert conn.closed


def test_refused_connection_raises_and_closes():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                  # nobody listens there now
    conn = core.Connection()
    keys = ["host", "port", "user", "sslmode", "gssencmode"]
    values = ["127.0.0.1", str(port), "x", "disable", "disable"]
    with pytest.raises(pld.OperationalError):
        conn.connect(keys, values)
    with pytest.raises(pld.OperationalError):
        conn.connect_start(keys, values)
        drive_connect(conn, time.monotonic() + 30)
    assert conn.status == "closed"


@pytest.mark.parametrize("fresh", [
    core.Connection,
    lambda: core.Connection.__new__(core.Connection),  # tp_new only
])
def test_use_before_connect_or_after_close(fresh, dsn):
    for conn in (fresh(), None):
        if conn is None:                       # after close
            conn = fresh()
            conn.connect(*replication_params(dsn))
            conn.close()
        for call, match in [
                (lambda: conn.execute("SELECT 1"), "closed"),
                (lambda: conn.send_query("SELECT 1"), "closed"),
                (conn.poll_result, "no command"),
                (conn.flush, "closed"),
                (conn.fileno, "closed"),
                (conn.connect_poll, "no connection is being opened"),
                (lambda: conn.server_version, "closed"),
                (lambda: conn.backend_pid, "closed")]:
            with pytest.raises(pld.InterfaceError, match=match):
                call()
        conn.close()
        assert conn.status == "closed" and conn.closed


def test_forked_child_cannot_use_the_parents_connection(dsn):
    """In a child the inherited connection refuses commands and closes
    without a word on the parent's socket: the parent's goes on."""
    conn = core.Connection()
    conn.connect(*replication_params(dsn))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                conn.execute("SELECT 1")
            except pld.InterfaceError as e:
                if "parent" in str(e):
                    code = 2
            if code == 2:
                conn.close()
                del conn
                gc.collect()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert conn.execute("SELECT 1", timeout=10)[1] == [("1",)]
    conn.close()


def test_stop_wakes_a_command_wait_without_breaking_it(dsn):
    """The stream's stop() writes the connection's wake-up pipe: a command
    waiting at that moment wakes, goes on waiting, and gets its answer."""
    r = core.ReaderBase()
    r.connection.connect(*replication_params(dsn))
    out = []
    t = threading.Thread(
        target=lambda: out.append(r.connection.execute(
            "SELECT pg_sleep(0.5), 7 AS seven", timeout=30)))
    t.start()
    time.sleep(0.1)
    r.stop()
    t.join(30)
    assert out and out[0][1] == [("", "7")]
    r.close()


def test_the_stream_follows_its_connection(dsn, sql, slot_name, table):
    """Closing reader.connection ends the reader's stream too (no stale
    COPY state), and a new connection starts its positions afresh."""
    r = core.ReaderBase()
    conn = r.connection
    conn.connect(*replication_params(dsn))
    conn.execute('CREATE_REPLICATION_SLOT "%s" LOGICAL "test_decoding"'
                 " (SNAPSHOT 'nothing')" % slot_name)
    r.start_copy('START_REPLICATION SLOT "%s" LOGICAL 0/0' % slot_name)
    with pytest.raises(pld.ProgrammingError, match="stream"):
        conn.execute("SELECT 1")               # COPY BOTH: refused
    sql("INSERT INTO %s(data) VALUES('x')" % table)
    deadline = time.monotonic() + 30
    while r.received_lsn == 0:
        assert time.monotonic() < deadline
        if r.read_message() is None:
            select.select([r.fileno()], [], [], 0.1)
    conn.close()
    assert r.closed and not r.copying and conn.status == "closed"
    with pytest.raises(pld.InterfaceError, match="closed"):
        r.read_message()
    conn.connect(*replication_params(dsn))
    assert r.received_lsn == 0 and not r.copying
    assert conn.execute("SELECT 1")[1] == [("1",)]
    r.close()


def test_close_refused_while_another_thread_waits_on_the_socket(dsn, sql):
    """Closing under a thread that waits on the socket would pull the
    socket from under its poll(): refused, and possible once it is done."""
    conn = core.Connection()
    conn.connect(*replication_params(dsn))
    pid = conn.backend_pid
    out = []
    t = threading.Thread(target=lambda: out.append(
        conn.execute("SELECT pg_sleep(2), 3 AS three", timeout=60)))
    t.start()
    # the server runs it: the thread has sent it and waits for the answer
    deadline = time.monotonic() + 30
    while not sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND "
                  "query LIKE 'SELECT pg_sleep%%'", pid):
        assert time.monotonic() < deadline and t.is_alive(), out
        time.sleep(0.02)
    time.sleep(0.1)
    with pytest.raises(pld.ProgrammingError, match="waiting"):
        conn.close()
    t.join(60)
    assert out and out[0][1] == [("", "3")]
    conn.close()
    assert conn.closed
