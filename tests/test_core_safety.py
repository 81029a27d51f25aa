"""The C core under hostile servers and user code: no deadlock, every wait
bounded, no use after free, no crash before __init__, fork-safe.

A deadlock or an endless wait would hang the suite: those scenarios run in
a child interpreter with a timeout, so that they fail instead."""

import gc
import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
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


def test_lost_connection_without_socket_is_a_clear_error():
    """Once libpq has dropped a lost connection's socket (PQsocket() is
    -1), fileno() -- what the asyncio front end hands its event loop --
    raises ConnectionLost instead of returning -1 (which an event loop
    refuses, or worse, polls as nothing); a command is refused at once."""
    srv = FakeWalSender([xlogdata(0x10, b"a")], hold=0)
    r = core.ReaderBase()
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    assert srv.closed.wait(30)
    deadline = time.monotonic() + 30
    with pytest.raises(core.ConnectionLost):
        while time.monotonic() < deadline:
            if r.read_message() is None:
                select.select([r.fileno()], [], [], 0.05)
    assert not r.closed     # lost, not closed by us: the PGconn is there
    with pytest.raises(core.ConnectionLost, match="no socket"):
        r.fileno()
    with pytest.raises(core.OperationalError):
        r.execute("IDENTIFY_SYSTEM")
    r.close()
    assert r.closed


PTHREAD_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* fail the pthread_* init named in $PLD_SHIM_FAIL with ENOMEM */
static int
failing(const char *name)
{
    const char *v = getenv("PLD_SHIM_FAIL");
    return v && strcmp(v, name) == 0;
}

int
pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *a)
{
    int (*real)(pthread_mutex_t *, const pthread_mutexattr_t *);
    if (failing("pthread_mutex_init")) { return ENOMEM; }
    real = dlsym(RTLD_NEXT, "pthread_mutex_init");
    return real(m, a);
}

int
pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a)
{
    int (*real)(pthread_cond_t *, const pthread_condattr_t *);
    if (failing("pthread_cond_init")) { return ENOMEM; }
    real = dlsym(RTLD_NEXT, "pthread_cond_init");
    return real(c, a);
}
"""


def test_failed_pthread_init_is_an_error(tmp_path):
    """The lock and the keepalive thread's condition that cannot be made
    (pthread_mutex_init/pthread_cond_init failing: ENOMEM, forced by a
    preloaded shim) make ReaderBase() raise OSError, instead of a Reader
    whose lock or condition is garbage."""
    from sanitized import relaxed
    if relaxed("pthread init failures: the sanitizer runtime, preloaded "
               "first, intercepts pthread_* before the shim"):
        return
    import shutil
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "this test compiles a small shim: install a C compiler"
    src = tmp_path / "shim.c"
    src.write_text(PTHREAD_SHIM)
    shim = tmp_path / "shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(shim), str(src),
                    "-ldl"], check=True, capture_output=True, timeout=120)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in sys.path if p])
    env["LD_PRELOAD"] = str(shim)
    code = textwrap.dedent("""
        import errno, os
        import pylogicaldecoding._core as core
        for name in ("pthread_mutex_init", "pthread_cond_init"):
            os.environ["PLD_SHIM_FAIL"] = name
            try:
                core.ReaderBase()
            except OSError as e:
                print(name, errno.errorcode.get(e.errno, e.errno))
            else:
                print(name, "no error")
            finally:
                del os.environ["PLD_SHIM_FAIL"]
        core.ReaderBase()       # and all is well again
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n")[:3] == [
        "pthread_mutex_init ENOMEM", "pthread_cond_init ENOMEM", "ok"], \
        proc.stdout + proc.stderr


def _when_the_query_waits(srv, action):
    """In a thread: once the fake server has read a query (the command
    then waits for an answer that never comes), call ``action()``."""
    def run():
        deadline = time.monotonic() + 30
        while not srv.queries and time.monotonic() < deadline:
            time.sleep(0.01)
        action()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("how", ["stop", "close"])
@pytest.mark.parametrize("where", ["thread", "signal"])
def test_stop_or_close_ends_a_command_without_answer(how, where):
    """A command the server never answers (execute() without a timeout)
    ends at once when stop() or close() is called from another thread or
    from a signal handler: CommandInterrupted, the connection closed (the
    fake server would drop the connection after 10 s on its own)."""
    import signal
    srv = FakeWalSender([], hold=30, answer_queries=False)
    r = core.ReaderBase()
    srv.connect(r)
    action = getattr(r, how)
    if where == "thread":
        t = _when_the_query_waits(srv, action)
        old = None
    else:
        old = signal.signal(signal.SIGUSR1, lambda *a: action())
        t = _when_the_query_waits(
            srv, lambda: os.kill(os.getpid(), signal.SIGUSR1))
    t0 = time.monotonic()
    try:
        with pytest.raises(core.CommandInterrupted, match="interrupted by"):
            r.execute("IDENTIFY_SYSTEM")
    finally:
        if old is not None:
            signal.signal(signal.SIGUSR1, old)
    elapsed = time.monotonic() - t0
    t.join(30)
    assert r.closed
    assert elapsed < 8, elapsed
    # stop() before a command does not interrupt the next one
    srv = FakeWalSender([], hold=30, answer_queries=False)
    r = core.ReaderBase()
    srv.connect(r)
    r.stop()
    with pytest.raises(core.ConnectionLost, match="no answer"):
        r.execute("IDENTIFY_SYSTEM", timeout=0.3)


