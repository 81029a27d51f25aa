"""The ``pld`` command: stream a slot, watch slots, manage slots and
publications from the shell (also ``python -m pylogicaldecoding``).

This module only parses arguments and formats output; every action is a
call to the library (`Reader`, `admin`, `formats`, `metrics`).

Connection options are psql's: ``-d DBNAME`` (a database name, a conninfo
string or a URI), ``-h HOST``, ``-p PORT``, ``-U USER``, and libpq's PG*
variables (PGHOST, PGPASSWORD...). Exit status: 0 success or a clean stop
(SIGTERM, or Ctrl-C while streaming), 1 an error (one line on stderr,
``pld: error: ...``; ``--debug`` adds the traceback), 2 a usage error,
130 Ctrl-C elsewhere. No password is ever printed.

Run ``pld --help`` and ``pld COMMAND --help`` for the options.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback

from . import admin
from . import commands
from . import conninfo
from . import formats
from ._version import __version__
from .changes import (
    Begin, BeginPrepare, Commit, CommitPrepared, Message, Prepare,
    RollbackPrepared, SnapshotEnd, SnapshotRow, SnapshotStart, StreamAbort,
    StreamCommit, StreamPrepare)
from .errors import (
    ConnectionFailed, Error, SlotExists, SlotInUse, SlotNotFound,
    SnapshotError)
from .lsn import format_lsn, parse_lsn
from .reader import Reader

__all__ = ["main"]

logger = logging.getLogger("pylogicaldecoding")

#: Records after which everything received is safely written: the end of a
#: transaction (committed, prepared, or rolled back).
_TXN_ENDS = (Commit, StreamCommit, CommitPrepared, RollbackPrepared, Prepare,
             StreamPrepare, StreamAbort)
_TXN_STARTS = (Begin, BeginPrepare)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPT = 0, 1, 2, 130


class UsageError(Exception):
    """A bad combination of arguments found after parsing (exit 2)."""


# -- argument parsing --------------------------------------------------------

def _lsn_arg(text):
    try:
        parse_lsn(text)
    except Exception:
        raise argparse.ArgumentTypeError(
            "invalid LSN %r: write it as PostgreSQL prints it, e.g. 0/16B3748"
            % text)
    return text


def _option_arg(text):
    name, sep, value = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError("invalid --option %r: use NAME=VALUE "
                                         "or NAME" % text)
    return name, (value if sep else None)


def _table_arg(text):
    table, sep, rest = text.partition(":")
    if not sep or not table or not rest:
        raise argparse.ArgumentTypeError(
            "invalid value %r: use TABLE:VALUE" % text)
    return table, rest


def _positive(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0: %r" % text)
    return v


def _port(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError("not a port number: %r" % text)
    return v


def _connection_parent():
    """psql's connection options; SUPPRESS defaults so that they can be
    given before or after the command."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection options (as psql; PG* variables "
                             "apply)")
    s = argparse.SUPPRESS
    g.add_argument("-d", "--dbname", default=s, metavar="DBNAME",
                   help="database name, or a conninfo string or URI")
    g.add_argument("-h", "--host", default=s, help="server host or socket "
                   "directory")
    g.add_argument("-p", "--port", default=s, help="server port")
    g.add_argument("-U", "--username", default=s, metavar="USER",
                   help="user name")
    o = p.add_argument_group("general options")
    o.add_argument("--debug", action="store_true", default=s,
                   help="show tracebacks of errors and debug log lines")
    o.add_argument("-v", "--verbose", action="store_true", default=s,
                   help="log connections, slots and stream ends on stderr")
    o.add_argument("--help", action="help", help="show this help and exit")
    return p


