"""Deliver a slot's changes into NATS JetStream, exactly once per change.

One slot, one publisher, one JetStream stream, as many consumers as
needed (docs/scale-out.md)::

    import pylogicaldecoding as pld
    from pylogicaldecoding.jetstream import JetStreamSink, Handoff

    async def main():
        sink = JetStreamSink("nats://127.0.0.1:4222", stream="CDC",
                             subject_prefix="cdc", slot="search",
                             create_stream=True, replicas=3)
        async with pld.AsyncReader(dsn, slot="search") as reader:
            await Handoff(reader, sink).run()

Two parts, joined by a small protocol (`Sink`) so that another destination
(Kafka, a queue, a file) can use the same hand-off:

- `Handoff` reads the source (an `AsyncReader`, or anything that iterates
  stream messages asynchronously and has ``await ack(lsn)``), gives every
  message to the sink, keeps a bounded window of records in flight, and
  acks the slot up to a commit only when the sink has confirmed every
  record of that transaction and of all before it. A transient failure
  (timeout, no stream leader, lost connection) stops the reading
  (backpressure: the server waits), lets every record in flight settle,
  and sends again, in order, every record not yet confirmed; nothing past
  what was stored is ever acked.
- `JetStreamSink` publishes one message per change on
  ``<prefix>.<schema>.<table>``, transaction framing (begin, commit) on
  ``<prefix>._tx`` and logical decoding messages on ``<prefix>._msg``.

Message ids (``Nats-Msg-Id``), the same when a change is sent again after a
crash (the server sends every unacked transaction again, whole, from its
BEGIN, and decodes it the same way)::

    <slot>:<begin LSN>:<n>     n: 0 for the BEGIN, then 1, 2... for each
                               record of the transaction, in order
    <slot>:<LSN>:m             a non-transactional logical message

The begin LSN (the position of the transaction's first WAL record, the
``data_start`` of its BEGIN) is unique per transaction, and the ordinal is
unique within it; a change's own LSN is not (a multi-row INSERT or COPY
writes many rows in one WAL record). JetStream drops a message whose id it
stored within the stream's ``duplicate_window``: a publisher that restarts
after a crash sends again what it had not acked and the stream keeps one
copy. A restart after longer than the window can store duplicates.

Order: messages are published in WAL order on one connection, and
JetStream stores them in the order they arrive, so each subject holds its
changes in commit order. Under a failure (a leader election, a lost
connection) a publish can be lost while later ones are stored; the
hand-off then sends again from the lost one, and that one lands after
them. The hand-off sees it (the stream sequences in the acknowledgements
go backwards), logs a warning and counts it in ``Handoff.reorders``.
On a single-replica stream the sink prevents it: each message carries
``Nats-Expected-Last-Msg-Id`` (the id of the record published before it),
so JetStream refuses a message whose predecessor is missing. This needs
the stream to be written by this publisher only. It is off on replicated
streams (``ordered=None`` chooses by the stream's replicas): nats-server
2.15 replicas that restart fail to catch up on such messages ("last msgid
mismatch").

The same chain lets the sink ask JetStream for fewer answers on such a
stream: a message stored after its expected predecessor proves that every
message before it is stored. Most messages go without a reply subject;
every ``answer_every``-th message asks for an answer, and so does the last
one of each burst (published again, with a reply subject, when the
hand-off yields to the event loop: JetStream drops the copy as a
duplicate, or stores it if the first was lost, and answers). A message
lost or refused in between breaks the chain: the next answer is "wrong
last msg id", and everything not confirmed is sent again, this time with
an answer per message until the resend is done, so that a message
JetStream refuses for good fails with its own error. On replicated
streams every message asks for its answer.

nats-py is an optional dependency: ``pip install
'pylogicaldecoding[jetstream]'``.
"""

import asyncio
import collections
import json
import logging
import re
import time

from . import formats
from . import changes as _changes
from . import _core
from ._core import format_lsn
from .errors import Error, InterfaceError, ProgrammingError

logger = logging.getLogger("pylogicaldecoding.jetstream")

__all__ = [
    "Sink", "Record", "Handoff", "JetStreamSink", "SinkError",
    "SinkUnavailable", "StreamNotFound", "Retry", "subject_token",
]

_EXTRA_HINT = ("the JetStream sink needs nats-py: pip install "
               "'pylogicaldecoding[jetstream]'")


class SinkError(Error):
    """The sink cannot deliver: a bad URL, a refused or failed publish, a
    destination that does not exist. Nothing past what was stored was
    acked."""


class SinkUnavailable(SinkError):
    """The destination cannot be reached (at start, or for longer than the
    hand-off's ``retry_timeout``)."""


class StreamNotFound(SinkError):
    """The JetStream stream does not exist (and ``create_stream`` is off),
    or it does not take the sink's subjects."""


class Retry(Exception):
    """Raised into a record's future by a sink for a transient failure: the
    hand-off pauses, lets every record in flight settle, calls
    ``sink.reset()`` and sends again every record not yet confirmed."""


Record = collections.namedtuple("Record", "id subject body headers")
Record.__doc__ = """One unit the sink stores: ``id`` (stable across
resends), ``subject`` (where it goes), ``body`` (bytes), ``headers``. Only
the sink that made a record reads its fields (the hand-off shows ``id`` in
messages): their types are the sink's choice. `JetStreamSink` keeps them
ready for the wire: ``id`` and ``subject`` as bytes, ``headers`` as the
NATS header lines (bytes, ``Name: value\\r\\n`` each)."""


class Sink:
    """The protocol between `Handoff` and a destination (documented in
    docs/scale-out.md, "Writing another sink"). Subclass it or provide the
    same methods.

    The hand-off calls, in this order:

    1. ``await open()`` once: connect, check (or create) the destination;
       raise `SinkError` if it cannot be used.
    2. ``records(msg)`` for every stream message, in WAL order: the
       records to store for it (a list, maybe empty). Ids must be the same
       when the server sends the message again after a restart.
    3. ``await publish(record)`` for each record, in order: hand it over
       and return an `asyncio.Future` that resolves (to the record's
       position in the destination, an int, or None) when it is stored, after every record published before it, or fails
       with `Retry` (transient) or `SinkError` (fatal). It must not wait
       for the storage itself; the hand-off bounds how many are in flight.
       Records may share a future (a run of records confirmed at once):
       the hand-off keeps them together and sends each again on `Retry`.
       A sink may also have ``publish_nowait(record)``: the same without
       waiting, returning the future, or None when it cannot take the
       record now (the hand-off then awaits ``publish(record)``).
    4. ``await reset()`` after a `Retry`, once every future has settled:
       forget what is in flight, wait until the destination can be reached
       (raise `SinkUnavailable` to give up); the hand-off then publishes
       again every record not confirmed, in order, and the destination
       must drop the ones it has (by id).
    5. ``await close()`` at the end, whatever happened.
    """

    async def open(self):
        """Connect and check the destination (once, before any record)."""

    def records(self, msg):
        """The records of one stream message (a list)."""
        raise NotImplementedError

    async def publish(self, record):
        """Hand over one record; return a future resolved once stored."""
        raise NotImplementedError

    async def reset(self):
        """After a transient failure: forget what is in flight, wait until
        the destination is reachable again."""

    async def close(self):
        """Release the connection (always called)."""


