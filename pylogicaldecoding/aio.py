"""AsyncReader: the asyncio front end of the C core.

The same C stream as `Reader`, driven without blocking the event loop:
connecting (``PQconnectStart``/``PQconnectPoll``), commands (``PQsendQuery``
and results read as the socket becomes readable), the COPY stream and the
status updates all wait in the loop (``loop.add_reader``/``add_writer`` on
the libpq socket), never in a thread. The rules (settings, slot set-up,
command text, reconnection, option defaults) are `rules`, shared with
`Reader`; the ack rules are the C core's.

Backpressure: the socket is read only when the consumer asks for the next
message, so a slow consumer makes the server wait (TCP flow control). While
the consumer awaits something slow, the C keepalive thread sends the status
updates that keep the connection alive.
"""

import asyncio
import collections
import inspect
import logging
import select
import time
from typing import (Any, AsyncIterable, AsyncIterator, Dict, List,
                    Optional, Tuple, Union)

from . import _core
from . import commands
from . import conninfo
from . import rules
from . import snapshot as _snapshot
from .errors import ConnectionFailed, InterfaceError, OperationalError

logger = logging.getLogger("pylogicaldecoding")

#: How long ending a stream (CopyDone) may wait for the server before the
#: connection is closed instead.
END_COPY_TIMEOUT = 5.0

#: While messages are there to read without waiting, the iteration lets
#: the other tasks run this often (seconds), plus at most a tick of the
#: coarse clock the C fast path reads (1-4 ms on Linux; see aiter_type.c).
YIELD_EVERY = 0.005

#: The shortest wait an event loop's timers honour: asyncio's selector and
#: uvloop (libuv) count in milliseconds, and uvloop's call_later() rounds a
#: shorter delay to zero, a timer due at once. A sub-millisecond wait (the
#: batching rule's cap and pause, a status update due in 0.2 ms) is raised
#: to it: a wait that never waits would spin the loop (uvloop did, at 100%
#: CPU, for as long as a backlog batched).
LOOP_RESOLUTION = 0.001

_READY, _TIMEOUT, _WAKEUP = "ready", "timeout", "wakeup"
_NOTHING = object()     # no message read yet


def _resolve(fut, value):
    if not fut.done():
        fut.set_result(value)


class _Watch:
    """The stream's waits for its socket: the hot path of a live stream,
    a wait every few messages. Registering the socket with the loop and
    removing it again for every wait (two epoll_ctl() calls, and a poll
    handle made and closed under uvloop) cost more than the rest of the
    wait, so the reader callback stays registered from one wait to the
    next, and so does a timer that is due early enough.

    While nobody waits (the consumer works on a message) a readable socket
    would call `_readable()` at every turn of the loop: it then removes
    itself, and the next wait registers again (the socket is read only as
    fast as the consumer asks: backpressure). Under asyncio's own loop the
    callback can also come once more for data the woken task has read
    meanwhile (uvloop wakes the task before it polls again): a poll()
    without waiting tells.

    `AsyncReader._unwatch()` removes it before anything else waits on the
    socket and before the connection closes (its fd may then be reused)."""

    __slots__ = ("loop", "fd", "fut", "watching", "timer", "when", "poll")

    def __init__(self, loop, fd):
        self.loop = loop
        self.fd = fd
        # only asyncio's own loops (selector_events) call a reader callback
        # again in the turn that wakes its task
        self.poll = None
        if isinstance(loop, asyncio.BaseEventLoop):
            self.poll = select.poll()
            self.poll.register(fd, select.POLLIN)
        self.fut = None             # the wait in progress
        self.watching = False       # _readable() is registered
        self.timer = None           # a pending call of _timeout()
        self.when = 0.0             # ... due then (loop time)

    def _readable(self):
        fut = self.fut
        if fut is None:
            self.loop.remove_reader(self.fd)
            self.watching = False
        elif self.poll is None or self.poll.poll(0):
            self.fut = None
            if not fut.done():
                fut.set_result(_READY)

    def _timeout(self):
        self.timer = None
        fut = self.fut
        if fut is not None:
            self.fut = None
            if not fut.done():
                fut.set_result(_TIMEOUT)

    def wait(self, fut, timeout):
        """Make ``fut`` the wait in progress: resolved with _READY when the
        socket is readable, _TIMEOUT after at most ``timeout`` seconds (a
        timer kept from an earlier wait may end it sooner)."""
        loop = self.loop
        self.fut = fut
        if not self.watching:
            loop.add_reader(self.fd, self._readable)
            self.watching = True
        if timeout <= 0:
            timeout = 0
        elif timeout < LOOP_RESOLUTION:
            timeout = LOOP_RESOLUTION
        when = loop.time() + timeout
        timer = self.timer
        if timer is None or self.when > when:
            if timer is not None:
                timer.cancel()
            self.timer = loop.call_at(when, self._timeout)
            self.when = when

    def close(self):
        """Unregister from the loop."""
        self.fut = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watching:
            self.watching = False
            if not self.loop.is_closed():
                self.loop.remove_reader(self.fd)