def build_parser():
    """The argument parser of ``pld``."""
    conn = _connection_parent()
    parser = argparse.ArgumentParser(
        prog="pld", add_help=False, parents=[conn],
        description="Stream PostgreSQL logical decoding, watch and manage "
                    "replication slots and publications.")
    parser.add_argument("--version", action="version",
                        version="pld (pylogicaldecoding) " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def cmd(name, help, **kw):
        p = sub.add_parser(name, help=help, description=help,
                           add_help=False, parents=[conn], **kw)
        p.set_defaults(parser=p)
        return p

    s = cmd("stream", "Stream the changes of a slot as JSON lines, "
            "Debezium envelopes or raw payloads; ack each transaction once "
            "it is written.")
    s.add_argument("--slot", "-S", required=True, help="replication slot")
    s.add_argument("--plugin", "-P", default="test_decoding",
                   help="output plugin (default test_decoding; with "
                   "pgoutput give --option publication_names=PUB)")
    s.add_argument("--create-slot", action="store_true",
                   help="create the slot first (an error if it exists, "
                   "unless --if-not-exists)")
    s.add_argument("--if-not-exists", action="store_true",
                   help="with --create-slot: use the slot if it exists")
    s.add_argument("--option", "-o", action="append", type=_option_arg,
                   default=[], metavar="NAME[=VALUE]",
                   help="plugin option (repeatable)")
    s.add_argument("--start", "-I", type=_lsn_arg, metavar="LSN",
                   help="start at this LSN (default: where the slot left "
                   "off)")
    end = s.add_mutually_exclusive_group()
    end.add_argument("--endpos", "-E", type=_lsn_arg, metavar="LSN",
                     help="stop once every change up to LSN is written")
    end.add_argument("--drain", action="store_true",
                     help="stop once what the slot holds now is written")
    s.add_argument("--file", "-f", metavar="FILE", default="-",
                   help="append to FILE, fsync, then ack (default '-': "
                   "stdout, acked once written)")
    s.add_argument("--format", "-F", choices=("json", "debezium", "raw"),
                   default="json", help="output format (default json)")
    s.add_argument("--status-interval", "-s", type=_positive,
                   default=10.0, metavar="SECONDS",
                   help="seconds between status updates (default 10)")
    s.add_argument("--metrics-port", type=_port, metavar="PORT",
                   help="serve Prometheus metrics on this port "
                   "(needs the 'metrics' extra)")
    s.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDR",
                   help="address of the metrics endpoint (default 0.0.0.0)")
    s.add_argument("--reconnect", action="store_true",
                   help="connect again when the connection is lost")
    s.add_argument("--progress", choices=("auto", "always", "never"),
                   default="auto", help="progress line on stderr for "
                   "--endpos/--drain (auto: when stderr is a terminal)")
    _jetstream_arguments(s)
    s.set_defaults(func=cmd_stream)

    def output_options(s, bounded=True):
        s.add_argument("--plugin", "-P", default="test_decoding",
                       help="output plugin (default test_decoding; with "
                       "pgoutput give --option publication_names=PUB)")
        s.add_argument("--option", "-o", action="append", type=_option_arg,
                       default=[], metavar="NAME[=VALUE]",
                       help="plugin option (repeatable)")
        if bounded:
            end = s.add_mutually_exclusive_group()
            end.add_argument("--endpos", "-E", type=_lsn_arg, metavar="LSN",
                             help="stop once every change up to LSN is "
                             "written")
            end.add_argument("--drain", action="store_true",
                             help="stop once what the slot holds now is "
                             "written")
        s.add_argument("--file", "-f", metavar="FILE", default="-",
                       help="append to FILE and fsync before acking "
                       "(default '-': stdout)")
        s.add_argument("--format", "-F", choices=("json", "debezium", "raw"),
                       default="json", help="output format (default json)")
        s.add_argument("--status-interval", "-s", type=_positive,
                       default=10.0, metavar="SECONDS",
                       help="seconds between status updates (default 10)")
        s.add_argument("--metrics-port", type=_port, metavar="PORT",
                       help="serve Prometheus metrics on this port")
        s.add_argument("--metrics-address", default="0.0.0.0",
                       metavar="ADDR", help="address of the metrics "
                       "endpoint (default 0.0.0.0)")
        s.add_argument("--progress", choices=("auto", "always", "never"),
                       default="auto", help="progress line on stderr "
                       "(auto: when stderr is a terminal)")
        s.set_defaults(reconnect=False)

    s = cmd("snapshot", "Create a slot, write the rows of the tables as "
            "they were at its consistent point ('read' records, Debezium op "
            "r), then stream the changes from that point.")
    s.add_argument("--slot", "-S", required=True,
                   help="replication slot (must not exist)")
    s.add_argument("--table", "-t", action="append", metavar="TABLE",
                   help="a table of the snapshot (repeatable; default with "
                   "pgoutput: the publication's tables)")
    s.add_argument("--workers", "-j", type=int, default=1,
                   help="connections copying in parallel (default 1)")
    output_options(s)
    s.set_defaults(func=cmd_snapshot)

    s = cmd("backfill", "Stream a slot while reading tables again in "
            "primary-key chunks between watermarks (DBLog); stop when "
            "every table is done, unless --follow.")
    s.add_argument("tables", nargs="+", metavar="TABLE",
                   help="tables to read again ('name' or 'schema.name')")
    s.add_argument("--slot", "-S", required=True, help="replication slot")
    s.add_argument("--chunk-size", type=int, default=10000,
                   help="rows per chunk (default 10000)")
    s.add_argument("--follow", action="store_true",
                   help="go on streaming once the backfills are done")
    output_options(s, bounded=False)
    s.set_defaults(func=cmd_backfill)

    s = cmd("slots", "One row per replication slot: lag, retained WAL, "
            "state.")
    s.add_argument("--json", action="store_true",
                   help="JSON lines, sizes and LSNs as numbers")
    s.add_argument("--watch", type=_positive, metavar="SECONDS",
                   help="show again every SECONDS until Ctrl-C")
    s.add_argument("slot", nargs="?", help="only this slot")
    s.set_defaults(func=cmd_slots)

    s = cmd("create-slot", "Create a logical replication slot.")
    s.add_argument("slot")
    s.add_argument("--plugin", "-P", required=True, help="output plugin")
    s.add_argument("--failover", action="store_true",
                   help="a standby keeps a synced copy (PostgreSQL 17+)")
    s.add_argument("--two-phase", action="store_true",
                   help="decode prepared transactions at PREPARE "
                   "(PostgreSQL 15+)")
    s.add_argument("--if-not-exists", action="store_true",
                   help="no error if the slot exists")
    s.set_defaults(func=cmd_create_slot)

    s = cmd("drop-slot", "Drop a replication slot.")
    s.add_argument("slot")
    s.add_argument("--if-exists", action="store_true",
                   help="no error if the slot does not exist")
    s.add_argument("--wait", action="store_true",
                   help="if a consumer holds the slot, wait until it is "
                   "released")
    s.set_defaults(func=cmd_drop_slot)

    p = cmd("publication", "Create, drop and list publications (for "
            "pgoutput).")
    psub = p.add_subparsers(dest="action", metavar="ACTION")
    psub.required = True

    def pcmd(name, help):
        p = psub.add_parser(name, help=help, description=help,
                            add_help=False, parents=[conn])
        p.set_defaults(parser=p)
        return p

    s = pcmd("create", "Create a publication.")
    s.add_argument("name")
    s.add_argument("tables", nargs="*", metavar="TABLE",
                   help="tables ('name' or 'schema.name')")
    s.add_argument("--all-tables", action="store_true",
                   help="FOR ALL TABLES (needs a superuser)")
    s.add_argument("--where", action="append", type=_table_arg, default=[],
                   metavar="TABLE:EXPR",
                   help="row filter of TABLE, an SQL expression "
                   "(PostgreSQL 15+; repeatable)")
    s.add_argument("--columns", action="append", type=_table_arg,
                   default=[], metavar="TABLE:COL,...",
                   help="published columns of TABLE (PostgreSQL 15+; "
                   "repeatable)")
    s.set_defaults(func=cmd_publication_create)
    s = pcmd("drop", "Drop a publication.")
    s.add_argument("name")
    s.add_argument("--if-exists", action="store_true",
                   help="no error if it does not exist")
    s.set_defaults(func=cmd_publication_drop)
    s = pcmd("list", "List the publications and their tables.")
    s.add_argument("--json", action="store_true", help="JSON lines")
    s.set_defaults(func=cmd_publication_list)
    return parser


