"""The Reader: subclass it, override `event()`, call `ack()`, `start()`.

The C base (`pylogicaldecoding._core.ReaderBase`) runs the stream loop on
its `connection` (a C `Connection`: connect, commands); this layer merges
the connection parameters, manages the slot, builds the command text and
gives the API its shape.
"""

import logging
import threading

from . import _core
from . import conninfo
from . import commands
from . import metrics
from . import rules
from . import snapshot as _snapshot
from .errors import CommandInterrupted, InterfaceError, OperationalError
from .rules import (                    # noqa: F401 (public names)
    BINARY_PLUGINS, MIN_SERVER_VERSION, Reconnect, SlotInfo, SystemInfo)

logger = logging.getLogger("pylogicaldecoding")


class Reader(_core.ReaderBase):
    """A consumer of a logical replication slot.

    Subclass it and override `event()`; `start()` connects, creates the slot
    if needed and calls `event()` with every change, in WAL order, until
    `stop()`. Call `ack()` once a change is safely processed: the server then
    forgets it. After a restart, every transaction not covered by an ack is
    sent again (at least once delivery, whole transactions).

    :param dsn: a libpq conninfo string or URI ("" uses the PG* variables).
    :param slot: the replication slot name (lower-case letters, digits, _).
    :param plugin: the output plugin of the slot.
    :param options: a mapping of plugin options, sent with START_REPLICATION
        (bool values become 'true'/'false', None sends the bare name).
    :param create_slot: create the slot if it does not exist (and check that
        an existing one uses `plugin`); if False a missing slot raises
        `SlotNotFound`.
    :param temporary: create a temporary slot, dropped with the connection.
    :param start_lsn: where to start (int or 'X/Y'); default: where the slot
        left off (its confirmed_flush_lsn).
    :param status_interval: seconds between status updates to the server.
    :param binary: payloads as bytes; default: True for pgoutput only.
    :param decode: decode each payload into a typed change, set as
        ``msg.change`` (`Insert`, `Update`, `Begin`...) for test_decoding,
        pgoutput and wal2json; the options decoding needs are added (see
        `decoders.default_options`). False: ``msg.change`` is None.
    :param recv_timeout: seconds of silence from the server after which the
        connection is presumed dead and `ConnectionLost` raised (then
        ``reconnect`` applies); at half of it the Reader asks the server for
        a reply. Default: the server's wal_sender_timeout, at least 10 s;
        0 turns it off.
    :param type_registry: the `types.TypeRegistry` converting values
        (default: `types.registry`, which you may extend).
    :param reconnect: True, or a `Reconnect` policy: when the connection is
        lost (server restart, walsender terminated, network), connect again
        and resume after the last acked position, calling `on_reconnect()`
        before each attempt. False: raise `ConnectionLost`.
    :param confirm_keepalives: when every message delivered so far has been
        acked, also confirm the position the server reports in its
        keepalives (see README, "Acknowledgements"): a quiet slot then
        releases WAL. It never skips a transaction not acked.
    :param snapshot: when the Reader creates the slot, first deliver the
        rows of ``tables`` as they were at the slot's consistent point, as
        `SnapshotRow` changes between `SnapshotStart`/`SnapshotEnd`, then
        stream from that point (see docs/snapshots.md). On a slot that
        exists already: `SnapshotError`.
    :param tables: the tables of the snapshot ('schema.table' or (schema,
        table)); default: the publication's tables (pgoutput only).
    :param snapshot_workers: connections copying the snapshot in parallel.
    :param failover: create the slot as a failover slot (PostgreSQL 17+):
        a standby with ``sync_replication_slots`` keeps a synced copy, from
        which the Reader resumes after the standby's promotion (connect with
        a multi-host conninfo, ``target_session_attrs=read-write``, and
        ``reconnect``); it logs a warning when it moved to another server.
    :param two_phase: create the slot with two-phase decoding (PostgreSQL
        15+; prepared transactions are decoded at PREPARE). PostgreSQL 17
        cannot make a slot both failover and two-phase.
    :param conninfo: libpq keywords (host, port, dbname, user, password,
        connect_timeout, sslmode...) merged over `dsn`.
    """

    def __init__(self, dsn="", *, slot, plugin="test_decoding", options=None,
                 create_slot=True, temporary=False, start_lsn=None,
                 status_interval=10.0, binary=None, confirm_keepalives=True,
                 reconnect=False, decode=True, type_registry=None,
                 recv_timeout=None, snapshot=False, tables=None,
                 snapshot_workers=1, failover=False, two_phase=False,
                 **conninfo_kwargs):
        rules.configure(
            self, dsn, slot=slot, plugin=plugin, options=options,
            create_slot=create_slot, temporary=temporary,
            start_lsn=start_lsn, status_interval=status_interval,
            binary=binary, confirm_keepalives=confirm_keepalives,
            reconnect=reconnect, decode=decode, type_registry=type_registry,
            recv_timeout=recv_timeout, failover=failover,
            two_phase=two_phase, **conninfo_kwargs)
        self._stop_requested = threading.Event()
        self._stream_thread = None
        self._stream_done = threading.Event()
        self._stream_done.set()
        self._close_requested = False
        self._streamed = False      # this connection has run a stream
        self._streamed_once = False     # some connection has
        self._stream_started = False
        self._snapshot = (_snapshot.InitialSnapshot(
            self, tables, snapshot_workers) if snapshot else None)
        self._backfills = None

    # -- the hook --

    def event(self, msg):
        """Called once per message of the stream, in WAL order.

        ``msg`` is a `StreamMessage`: ``msg.payload`` (str for text plugins,
        bytes for pgoutput), ``msg.change`` (the typed change, with
        ``decode=True``), ``msg.data_start`` (its LSN), ``msg.wal_end``,
        ``msg.send_time``. It runs in the thread that called `start()`; it
        may call `ack()`, `stop()` and `close()`. An exception raised here
        ends the stream, closes the connection and propagates out of
        `start()`; nothing after the last `ack()` is confirmed.
        """
        raise NotImplementedError(
            "subclass Reader and override event(msg) to consume the stream")

    def on_reconnect(self, attempt, error, delay):
        """Called before each reconnection attempt (with ``reconnect``).

        ``attempt`` counts from 1, ``error`` is what ended the connection,
        ``delay`` the seconds waited before connecting. The default logs a
        warning on the "pylogicaldecoding" logger. Raise to give up: the
        exception propagates out of `start()`.
        """
        logger.warning("replication connection lost (%s); reconnecting in "
                       "%.2f s (attempt %d)", error, delay, attempt)

    def backfill(self, table, chunk_size=10000):
        """Read ``table`` ('schema.table' or (schema, table)) again while
        the stream runs, in primary-key chunks of ``chunk_size`` rows
        bracketed by watermarks; its rows reach `event()` as `SnapshotRow`
        (backfill=True) between `SnapshotStart` and `SnapshotEnd`,
        interleaved with the live changes (see docs/snapshots.md).

        Call it before `start()` or from `event()`. The table is checked
        at once (it exists, has a primary key, is in the publication):
        `SnapshotError` otherwise. An unfinished backfill of the table (a
        consumer killed meanwhile) resumes after its last completed chunk.
        Returns the (schema, table) pairs scheduled (a partitioned table's
        partitions, when the stream names them).
        """
        if self._backfills is None:
            self._backfills = _snapshot.Backfills(self)
        return self._backfills.add(table, chunk_size)

    def resume_backfills(self):
        """After a restart, before `start()`: resume this slot's unfinished
        backfills after their last completed chunk, and honour the
        watermarks the stream sends again for chunks whose rows may not
        have reached this consumer (finished backfills included: call it
        whenever the slot had backfills). Returns the progress rows as
        (table name, done) pairs."""
        if self._backfills is None:
            self._backfills = _snapshot.Backfills(self)
        return self._backfills.resume()

    # -- connection --

    @property
    def dsn(self):
        """The connection string in use, with any password masked."""
        return conninfo.to_string(self._params)

    def connect(self):
        """Open the replication connection if it is not open.

        Check that the server can do logical decoding (PostgreSQL 10 or
        later, ``wal_level=logical``) and read its ``wal_sender_timeout``.
        """
        if not self.closed:
            return
        keys = list(self._params)
        try:
            self.connection.connect(keys, [self._params[k] for k in keys])
        except OperationalError as e:
            raise rules.connect_error(e) from None
        self._streamed = False
        try:
            self.wal_sender_timeout = rules.run(
                rules.check_server(self.server_version), self.execute)
            rules.run(rules.note_server(self), self.execute)
        except BaseException:
            super().close()
            raise
        rules.log_connected(self._params, self.server_version,
                            self.backend_pid)

    def close(self):
        """Close the connection; a temporary slot disappears with it.

        From `event()` (or a signal handler during `start()`), the stream is
        stopped and the connection closed before `start()` returns. From
        another thread, wait for the stream to end first. The acked position
        is sent to the server before the connection closes. A command
        waiting for the server's answer in another thread (or under this
        signal handler) ends at once with `CommandInterrupted` and closes
        the connection as it returns.
        """
        if self.streaming:
            self._close_requested = True
            self.stop()
            if self._stream_thread == threading.get_ident():
                return
        super().close()
        rules.close_decoder(self.decoder)

    def stop(self, timeout=None):
        """Ask `start()` to return after the current `event()`.

        Safe from `event()`, from a signal handler and from another thread.
        From another thread it waits (up to ``timeout`` seconds, None: no
        limit) until the stream has ended and the acks reached the server;
        it returns True if the stream has ended. A command waiting for the
        server's answer (`execute()`, or one of `start()`'s before it
        streams) ends at once: `execute()` raises `CommandInterrupted`,
        `start()` returns; the connection is closed.
        """
        self._stop_requested.set()
        super().stop()
        thread = self._stream_thread
        if thread is not None and thread != threading.get_ident():
            return self._stream_done.wait(timeout)
        return self._stream_thread is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "streaming" if self.streaming else (
            "closed" if self.closed else "connected")
        return "<%s slot=%r plugin=%r dsn=%r %s>" % (
            type(self).__name__, self.slot, self.plugin, self.dsn, state)

    # -- replication commands --

    def execute(self, command, timeout=None):
        """Run a replication command or an SQL statement (connecting first
        if needed); return ``(column names, rows)``, rows being tuples of
        str or None. Not while the stream runs. ``timeout``: seconds to
        wait for the answer (None: as long as it takes); past it the
        connection is closed and ConnectionLost raised. `stop()` or
        `close()` (from another thread or a signal handler) end the wait
        at once with `CommandInterrupted`, the connection closed."""
        self.connect()
        return super().execute(command, timeout)

    def identify_system(self):
        """Run IDENTIFY_SYSTEM: the server's system id, timeline, current
        WAL position and database, as a `SystemInfo`."""
        self.connect()
        return rules.run(rules.identify_system(), self.execute)

    def slot_status(self):
        """The slot's row of pg_replication_slots as a dict, or None.

        Keys: slot_name, plugin, slot_type, database, temporary, active,
        active_pid, confirmed_flush_lsn, restart_lsn (LSNs as ints), and
        where the server has them wal_status, safe_wal_size (13+),
        two_phase (14+), conflicting (16+), invalidation_reason, failover,
        synced, inactive_since (17+); lag_bytes and retained_bytes (see
        `admin.list_slots`).
        """
        self.connect()
        return rules.run(rules.slot_status(self.slot), self.execute)

    def create_slot(self, *, temporary=None, snapshot="export",
                    failover=None, two_phase=None):
        """Create the slot with this Reader's plugin; return a `SlotInfo`.

        ``temporary`` defaults to the Reader's setting. ``snapshot`` is
        'export' (the snapshot name is returned, usable until the next
        command on this connection), 'use' (inside a transaction opened
        with ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` on this
        connection: PostgreSQL 18 requires READ ONLY) or 'nothing'.
        ``failover`` and ``two_phase`` default to the Reader's settings.
        Raises `SlotExists` if the slot exists, `NotSupportedError` if the
        server cannot make such a slot (failover before 17, two-phase
        before 15, both at once on 17).
        """
        self.connect()
        if temporary is None:
            temporary = self.temporary
        return rules.run(rules.create_slot(
            self.slot, self.plugin, temporary, snapshot,
            self.server_version,
            self.failover if failover is None else bool(failover),
            self.two_phase if two_phase is None else bool(two_phase)),
            self.execute)

    def drop_slot(self, *, wait=False, missing_ok=False):
        """Drop the slot. Raises `SlotNotFound` if it does not exist (unless
        ``missing_ok``) and `SlotInUse` if it is active (unless ``wait``:
        then wait until it is released)."""
        self.connect()
        rules.run(rules.drop_slot(self.slot, wait, missing_ok), self.execute)

    def _ensure_slot(self):
        info = rules.run(rules.ensure_slot(
            self, self.server_version, self._snapshot), self.execute)
        if info is not None and self._snapshot is not None:
            self._snapshot.run(self, info)

    # -- streaming --

    def _configure_intervals(self):
        self.keepalive_interval, self.recv_timeout = rules.intervals(
            self.wal_sender_timeout, self.status_interval,
            self._recv_timeout_choice)

    def start(self, *, until_lsn=None):
        """Stream the slot, calling `event()`, until `stop()` is called.

        Connect (if needed), create the slot (if asked), start streaming at
        ``start_lsn`` (default: where the slot left off) and deliver every
        message to `event()`. Returns normally after `stop()`, with every
        ack sent to the server. With ``until_lsn`` (int or 'X/Y'), also
        return once every change up to that position was delivered.

        Raises `ConnectionLost` if the connection drops; any exception from
        `event()` propagates unchanged, after the connection is closed.
        """
        if self.streaming:
            raise InterfaceError("the stream is already running")
        self._close_requested = False
        self._stop_requested.clear()
        self._stream_thread = threading.get_ident()
        self._stream_done.clear()
        try:
            retry = rules.Retry(self.reconnect)
            while True:
                try:
                    self._stream_once(until_lsn)
                    if self._backfills is not None \
                            and self._backfills.restart:
                        # backfill() from event(): stream again, wrapped
                        self._backfills.restart = False
                        self._stop_requested.clear()
                        continue
                    self._log_end(until_lsn)
                    return
                except CommandInterrupted:
                    if not self._stop_requested.is_set():
                        raise       # close() from elsewhere
                    # stop() while a command of the set-up waited
                    self._log_end(None)
                    return
                except rules.RETRYABLE as e:
                    delay = retry.next_delay(
                        e, streamed_once=self._streamed_once,
                        stream_started=self._stream_started,
                        stopping=self._stop_requested.is_set())
                    if delay is None:
                        raise
                    self.reconnections += 1
                    self.on_reconnect(retry.attempt, e, delay)
                    if not self.closed:
                        super().close()
                    if self._stop_requested.wait(delay):
                        self._log_end(None)
                        return
        except BaseException as e:
            level = logging.INFO if isinstance(
                e, (KeyboardInterrupt, SystemExit)) else logging.WARNING
            logger.log(level, "stream of slot %r ended by %s: %s", self.slot,
                       type(e).__name__, e, extra={"pld_event": "stream_end"})
            raise
        finally:
            self._stream_thread = None
            self._stream_done.set()
            if self._close_requested:
                self._close_requested = False
                super().close()
                rules.close_decoder(self.decoder)

    def _log_end(self, until_lsn):
        if self._stop_requested.is_set():
            why = "stop() was called"
        elif until_lsn is not None:
            why = "every change up to %s was delivered" % commands.lsn_text(
                until_lsn)
        else:
            why = "the server ended it"
        logger.info("stream of slot %r ended: %s (acked up to %s)", self.slot,
                    why, _core.format_lsn(self.flushed_lsn),
                    extra={"pld_event": "stream_end"})

    def stats(self):
        """The Reader's counters and gauges, as a `metrics.Stats`:
        messages, bytes, transactions, acks, reconnections and status
        updates counted so far; the received, acked (flushed) and server
        WAL positions; the lag in bytes; the last commit's time and age in
        seconds. Cheap, and safe from any thread while the stream runs
        (e.g. a metrics endpoint). See `pylogicaldecoding.metrics`."""
        return metrics.collect(self)

    def drain(self):
        """Deliver what the slot holds now, then return (a batch run).

        Like ``pg_recvlogical --endpos``: the end is the server's WAL
        position when `drain()` is called; changes committed later wait
        for the next run.
        """
        self.start(until_lsn=self.identify_system().xlogpos)

    def _stream_once(self, until_lsn):
        """Connect if needed and run one stream until it ends."""
        self._stream_started = False
        if self._streamed and not self.closed:
            # A walsender that ended one logical stream ends the next
            # one at once (PostgreSQL 15): each stream needs a new
            # connection. A temporary slot dies with its connection.
            if self.temporary:
                raise InterfaceError(
                    "a temporary slot streams once: it disappears with "
                    "the connection that a new stream needs")
            super().close()
        self.connect()
        if self.create_slot_if_missing or self.temporary:
            self._ensure_slot()
        self._configure_intervals()
        self.decoder, options = rules.run(
            rules.stream_setup(self, self.server_version), self.execute)
        self.backlog_end = rules.run(rules.backlog_end(), self.execute)
        self.start_copy(rules.start_command(self, options, self.flushed_lsn))
        self._streamed = self._streamed_once = self._stream_started = True
        if self._backfills is not None:
            self._backfills.stream_starting()
        if self._stop_requested.is_set():
            super().stop()      # asked while connecting
        self._stream(until_lsn=until_lsn)


__all__ = ["Reader", "Reconnect", "SlotInfo", "SystemInfo", "BINARY_PLUGINS"]