class AsyncReader:
    """A consumer of a logical replication slot, for asyncio.

    Takes the same arguments as `Reader` (see there): ``dsn``, ``slot``,
    ``plugin``, ``options``, ``create_slot``, ``temporary``, ``start_lsn``,
    ``status_interval``, ``binary``, ``decode``, ``type_registry``,
    ``recv_timeout``, ``reconnect``, ``confirm_keepalives``, ``snapshot``,
    ``tables``, ``snapshot_workers`` and libpq keywords. Use it as::

        async with AsyncReader(dsn, slot="s", plugin="pgoutput",
                               options={"publication_names": "p"}) as r:
            async for msg in r:
                await handle(msg.change)
                if isinstance(msg.change, pld.Commit):
                    await r.ack()

    or subclass it, override `event()` and ``await R(...).start()``.

    Leaving ``async with`` (normally, by an exception, by cancellation) ends
    the stream with CopyDone, confirms the acked position and nothing
    beyond it, and closes the connection: the slot is free at once, and the
    next reader receives every transaction not acked again.
    One task at a time may use a reader; `stop()` and `ack_nowait()` may be
    called from any task, and `stop()` from any thread.
    """

    # set by rules.configure(), as on Reader
    slot: str
    plugin: str
    options: Dict[str, Any]
    create_slot_if_missing: bool
    temporary: bool
    failover: bool
    two_phase: bool
    start_lsn: Optional[Union[int, str]]
    decode: bool
    type_registry: Any
    reconnect: Any
    reconnections: int
    wal_sender_timeout: Optional[float]
    _params: Dict[str, str]
    _recv_timeout_choice: Optional[float]

    def __init__(self, dsn: str = "", **kwargs: Any) -> None:
        self._core = _core.ReaderBase()
        snapshot = kwargs.pop("snapshot", False)
        tables = kwargs.pop("tables", None)
        snapshot_workers = kwargs.pop("snapshot_workers", 1)
        rules.configure(self, dsn, **kwargs)
        # Reader(snapshot=True): see snapshot.py; delivered by _next()
        self._snapshot = (_snapshot.InitialSnapshot(
            self, tables, snapshot_workers) if snapshot else None)
        self._snap_feed = None
        self._backfills = None      # snapshot.Backfills, see backfill()
        # the backfills' messages to deliver
        self._bf_out: "collections.deque[Any]" = collections.deque()
        self._stop_flag = False
        self._iter = None           # the AsyncIter of the current stream
        self._loop = None
        self._waiter = None
        self._watch = None          # _Watch: the stream's waits
        self._busy = None           # what runs on the connection now
        self._idle = None           # asyncio.Event: nothing runs
        self._streamed = False      # this connection has run a stream
        self._streamed_once = False     # some connection has
        self._stream_started = False

    # -- settings kept in the C core --

    @property
    def status_interval(self):
        """Seconds between status updates to the server."""
        return self._core.status_interval

    @status_interval.setter
    def status_interval(self, value):
        self._core.status_interval = value

    @property
    def confirm_keepalives(self):
        """See `Reader`: confirm the keepalives' position once all is acked."""
        return self._core.confirm_keepalives

    @confirm_keepalives.setter
    def confirm_keepalives(self, value):
        self._core.confirm_keepalives = value

    @property
    def binary(self):
        """True: payloads are bytes; False: str."""
        return self._core.binary

    @binary.setter
    def binary(self, value):
        self._core.binary = value

    @property
    def closed(self):
        """True if the connection is closed."""
        return self._core.closed

    @property
    def copying(self):
        """True while the connection is in the replication stream."""
        return self._core.copying

    @property
    def flushed_lsn(self):
        """The acked position (int LSN): what the server may forget."""
        return self._core.flushed_lsn

    @property
    def received_lsn(self):
        """data_start of the last message delivered (int LSN)."""
        return self._core.received_lsn

    @property
    def server_wal_end(self):
        """The latest end of WAL the server reported (int LSN)."""
        return self._core.server_wal_end

    @property
    def server_version(self):
        """The server version as an int (150004 for 15.4)."""
        return self._core.server_version

    @property
    def backend_pid(self):
        """The PID of the walsender of the connection."""
        return self._core.backend_pid

    @property
    def dsn(self):
        """The connection string in use, with any password masked."""
        return conninfo.to_string(self._params)

    def __repr__(self):
        state = "streaming" if self._core.copying else (
            "closed" if self._core.closed else "connected")
        return "<%s slot=%r plugin=%r dsn=%r %s>" % (
            type(self).__name__, self.slot, self.plugin, self.dsn, state)

    def stats(self):
        """The reader's counters and gauges, as a `metrics.Stats` (see
        `Reader.stats`); cheap, safe from any task or thread."""
        from . import metrics
        return metrics.collect(self._core)._replace(
            reconnections=self.reconnections)

    # -- the hooks --

    async def event(self, msg: _core.Message) -> None:
        """Called by `start()` once per message, in WAL order (subclass
        style). It may await anything, call `ack()`/`ack_nowait()` and
        `stop()`. An exception ends the stream, closes the connection and
        propagates out of `start()`; nothing after the last ack is
        confirmed."""
        raise NotImplementedError(
            "subclass AsyncReader and override async event(msg), or "
            "iterate with 'async for msg in reader'")

    async def on_reconnect(self, attempt: int, error: BaseException,
                           delay: float) -> None:
        """Awaited before each reconnection attempt (with ``reconnect``):
        ``attempt`` counts from 1, ``error`` ended the connection, ``delay``
        is the wait before connecting. The default logs a warning; raise
        to give up (the exception propagates to the iterating task). A
        plain (not async) method is called too."""
        logger.warning("replication connection lost (%s); reconnecting in "
                       "%.2f s (attempt %d)", error, delay, attempt)

    # -- waiting on the socket --

    async def _wait(self, write=False, timeout=None, stoppable=False):
        """Wait until the socket is readable (writable), ``timeout``
        seconds pass or (``stoppable``) `stop()` is called; return _READY,
        _TIMEOUT or _WAKEUP."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        fd = self._core.fileno()
        fut = loop.create_future()
        if write:
            loop.add_writer(fd, _resolve, fut, _READY)
        else:
            self._unwatch()
            loop.add_reader(fd, _resolve, fut, _READY)
        handle = None
        if timeout is not None:
            if timeout <= 0:
                timeout = 0
            elif timeout < LOOP_RESOLUTION:
                timeout = LOOP_RESOLUTION
            handle = loop.call_later(timeout, _resolve, fut, _TIMEOUT)
        if stoppable:
            self._waiter = fut
            if self._stop_flag:
                _resolve(fut, _WAKEUP)
        try:
            return await fut
        finally:
            if stoppable:
                self._waiter = None
            if handle is not None:
                handle.cancel()
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    def _unwatch(self):
        """Take the stream's socket out of the loop (see `_Watch`)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()

    def _close_core(self):
        """Close the connection (after `_unwatch()`: its fd number is free
        once closed)."""
        self._unwatch()
        self._core.close()

    def __del__(self):
        try:
            self._unwatch()
        except Exception:
            pass

    async def _flush(self):
        while self._core._flush():
            await self._wait(write=True)

    def _begin(self, what):
        if self._busy is not None:
            raise InterfaceError(
                "the reader is busy (%s): one task at a time may use it"
                % self._busy)
        self._busy = what
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()

    def _end(self):
        self._busy = None
        if self._idle is not None:
            self._idle.set()

    # -- connection and commands --

    async def connect(self) -> None:
        """Open the replication connection if it is not open, without
        blocking the loop (``connect_timeout`` is honoured), and check that
        the server can do logical decoding."""
        if not self._core.closed:
            return
        keys = list(self._params)
        timeout = _connect_timeout(self._params)
        deadline = None if timeout is None else time.monotonic() + timeout
        core = self._core
        conn = core.connection
        try:
            conn.connect_start(keys, [self._params[k] for k in keys])
        except OperationalError as e:
            raise rules.connect_error(e) from None
        try:
            while True:
                try:
                    state = conn.connect_poll()
                except OperationalError as e:
                    raise rules.connect_error(e) from None
                if state == 0:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0 or (
                        await self._wait(state == 2, left) == _TIMEOUT):
                    raise ConnectionFailed(
                        "connection timeout expired (connect_timeout=%s)"
                        % self._params.get("connect_timeout"))
        except BaseException:
            self._close_core()
            raise
        self._streamed = False
        try:
            self.wal_sender_timeout = await rules.run_async(
                rules.check_server(core.server_version), self._command)
            await rules.run_async(rules.note_server(self), self._command)
        except BaseException:
            self._close_core()
            raise
        rules.log_connected(self._params, core.server_version,
                            core.backend_pid)

    async def _command(self, command, copy=False):
        """Run one command on the open connection, without blocking (copy:
        START_REPLICATION, which hands the connection to the stream)."""
        core = self._core
        conn = core.connection
        if copy:
            pending = core._start_copy_send(command)
            poll = core._start_copy_poll
        else:
            pending = conn.send_query(command)
            poll = conn.poll_result
        try:
            if pending:
                while conn.flush():
                    await self._wait(write=True)
            while True:
                await self._wait()
                try:
                    result = poll()
                except Exception:
                    pending = None      # the command is over (or closed)
                    raise
                if result is not None:
                    return result
        except BaseException:
            if pending is not None:
                # interrupted in the middle (cancelled, the connection
                # broken): the state is unknown, close rather than reuse
                self._close_core()
            raise

    async def execute(self, command: str) -> Tuple[
            Tuple[str, ...], List[Tuple[Optional[str], ...]]]:
        """Run a replication command or an SQL statement (connecting first
        if needed); return ``(column names, rows)``, rows being tuples of
        str or None. Not while a stream is open."""
        return await self._run_steps(_one(command))

    async def _run_steps(self, steps, what="a command"):
        self._begin(what)
        try:
            if self._core.copying:
                steps.close()
                raise InterfaceError(
                    "cannot run a command while the stream is open: end "
                    "the iteration (stop()) first")
            await self.connect()
            return await rules.run_async(steps, self._command)
        finally:
            self._end()

    async def identify_system(self) -> rules.SystemInfo:
        """IDENTIFY_SYSTEM: the server's system id, timeline, current WAL
        position and database, as a `SystemInfo`."""
        return await self._run_steps(rules.identify_system())

    async def slot_status(self) -> Optional[Dict[str, Any]]:
        """The slot's row of pg_replication_slots as a dict, or None (see
        `Reader.slot_status`)."""
        return await self._run_steps(rules.slot_status(self.slot))

    async def create_slot(self, *, temporary: Optional[bool] = None,
                          snapshot: str = "export",
                          failover: Optional[bool] = None,
                          two_phase: Optional[bool] = None) -> rules.SlotInfo:
        """Create the slot with this reader's plugin; return a `SlotInfo`
        (see `Reader.create_slot`). Raises `SlotExists` if it exists."""
        await self._connected()
        if temporary is None:
            temporary = self.temporary
        return await self._run_steps(rules.create_slot(
            self.slot, self.plugin, temporary, snapshot,
            self._core.server_version,
            self.failover if failover is None else bool(failover),
            self.two_phase if two_phase is None else bool(two_phase)))

    async def backfill(self, table: Union[str, Tuple[str, str]],
                       chunk_size: int = 10000) -> List[Tuple[str, str]]:
        """Read ``table`` again while the stream runs, in primary-key
        chunks bracketed by watermarks (see `Reader.backfill` and
        docs/snapshots.md); its rows come as `SnapshotRow` (backfill=True)
        between `SnapshotStart` and `SnapshotEnd`. Before iterating or
        while iterating. The checks and the chunks' reads run in a thread:
        the event loop is not blocked."""
        bf = self._backfills_object()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, bf.add, table, chunk_size)

    async def resume_backfills(self) -> List[Tuple[str, bool]]:
        """After a restart: see `Reader.resume_backfills`."""
        bf = self._backfills_object()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, bf.resume)

    def _backfills_object(self):
        if self._backfills is None:
            self._backfills = _snapshot.Backfills(self)
        if self._iter is not None:
            self._iter.enabled = 0      # every message through _next()
        return self._backfills

    async def _bf_process(self, msg):
        """Hand a stream message to the backfills; start a chunk if due."""
        bf = self._backfills
        ch = msg.change
        loop = asyncio.get_running_loop()
        if isinstance(ch, _core.LogicalMessage) \
                and ch.prefix == _snapshot.WATERMARK_PREFIX:
            await loop.run_in_executor(None, bf.process, msg,
                                       self._bf_out.append)
        else:
            bf.process(msg, self._bf_out.append)
        if bf.needs_run():
            await loop.run_in_executor(None, bf._maybe_run)

    async def drop_slot(self, *, wait: bool = False,
                        missing_ok: bool = False) -> None:
        """Drop the slot. Raises `SlotNotFound` if it does not exist (unless
        ``missing_ok``) and `SlotInUse` if it is active (unless ``wait``)."""
        await self._run_steps(rules.drop_slot(self.slot, wait, missing_ok))

    async def _connected(self):
        if self._core.closed:
            await self._run_steps(_nothing())

    # -- the stream --

    def __aiter__(self) -> AsyncIterator[_core.Message]:
        """``async for msg in reader``: stream until `stop()`."""
        return _Stream(self, None).it

    def stream(self, *, until_lsn: Optional[Union[int, str]] = None
               ) -> AsyncIterable[_core.Message]:
        """An async iterator over the stream; with ``until_lsn`` (int or
        'X/Y') it ends once everything up to that position was delivered,
        else at `stop()`."""
        if until_lsn is not None:
            until_lsn = commands.lsn_int(until_lsn)
        return _Stream(self, until_lsn)

    def drain(self) -> AsyncIterable[_core.Message]:
        """An async iterator over what the slot holds now: it ends at the
        server's WAL position when the iteration starts (like
        ``pg_recvlogical --endpos``)."""
        return _Stream(self, _DRAIN)

    async def start(self, *,
                    until_lsn: Optional[Union[int, str]] = None) -> None:
        """Subclass style: await `event()` for every message until `stop()`
        (or until ``until_lsn``). Returns with every ack sent; an exception
        (from `event()` or the connection) closes the connection and
        propagates."""
        try:
            async for msg in self.stream(until_lsn=until_lsn):
                await self.event(msg)
        except BaseException:
            await self._abort()
            raise

    def stop(self) -> None:
        """Ask the iteration to end: the next step ends the stream (CopyDone,
        acks sent) and the iterator finishes. Safe from any task and from
        any thread (and a signal handler)."""
        self._stop_flag = True
        it = self._iter
        if it is not None:
            it.stopped = 1
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake()
        else:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:       # the loop closed meanwhile
                pass

    def _wake(self):
        if self._waiter is not None:
            _resolve(self._waiter, _WAKEUP)

    def ack_nowait(self, lsn: Optional[Union[int, str]] = None) -> None:
        """Confirm everything up to ``lsn`` (default: the last message
        delivered), without awaiting: sent with the next status update, at
        the latest when the stream ends. Same rules as `Reader.ack`: never
        backwards, never past what was delivered, only while streaming
        (during the initial snapshot: allowed, confirms nothing)."""
        if self._snap_feed is not None:
            return self._snapshot.ack(lsn)
        self._core.ack(lsn)

    async def ack(self, lsn: Optional[Union[int, str]] = None) -> None:
        """Confirm everything up to ``lsn`` (default: the last message
        delivered) and return once the status update is sent."""
        if self._snap_feed is not None:
            return self._snapshot.ack(lsn)
        self._core.ack(lsn)
        self._core.send_feedback()
        await self._flush()

    async def close(self) -> None:
        """End the stream (CopyDone, acks sent) and close the connection; a
        temporary slot disappears with it. From another task while one
        iterates: stop it and wait until it has ended."""
        self.stop()
        if self._busy is not None and self._idle is not None:
            await self._idle.wait()
        if self._snap_feed is not None:
            self._snap_feed.cancel()
            self._snap_feed = None
        try:
            if self._core.copying and not self._core.closed:
                await self._end_stream()
        finally:
            self._close_core()
            rules.close_decoder(self._core.decoder)

    async def _abort(self):
        if self._snap_feed is not None:
            self._snap_feed.cancel()
            self._snap_feed = None
        try:
            if self._core.copying and not self._core.closed:
                await self._end_stream()
        except BaseException:
            pass
        finally:
            self._close_core()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        try:
            await self.close()
        except BaseException:
            self._close_core()
            if exc[0] is None:
                raise

    async def _open_stream(self, until_lsn):
        """Connect if needed and enter the stream."""
        core = self._core
        self._stream_started = False
        if self._streamed and not core.closed:
            if self.temporary:
                raise InterfaceError(
                    "a temporary slot streams once: it disappears with "
                    "the connection that a new stream needs")
            self._close_core()
        await self.connect()
        server_version = core.server_version
        if self.create_slot_if_missing or self.temporary:
            info = await rules.run_async(
                rules.ensure_slot(self, server_version, self._snapshot),
                self._command)
            if info is not None and self._snapshot is not None:
                # the snapshot's rows first (_next()), then the stream
                self._snap_feed = _snapshot.AsyncFeed(self._snapshot, self,
                                                      info)
                return
        await self._start_copy(until_lsn)

    async def _start_copy(self, until_lsn):
        """Set the stream up and START_REPLICATION."""
        core = self._core
        server_version = core.server_version
        core.keepalive_interval, core.recv_timeout = rules.intervals(
            self.wal_sender_timeout, self.status_interval,
            self._recv_timeout_choice)
        core.decoder, options = await rules.run_async(
            rules.stream_setup(self, server_version), self._command)
        core.until_lsn = until_lsn or 0
        core.backlog_end = await rules.run_async(rules.backlog_end(),
                                                 self._command)
        await self._command(
            rules.start_command(self, options, core.flushed_lsn), copy=True)
        self._streamed = self._streamed_once = self._stream_started = True
        core._set_batching(False)       # the batching rule starts afresh
        core._liveness_reset()
        core._keepalive(True)
        bf = self._backfills
        if bf is not None:      # the first chunk; its watermarks drive on
            bf.stream_reset()
            if bf.needs_run():
                await asyncio.get_running_loop().run_in_executor(
                    None, bf._maybe_run)

    async def _end_stream(self):
        """CopyDone, wait for the server to end the stream (bounded)."""
        core = self._core
        self._unwatch()
        try:
            core._set_batching(False)
            if core._end_copy_start():
                await self._flush()
            deadline = time.monotonic() + END_COPY_TIMEOUT
            while not core._end_copy_poll():
                left = deadline - time.monotonic()
                if left <= 0 or await self._wait(False, left) == _TIMEOUT:
                    self._close_core()
                    return
        except BaseException:
            self._close_core()
            raise

    async def _next(self, stream, first=_NOTHING):
        """The next message of ``stream``, or None when it has ended.
        ``first``: what the fast path's read_message() gave (or raised)."""
        core = self._core
        retry = stream.retry
        while True:
            try:
                if self._bf_out:
                    return self._bf_out.popleft()
                if first is not _NOTHING:
                    msg, first = first, _NOTHING
                    if isinstance(msg, BaseException):
                        raise msg
                elif self._snap_feed is not None:
                    feed = self._snap_feed
                    if self._stop_flag:         # the snapshot is left
                        feed.cancel()           # incomplete (as Reader)
                        self._snap_feed = None
                        return None
                    try:
                        msg = await feed.next()
                    except BaseException:
                        feed.cancel()
                        self._snap_feed = None
                        raise
                    if msg is not None:
                        return msg
                    self._snap_feed = None
                    await self._start_copy(stream.until_lsn)
                    continue
                elif not core.copying:
                    if self._stop_flag or stream.ended:
                        return None
                    await self._open_stream(stream.until_lsn)
                    continue
                else:
                    msg = core.read_message()
                if msg is None:
                    if self._stop_flag:
                        await self._end_stream()
                        return None
                    await self._idle_wait(stream)
                    continue
                if msg is False:            # until_lsn reached
                    stream.ended = True
                    await self._end_stream()
                    return None
                now = time.monotonic()
                if now - stream.it.yielded >= YIELD_EVERY:
                    # a backlog never needs the loop to wait: let the
                    # other tasks run now and then all the same
                    await asyncio.sleep(0)
                    stream.it.yielded = now
                if self._backfills is not None:
                    await self._bf_process(msg)
                    continue            # delivered from _bf_out
                return msg
            except rules.RETRYABLE as e:
                delay = retry.next_delay(
                    e, streamed_once=self._streamed_once,
                    stream_started=self._stream_started,
                    stopping=self._stop_flag)
                self._close_core()
                if delay is None:
                    raise
                self.reconnections += 1
                hook = self.on_reconnect(retry.attempt, e, delay)
                if inspect.isawaitable(hook):
                    await hook
                if await self._sleep(delay):
                    return None
            except Exception:
                # as Reader: the acked position is sent, the connection
                # closed (the slot released), the error raised
                self._close_core()
                raise
            # cancelled (or Ctrl-C) while waiting: the stream is intact;
            # `async with` or close() ends it with CopyDone

    async def _sleep(self, delay):
        """Sleep, cut short by stop(); True if stopped."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut = loop.create_future()
        handle = loop.call_later(delay, _resolve, fut, _TIMEOUT)
        self._waiter = fut
        try:
            if self._stop_flag:
                return True
            return await fut == _WAKEUP
        finally:
            self._waiter = None
            handle.cancel()

    async def _idle_wait(self, stream):
        """Nothing to read: wait for the socket, by the C stream loop's
        rules (reader_type.c), applied by the core for both loops: the
        server's liveness (at half of recv_timeout of silence ask for a
        reply, after all of it ConnectionLost) and batching."""
        core = self._core
        wait = core.status_interval
        bound = core._liveness_before()
        if bound >= 0:
            wait = min(wait, bound)
        # a backlog batches its wake-ups: the C stream loop's rule
        # (reader_type.c), applied by the core for both loops
        cap, pause = core._batch_before_wait()
        if cap is not None:
            wait = min(wait, cap)
            if pause and wait > 0:
                # a Unix socket: let the backlog accumulate
                await asyncio.sleep(max(pause, LOOP_RESOLUTION))
        # as _wait(stoppable=True), through the connection's _Watch
        loop = asyncio.get_running_loop()
        fd = core.fileno()
        watch = self._watch
        if watch is None or watch.loop is not loop or watch.fd != fd:
            self._unwatch()
            self._loop = loop
            watch = self._watch = _Watch(loop, fd)
        ready = False
        if not self._stop_flag:
            fut = self._waiter = loop.create_future()
            watch.wait(fut, wait)
            try:
                ready = await fut is _READY
            finally:
                self._waiter = None
                watch.fut = None
        core._liveness_after(ready)
        stream.it.yielded = time.monotonic()


_DRAIN = object()


class _Stream:
    """A stream of `AsyncReader`: ``async for`` iterates over its
    `_core.AsyncIter`, which delivers a message already read without any
    Python code and calls `_slow()` for everything else."""

    def __init__(self, reader, until_lsn):
        self.reader = reader
        self.until_lsn = until_lsn
        self.retry = rules.Retry(reader.reconnect)
        self.started = False
        self.ended = False
        self.it = _core.AsyncIter(reader._core, self._slow, YIELD_EVERY)

    def __aiter__(self):
        return self.it

    async def _slow(self, first=_NOTHING):
        reader = self.reader
        it = self.it
        it.enabled = 0
        if self.ended and not reader._core.copying:
            raise StopAsyncIteration
        reader._begin("iterating")
        try:
            if not self.started:
                self.started = True
                reader._stop_flag = False
                reader._iter = it
                it.stopped = 0
                if self.until_lsn is _DRAIN or (
                        reader._core.copying
                        and reader._core.until_lsn != (self.until_lsn or 0)):
                    # a new end: the open stream ends first
                    if reader._core.copying:
                        await reader._end_stream()
                    if self.until_lsn is _DRAIN:
                        reader._end()
                        info = await reader.identify_system()
                        reader._begin("iterating")
                        self.until_lsn = info.xlogpos
            msg = await reader._next(self, first)
        finally:
            reader._end()
        if msg is None:
            self.ended = True
            raise StopAsyncIteration
        it.enabled = reader._backfills is None   # see backfill()
        return msg


def _one(command):
    return (yield command)


def _nothing():
    return None
    yield


def _connect_timeout(params):
    """libpq's connect_timeout (seconds, at least 2), or None."""
    value = params.get("connect_timeout")
    if value is None:
        return None
    try:
        seconds = int(value)
    except ValueError:
        raise InterfaceError("connect_timeout must be an integer, got %r"
                             % value) from None
    if seconds <= 0:
        return None
    return max(seconds, 2)


__all__ = ["AsyncReader"]