# -- connections -------------------------------------------------------------

def conn_kwargs(args):
    """(dsn, keywords) for the library from psql-style options."""
    dsn = ""
    kw = {}
    dbname = getattr(args, "dbname", None)
    if dbname:
        if "=" in dbname or dbname.startswith(("postgresql://",
                                               "postgres://")):
            dsn = dbname
        else:
            kw["dbname"] = dbname
    for opt, key in (("host", "host"), ("port", "port"),
                     ("username", "user")):
        value = getattr(args, opt, None)
        if value:
            kw[key] = value
    return dsn, kw


def secrets_of(args):
    """Every password the command line or the environment holds, so that
    error output can mask it whatever put it there."""
    found = set()
    for var in ("PGPASSWORD",):
        if os.environ.get(var):
            found.add(os.environ[var])
    dsn, _ = conn_kwargs(args)
    if dsn:
        try:
            params = conninfo.make_params(dsn)
        except Exception:
            params = {}
        for key in conninfo.SECRET_KEYWORDS:
            if params.get(key):
                found.add(params[key])
        # a URI's password, even one libpq could not parse
        if "://" in dsn and "@" in dsn:
            auth = dsn.split("://", 1)[1].split("@", 1)[0]
            if ":" in auth:
                found.add(auth.split(":", 1)[1])
    return {s for s in found if s}


