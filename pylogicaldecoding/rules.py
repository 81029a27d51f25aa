"""The rules both front ends follow: `Reader` (blocking) and `AsyncReader`.

Nothing here does I/O. Settings are checked and defaulted by `configure()`;
what runs on the connection (the server checks, the slot set-up, the
decoder's catalog) is written once as a *steps* generator, which yields the
text of each command and receives its ``(names, rows)`` result (or has the
command's exception thrown into it). `run()` drives one with a blocking
``execute``, `run_async()` with an awaitable one: the decisions stay here,
the waiting is each front end's own. The reconnection policy is `Reconnect`
and `Retry`; the ack rules live in the C core, shared by both.
"""

import collections
import logging
import random

from . import _core
from . import admin
from . import commands
from . import conninfo
from . import decoders
from . import errors
from .errors import (
    ConnectionFailed, ConnectionLost, InterfaceError, OperationalError,
    SlotExists, SlotInUse, SlotMismatch, SlotNotFound, WalLevelError)

logger = logging.getLogger("pylogicaldecoding")

#: Plugins whose output is binary: their payloads are bytes, not str.
BINARY_PLUGINS = frozenset(["pgoutput"])

#: PostgreSQL 10 is the first that takes SQL on a replication connection.
MIN_SERVER_VERSION = 100000

#: Errors after which a stream may connect again (with ``reconnect``):
#: SlotInUse because a killed walsender may hold the slot a moment.
RETRYABLE = (ConnectionLost, ConnectionFailed, SlotInUse)

SlotInfo = collections.namedtuple(
    "SlotInfo", "slot_name consistent_point snapshot_name output_plugin")
SlotInfo.__doc__ = """What CREATE_REPLICATION_SLOT returned.

``consistent_point`` is an int LSN: the first change the slot will stream.
``snapshot_name`` (or None) can be used with ``SET TRANSACTION SNAPSHOT``
on another connection, to read the data as of that point, until the next
command on this Reader's connection."""

SystemInfo = collections.namedtuple(
    "SystemInfo", "systemid timeline xlogpos dbname")
SystemInfo.__doc__ = """What IDENTIFY_SYSTEM returned (xlogpos as an int LSN)."""