def test_connection_close_from_a_signal_handler_during_a_command():
    """reader.connection.close() (the connection alone) refuses while a
    command waits, from a signal handler of the waiting thread too (its
    wait is over, the command is not: the PGconn must stay): the error
    ends the command at once and the command closes the connection."""
    import signal
    srv = FakeWalSender([], hold=30, answer_queries=False)
    r = core.ReaderBase()
    srv.connect(r)
    old = signal.signal(signal.SIGUSR1, lambda *a: r.connection.close())
    t = _when_the_query_waits(srv, lambda: os.kill(os.getpid(),
                                                   signal.SIGUSR1))
    t0 = time.monotonic()
    try:
        with pytest.raises(core.ProgrammingError, match="waiting"):
            r.execute("IDENTIFY_SYSTEM")
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert time.monotonic() - t0 < 8
    t.join(30)
    assert r.closed


def test_reader_stop_during_a_hanging_set_up_command():
    """Reader.start() against a server that never answers its set-up
    commands: stop() from another thread makes start() return (and stop()
    report that the stream ended); close() from another thread makes it
    raise CommandInterrupted. Both close the connection."""
    import pylogicaldecoding as pld

    def reader(srv):
        params = dict(srv.conninfo)
        del params["replication"]
        return pld.Reader(slot="fake", **params)

    srv = FakeWalSender([], hold=30, answer_queries=False)
    r = reader(srv)
    stopped = []
    t = _when_the_query_waits(srv, lambda: stopped.append(r.stop(20)))
    t0 = time.monotonic()
    r.start()
    assert time.monotonic() - t0 < 8
    t.join(30)
    assert stopped == [True]
    assert r.closed

    srv = FakeWalSender([], hold=30, answer_queries=False)
    r = reader(srv)
    t = _when_the_query_waits(srv, r.close)
    with pytest.raises(pld.CommandInterrupted):
        r.start()
    t.join(30)
    assert r.closed


# -- 3. and 4. use after free in the decoders --
#
# Run in a child with CPython's debug allocator (freed memory is
# overwritten): a use after free crashes there rather than reading stale
# but intact memory. The sanitizer run keeps its own allocator.

def run_poisoned(code):
    env_malloc = os.environ.get("PYTHONMALLOC")
    prefix = ""
    if not env_malloc:
        prefix = "import os\nassert os.environ['PYTHONMALLOC'] == 'debug'\n"
        os.environ["PYTHONMALLOC"] = "debug"
    try:
        return run_isolated(prefix + textwrap.dedent(code))
    finally:
        if not env_malloc:
            del os.environ["PYTHONMALLOC"]


PGO_HELPERS = """
    import gc, struct
    import pylogicaldecoding._core as core
    from fakeserver import read_all, streaming_reader, xlogdata

    def relation(relid=1):
        cols = [(1, b"a", 23), (0, b"b", 25)]
        out = (b"R" + struct.pack("!I", relid) + b"public\\0t\\0d"
               + struct.pack("!H", len(cols)))
        for key, name, oid in cols:
            out += struct.pack("!B", key) + name + b"\\0" + struct.pack(
                "!Ii", oid, -1)
        return out

    def insert(relid=1):
        return (b"I" + struct.pack("!I", relid) + b"N" + struct.pack("!H", 2)
                + b"t" + struct.pack("!I", 1) + b"7"
                + b"t" + struct.pack("!I", 2) + b"xy")
"""


@pytest.mark.parametrize("kind", ["pgoutput", "test_decoding"])
def test_resolver_replacing_the_readers_decoder(kind):
    """The type resolver drops reader.decoder (the last reference to the
    decoder running it): the decoder lives until its call returns."""
    out = run_poisoned(PGO_HELPERS + """
    kind = %r
    if kind == "pgoutput":
        frames = [xlogdata(0x10, relation())]
    else:
        frames = [xlogdata(0x10, b"table public.t: INSERT: a[integer]:1")]
    r, srv = streaming_reader(frames, hold=5)
    r.binary = kind == "pgoutput"

    def resolve(*args):
        r.decoder = None
        gc.collect()
        return lambda v: ("conv", v)

    if kind == "pgoutput":
        r.decoder = core.PgoutputDecoder(resolve)
    else:
        r.decoder = core.TestDecodingDecoder(resolve, lambda m, d: None)
    msgs = read_all(r, timeout=0.5)
    r.close()
    print(type(msgs[0].change).__name__)
    """ % kind)
    assert out.split()[-1] == ("Relation" if kind == "pgoutput" else "Insert")