def _mask(text, secrets):
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


# -- stream ------------------------------------------------------------------

class Output:
    """Where records go: stdout, or a file appended to and fsynced."""

    def __init__(self, path):
        self.path = path
        if path == "-":
            self.stream = sys.stdout.buffer
            self.fd = None
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT,
                              0o666)
            self.stream = os.fdopen(self.fd, "ab")
            self._drop_partial_line()

    def _drop_partial_line(self):
        """A crash may leave half a record at the end of the file: it was
        never acked, so it comes again; cut it so that every line of the
        file stays whole."""
        size = os.fstat(self.fd).st_size
        pos = size
        while pos > 0:
            step = min(65536, pos)
            chunk = os.pread(self.fd, step, pos - step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos < size:
            logger.warning("%s: removed %d bytes of a record cut short (not "
                           "acked: it is streamed again)", self.path,
                           size - pos)
            os.ftruncate(self.fd, pos)
            os.fsync(self.fd)

    def write(self, data):
        self.stream.write(data)

    def commit(self):
        """Make everything written so far durable (fsync for a file; for
        stdout: handed to the reader of the pipe)."""
        self.stream.flush()
        if self.fd is not None:
            os.fsync(self.fd)

    def close(self):
        if self.fd is not None:
            self.stream.close()
        else:
            try:
                self.stream.flush()
            except BrokenPipeError:
                pass


def _size(n):
    """Bytes as a short human string (1.2 MiB)."""
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else (
                "%.1f %s" % (n, unit))
        n /= 1024.0


def _duration(secs):
    secs = int(secs + 0.5)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return "%d:%02d:%02d" % (h, m, s) if h else "%d:%02d" % (m, s)


class Progress:
    """One line on stderr for a bounded run: bytes to go, changes/s, ETA;
    redrawn at most `INTERVAL` seconds apart."""

    INTERVAL = 0.25

    def __init__(self, stream, start, end):
        self.stream = stream
        self.start = start
        self.end = end
        self.t0 = time.monotonic()
        self.last = 0.0
        self.changes = 0
        self.rows = 0
        self.table = None       # the table of the initial snapshot in course
        self.drawn = False

    def update(self, lsn, now=None, table=None):
        """Redraw (if due) after a change at ``lsn``; ``table``: the
        change is a row of the snapshot of that table."""
        now = time.monotonic() if now is None else now
        if now - self.last < self.INTERVAL:
            return
        elapsed = max(now - self.t0, 1e-6)
        if table is not None:
            text = "snapshot of %s: %d rows, %.0f rows/s" % (
                table, self.rows, self.rows / elapsed)
        elif self.end is None:          # an unbounded stream: no line
            self.clear()
            return
        else:
            togo = max(0, self.end - lsn)
            done = max(0, lsn - self.start) if lsn else 0
            rate = done / elapsed
            eta = _duration(togo / rate) if rate > 0 else "?"
            text = "%s to go, %.0f changes/s, ETA %s" % (
                _size(togo), self.changes / elapsed, eta)
        self.last = now
        self.stream.write("\r\x1b[Kpld: " + text)
        self.stream.flush()
        self.drawn = True

    def clear(self):
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


class StreamWriter(Reader):
    """The Reader of ``pld stream``: writes each record, acks each
    transaction once it is written (fsynced with -f)."""

    def __init__(self, *args, out, fmt, progress=None, db=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = out
        self.fmt = fmt
        self.progress = progress
        self.formatter = None if fmt == "raw" else formats.Formatter(
            fmt, name=self.slot, db=db)
        self.in_txn = False
        self.pending = False     # written but not yet made durable and acked
        self.backfills_left = None   # pld backfill: tables not yet done

    def event(self, msg):
        change = msg.change
        if self.fmt == "raw":
            p = msg.payload
            self.out.write((p.encode("utf-8") if isinstance(p, str) else p)
                           + b"\n")
        else:
            recs = self.formatter.records(msg)
            if recs:
                self.out.write("".join(formats.dumps(r) + "\n"
                                       for r in recs).encode("utf-8"))
        last = change[-1] if isinstance(change, list) and change else change
        first = change[0] if isinstance(change, list) and change else change
        if isinstance(first, _TXN_STARTS):
            self.in_txn = True
        self.pending = True
        if isinstance(last, _TXN_ENDS):
            self.in_txn = False
            self._commit()
        elif not self.in_txn and isinstance(last, Message) \
                and not last.transactional:
            self._commit()       # a message outside any transaction
        elif isinstance(last, SnapshotEnd):
            # a table's rows are all written: make them durable (they are
            # not acked: the snapshot and the backfills keep their own
            # progress)
            self.out.commit()
            if last.backfill and self.backfills_left is not None:
                self.backfills_left.discard((last.schema, last.table))
                if not self.backfills_left:
                    logger.info("every backfill is done")
                    self.stop()
        if self.progress is not None:
            self._progress(msg, first, last)

    def _progress(self, msg, first, last):
        progress = self.progress
        if isinstance(first, SnapshotStart) and not first.backfill:
            progress.table = "%s.%s" % (first.schema, first.table)
        if progress.table is not None:         # the initial snapshot
            if isinstance(last, SnapshotRow):
                progress.rows += 1
            progress.update(msg.data_start, table=progress.table)
            if isinstance(last, SnapshotEnd):
                progress.table = None
            return
        progress.changes += len(msg.change) if isinstance(
            msg.change, list) else 1
        progress.update(msg.data_start or self.received_lsn)

    def _commit(self):
        self.out.commit()
        self.ack()
        self.pending = False


class SignalWatcher:
    """Stop the Reader as soon as SIGINT or SIGTERM arrives.

    Python runs a signal's handler only when the main thread next runs
    Python code; a signal that lands while the stream loop is between two
    waits would then wait for the next message. Python's C-level handler
    also writes the signal number to the wakeup fd at once: a thread
    reading it stops the stream. The Python handler still runs later (a
    second Ctrl-C there gives up waiting)."""

    def __init__(self, reader):
        self.reader = reader
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.wfd, False)
        self.old_fd = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        self.thread = threading.Thread(target=self._watch, daemon=True,
                                       name="pld-signals")
        self.thread.start()

    def _watch(self):
        while True:
            try:
                data = os.read(self.rfd, 64)
            except OSError:
                return
            if not data:
                return
            if any(b in (signal.SIGINT, signal.SIGTERM) for b in data):
                self.reader.stop(0)      # do not wait: the loop ends itself

    def close(self):
        signal.set_wakeup_fd(self.old_fd)
        os.close(self.wfd)
        self.thread.join(5)
        os.close(self.rfd)


def _plugin_options(args):
    options = dict(args.option)
    if args.plugin == "test_decoding":
        # commit times for stats and Debezium's ts_ms; xids for the records
        options.setdefault("include-timestamp", "1")
    return options


def cmd_stream(args):
    if args.if_not_exists and not args.create_slot:
        raise UsageError("--if-not-exists goes with --create-slot")
    return run_stream(args)


def cmd_snapshot(args):
    args.create_slot = args.if_not_exists = False
    args.start = None
    return run_stream(args, snapshot=dict(
        snapshot=True, create_slot=True, tables=args.table or None,
        snapshot_workers=args.workers))


def cmd_backfill(args):
    args.create_slot = args.if_not_exists = False
    args.start = None
    args.endpos = None
    args.drain = False
    return run_stream(args, backfill=args.tables)


def run_stream(args, snapshot=None, backfill=None):
    """pld stream, snapshot and backfill: the Reader, the output, the
    signals, the progress line."""
    commands.check_slot_name(args.slot)
    dsn, kw = conn_kwargs(args)
    out = None
    stopping = []

    reader_kwargs = dict(
        slot=args.slot, plugin=args.plugin, options=_plugin_options(args),
        create_slot=False, start_lsn=args.start,
        status_interval=args.status_interval,
        reconnect=bool(args.reconnect))
    reader_kwargs.update(snapshot or {})
    if getattr(args, "to", None):
        return _stream_to_jetstream(args, dsn, kw, reader_kwargs)
    tty = sys.stderr.isatty()
    bounded = bool(args.endpos or args.drain or snapshot)
    show_progress = bounded and (
        args.progress == "always" or (args.progress == "auto" and tty))
    try:
        out = Output(args.file)
    except OSError as e:
        raise Error("cannot open %s: %s" % (args.file, e.strerror)) from None
    server = None
    reader = StreamWriter(dsn, out=out, fmt=args.format, **reader_kwargs,
                          **kw)
    try:
        if args.create_slot:
            try:
                reader.create_slot(snapshot="nothing")
            except SlotExists:
                if not args.if_not_exists:
                    raise
        if args.metrics_port is not None:
            from . import metrics
            server = metrics.serve(reader, args.metrics_port,
                                   addr=args.metrics_address)
        system = reader.identify_system()
        if reader.formatter is not None:
            reader.formatter.db = system.dbname
        end = None
        if args.endpos:
            end = parse_lsn(args.endpos)
        elif args.drain:
            end = system.xlogpos
        if show_progress:
            status = None if snapshot else reader.slot_status()
            start = (status or {}).get("confirmed_flush_lsn") or 0
            if args.start:
                start = max(start, parse_lsn(args.start))
            reader.progress = Progress(sys.stderr, start, end)
        if backfill:
            left = set()
            for table in backfill:
                left.update(tuple(t) for t in reader.backfill(
                    table, args.chunk_size))
            reader.backfills_left = None if args.follow else left

        def on_signal(signum, frame):
            if stopping:
                # a second Ctrl-C: give up waiting for the clean stop
                raise KeyboardInterrupt
            stopping.append(signum)
            reader.stop()

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        watcher = SignalWatcher(reader)
        try:
            reader.start(until_lsn=end)
        finally:
            watcher.close()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            if reader.progress is not None:
                reader.progress.clear()
    except BrokenPipeError:
        # the reader of our output went away (pld stream | head): what was
        # not written was not acked; stop quietly
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        reader.close()
        if out is not None:
            try:
                out.close()
            except BrokenPipeError:
                pass
    return EXIT_OK


# -- stream --to nats:// (pylogicaldecoding.jetstream) ------------------------

def _jetstream_arguments(s):
    g = s.add_argument_group(
        "NATS JetStream (docs/scale-out.md; needs the 'jetstream' extra)")
    g.add_argument("--to", metavar="nats://HOST:PORT",
                   help="publish each change to JetStream instead of "
                   "writing it; the slot is acked once JetStream stored it "
                   "(several servers: comma separated)")
    g.add_argument("--stream", default="PLD", metavar="NAME",
                   help="the JetStream stream (default PLD)")
    g.add_argument("--subject-prefix", default="pld", metavar="PREFIX",
                   help="subjects PREFIX.<schema>.<table>, PREFIX._tx, "
                   "PREFIX._msg (default pld)")
    g.add_argument("--create-stream", action="store_true",
                   help="create the stream if it does not exist")
    g.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="with --create-stream: copies of each message "
                   "(default 1; 3 on a three-node cluster)")