# -- the hand-off --------------------------------------------------------------

_TX_END = (_changes.Commit, _changes.CommitPrepared, _changes.RollbackPrepared,
           _changes.StreamCommit, _changes.StreamAbort)


def _fail(fut, exc):
    """Fail a future the hand-off may have let go of (it sends the record
    again, or stopped at an earlier error): without asyncio's "exception
    was never retrieved" report."""
    fut.set_exception(exc)
    fut.exception()


def _show(rid):
    """A record id for a message (ids may be bytes)."""
    if isinstance(rid, bytes):
        return rid.decode("utf-8", "replace")
    return rid


def _resolve(fut):
    if not fut.done():
        fut.set_result(None)


def _is_ack_point(change):
    """True after the messages where acking is safe: the end of a
    transaction, or a non-transactional logical message."""
    if isinstance(change, _TX_END):
        return True
    if isinstance(change, _changes.Message):
        return not change.transactional
    return False


class Handoff:
    """Move a slot's messages into a sink, acking only what is stored.

    :param source: an `AsyncReader` (or any object with ``__aiter__``
        yielding stream messages with ``data_start`` and ``change``, and a
        coroutine ``ack(lsn)``).
    :param sink: a `Sink`.
    :param window: at most this many records in flight (published, not yet
        confirmed); the source is not read while the window is full.
    :param ack_timeout: seconds a record may wait for its confirmation
        before the hand-off treats it as lost and sends again.
    :param retry_timeout: give up (raise `SinkUnavailable`) when no record
        could be stored for this many seconds; None: retry forever.
    :param until_lsn: return once an ack point at or past this LSN is
        confirmed and acked (for bounded runs and benchmarks).

    Counters: ``published``, ``confirmed``, ``retries``, ``acked_lsn``,
    ``reorders`` (records the sink stored after a record published later:
    only after a resend, when the sink's futures resolve to positions).
    """

    def __init__(self, source, sink, *, window=1000, ack_timeout=5.0,
                 retry_timeout=None, until_lsn=None):
        if window < 1:
            raise ValueError("window must be at least 1")
        self.source = source
        self.sink = sink
        self.window = window
        self.ack_timeout = ack_timeout
        self.retry_timeout = retry_timeout
        self.until_lsn = until_lsn
        self.published = 0
        self.confirmed = 0
        self.retries = 0
        self.reorders = 0
        self.acked_lsn = 0
        self._last_pos = -1
        # Entries in source order: [records, future, deadline] for records
        # published one after the other that share their future (a sink
        # may confirm a run of records with one future), an int LSN for an
        # ack point. The deadline is the first record's.
        self._pending = collections.deque()
        self._tail = None               # the last entry, while records join it
        self._inflight = 0
        self._space = asyncio.Event()
        self._work = asyncio.Event()
        self._lock = asyncio.Lock()      # publishing vs. resending
        self._resending = False         # _recover() holds the lock
        self._publishing = False        # the read loop is in publish()
        self._published = None          # a future _recover waits on
        self._reading_done = False
        self._busy = False
        self._stop = False
        self._last_progress = time.monotonic()

    async def run(self):
        """Open the sink, stream until the source ends, `stop()` is called
        or ``until_lsn`` is acked; then let what is in flight settle, ack
        what was stored, stop reading and close the sink. Errors propagate
        (after the close); nothing unconfirmed is ever acked."""
        try:
            await self.sink.open()
            confirmer = asyncio.ensure_future(self._confirm_loop())
            reader = asyncio.ensure_future(self._read_loop())
            try:
                done, _ = await asyncio.wait(
                    {confirmer, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    reader.result()          # raises the reader's error
                await confirmer              # raises the sink's error
                await self._final_ack()
            finally:
                # acks are sent: reading can end (cancelling it confirms
                # nothing more)
                for t in (reader, confirmer):
                    if not t.done():
                        t.cancel()
                await asyncio.gather(reader, confirmer, return_exceptions=True)
        finally:
            await self.sink.close()

    def stop(self):
        """Stop publishing: `run()` returns once the records in flight are
        settled and what was stored is acked. Messages read meanwhile are
        not published (nor acked): the slot sends them again next time."""
        self._stop = True
        self._work.set()
        self._space.set()

    async def _read_loop(self):
        sink, pending = self.sink, self._pending
        records = sink.records
        nowait = getattr(sink, "publish_nowait", None)
        now, timeout, window = time.monotonic, self.ack_timeout, self.window
        work = self._work
        try:
            async for msg in self.source:
                if self._stop:
                    break
                self._busy = True
                for record in records(msg):
                    if self._inflight >= window or self._resending:
                        await self._turn()
                    fut = nowait(record) if nowait is not None else None
                    if fut is None:
                        fut = await self._publish(record)
                    tail = self._tail
                    if tail is not None and tail[1] is fut:
                        tail[0].append(record)
                    else:
                        self._tail = tail = [[record], fut, now() + timeout]
                        pending.append(tail)
                        work.set()
                    self._inflight += 1
                    self.published += 1
                change = msg.change
                if change is not None and type(change) not in _ROW_KINDS \
                        and _is_ack_point(change):
                    pending.append(msg.data_start)
                    self._tail = None
                    work.set()
                self._busy = False
        finally:
            self._reading_done = True
            self._work.set()

    async def _turn(self):
        """Wait for room in the window and for the end of a resend."""
        lock = self._lock
        while True:
            while self._inflight >= self.window and not self._stop:
                self._space.clear()
                await self._space.wait()
            if not lock.locked():
                return
            while lock.locked():        # a resend: wait for its end
                async with lock:
                    pass

    async def _publish(self, record):
        """``await sink.publish(record)``: it may wait; a resend starting
        meanwhile waits for it (_recover), so records stay in order."""
        self._publishing = True
        try:
            return await self.sink.publish(record)
        finally:
            self._publishing = False
            if self._published is not None:
                _resolve(self._published)

    async def _confirm_loop(self):
        self._ack_to = None
        try:
            await self._confirm()
        except BaseException:
            # what was stored before the failure is acked all the same
            if self._ack_to is not None:
                try:
                    await self._ack(self._ack_to)
                except Exception:
                    pass
            raise

    async def _confirm(self):
        pending = self._pending
        while True:
            ack_to = self._ack_to
            if not pending:
                if ack_to is not None:
                    await self._ack(ack_to)
                    self._ack_to = None
                if self._reading_done or self._stop:
                    return
                if self._past_until():
                    self.stop()
                    return
                self._work.clear()
                if self.until_lsn is None:
                    await self._work.wait()
                else:
                    # the source may pass until_lsn without a message
                    # (keepalives): look again now and then
                    try:
                        await asyncio.wait_for(self._work.wait(), 0.05)
                    except asyncio.TimeoutError:
                        pass
                continue
            head = pending[0]
            if isinstance(head, int):
                pending.popleft()
                self._ack_to = ack_to = head
                if self.until_lsn is not None and head >= self.until_lsn:
                    await self._ack(ack_to)
                    self.stop()
                    return
                continue
            recs, fut, deadline = head
            if not fut.done():
                # ack what is confirmed before waiting for more
                if ack_to is not None:
                    await self._ack(ack_to)
                    self._ack_to = None
                timeout = deadline - time.monotonic()
                if timeout > 0:
                    await asyncio.wait([fut], timeout=timeout)
                if not fut.done():
                    if not await self._recover(
                            Retry("no confirmation of %s within %s s"
                                  % (_show(recs[0].id), self.ack_timeout))):
                        return
                continue
            exc = fut.exception() if not fut.cancelled() else Retry("cancelled")
            if exc is None:
                # every confirmed record at the head, at once
                n = 0
                while True:
                    pos = fut.result()
                    if isinstance(pos, int):
                        if pos < self._last_pos:
                            self.reorders += 1
                            logger.warning(
                                "%s was stored at position %d, before a "
                                "record published earlier (%d): out of order "
                                "after a resend", _show(head[0][0].id), pos,
                                self._last_pos)
                        else:
                            self._last_pos = pos
                    pending.popleft()
                    if head is self._tail:
                        self._tail = None
                    n += len(head[0])
                    if not pending:
                        break
                    head = pending[0]
                    if type(head) is not list:
                        break
                    fut = head[1]
                    if not fut.done() or fut.cancelled() \
                            or fut.exception() is not None:
                        break
                self._inflight -= n
                self.confirmed += n
                self._last_progress = time.monotonic()
                self._space.set()
                continue
            if isinstance(exc, Retry):
                if not await self._recover(exc):
                    return
                continue
            raise exc

    def _past_until(self):
        """True when every message up to until_lsn was handled: the source
        (an AsyncReader) received or was told by the server that nothing
        is left up to it, and every record is confirmed and acked."""
        if self.until_lsn is None or self._busy or self._pending:
            return False
        src = self.source
        return (getattr(src, "received_lsn", 0) >= self.until_lsn
                or getattr(src, "server_wal_end", 0) >= self.until_lsn)

    async def _ack(self, lsn):
        # ack_nowait (AsyncReader) records the position for the next status
        # update without waiting for it to be sent; the last ack of a run
        # is awaited (run() ends with _final_ack()).
        if lsn > self.acked_lsn:
            nowait = getattr(self.source, "ack_nowait", None)
            try:
                if nowait is not None:
                    nowait(lsn)
                else:
                    await self.source.ack(lsn)
            except (InterfaceError, ProgrammingError) as e:
                # after a reconnect the server sends again from the last
                # ack: a position not delivered again yet is refused; the
                # commit comes again and is acked then
                logger.debug("ack of %s refused (%s); later", format_lsn(lsn), e)
                return
            self.acked_lsn = lsn

    async def _final_ack(self):
        """Make sure the last ack reached the server (AsyncReader's ack()
        returns once sent)."""
        if self.acked_lsn and getattr(self.source, "ack_nowait", None):
            try:
                await self.source.ack(self.acked_lsn)
            except Exception as e:
                logger.warning("could not send the last ack: %s", e)

    async def _recover(self, why):
        """Let every record in flight settle, reset the sink, publish again
        every record not confirmed, in order. Return False, giving up, when
        `stop()` was called meanwhile: what was stored is already acked, and
        nothing more is (the slot sends the rest again next time)."""
        async with self._lock:
            self._resending = True
            try:
                return await self._resend(why)
            finally:
                self._resending = False

    async def _resend(self, why):
        while self._publishing:     # let the publish in progress end
            self._published = asyncio.get_running_loop().create_future()
            await self._published
        self._published = None
        self.retries += 1
        logger.warning("sink: %s; sending again %d records", why,
                       self._inflight)
        delay = 0.05
        while True:
            if self._stop:
                logger.warning("sink: stopped while unavailable; %d "
                               "records not stored, not acked",
                               self._inflight)
                return False
            if (self.retry_timeout is not None and time.monotonic()
                    - self._last_progress > self.retry_timeout):
                raise SinkUnavailable(
                    "nothing could be stored for %s s (last failure: %s)"
                    % (self.retry_timeout, why))
            entries = [e for e in self._pending if not isinstance(e, int)]
            for e in entries:            # settle: done or past deadline
                timeout = e[2] - time.monotonic()
                if not e[1].done() and timeout > 0:
                    await asyncio.wait([e[1]], timeout=timeout)
            fatal = [e[1].exception() for e in entries
                     if e[1].done() and not e[1].cancelled()
                     and e[1].exception() is not None
                     and not isinstance(e[1].exception(), Retry)]
            if fatal:
                raise fatal[0]
            try:
                await self.sink.reset()
                # publish every record again, in order; entries are made
                # anew (the futures are new), ack points kept in place
                pending = self._pending
                old = list(pending)
                rebuilt = []
                tail = None
                for e in old:
                    if isinstance(e, int):
                        rebuilt.append(e)
                        tail = None
                        continue
                    for record in e[0]:
                        fut = await self.sink.publish(record)
                        if tail is not None and tail[1] is fut:
                            tail[0].append(record)
                        else:
                            tail = [[record], fut,
                                    time.monotonic() + self.ack_timeout]
                            rebuilt.append(tail)
                # (an ack point without records may have been read
                # meanwhile: it stays after them)
                for _ in old:
                    pending.popleft()
                pending.extendleft(reversed(rebuilt))
                self._tail = tail if pending and pending[-1] is tail else None
                return True
            except Retry as e:
                why = e
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


# -- JetStream -----------------------------------------------------------------

_SUBJECT_ESCAPES = {".": "%2E", "*": "%2A", ">": "%3E", "%": "%25"}


def subject_token(name):
    """A schema or table name as one NATS subject token: ``.``, ``*``,
    ``>``, ``%``, whitespace and control characters become ``%XX``
    (percent-encoding of their UTF-8 bytes); an empty name becomes ``%00``.
    """
    if not name:
        return "%00"
    out = []
    for ch in name:
        if ch in _SUBJECT_ESCAPES:
            out.append(_SUBJECT_ESCAPES[ch])
        elif ch.isspace() or ord(ch) < 32 or ord(ch) == 127:
            out.append("".join("%%%02X" % b for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def _subject_matches(pattern, subject):
    """True when the NATS subject filter ``pattern`` (tokens, ``*`` for one
    token, ``>`` for the rest) matches ``subject``."""
    p, t = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(t) > i
        if i >= len(t) or (tok != "*" and tok != t[i]):
            return False
    return len(p) == len(t)


_ROW_KINDS = {_changes.Insert: b"insert", _changes.Update: b"update",
              _changes.Delete: b"delete"}

# JetStream's acknowledgement of a stored message (anything else is read
# with json)
_ACK_RE = re.compile(rb'\{"stream":"[^"\\]*","seq":(\d+)(,"duplicate":true)?\}\Z')

_CLIENT_CLASS = None

# the JSON text of a row whose values need no conversion by
# formats.jsonable() (the fast path of JetStreamSink.records())
_json_row = _core.json_row
_CONNECTED = 1          # nats-py's Client.CONNECTED (checked at open)

_new_tuple = tuple.__new__


def _client_class():
    """nats-py's Client, with the answers to our publishes taken straight
    from its parser: no message object, queue and task per answer."""
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        from nats.aio.client import Client

        class _Client(Client):
            _pld_acks = None        # (subscription id, callback)

            async def _process_msg(self, sid, subject, reply, data, headers):
                acks = self._pld_acks
                if acks is not None and sid == acks[0]:
                    acks[1](subject, data, headers)
                    return
                await super()._process_msg(sid, subject, reply, data,
                                           headers)

        _CLIENT_CLASS = _Client
    return _CLIENT_CLASS


# what the hot path uses of nats-py's Client beyond its public API (see
# _client_class() and _queue_frame()): checked once connected, so that a
# nats-py that changed them fails at once with a clear error instead of
# misbehaving mid-stream
_CLIENT_INTERNALS = ("_pending", "_pending_data_size", "_flush_queue",
                     "_max_pending_size", "_flush_pending", "_process_msg",
                     "_status", "_max_payload")
_TESTED_NATS_PY = "2.16"


def _check_client_internals(nc, sub):
    missing = [n for n in _CLIENT_INTERNALS if not hasattr(nc, n)]
    if getattr(type(nc), "CONNECTED", None) != _CONNECTED:
        missing.append("Client.CONNECTED == %d" % _CONNECTED)
    if not hasattr(sub, "_id"):
        missing.append("Subscription._id")
    if missing:
        from importlib.metadata import version, PackageNotFoundError
        try:
            have = version("nats-py")
        except PackageNotFoundError:
            have = "?"
        raise SinkError(
            "this nats-py (%s) lacks what the JetStream sink uses of its "
            "client (%s); the sink is tested with nats-py %s: pip install "
            "'nats-py==%s.*'" % (have, ", ".join(missing), _TESTED_NATS_PY,
                                 _TESTED_NATS_PY))


def _import_nats():
    try:
        import nats
        import nats.errors
        import nats.js.errors
    except ImportError as e:
        raise ImportError("%s (%s)" % (_EXTRA_HINT, e)) from e
    return nats


def _redact(url):
    """A server URL without user and password."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        if parts.username or parts.password:
            host = parts.hostname or ""
            if parts.port:
                host += ":%d" % parts.port
            return parts._replace(netloc="***@" + host).geturl()
    except ValueError:
        return "(invalid URL)"
    return url


def parse_servers(url):
    """Split ``nats://h1:p1,nats://h2:p2`` (or ``h1:p1,h2:p2``) into a
    list of URLs, checking each; raise `SinkError` on a bad one."""
    from urllib.parse import urlsplit
    if not isinstance(url, str) or not url.strip():
        raise SinkError("no NATS server URL given")
    servers = []
    for item in url.split(","):
        item = item.strip()
        if "://" not in item:
            item = "nats://" + item
        try:
            parts = urlsplit(item)
            port = parts.port
        except ValueError as e:
            raise SinkError("bad NATS server URL %r: %s" % (_redact(item), e))
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise SinkError("bad NATS server URL %r: expected "
                            "nats://HOST:PORT" % _redact(item))
        if port is None:
            item = item.rstrip("/") + ":4222" if not parts.path else item
        servers.append(item)
    return servers


class JetStreamSink(Sink):
    """Publish a slot's changes to a JetStream stream (see the module doc).

    :param url: ``nats://HOST:PORT``, several separated by commas (the
        nodes of a cluster).
    :param stream: the stream's name; it must exist and take
        ``<prefix>.>`` unless ``create_stream`` is set.
    :param subject_prefix: the first subject token(s) (default ``pld``).
    :param slot: the slot's name: the first part of every message id.
    :param format: "json" (the records of ``pld stream --format json``) or
        "debezium" (Debezium's envelope for rows, truncates and messages;
        the framing on ``_tx`` is always the JSON record).
    :param create_stream: create the stream (subjects ``<prefix>.>``, file
        storage, ``replicas`` copies, ``duplicate_window`` seconds) when
        it does not exist.
    :param ordered: send ``Nats-Expected-Last-Msg-Id`` (see the module
        doc; needs the stream to be written by this sink only); None (the
        default): only when the stream has a single replica.
    :param connect_timeout: seconds to wait for the first connection.
    :param open_timeout: seconds to wait at start for a stream that does
        not answer (no leader yet, an election).
    :param name, db: Debezium's ``source.name`` (default: the slot) and
        ``source.db``.
    :param answer_every: on an ordered stream, ask for an answer at least
        every this many messages (see "answers" in the module doc); a
        smaller value than the hand-off's window keeps the window moving
        within a burst. 1: an answer per message.

    ``duplicates`` counts the messages JetStream answered as duplicates
    (on an ordered stream, only messages that asked for an answer are
    known: the answer is per burst).

    Headers of every message: ``Nats-Msg-Id``, ``Pld-Lsn`` (the change's
    LSN, "X/Y"), ``Pld-Xid``, ``Pld-Commit-Time`` (ISO 8601; on rows only
    when the plugin sends it at BEGIN, as pgoutput and wal2json do, and
    always on the commit), ``Pld-Kind``.
    """

    def __init__(self, url, *, stream="PLD", subject_prefix="pld", slot,
                 format="json", create_stream=False, replicas=1,
                 duplicate_window=120.0, ordered=None, connect_timeout=5.0,
                 open_timeout=30.0, name=None, db=None, answer_every=256):
        self.servers = parse_servers(url)
        self.stream = stream
        if not subject_prefix or any(c in subject_prefix for c in " *>\t\r\n") \
                or subject_prefix.startswith(".") or subject_prefix.endswith("."):
            raise SinkError("bad subject prefix %r" % (subject_prefix,))
        self.prefix = subject_prefix
        if not isinstance(slot, str) or not slot or any(
                c.isspace() or ord(c) < 32 or ord(c) == 127 for c in slot):
            raise SinkError("bad slot name %r (the first part of every "
                            "message id)" % (slot,))
        self.slot = slot
        if not isinstance(answer_every, int) or answer_every < 1:
            raise SinkError("answer_every must be a positive int, not %r"
                            % (answer_every,))
        if format not in formats.Formatter.FORMATS:
            raise SinkError("format must be one of %s, not %r"
                            % (", ".join(formats.Formatter.FORMATS), format))
        self.format = format
        self.name = name or slot
        self.db = db
        self.create_stream = create_stream
        self.replicas = replicas
        self.duplicate_window = duplicate_window
        self.ordered = ordered
        self.connect_timeout = connect_timeout
        self.open_timeout = open_timeout
        self.nc = None
        self.duplicates = 0
        self._subject_cache = {}
        self._tx_begin = None       # begin LSN of the open transaction
        self._tx_n = 0
        self._xid = None
        self._commit_time = None
        # the rows' fast path in records(): type -> {(schema, table):
        # (subject, Pld-Kind line, JSON text between "xid" and "new")}
        self._rows = {t: {} for t in _ROW_KINDS} if format == "json" else {}
        self._row_xid = None
        self._row_tail = None
        self._last_id = None        # predecessor for Expected-Last-Msg-Id
        self._confirmed = (0, None)     # (token, record id) last stored
        self._futures = {}          # token -> (future, id, answer asked)
        self._group = None          # the future of records not asking yet
        self._last_unanswered = None    # what a probe publishes again
        self._probing = False
        self._kicking = False           # _kick() is scheduled
        self._careful_to = 0            # after a reset: an answer each
        self._gen_start = 0             # the last token before the reset
        self.answer_every = answer_every
        self._token = 0
        self._inbox_b = b""
        self._inbox_len = 0
        self._loop = None
        self._slot_b = slot.encode("utf-8")
        self._tx_subject = (self.prefix + "._tx").encode("utf-8")
        self._msg_subject = (self.prefix + "._msg").encode("utf-8")
        self._tx_prefix = self._tx_xid = self._tx_time = b""

    def __repr__(self):
        return "<JetStreamSink %s stream=%s prefix=%s>" % (
            ",".join(_redact(s) for s in self.servers), self.stream,
            self.prefix)

    # -- open and close ------------------------------------------------------

    async def open(self):
        """Connect, then check that the stream exists and takes the sink's
        subjects (creating it with ``create_stream``). Raises
        `SinkUnavailable` when no server answers, `StreamNotFound` when
        the stream is missing or takes other subjects. Does nothing when
        open already."""
        if self.nc is not None:
            return
        nats = _import_nats()
        shown = ",".join(_redact(s) for s in self.servers)
        errors = []

        async def error_cb(e):
            errors.append(e)
            logger.debug("nats: %s", e)

        try:
            # reconnects forever once connected; the first connection is
            # bounded by our own timeout (nats-py would retry forever too)
            self.nc = _client_class()()
            await asyncio.wait_for(self.nc.connect(
                self.servers, connect_timeout=self.connect_timeout,
                allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=0.2, error_cb=error_cb,
                name="pylogicaldecoding slot %s" % self.slot),
                self.connect_timeout * len(self.servers) + 1)
        except asyncio.TimeoutError:
            await self._drop_client()
            why = errors[-1] if errors else "no answer within %s s" % (
                self.connect_timeout * len(self.servers) + 1)
            raise SinkUnavailable("cannot connect to NATS at %s: %s"
                                  % (shown, why)) from None
        except Exception as e:
            await self._drop_client()
            why = errors[-1] if errors else e
            raise SinkUnavailable("cannot connect to NATS at %s: %s"
                                  % (shown, why or type(why).__name__)) from None
        js = self.nc.jetstream()
        try:
            await self._check_stream(js)
        except BaseException:
            await self.close()
            raise
        self._loop = asyncio.get_running_loop()
        inbox = self.nc.new_inbox()
        self._inbox_b = (inbox + ".").encode()
        self._inbox_len = len(self._inbox_b)
        sub = await self.nc.subscribe(inbox + ".*")
        try:
            _check_client_internals(self.nc, sub)
        except SinkError:
            await self.close()
            raise
        self.nc._pld_acks = (sub._id, self._on_ack)

    async def _drop_client(self):
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 5)
            except Exception:
                pass

    async def _answered(self, what, call):
        """``await call()`` again while JetStream does not answer (a stream
        or meta group without a leader: an election; a loaded server), up
        to open_timeout; an error JetStream answered is raised at once."""
        import nats.js.errors as jserr
        deadline = time.monotonic() + self.open_timeout
        while True:
            try:
                return await call()
            except jserr.NotFoundError:
                raise
            except Exception as e:
                if (isinstance(e, jserr.APIError) and not isinstance(
                        e, jserr.ServiceUnavailableError)) \
                        or time.monotonic() > deadline:
                    raise
                logger.warning("JetStream stream %s: %s does not answer "
                               "(%s); trying again", self.stream, what,
                               str(e) or type(e).__name__)
                await asyncio.sleep(0.5)

    async def _stream_info(self, js):
        return await self._answered(
            "stream info", lambda: js.stream_info(self.stream))

    async def _check_stream(self, js):
        import nats.js.errors as jserr
        from nats.js.api import StorageType, StreamConfig
        subjects = self.prefix + ".>"
        replicas = self.replicas
        taken = [subjects]
        try:
            info = await self._stream_info(js)
            replicas = info.config.num_replicas or 1
            taken = list(info.config.subjects or [])
        except jserr.NotFoundError:
            if not self.create_stream:
                raise StreamNotFound(
                    "JetStream stream %r does not exist; create it (subjects "
                    "%r) or pass create_stream=True (--create-stream)"
                    % (self.stream, subjects)) from None
            config = StreamConfig(
                name=self.stream, subjects=[subjects],
                storage=StorageType.FILE, num_replicas=self.replicas,
                duplicate_window=self.duplicate_window)
            try:
                # creating it again with the same config is allowed: a
                # creation that timed out here but went through is fine
                await self._answered("creating it",
                                     lambda: js.add_stream(config))
            except jserr.Error as e:
                raise SinkError("cannot create JetStream stream %r: %s"
                                % (self.stream, e)) from None
            except Exception as e:
                raise SinkUnavailable(
                    "JetStream did not create stream %r within %g s: %s"
                    % (self.stream, self.open_timeout,
                       str(e) or type(e).__name__)) from None
            logger.info("created JetStream stream %s (%s, %d replicas)",
                        self.stream, subjects, self.replicas)
        except jserr.ServiceUnavailableError:
            raise SinkUnavailable("JetStream is not available on %s"
                                  % ",".join(map(_redact, self.servers))) from None
        except Exception as e:
            if isinstance(e, Error):
                raise
            raise SinkUnavailable("cannot reach JetStream: %s" % (
                str(e) or type(e).__name__)) from None
        if self.ordered is None:
            self.ordered = replicas == 1
        # every subject the sink publishes on must be the stream's
        probe = [self.prefix + "._tx", self.prefix + "._msg",
                 self.prefix + ".a.b"]
        if not all(any(_subject_matches(p, x) for p in taken) for x in probe):
            raise StreamNotFound(
                "JetStream stream %r takes subjects %s, not all of %s; add "
                "%r to its subjects or choose another --subject-prefix"
                % (self.stream, ", ".join(taken) or "(none)", subjects,
                   subjects))

    async def close(self):
        """Close the connection; every unsettled future fails with Retry."""
        self._fail_all(Retry("sink closed"))
        nc, self.nc = self.nc, None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), 5)
            except Exception:
                pass

    # -- records -------------------------------------------------------------

    def _subject(self, schema, table):
        key = (schema, table)
        s = self._subject_cache.get(key)
        if s is None:
            s = ("%s.%s.%s" % (self.prefix, subject_token(schema or ""),
                               subject_token(table or ""))).encode("utf-8")
            if len(self._subject_cache) < 100000:
                self._subject_cache[key] = s
        return s

    def _row_kind(self, rows, change):
        """(subject, Pld-Kind header line, the middle of the JSON text) of
        the rows of one kind and table (kept for the next ones)."""
        kind = _ROW_KINDS[type(change)]
        row = (self._subject(change.schema, change.table),
               b"Pld-Kind: %s\r\n" % kind,
               (',"kind":"%s","schema":%s,"table":%s,"new":' % (
                   kind.decode(), formats.dumps(change.schema),
                   formats.dumps(change.table))).encode("utf-8"))
        if len(rows) < 10000:
            rows[(change.schema, change.table)] = row
        return row

    def records(self, msg):
        """One record per change of ``msg`` (see the module doc)."""
        change = msg.change
        if change is None:
            return []
        rows = self._rows.get(type(change))
        if rows is not None and self._tx_n and self._row_xid is not None:
            # the hot path: a row of a transaction, in --format json
            row = rows.get((change.schema, change.table))
            if row is None:
                row = self._row_kind(rows, change)
            subject, kind, head = row
            new, old = change.new, change.old
            ds = msg.data_start
            clsn = change.lsn or ds
            cxid = change.xid
            # the text of formats.json_text() (tested the same), made here
            # when _core.json_row() takes the row's values
            newt = b"null" if new is None else _json_row(new)
            oldt = b"null" if old is None else _json_row(old)
            if clsn and newt is not None and oldt is not None and (
                    cxid is None or (type(cxid) is int
                                     and cxid == self._xid)):
                lsn_t = format_lsn(clsn).encode()
                body = b'{"lsn":"%s","xid":%s%s%s,"old":%s%s' % (
                    lsn_t, self._row_xid, head, newt, oldt, self._row_tail)
            else:
                lsn_t = None
                body = formats.json_text(
                    change, lsn=ds, xid=self._xid,
                    commit_time=self._commit_time,
                    unchanged=formats.UNCHANGED_MARKER).encode("utf-8")
            n = self._tx_n
            self._tx_n = n + 1
            rid = b"%s%d" % (self._tx_prefix, n)
            lsn = ds or change.lsn
            if lsn:
                if lsn != clsn or lsn_t is None:
                    lsn_t = format_lsn(lsn).encode()
                headers = b"Nats-Msg-Id: %s\r\n%s%sPld-Lsn: %s\r\n%s" % (
                    rid, self._tx_xid, kind, lsn_t, self._tx_time)
            else:
                headers = b"Nats-Msg-Id: %s\r\n%s%s%s" % (
                    rid, self._tx_xid, kind, self._tx_time)
            # (Record's own __new__ is a Python function: skipped)
            return [_new_tuple(Record, (rid, subject, body, headers))]
        items = change if isinstance(change, list) else [change]
        out = []
        for c in items:
            out.extend(self._records_of(c, msg))
        return out

    def _records_of(self, change, msg):
        lsn = msg.data_start or getattr(change, "lsn", None)
        if isinstance(change, (_changes.Begin, _changes.BeginPrepare)):
            self._tx_begin = msg.data_start
            self._tx_n = 0
            self._xid = xid = change.xid
            self._commit_time = getattr(change, "commit_time", None)
            # the JSON text of the transaction's xid and commit time in its
            # rows (records(); None: the rows take the general path)
            self._row_xid = (b"%d" % xid if type(xid) is int
                             else b"null" if xid is None else None)
            self._row_tail = (',"commit_time":%s}' % formats.dumps(
                formats.jsonable(self._commit_time))).encode("utf-8")
            body = formats.dumps(formats.change_to_json(
                change, lsn=msg.data_start))
            return [self._record(self._tx_subject, body, change, lsn)]
        if isinstance(change, _TX_END):
            commit_time = getattr(change, "commit_time", None)
            body = formats.dumps(formats.change_to_json(
                change, lsn=msg.data_start, xid=self._xid))
            rec = self._record(self._tx_subject, body, change, lsn,
                               commit_time=commit_time, xid=self._xid)
            self._tx_begin = self._xid = self._commit_time = None
            self._row_xid = None
            self._tx_n = 0
            return [rec]
        if isinstance(change, (_changes.StreamStart, _changes.StreamStop)):
            # changes of a transaction still in progress, maybe aborted
            # later: they cannot be published as committed changes
            raise SinkError(
                "streamed in-progress transactions are not supported by the "
                "JetStream sink: do not turn on pgoutput's 'streaming' "
                "option")
        if isinstance(change, (_changes.Relation, _changes.Type,
                               _changes.Origin)):
            return []
        if self.format == "json":
            bodies = [formats.json_text(
                change, lsn=msg.data_start, xid=self._xid,
                commit_time=self._commit_time,
                unchanged=formats.UNCHANGED_MARKER)]
        else:
            bodies = formats.change_to_debezium(
                change, lsn=msg.data_start, xid=self._xid,
                commit_time=self._commit_time, name=self.name, db=self.db,
                ts_ms=None, unchanged=formats.DEBEZIUM_UNAVAILABLE)
        out = []
        for body in bodies:
            if isinstance(change, _changes.Message):
                subject = self._msg_subject
            elif isinstance(change, _changes.Truncate):
                if self.format == "json":
                    schema, table = (change.tables[0] if change.tables
                                     else ("", ""))
                else:
                    schema = body["source"]["schema"]
                    table = body["source"]["table"]
                subject = self._subject(schema, table)
            else:
                subject = self._subject(change.schema, change.table)
            if not isinstance(body, str):
                body = formats.dumps(body)
            out.append(self._record(subject, body, change, lsn, xid=self._xid,
                                    commit_time=self._commit_time))
        return out

    def _record(self, subject, body, change, lsn, *, xid=None,
                commit_time=None):
        """A record: its id, subject, body (text) and header lines (bytes:
        ``Name: value\r\n`` each, in the order of the class doc)."""
        if self._tx_begin is not None:
            if self._tx_n == 0:
                # per transaction: the id prefix and the xid header
                self._tx_prefix = b"%s:%X:" % (self._slot_b, self._tx_begin)
                if xid is None:
                    xid = getattr(change, "xid", None)
                self._tx_xid = (b"Pld-Xid: %s\r\n" % str(xid).encode()
                                if xid is not None else b"")
                self._tx_time = (
                    b"Pld-Commit-Time: %s\r\n"
                    % self._commit_time.isoformat().encode()
                    if self._commit_time is not None else b"")
            rid = b"%s%d" % (self._tx_prefix, self._tx_n)
            self._tx_n += 1
            headers = b"Nats-Msg-Id: %s\r\n%s" % (rid, self._tx_xid)
        else:
            rid = b"%s:%X:m" % (self._slot_b, lsn or 0)
            headers = b"Nats-Msg-Id: %s\r\n" % rid
            if xid is None:
                xid = getattr(change, "xid", None)
            if xid is not None:
                headers += b"Pld-Xid: %s\r\n" % str(xid).encode()
        headers += b"Pld-Kind: %s\r\n" % formats.kind_of(change).encode()
        if lsn:
            headers += b"Pld-Lsn: %s\r\n" % format_lsn(lsn).encode()
        if commit_time is not None:
            headers += b"Pld-Commit-Time: %s\r\n" % (
                commit_time.isoformat().encode())
        return Record(rid, subject, body.encode("utf-8"), headers)

    # -- publishing ----------------------------------------------------------

    async def publish(self, record):
        """Publish ``record``; the future resolves on JetStream's
        acknowledgement of it or, on an ordered stream, of a later record
        (see "answers" in the module doc). Waits only while nats-py's
        outgoing buffer is full."""
        while True:
            nc = self.nc
            if nc is not None and nc.is_connected and \
                    0 < nc._max_pending_size < nc._pending_data_size:
                try:
                    await asyncio.wait_for(
                        nc._flush_pending(force_flush=True), 5)
                except (asyncio.TimeoutError, OSError):
                    pass        # the connection is looked at again
            fut = self.publish_nowait(record)
            if fut is not None:
                return fut

    def publish_nowait(self, record):
        """`publish()` without waiting: the future, or None when nats-py's
        outgoing buffer is full.

        The frame (HPUB, header lines, body) is made here and queued on
        nats-py's connection as its own publish() does, without its
        per-call checks (our subjects and header values are made valid);
        the answers come to `_on_ack` straight from nats-py's parser
        (`_Client`)."""
        nc = self.nc
        if nc is None or nc._status != _CONNECTED:
            if nc is None or nc.is_closed or not nc.is_connected:
                fut = self._loop.create_future()
                _fail(fut, Retry("not connected"))
                return fut
        if 0 < nc._max_pending_size < nc._pending_data_size:
            return None
        headers, body = record.headers, record.body
        last = self._last_id if self.ordered else None
        if last is not None:
            # + "Nats-Expected-Last-Msg-Id: <last>\r\n", "NATS/1.0\r\n"
            # before the lines and "\r\n" after them
            hlen = len(headers) + len(last) + 41
        else:
            hlen = len(headers) + 12
        total = hlen + len(body)
        if total > nc._max_payload:
            fut = self._loop.create_future()
            fut.set_exception(SinkError(
                "cannot publish %s on %s: %d bytes, more than the server's "
                "max_payload (%d)" % (_show(record.id),
                                      record.subject.decode(), total,
                                      nc._max_payload)))
            return fut
        if self.ordered:
            self._last_id = record.id
        self._token = token = self._token + 1
        # records without an answer of their own share the future of the
        # next record that asks (or of the probe of the last one)
        group = self._group
        if group is None:
            group = self._group = self._loop.create_future()
        if last is None:
            if not self.ordered or token <= self._careful_to \
                    or token % self.answer_every == 0:
                self._futures[token] = (group, record.id, True)
                self._group = None
                frame = b"HPUB %s %s%d %d %d\r\nNATS/1.0\r\n%s\r\n%s\r\n" % (
                    record.subject, self._inbox_b, token, hlen, total,
                    headers, body)
            else:
                frame = b"HPUB %s %d %d\r\nNATS/1.0\r\n%s\r\n%s\r\n" % (
                    record.subject, hlen, total, headers, body)
                self._unanswered(token, record, hlen, total)
        elif token <= self._careful_to or token % self.answer_every == 0:
            self._futures[token] = (group, record.id, True)
            self._group = None
            frame = (b"HPUB %s %s%d %d %d\r\nNATS/1.0\r\n%s"
                     b"Nats-Expected-Last-Msg-Id: %s\r\n\r\n%s\r\n") % (
                record.subject, self._inbox_b, token, hlen, total, headers,
                last, body)
        else:
            frame = (b"HPUB %s %d %d\r\nNATS/1.0\r\n%s"
                     b"Nats-Expected-Last-Msg-Id: %s\r\n\r\n%s\r\n") % (
                record.subject, hlen, total, headers, last, body)
            # (what a probe publishes again, its headers made then)
            self._last_unanswered = (token, record, hlen, total, last)
            if not self._probing:
                # once the hand-off yields: ask about the last record
                self._probing = True
                self._loop.call_soon(self._probe)
        nc._pending.append(frame)
        nc._pending_data_size += len(frame)
        if not self._kicking:
            # wake nats-py's flusher once the hand-off yields (as its
            # _send_command() and _flush_pending() do, once per burst)
            self._kicking = True
            self._loop.call_soon(self._kick)
        return group

    def _unanswered(self, token, record, hlen, total):
        """A record published without an answer nor predecessor (the first
        of an ordered stream): what the probe publishes again."""
        self._last_unanswered = (token, record, hlen, total, None)
        if not self._probing:
            self._probing = True
            self._loop.call_soon(self._probe)

    def _kick(self):        # (called soon: once the hand-off yields)
        self._kicking = False
        nc = self.nc
        if nc is not None:
            queue = nc._flush_queue
            if queue is not None and queue.empty():
                queue.put_nowait(self._loop.create_future())

    def _enqueue(self, nc, frame):
        """Queue a frame on nats-py's connection and wake its flusher (as
        its _send_command() and _flush_pending() do)."""
        nc._pending.append(frame)
        nc._pending_data_size += len(frame)
        queue = nc._flush_queue
        if queue is not None and queue.empty():
            queue.put_nowait(self._loop.create_future())

    def _probe(self):       # (called soon: once the hand-off yields)
        """Publish the last record again, asking for an answer: JetStream
        drops it as a duplicate (or stores it, if the first copy was lost)
        and its answer confirms every record before it (the chain of
        ``Nats-Expected-Last-Msg-Id``)."""
        self._probing = False
        last, nc = self._last_unanswered, self.nc
        if last is None or last[0] != self._token or nc is None \
                or self._group is None or not nc.is_connected:
            return      # a later record asks, or a reset came
        token, record, hlen, total, prev = last
        self._futures[token] = (self._group, record.id, False)
        self._group = None
        self._last_unanswered = None
        headers = record.headers
        if prev is not None:
            headers = b"%sNats-Expected-Last-Msg-Id: %s\r\n" % (headers, prev)
        self._enqueue(nc, b"HPUB %s %s%d %d %d\r\nNATS/1.0\r\n%s\r\n%s\r\n" % (
            record.subject, self._inbox_b, token, hlen, total, headers,
            record.body))

    def _on_ack(self, subject, data, headers):
        """One answer on the inbox (called by nats-py's parser)."""
        try:
            token = int(subject[self._inbox_len:])
        except ValueError:
            return
        entry = self._futures.pop(token, None)
        if entry is None or entry[0].done():
            return                  # an answer from before a reset
        fut, rid, answered = entry
        m = _ACK_RE.match(data)
        if m is not None:           # the usual answer: stored
            if m.group(2) and answered:
                self.duplicates += 1        # (a probe's copy is one)
            self._stored(token, rid)
            fut.set_result(int(m.group(1)))
            return
        if headers and headers[8:9] == b" " and not data:
            # 503: no stream takes the subject now (no leader, election)
            status = headers[9:12].decode("ascii", "replace")
            self._refused(token, fut, Retry(
                "JetStream answered status %s%s" % (
                    status, " (no responders: no stream leader?)"
                    if status == "503" else "")))
            return
        try:
            ack = json.loads(data)
        except ValueError:
            self._refused(token, fut, SinkError(
                "bad JetStream acknowledgement: %r" % data[:200]))
            return
        err = ack.get("error")
        if err is None:
            if ack.get("duplicate") and answered:
                self.duplicates += 1
            self._stored(token, rid)
            fut.set_result(ack.get("seq"))
            return
        code, err_code = err.get("code"), err.get("err_code")
        text = "JetStream refused a message: %s (code %s, err_code %s)" % (
            err.get("description"), code, err_code)
        # 10070 wrong last msg id: a predecessor was lost; 503/504 and
        # 10008 (stream temporarily unavailable) are transient
        if err_code == 10070 or code in (503, 504) or err_code == 10008:
            self._refused(token, fut, Retry(text))
        else:
            self._refused(token, fut, SinkError(text))

    def _stored(self, token, rid):
        """Record ``token`` is stored: on an ordered stream, so is every
        record published before it (its future is theirs too)."""
        if token > self._confirmed[0]:
            self._confirmed = (token, rid)

    def _refused(self, token, fut, exc):
        """Record ``token`` is not stored, nor maybe the records that
        share its future (published before it without an answer)."""
        _fail(fut, exc)

    def _fail_all(self, exc):
        futures, self._futures = self._futures, {}
        self._last_unanswered = None
        group, self._group = self._group, None
        if group is not None and not group.done():
            _fail(group, exc)
        for entry in futures.values():
            if not entry[0].done():
                _fail(entry[0], exc)

    async def reset(self):
        """Forget what is in flight (late answers are ignored), wait until
        the connection is up; the next record published expects the last
        one stored as its predecessor, and every record asks for an answer
        until one published after the reset is stored (so that a record
        JetStream refuses gets its own error)."""
        self._fail_all(Retry("reset"))
        self._last_id = self._confirmed[1]
        # the hand-off sends again every record not confirmed: the records
        # of this generation past the last one stored
        unconfirmed = self._token - max(self._confirmed[0], self._gen_start)
        self._careful_to = self._token + max(unconfirmed, 1)
        self._gen_start = self._token
        if self.nc is None or self.nc.is_closed:
            raise SinkUnavailable("the NATS connection is closed")
        if not self.nc.is_connected:
            raise Retry("not connected to NATS")
        try:
            await self.nc.flush(timeout=2)
        except Exception as e:
            raise Retry("NATS flush failed: %s" % (str(e) or type(e).__name__))


# -- the whole thing -----------------------------------------------------------

async def stream_to_jetstream(dsn="", *, slot, url, stream="PLD",
                              subject_prefix="pld", format="json",
                              create_stream=False, replicas=1,
                              duplicate_window=120.0, window=1000,
                              ack_timeout=5.0, retry_timeout=None,
                              until_lsn=None, source=None, handoff_cb=None,
                              **reader_kwargs):
    """Stream the slot ``slot`` into JetStream until stopped: what
    ``pld stream --to nats://...`` runs.

    Opens an `AsyncReader` on ``dsn`` (``reader_kwargs`` go to it: plugin,
    options, create_slot, conninfo keywords...) unless ``source`` is
    given, a `JetStreamSink` (``url``, ``stream``, ``subject_prefix``,
    ``format``, ``create_stream``, ``replicas``, ``duplicate_window``) and
    runs a `Handoff` (``window``, ``ack_timeout``, ``retry_timeout``,
    ``until_lsn``: an LSN, or "drain" for the server's position at the
    start). ``handoff_cb(handoff)`` is called once it exists (to call
    ``stop()`` from a signal handler). The sink is opened before the slot
    is read: a bad URL, an unreachable server or a missing stream raise
    `SinkError` with nothing acked. Returns the `Handoff` (its counters).
    """
    sink = JetStreamSink(url, stream=stream, subject_prefix=subject_prefix,
                         slot=slot, format=format,
                         create_stream=create_stream, replicas=replicas,
                         duplicate_window=duplicate_window)
    await sink.open()           # fail before touching the slot
    try:
        if source is None:
            from .aio import AsyncReader
            source = AsyncReader(dsn, slot=slot, **reader_kwargs)
        async with source:
            if until_lsn == "drain":
                until_lsn = (await source.identify_system()).xlogpos
            elif isinstance(until_lsn, str):
                from .lsn import parse_lsn
                until_lsn = parse_lsn(until_lsn)
            handoff = Handoff(source, sink, window=window,
                              ack_timeout=ack_timeout,
                              retry_timeout=retry_timeout,
                              until_lsn=until_lsn)
            if handoff_cb is not None:
                handoff_cb(handoff)
            await handoff.run()
        return handoff
    finally:
        await sink.close()


def run_stream(dsn="", **kwargs):
    """`stream_to_jetstream()` for blocking code (the CLI): runs it in a new
    event loop; SIGINT and SIGTERM stop it cleanly (what is stored is
    acked, exit without error). Returns the `Handoff`."""
    import signal

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        holder = []
        stopping = []

        def on_signal():
            stopping.append(1)
            if holder and len(stopping) == 1:
                holder[0].stop()        # settle, ack what is stored, end
            else:
                task.cancel()           # not streaming yet, or asked twice

        def got_handoff(h):
            holder.append(h)
            if stopping:
                h.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await stream_to_jetstream(
                dsn, handoff_cb=got_handoff, **kwargs)
        except asyncio.CancelledError:
            if not stopping:
                raise
            return holder[0] if holder else None
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