def test_relations_is_a_copy():
    """dec.relations is a copy: clearing it leaves the cache whole, and a
    row message still finds its relation."""
    out = run_poisoned(PGO_HELPERS + """
    dec = core.PgoutputDecoder(lambda oid, name, binary: (lambda v: v))
    dec(core.Message(relation(), 1))
    dec(core.Message(insert(), 2))      # the cache's 'last' entry is set
    dec.relations.clear()
    gc.collect()
    ch = dec(core.Message(insert(), 3))
    print(ch.new)
    assert dec.relations == {1: ("public", "t", ("a", "b"))}, dec.relations
    """)
    assert out.strip() == "{'a': '7', 'b': 'xy'}"


def test_reset_from_a_converter_during_a_row():
    """A converter resetting the decoder in the middle of a row: the row's
    relation lives until the row is decoded; the next row needs a new
    Relation message."""
    out = run_poisoned(PGO_HELPERS + """
    def conv(v):
        dec.reset()
        gc.collect()
        return v
    dec = core.PgoutputDecoder(lambda oid, name, binary: conv)
    dec(core.Message(relation(), 1))
    print(dec(core.Message(insert(), 2)).new)
    try:
        dec(core.Message(insert(), 3))
    except core.DecodingError as e:
        print("no relation" if "no Relation" in str(e) else e)
    """)
    assert out.split("\n")[:2] == ["{'a': '7', 'b': 'xy'}", "no relation"]


def test_test_decoding_decoder_replaced_by_its_converter():
    """A test_decoding converter re-initialising its decoder (whose type
    cache it came from) mid-row: no use of the freed cache."""
    out = run_poisoned(PGO_HELPERS + """
    def conv(v):
        dec.__init__(lambda name: str, lambda m, d: None)
        gc.collect()
        return int(v)
    dec = core.TestDecodingDecoder(lambda name: conv, lambda m, d: None)
    line = "table public.t: INSERT: a[integer]:1 b[integer]:2 c[integer]:3"
    print(dec(core.Message(line, 1)).new)
    """)
    assert out.strip() == "{'a': 1, 'b': '2', 'c': '3'}"


def test_test_decoding_decoders_with_full_caches_stay_apart():
    """Two test_decoding decoders whose type caches are full (4096 types)
    convert with one-off converters: one decoder's converter must never
    serve the other's value. Here freeing A's previous one-off converter
    runs B (its __del__ decodes a line): B's converter must not end up
    converting A's value (it did when a static scratch entry was shared by
    every decoder)."""
    out = run_poisoned(PGO_HELPERS + """
    fill = "table public.t: INSERT: " + " ".join(
        "c%d[fill%d]:1" % (i, i) for i in range(4096))

    class Dying:
        def __init__(self, tag):
            self.tag = tag
        def __call__(self, v):
            return self.tag + v
        def __del__(self):
            print("B:", b(core.Message(
                "table public.t: INSERT: y[typb]:1", 9)).new["y"])

    def resolve_a(name):
        if name == "x1":
            return Dying("A1:")
        if name == "x2":
            return lambda v: "A2:" + v
        return str

    def resolve_b(name):
        return (lambda v: "B:" + v) if name == "typb" else str

    a = core.TestDecodingDecoder(resolve_a, lambda m, d: None)
    b = core.TestDecodingDecoder(resolve_b, lambda m, d: None)
    a(core.Message(fill, 1))
    b(core.Message(fill, 2))
    print("A:", a(core.Message("table public.t: INSERT: v[x1]:1", 3)).new["v"])
    gc.collect()
    print("A:", a(core.Message("table public.t: INSERT: v[x2]:2", 4)).new["v"])
    """)
    lines = out.split("\n")
    assert "A: A1:1" in lines and "A: A2:2" in lines, out
    assert "B: B:1" in lines, out


# -- 5. before __init__ --