def _stream_to_jetstream(args, dsn, kw, reader_kwargs):
    """pld stream --to: the library's jetstream.run_stream()."""
    from . import jetstream
    for flag, bad in (("--file", args.file != "-"),
                      ("--format raw", args.format == "raw"),
                      ("--metrics-port", args.metrics_port is not None)):
        if bad:
            raise UsageError("%s does not go with --to" % flag)
    if args.replicas < 1:
        raise UsageError("--replicas must be at least 1")
    # --create-slot: created when missing (--if-not-exists is implied)
    reader_kwargs["create_slot"] = bool(args.create_slot)
    end = "drain" if args.drain else (parse_lsn(args.endpos)
                                      if args.endpos else None)
    h = jetstream.run_stream(
        dsn, url=args.to, stream=args.stream,
        subject_prefix=args.subject_prefix, format=args.format,
        create_stream=args.create_stream, replicas=args.replicas,
        until_lsn=end, **reader_kwargs, **kw)
    if h is not None:
        logger.info("published %d messages to %s, acked up to %s",
                    h.published, args.stream, format_lsn(h.acked_lsn))
    return EXIT_OK


# -- slots -------------------------------------------------------------------

_SLOT_TABLE = [
    # (key, heading, formatter)
    ("slot_name", "slot", str),
    ("plugin", "plugin", str),
    ("database", "database", str),
    ("active_pid", "active pid", str),
    ("lag_bytes", "lag", _size),
    ("retained_bytes", "retained WAL", _size),
    ("wal_status", "wal_status", str),
    ("invalidation_reason", "invalidated", str),
    ("failover", "failover", lambda v: "yes" if v else "no"),
    ("synced", "synced", lambda v: "yes" if v else "no"),
    ("inactive_since", "inactive since",
     lambda v: v.isoformat(sep=" ", timespec="seconds")
     if hasattr(v, "isoformat") else str(v)),
]