class Reconnect:
    """A reconnection policy: exponential backoff, with a limit.

    The n-th attempt (from 0) waits ``min(max_delay, initial_delay *
    factor ** n)`` seconds, give or take ``jitter`` (a fraction); after
    ``max_attempts`` failed attempts in a row (None: no limit) the error is
    raised. A stream that starts again resets the count.
    """

    def __init__(self, initial_delay=0.2, max_delay=10.0, factor=2.0,
                 max_attempts=None, jitter=0.1):
        if initial_delay < 0 or max_delay < 0 or factor < 1:
            raise ValueError("delays must be >= 0 and factor >= 1")
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.factor = factor
        self.max_attempts = max_attempts
        self.jitter = jitter

    def delay(self, attempt):
        """Seconds to wait before attempt ``attempt``, or None: give up."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        delay = min(self.max_delay, self.initial_delay * self.factor ** attempt)
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def __repr__(self):
        return ("Reconnect(initial_delay=%r, max_delay=%r, factor=%r, "
                "max_attempts=%r)" % (self.initial_delay, self.max_delay,
                                      self.factor, self.max_attempts))


class Retry:
    """The reconnection state of one run (one `start()` or one iteration).

    `next_delay()` decides, after a `RETRYABLE` error, whether to connect
    again and after how long; ``attempt`` is then the attempt number (from
    1) to pass to ``on_reconnect``.
    """

    def __init__(self, policy):
        self.policy = policy
        self.attempt = 0

    def next_delay(self, error, *, streamed_once, stream_started, stopping):
        """The seconds to wait before connecting again, or None: raise
        ``error``. A connection that never streamed is not retried unless it
        was lost (a wrong password stays wrong); a stream that had started
        resets the count of attempts."""
        if (self.policy is None or stopping
                or (not streamed_once
                    and not isinstance(error, ConnectionLost))):
            return None
        if stream_started:
            self.attempt = 0
        delay = self.policy.delay(self.attempt)
        if delay is None:
            return None
        self.attempt += 1
        return delay


def configure(reader, dsn="", *, slot, plugin="test_decoding", options=None,
              create_slot=True, temporary=False, start_lsn=None,
              status_interval=10.0, binary=None, confirm_keepalives=True,
              reconnect=False, decode=True, type_registry=None,
              recv_timeout=None, failover=False, two_phase=False,
              **conninfo_kwargs):
    """Check the constructor arguments shared by `Reader` and `AsyncReader`
    and set them on ``reader`` (see `Reader` for their meaning)."""
    reader.slot = commands.check_slot_name(slot)
    reader.plugin = commands.check_plugin_name(plugin)
    reader.options = dict(options) if options else {}
    commands.check_options(reader.options)     # refuse bad names early
    reader.create_slot_if_missing = bool(create_slot)
    reader.failover = bool(failover)
    reader.two_phase = bool(two_phase)
    reader.server_address = None
    reader.temporary = bool(temporary)
    reader.start_lsn = start_lsn
    if start_lsn is not None:
        commands.lsn_text(start_lsn)
    reader.status_interval = status_interval
    reader.confirm_keepalives = confirm_keepalives
    reader.decode = bool(decode)
    if recv_timeout is not None and recv_timeout < 0:
        raise ValueError("recv_timeout must be >= 0 (0: off)")
    reader._recv_timeout_choice = recv_timeout
    reader.type_registry = type_registry
    reader.binary = (plugin in BINARY_PLUGINS) if binary is None else binary
    if reconnect is True:
        reconnect = Reconnect()
    elif reconnect is False or reconnect is None:
        reconnect = None
    elif not hasattr(reconnect, "delay"):
        raise TypeError("reconnect must be a bool or a Reconnect policy")
    if reconnect is not None and temporary:
        raise InterfaceError(
            "a temporary slot cannot survive a reconnection: it "
            "disappears with the connection")
    reader.reconnect = reconnect
    reader._params = conninfo.make_params(dsn, **conninfo_kwargs)
    reader.reconnections = 0
    reader.wal_sender_timeout = None


def connect_error(error):
    """The error to raise for a failed connection attempt."""
    if type(error) is OperationalError:
        return ConnectionFailed(str(error))
    return error


def intervals(wal_sender_timeout, status_interval, recv_timeout_choice):
    """``(keepalive_interval, recv_timeout)`` for a stream."""
    timeout = wal_sender_timeout
    if timeout:
        # a status update at least three times per timeout, even while
        # the consumer runs: the server drops us after `timeout` of silence
        keepalive = max(0.05, min(status_interval, timeout / 3.0))
    else:
        keepalive = status_interval
    if recv_timeout_choice is not None:
        recv_timeout = recv_timeout_choice
    else:
        recv_timeout = max(timeout or 60.0, 10.0)
    return keepalive, recv_timeout


def start_position(start_lsn, flushed_lsn):
    """Where a stream starts: after what was acked, even if the server lost
    it (a crash before its checkpoint) or ``start_lsn`` is older."""
    return max(commands.lsn_int(start_lsn or 0), flushed_lsn)


# -- steps: generators yielding command text, receiving (names, rows) --

def run(steps, execute):
    """Drive ``steps`` with a blocking ``execute(command)``; return its
    result."""
    value = error = None
    while True:
        try:
            command = steps.throw(error) if error else steps.send(value)
        except StopIteration as stop:
            return stop.value
        try:
            value, error = execute(command), None
        except Exception as e:
            value, error = None, e


async def run_async(steps, execute):
    """Drive ``steps`` with an awaitable ``execute(command)``."""
    value = error = None
    while True:
        try:
            command = steps.throw(error) if error else steps.send(value)
        except StopIteration as stop:
            return stop.value
        try:
            value, error = await execute(command), None
        except Exception as e:
            value, error = None, e


def check_server(server_version):
    """After connecting: refuse what cannot decode; return the server's
    wal_sender_timeout in seconds."""
    if server_version < MIN_SERVER_VERSION:
        raise WalLevelError(
            "PostgreSQL %s is too old: logical decoding with this "
            "library needs PostgreSQL 10 or later" % server_version)
    _, rows = yield ("SELECT current_setting('wal_level'),"
                     " current_setting('wal_sender_timeout')")
    wal_level, timeout = rows[0]
    if wal_level != "logical":
        raise WalLevelError(
            "the server has wal_level=%s: logical decoding needs "
            "wal_level=logical in postgresql.conf (and a server "
            "restart)" % wal_level)
    return parse_ms(timeout) / 1000.0


def identify_system():
    """IDENTIFY_SYSTEM as a `SystemInfo`."""
    _, rows = yield "IDENTIFY_SYSTEM"
    systemid, timeline, xlogpos, dbname = rows[0]
    return SystemInfo(systemid, int(timeline), _core.parse_lsn(xlogpos),
                      dbname)


def backlog_end():
    """Before START_REPLICATION: the server's WAL position now, for the
    core's ``backlog_end``. What lies before it is a backlog the stream
    may batch its wake-ups for; what comes after is live (the stream
    cannot tell them apart by itself, see reader_type.c)."""
    info = yield from identify_system()
    return info.xlogpos


def slot_status(slot):
    """The slot's row of pg_replication_slots as a dict (see
    `admin.list_slots`: every column the server has), or None."""
    _, rows = yield admin.columns_query("pg_catalog.pg_replication_slots")
    have = {r[0] for r in rows}
    cols = [c for c in admin.SLOT_COLUMNS if c in have]
    _, rows = yield admin.slots_query(cols, slot)
    return admin.parse_slot_row(cols, rows[0]) if rows else None


def create_slot(slot, plugin, temporary, snapshot, server_version,
                failover=False, two_phase=False):
    """CREATE_REPLICATION_SLOT; a `SlotInfo`. Raises NotSupportedError
    for a failover or two-phase slot the server cannot make."""
    commands.check_slot_features(server_version, two_phase=two_phase,
                                 failover=failover)
    _, rows = yield commands.create_slot(
        slot, plugin, temporary=temporary, snapshot=snapshot,
        server_version=server_version, two_phase=two_phase,
        failover=failover)
    name, point, snapshot_name, plugin = rows[0]
    logger.info("created replication slot %r (plugin %s%s%s%s) at %s", name,
                plugin, ", temporary" if temporary else "",
                ", failover" if failover else "",
                ", two-phase" if two_phase else "", point)
    return SlotInfo(name, _core.parse_lsn(point), snapshot_name, plugin)


def drop_slot(slot, wait, missing_ok):
    """DROP_REPLICATION_SLOT, missing_ok: no error if it does not exist."""
    try:
        yield commands.drop_slot(slot, wait=wait)
    except SlotNotFound:
        if not missing_ok:
            raise
        return
    logger.info("dropped replication slot %r", slot)


def ensure_slot(reader, server_version, snapshot=None):
    """Before a stream: create the slot if asked and missing; check that an
    existing one is logical, in this database and with this plugin. With
    ``snapshot`` (an initial snapshot still to take, see snapshot.py) a new
    slot exports its snapshot, and an existing one is an error. Returns the
    `SlotInfo` of a slot it created, else None."""
    status = yield from slot_status(reader.slot)
    if status is None:
        if not reader.create_slot_if_missing:
            raise SlotNotFound(
                "replication slot %r does not exist (create_slot=False)"
                % reader.slot)
        try:
            return (yield from create_slot(
                reader.slot, reader.plugin, reader.temporary,
                "export" if snapshot is not None else "nothing",
                server_version, reader.failover, reader.two_phase))
        except SlotExists:
            status = yield from slot_status(reader.slot)  # created meanwhile
            if status is None:
                raise
    if snapshot is not None and not snapshot.done:
        raise snapshot.exists_error(reader.slot)
    invalid = admin.invalidation(status)
    if invalid is not None:
        raise errors.slot_invalidated(
            "replication slot %r is invalidated: %s" % (reader.slot, invalid[1]),
            reason=invalid[0], slot=reader.slot)
    _, rows = yield "SELECT current_database()"
    if status["slot_type"] != "logical":
        raise SlotMismatch("replication slot %r is a physical slot"
                           % reader.slot)
    if status["database"] != rows[0][0]:
        raise SlotMismatch(
            "replication slot %r belongs to database %r, not %r"
            % (reader.slot, status["database"], rows[0][0]))
    if status["plugin"] != reader.plugin:
        raise SlotMismatch(
            "replication slot %r uses plugin %r, not %r"
            % (reader.slot, status["plugin"], reader.plugin))
    return None


def stream_setup(reader, server_version):
    """The decoder (None without ``decode``) and the plugin options of a
    new stream. `decoders.make_decoder` reads what it needs from the
    server (user types, wal2json's columns) through a blocking
    ``execute``; here each query it makes is yielded instead, and it runs
    again with the answers until it needs no more."""
    options = reader.options
    if not reader.decode:
        return None, options
    options = decoders.default_options(reader.plugin, options,
                                       server_version)
    answers = {}
    # wal2json reads a changed table's columns again while streaming
    catalog = (decoders.CatalogConnection(reader._params)
               if reader.plugin == "wal2json" else None)

    def execute(sql):
        if sql not in answers:
            raise _NeedQuery(sql)
        return answers[sql]

    while True:
        try:
            # a fresh decoder per stream: pgoutput resends its relations
            decoder = decoders.make_decoder(
                reader.plugin, options, server_version,
                registry=reader.type_registry, execute=execute,
                catalog=catalog)
            return decoder, options
        except _NeedQuery as need:
            answers[need.sql] = yield need.sql


def close_decoder(decoder):
    """Close what a decoder holds open (wal2json's catalog connection);
    called when its Reader closes."""
    close = getattr(decoder, "close", None)
    if close is not None:
        close()


class _NeedQuery(BaseException):
    """Raised through `decoders.make_decoder` for a query not yet run
    (BaseException: nothing on the way may swallow it)."""

    def __init__(self, sql):
        super().__init__(sql)
        self.sql = sql


def start_command(reader, options, flushed_lsn):
    """The START_REPLICATION command of a stream (and its log line)."""
    lsn = start_position(reader.start_lsn, flushed_lsn)
    command = commands.start_replication(
        reader.slot, lsn, commands.check_options(options))
    logger.info("streaming slot %r from %s", reader.slot,
                _core.format_lsn(lsn) if lsn else "where it left off")
    return command


def note_server(reader):
    """After connecting: remember which server (address, port) the
    connection reached, as ``reader.server_address``; log a warning when it
    is another than the previous connection's (a multi-host conninfo after
    a failover)."""
    _, rows = yield ("SELECT pg_catalog.inet_server_addr()::text,"
                     " pg_catalog.inet_server_port()")
    where = tuple(rows[0])
    before, reader.server_address = reader.server_address, where
    if before is not None and where != before:
        logger.warning("moved to another server: slot %r now streams from "
                       "%s port %s (was %s port %s)", reader.slot,
                       where[0] or "a Unix socket", where[1],
                       before[0] or "a Unix socket", before[1])


def log_connected(params, server_version, backend_pid):
    """The log line of a new connection."""
    logger.info("connected to %s (PostgreSQL %d, walsender pid %d)",
                conninfo.describe(params), server_version, backend_pid)


def parse_ms(text):
    """A duration setting as SHOW prints it ('60s', '2500ms', '1min')."""
    units = [("ms", 1), ("min", 60000), ("s", 1000), ("h", 3600000),
             ("d", 86400000)]
    text = text.strip()
    for suffix, factor in units:
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * factor
    return float(text)