def test_c_types_before_init():
    """Every C type is safe between __new__ and __init__: a clear error
    or a sane default, never a crash."""
    out = run_poisoned(PGO_HELPERS + """
    class TD(core.TestDecodingDecoder):
        def __init__(self):
            pass            # no super().__init__()

    td = TD()
    for payload in ["table public.t: INSERT: a[integer]:1", "BEGIN 5"]:
        try:
            td(core.Message(payload, 1))
        except core.InterfaceError as e:
            assert "__init__" in str(e), e
        else:
            raise AssertionError("no error")
    assert td.xid is None and td.resolve is None and td.other is None
    try:
        del td.xid
    except AttributeError:
        pass
    else:
        raise AssertionError("xid deleted")

    pgo = core.PgoutputDecoder.__new__(core.PgoutputDecoder)
    pgo.reset()
    assert pgo.relations == {} and pgo.types == {} and pgo.xid is None
    for payload in [relation(), insert(), b"B" + b"\\0" * 20]:
        try:
            pgo(core.Message(payload, 1))
        except core.InterfaceError as e:
            assert "__init__" in str(e), e
        else:
            raise AssertionError("no error")

    class R(core.ReaderBase):
        def __init__(self):
            pass
    r = R()
    assert r.closed and r.flushed_lsn == 0 and r.status_count == 0
    for call in [r.close, r.stop, r.read_message, r.fileno, r.ack,
                 lambda: r.execute("x"), lambda: r.start_copy("x"),
                 r.end_copy, r.send_feedback, r._stream]:
        try:
            call()
        except core.Error:
            pass

    # every other C type, made by __new__ alone, then every attribute read
    for name in dir(core):
        t = getattr(core, name)
        if not isinstance(t, type) or issubclass(t, BaseException):
            continue
        try:
            obj = t.__new__(t)
        except TypeError:
            continue
        for attr in dir(obj):
            if not attr.startswith("__"):
                try:
                    value = getattr(obj, attr)
                    if callable(value) and not isinstance(value, type):
                        value()     # methods without their arguments
                except (core.Error, TypeError, ValueError):
                    pass
        repr(obj)
        del obj
        gc.collect()
    print("ok")
    """)
    assert out.strip() == "ok"


# -- 6. fork --

@pytest.mark.parametrize("how", ["close", "dealloc"])
def test_forked_child_leaves_the_parents_stream_alone(dsn, sql, slot_name,
                                                      table, how):
    """A child closing (or dropping) the reader it inherited says nothing
    on the parent's socket: the parent's stream goes on."""
    params = core.conninfo_parse(dsn)
    params["replication"] = "database"
    r = core.ReaderBase()
    r.connection.connect(list(params), list(params.values()))
    r.execute('CREATE_REPLICATION_SLOT "%s" LOGICAL "test_decoding"'
              " (SNAPSHOT 'nothing')" % slot_name)
    r.start_copy('START_REPLICATION SLOT "%s" LOGICAL 0/0' % slot_name)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if how == "close":
                r.close()
            else:
                del r
                gc.collect()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    sql("INSERT INTO %s(data) VALUES('x')" % table)
    payloads = []
    deadline = time.monotonic() + 30
    while not payloads or not payloads[-1].startswith("COMMIT"):
        assert time.monotonic() < deadline, payloads
        msg = r.read_message()
        if msg is None:
            select.select([r.fileno()], [], [], 0.1)
        else:
            payloads.append(msg.payload)
    assert [p.split()[0] for p in payloads] == ["BEGIN", "table", "COMMIT"]
    r.ack()
    assert r.end_copy() is True
    r.close()


# -- 7. a status update the socket does not take at once --

def test_partly_written_status_update_is_finished():
    """With the server not reading, status updates stay queued: they do
    not count as sent, and once the server reads again the loop writes
    the rest by itself (waiting for writability), the last ack included,
    though the server sends nothing."""
    gate = threading.Event()
    srv = FakeWalSender([xlogdata(0x10, b"a")], hold=30, read_gate=gate,
                        rcvbuf=4096)

    class R(core.ReaderBase):
        def event(self, msg):
            self.ack()

    r = R()
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    r.status_interval = 3600
    r.keepalive_interval = 0
    r.confirm_keepalives = False
    s = socket.socket(fileno=os.dup(r.fileno()))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s.close()
    calls, last, same = 0, -1, 0
    while calls < 50000 and same < 200:
        r.send_feedback()
        calls += 1
        n = r.status_count
        same = same + 1 if n == last else 0
        last = n
    errors = []

    def stream():
        try:
            r._stream()
        except Exception as e:      # reported below
            errors.append(e)

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 10
    while r.received_lsn != 0x10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.received_lsn == 0x10, errors
    gate.set()
    with srv.got:
        srv.got.wait_for(
            lambda: any(u[1] == 0x10 for u in srv.status_updates()), 15)
        acked = any(u[1] == 0x10 for u in srv.status_updates())
    r.stop()
    t.join(15)
    assert not t.is_alive() and not errors, errors
    assert acked, "the ack never reached the server"
    # only what was written counts as sent
    assert r.status_count < calls
    r.close()
