"""A fake walsender on loopback: it speaks just enough of the protocol to
feed the C core chosen bytes, malformed ones included, and to record what
the client sends back."""

import socket
import struct
import threading
import time

import pylogicaldecoding._core as core


def copy_data(payload):
    return b"d" + struct.pack("!i", len(payload) + 4) + payload


def xlogdata(data_start, payload, wal_end=None, send_time=0):
    if wal_end is None:
        wal_end = data_start
    return b"w" + struct.pack("!QQq", data_start, wal_end, send_time) + payload


def keepalive(wal_end, reply=False, send_time=0):
    return b"k" + struct.pack("!Qq?", wal_end, send_time, reply)


def _message(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


END = _message(b"c", b"") + _message(b"C", b"COPY 0\0")
READY = _message(b"Z", b"I")


class FakeWalSender:
    """Serve one connection: startup, then answer START_REPLICATION with
    CopyBothResponse followed by ``frames`` (CopyData payloads), then wait
    ``hold`` seconds reading what the client sends.

    ``answer_queries``: False leaves every query unanswered.
    ``read_gate``: an Event; after the stream starts, nothing the client
    sends is read until it is set (with ``rcvbuf``, a small receive
    buffer, the client's writes soon block).
    ``end_copy``: after the frames, end the stream (True: CopyDone,
    CommandComplete, ReadyForQuery; "no-ready": without ReadyForQuery, the
    socket left open, as a stalled peer would). ``on_copy_done``: how the
    client's CopyDone is answered ("reply": in full; "no-ready": without
    ReadyForQuery; "silent": not at all)."""

    def __init__(self, frames, hold=2.0, end_copy=False, on_copy_done="reply",
                 answer_queries=True, read_gate=None, rcvbuf=None):
        self.frames = list(frames)
        self.read_gate = read_gate
        self.answer_queries = answer_queries
        self.hold = hold
        self.end_copy = end_copy
        self.on_copy_done = on_copy_done
        self.received = []          # CopyData payloads from the client
        self.got = threading.Condition()    # notified on each CopyData
        self.queries = []
        self.closed = threading.Event()
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def conninfo(self):
        return {"host": "127.0.0.1", "port": str(self.port),
                "sslmode": "disable", "gssencmode": "disable",
                "user": "fake", "dbname": "fake",
                "replication": "database", "connect_timeout": "5"}

    def connect(self, reader):
        keys = list(self.conninfo)
        reader.connection.connect(keys, [self.conninfo[k] for k in keys])

    def status_updates(self):
        """The standby status updates received, as tuples
        (written, flushed, applied, clock, reply)."""
        return [struct.unpack("!QQQq?", m[1:]) for m in self.received
                if m[:1] == b"r" and len(m) == 34]

    def wait_status_updates(self, n, timeout=10.0):
        """Wait until ``n`` status updates have arrived; return them."""
        deadline = time.monotonic() + timeout
        with self.got:
            while len(self.status_updates()) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.got.wait(left)
            return self.status_updates()

    def _read(self, conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _serve(self):
        conn, _ = self.sock.accept()
        try:
            (length,) = struct.unpack("!i", self._read(conn, 4))
            self._read(conn, length - 4)        # startup packet
            conn.sendall(
                _message(b"R", struct.pack("!i", 0))
                + _message(b"S", b"server_version\x0015.0\x00")
                + _message(b"S", b"client_encoding\x00UTF8\x00")
                + _message(b"S", b"integer_datetimes\x00on\x00")
                + _message(b"K", struct.pack("!ii", 4242, 1))
                + _message(b"Z", b"I"))
            conn.settimeout(10)
            deadline = None
            while True:
                kind = self._read(conn, 1)
                (length,) = struct.unpack("!i", self._read(conn, 4))
                body = self._read(conn, length - 4)
                if kind == b"Q":
                    self.queries.append(body.rstrip(b"\0").decode())
                    if not self.answer_queries:
                        deadline = time.monotonic() + self.hold
                        continue
                    conn.sendall(_message(b"W", struct.pack("!bh", 0, 0)))
                    conn.sendall(b"".join(copy_data(f) for f in self.frames))
                    if self.end_copy == "no-ready":
                        conn.sendall(END)
                    elif self.end_copy:
                        conn.sendall(END + READY)
                    if self.hold <= 0:
                        break
                    if self.read_gate is not None:
                        self.read_gate.wait(self.hold)
                    conn.settimeout(self.hold)
                    deadline = time.monotonic() + self.hold
                elif kind == b"d":
                    with self.got:
                        self.received.append(body)
                        self.got.notify_all()
                elif kind == b"c":
                    if self.on_copy_done == "reply":
                        conn.sendall(END + READY)
                    elif self.on_copy_done == "no-ready":
                        conn.sendall(END)
                elif kind == b"X":
                    break
                if deadline and time.monotonic() > deadline:
                    break
        except (EOFError, OSError, socket.timeout):
            pass
        finally:
            conn.close()
            self.sock.close()
            self.closed.set()


def streaming_reader(frames, **kwargs):
    """A connected ReaderBase in COPY BOTH with a fake server sending
    ``frames``; returns (reader, server)."""
    server = FakeWalSender(frames, **kwargs)
    reader = core.ReaderBase()
    server.connect(reader)
    reader.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    return reader, server


def read_all(reader, timeout=2.0, count=None):
    """read_message() until the frames are used up; return the messages.

    Without ``count``: for ``timeout`` seconds (or until an error). With
    ``count``: until that many messages came (then also whatever is already
    buffered, so an extra one shows), failing after ``timeout`` seconds -- an
    event, not a guess at how long the server takes."""
    import select
    msgs = []
    deadline = time.monotonic() + timeout
    while True:
        if count is not None and len(msgs) >= count:
            while True:
                msg = reader.read_message()
                if msg is None:
                    return msgs
                msgs.append(msg)
        if time.monotonic() >= deadline:
            if count is not None:
                raise AssertionError("%d of %d messages in %s s"
                                     % (len(msgs), count, timeout))
            return msgs
        msg = reader.read_message()
        if msg is None:
            select.select([reader.fileno()], [], [], 0.05)
            continue
        msgs.append(msg)


def drive(frames, timeout=10.0):
    """Send ``frames`` from a fake walsender that then ends the COPY, and
    read them all with a fresh ReaderBase (binary payloads). Return the
    messages and the library error that ended the reading (DecodingError,
    or ConnectionLost when the server ended the stream); any other
    exception propagates, and a reader still waiting ``timeout`` seconds
    after the server ended the stream is an AssertionError."""
    import select
    srv = FakeWalSender(frames, hold=0, end_copy=True)
    r = core.ReaderBase()
    r.binary = True
    msgs = []
    try:
        srv.connect(r)
        r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = r.read_message()
            except (core.DecodingError, core.ConnectionLost) as e:
                return msgs, e
            if msg is not None:
                msgs.append(msg)
                continue
            if time.monotonic() > deadline:
                raise AssertionError("the reader still waits %s s after the "
                                     "server ended the stream" % timeout)
            select.select([r.fileno()], [], [], 0.5)
    finally:
        r.close()
        srv.thread.join(10)