def slots_table(slots, columns):
    """The slots as an aligned text table; only the columns the server
    has (``columns``: what `admin.slot_columns` found)."""
    have = set(columns) | {"lag_bytes", "retained_bytes"}
    cols = [c for c in _SLOT_TABLE if c[0] in have]
    rows = [[c[1] for c in cols]]
    for s in slots:
        rows.append(["" if s.get(k) is None else fmt(s[k])
                     for k, _, fmt in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
             for r in rows]
    if not slots:
        lines.append("(no replication slots)")
    return "\n".join(lines) + "\n"


def _json_default(v):
    return formats.jsonable(v)


def cmd_slots(args):
    dsn, kw = conn_kwargs(args)
    with admin.AdminConnection(dsn, replication=False, **kw) as conn:
        columns = admin.slot_columns(conn)
        while True:
            slots = admin.list_slots(conn, args.slot)
            if args.slot and not slots:
                raise SlotNotFound("replication slot %r does not exist"
                                   % args.slot)
            if args.json:
                text = "".join(json.dumps(
                    {k: formats.jsonable(v) for k, v in s.items()}) + "\n"
                    for s in slots)
            else:
                text = slots_table(slots, columns)
            if args.watch and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            if args.watch and not args.json:
                sys.stdout.write("%s  (every %gs, Ctrl-C to stop)\n" % (
                    time.strftime("%Y-%m-%d %H:%M:%S"), args.watch))
            sys.stdout.write(text)
            sys.stdout.flush()
            if not args.watch:
                return EXIT_OK
            time.sleep(args.watch)
            if not args.json and not sys.stdout.isatty():
                sys.stdout.write("\n")


# -- slot and publication management ---------------------------------------

def cmd_create_slot(args):
    dsn, kw = conn_kwargs(args)
    commands.check_plugin_name(args.plugin)
    with admin.AdminConnection(dsn, **kw) as conn:
        try:
            info = admin.create_slot(conn, args.slot, args.plugin,
                                     two_phase=args.two_phase,
                                     failover=args.failover)
        except SlotExists:
            if not args.if_not_exists:
                raise
            print("replication slot %r exists already" % args.slot)
            return EXIT_OK
    print("created replication slot %r (plugin %s) at %s"
          % (info.slot_name, info.output_plugin,
             format_lsn(info.consistent_point)))
    return EXIT_OK


def cmd_drop_slot(args):
    dsn, kw = conn_kwargs(args)
    commands.check_slot_name(args.slot)
    with admin.AdminConnection(dsn, **kw) as conn:
        dropped = admin.drop_slot(conn, args.slot, wait=args.wait,
                                  missing_ok=args.if_exists)
    print(("dropped replication slot %r" if dropped
           else "replication slot %r does not exist") % args.slot)
    return EXIT_OK


def cmd_publication_create(args):
    if args.all_tables and args.tables:
        raise UsageError("give either --all-tables or tables, not both")
    if not args.all_tables and not args.tables:
        raise UsageError("give the tables to publish, or --all-tables")
    dsn, kw = conn_kwargs(args)
    where = dict(args.where)
    columns = {t: [c.strip() for c in cols.split(",") if c.strip()]
               for t, cols in args.columns}
    with admin.AdminConnection(dsn, replication=False, **kw) as conn:
        admin.create_publication(conn, args.name,
                                 None if args.all_tables else args.tables,
                                 where=where, columns=columns)
    print("created publication %r" % args.name)
    return EXIT_OK


def cmd_publication_drop(args):
    dsn, kw = conn_kwargs(args)
    with admin.AdminConnection(dsn, replication=False, **kw) as conn:
        admin.drop_publication(conn, args.name, missing_ok=args.if_exists)
    print("dropped publication %r" % args.name)
    return EXIT_OK


def cmd_publication_list(args):
    dsn, kw = conn_kwargs(args)
    with admin.AdminConnection(dsn, replication=False, **kw) as conn:
        pubs = admin.list_publications(conn)
    if args.json:
        for p in pubs:
            print(json.dumps(p))
        return EXIT_OK
    if not pubs:
        print("(no publications)")
    for p in pubs:
        ops = ",".join(k for k in ("insert", "update", "delete", "truncate")
                       if p[k])
        print("%s%s  [%s]" % (p["name"], "  FOR ALL TABLES"
                              if p["all_tables"] else "", ops))
        for t in p["tables"]:
            line = "    %s.%s" % (t["schema"], t["table"])
            if t.get("columns"):
                line += " (%s)" % ", ".join(t["columns"])
            if t.get("row_filter"):
                line += " WHERE %s" % t["row_filter"]
            print(line)
    return EXIT_OK


# -- errors ------------------------------------------------------------------

def error_message(exc):
    """One line saying what went wrong and what to do."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    slot = "replication slot" in text
    if isinstance(exc, SlotNotFound) and slot:
        text += " (create it with 'pld create-slot', or pass --create-slot " \
                "to 'pld stream')"
    elif isinstance(exc, SlotExists) and slot:
        text += " (pass --if-not-exists to use it)"
    elif isinstance(exc, SlotInUse) and slot:
        text += " (another consumer is streaming it; 'pld slots' shows its " \
                "pid)"
    elif isinstance(exc, ConnectionFailed):
        text += " (check -h/-p/-d/-U, the PG* variables and that the " \
                "server runs)"
    elif isinstance(exc, SnapshotError) and "exists already" in text:
        text = ("replication slot exists already: 'pld snapshot' takes its "
                "snapshot when it creates the slot. Drop the slot ('pld "
                "drop-slot SLOT') and run it again, or keep the slot and read "
                "the tables again while streaming ('pld backfill TABLE "
                "--slot SLOT')")
    elif not isinstance(exc, (Error, OSError, ImportError, ValueError)):
        text = "unexpected %s: %s (run with --debug for the traceback)" % (
            type(exc).__name__, text)
    return text


def main(argv=None):
    """Run ``pld`` with ``argv`` (default: sys.argv[1:]); return the exit
    status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    secrets = secrets_of(args)
    level = logging.DEBUG if debug else (
        logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pld: %(levelname)s: %(message)s"))
    # an error that ends the stream is reported once, as the error line
    handler.addFilter(lambda r: not (r.levelno >= logging.WARNING and getattr(
        r, "pld_event", None) == "stream_end"))
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        return args.func(args)
    except UsageError as e:
        getattr(args, "parser", parser).print_usage(sys.stderr)
        sys.stderr.write("pld: error: %s\n" % _mask(str(e), secrets))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            sys.stderr.write(_mask(traceback.format_exc(), secrets))
        sys.stderr.write("pld: interrupted\n")
        return EXIT_INTERRUPT
    except Exception as e:
        if debug:
            sys.stderr.write(_mask(traceback.format_exc(), secrets))
        sys.stderr.write("pld: error: %s\n"
                         % _mask(error_message(e), secrets))
        return EXIT_ERROR
    finally:
        logger.removeHandler(handler)


def run():
    """The console script's entry point."""
    sys.exit(main())
