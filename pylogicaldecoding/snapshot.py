"""Initial snapshots and watermark backfills (see docs/snapshots.md).

Two ways to get the rows that a change stream alone never carries:

- The initial snapshot, ``Reader(..., snapshot=True)``: when the Reader
  creates its slot it exports the slot's snapshot; worker connections
  import it (``SET TRANSACTION SNAPSHOT``), COPY the tables as they were at
  the slot's consistent point and the rows reach ``event()`` as
  `SnapshotRow` changes, bracketed per table by `SnapshotStart` and
  `SnapshotEnd`, before any streamed change. Then the stream starts at the
  consistent point: nothing is missing, nothing twice at the seam.
- Backfills, ``reader.backfill("schema.table")``: the table is read again
  while the stream runs, in primary-key chunks, each bracketed by a low and
  a high watermark written with ``pg_logical_emit_message``; rows of the
  chunk changed by the stream between the watermarks are dropped from it
  (Netflix's DBLog method, as in Debezium's incremental snapshots). No long
  transaction; progress is kept in a small table so that a killed consumer
  resumes at the last completed chunk.

Rows are read with ``COPY ... TO STDOUT`` on plain libpq connections
(`_core.CopyConnection`) and converted by the C converters of the type
registry, in the form the stream uses (binary with pgoutput's
``binary=true``, text otherwise), so a `SnapshotRow`'s ``new`` holds
exactly what a streamed `Insert` would.
"""

import json
import logging
import os
import queue
import select
import threading

from . import _core
from . import commands
from . import types as _types
from .changes import SnapshotEnd, SnapshotRow, SnapshotStart
from .errors import InterfaceError, ProgrammingError, SnapshotError

logger = logging.getLogger("pylogicaldecoding")

__all__ = ["InitialSnapshot", "AsyncFeed", "Backfills", "BATCH_ROWS", "SPLIT_MIN_PAGES",
           "PROGRESS_TABLE", "WATERMARK_PREFIX"]

#: Rows per batch handed from a COPY to `event()` (bounds the memory held:
#: at most ``2 * workers + 1`` batches are in flight).
BATCH_ROWS = 500

#: With several workers, tables of at least this many pages (8 MiB with
#: 8 kB pages) are split into block (ctid) ranges.
SPLIT_MIN_PAGES = 1024


# -- SQL helpers -----------------------------------------------------------

def quote_ident(name):
    """An SQL identifier, double-quoted (quotes inside doubled)."""
    if "\0" in name:
        raise ProgrammingError("an identifier cannot hold NUL: %r" % (name,))
    return '"' + name.replace('"', '""') + '"'


def qualified(schema, table):
    """schema.table, both quoted."""
    return "%s.%s" % (quote_ident(schema), quote_ident(table))


def worker_params(params):
    """A Reader's connection parameters for a plain (SQL) connection."""
    p = dict(params)
    p.pop("replication", None)
    return p


def connect(params):
    """A `_core.CopyConnection` with these libpq parameters."""
    keys = list(params)
    return _core.CopyConnection(keys, [params[k] for k in keys])


def publication_names(reader):
    """The publications of a pgoutput Reader, as a list."""
    names = reader.options.get("publication_names")
    if not names:
        return []
    if isinstance(names, (list, tuple, set, frozenset)):
        return [str(n) for n in names]
    return [n.strip().strip('"') for n in str(names).split(",") if n.strip()]


def binary_values(reader):
    """True when the stream carries values in binary form (pgoutput with
    ``binary`` on): snapshot rows are then copied in binary format."""
    if reader.plugin != "pgoutput":
        return False
    v = reader.options.get("binary")
    return v is True or str(v).lower() in ("true", "on", "1", "yes")


class Table:
    """A table to read: its identity, columns and converters."""

    __slots__ = ("oid", "schema", "table", "relkind", "names", "types",
                 "convs", "key", "pages", "parts")

    def __init__(self, oid, schema, table, relkind):
        self.oid, self.schema, self.table = int(oid), schema, table
        self.relkind = relkind
        self.names = self.types = self.convs = self.key = None
        self.pages = 0
        self.parts = [None]

    @property
    def name(self):
        return qualified(self.schema, self.table)

    def __repr__(self):
        return "<Table %s>" % self.name

    def column_list(self):
        return ", ".join(quote_ident(n) for n in self.names)

    def copy_sql(self, part=None, binary=False):
        """COPY of the table (or of a block range ``part``) to STDOUT."""
        fmt = " (FORMAT binary)" if binary else ""
        if part is None and self.relkind == "r":
            return "COPY %s (%s) TO STDOUT%s" % (
                self.name, self.column_list(), fmt)
        if part is None:
            return "COPY (SELECT %s FROM %s) TO STDOUT%s" % (
                self.column_list(), self.name, fmt)
        lo, hi = part
        where = "ctid >= '(%d,0)'::tid" % lo
        if hi is not None:
            where += " AND ctid < '(%d,0)'::tid" % hi
        return "COPY (SELECT %s FROM ONLY %s WHERE %s) TO STDOUT%s" % (
            self.column_list(), self.name, where, fmt)


def resolve_table(conn, name):
    """The `Table` named ``name`` ('schema.table' as SQL reads it, quoted
    where needed, or a (schema, table) pair), or SnapshotError."""
    if isinstance(name, (tuple, list)) and len(name) == 2:
        text = qualified(*name)
    elif isinstance(name, str):
        text = name
    else:
        raise TypeError("a table is 'schema.table' or (schema, table), "
                        "got %r" % (name,))
    _, rows = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind"
        " FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = pg_catalog.to_regclass(%s)"
        % commands.quote_literal(text))
    if not rows:
        raise SnapshotError("table %s does not exist (names are read as SQL "
                            "does: quote mixed-case names, as in "
                            "'public.\"MyTable\"')" % (text,))
    oid, schema, table, relkind = rows[0]
    if relkind not in ("r", "p"):
        raise SnapshotError("%s is not a table (relkind %r): only tables "
                            "can be copied" % (text, relkind))
    return Table(oid, schema, table, relkind)


def published_oids(conn, pubs):
    """The OIDs of the tables the publications ``pubs`` publish."""
    if not pubs:
        return set()
    _, rows = conn.execute(
        "SELECT DISTINCT c.oid FROM pg_catalog.pg_publication_tables p"
        " JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname"
        " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid"
        " AND c.relname = p.tablename WHERE p.pubname IN (%s)"
        % ", ".join(commands.quote_literal(p) for p in pubs))
    return {int(r[0]) for r in rows}


def check_published(conn, table, published, pubs):
    """SnapshotError unless the table (or a partition or an ancestor of
    it) is in the publications."""
    if table.oid in published:
        return
    _, rows = conn.execute(
        "SELECT relid::oid FROM pg_catalog.pg_partition_tree(%d)"
        " UNION SELECT relid::oid FROM pg_catalog.pg_partition_ancestors(%d)"
        % (table.oid, table.oid))
    if any(int(r[0]) in published for r in rows):
        return
    raise SnapshotError(
        "table %s is not in the publication %s: its changes never reach "
        "this Reader (ALTER PUBLICATION ... ADD TABLE first)"
        % (table.name, ", ".join(pubs)))


def read_columns(conn, table, server_version):
    """Fill table.names and table.types: the columns a stream carries
    (no dropped or generated ones), in order."""
    gen = " AND a.attgenerated = ''" if server_version >= 120000 else ""
    _, rows = conn.execute(
        "SELECT a.attname, a.atttypid, pg_catalog.format_type(a.atttypid,"
        " a.atttypmod) FROM pg_catalog.pg_attribute a WHERE a.attrelid = %d"
        " AND a.attnum > 0 AND NOT a.attisdropped%s ORDER BY a.attnum"
        % (table.oid, gen))
    if not rows:
        raise SnapshotError("table %s has no columns to copy" % table.name)
    table.names = [r[0] for r in rows]
    table.types = [(int(r[1]), r[2]) for r in rows]


def read_primary_key(conn, table):
    """Fill table.key with the primary key's columns, in key order."""
    _, rows = conn.execute(
        "SELECT a.attname FROM pg_catalog.pg_index i,"
        " unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord),"
        " pg_catalog.pg_attribute a WHERE i.indrelid = %d AND i.indisprimary"
        " AND a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " ORDER BY k.ord" % table.oid)
    table.key = [r[0] for r in rows]
    return table.key


def make_registry(conn, reader):
    """The Reader's type registry, with the catalog's user types read on
    ``conn`` (as the decoders do)."""
    reg = reader.type_registry or _types.registry
    reg = reg.copy()
    _types.load_catalog(conn.execute, reg)
    return reg


def set_converters(table, registry, binary):
    table.convs = [registry.resolve(oid, name, binary)
                   for oid, name in table.types]


def user_tables(conn, reader, tables, server_version, need_key=False):
    """Resolve the tables a snapshot or backfill reads, with the checks
    (missing, not a table, outside the publication, no primary key)."""
    pubs = publication_names(reader) if reader.plugin == "pgoutput" else []
    published = published_oids(conn, pubs) if pubs else None
    if tables is None:
        if reader.plugin != "pgoutput":
            raise SnapshotError(
                "tables=[...] is required with plugin %r (only pgoutput "
                "has a publication to take the tables from)" % reader.plugin)
        _, rows = conn.execute(
            "SELECT DISTINCT schemaname, tablename"
            " FROM pg_catalog.pg_publication_tables WHERE pubname IN (%s)"
            " ORDER BY 1, 2"
            % ", ".join(commands.quote_literal(p) for p in pubs))
        # not the backfills' own progress table (FOR ALL TABLES)
        tables = [(r[0], r[1]) for r in rows
                  if "%s.%s" % (r[0], r[1]) != PROGRESS_TABLE]
    result, seen = [], set()
    for name in tables:
        t = resolve_table(conn, name)
        if t.oid in seen:
            continue
        seen.add(t.oid)
        if published is not None:
            check_published(conn, t, published, pubs)
        read_columns(conn, t, server_version)
        if need_key and not read_primary_key(conn, t):
            raise SnapshotError(
                "table %s has no primary key: a backfill reads in key order "
                "(add a primary key, or use an initial snapshot)" % t.name)
        result.append(t)
    return result


def check_tables_arg(tables):
    """Normalise the ``tables`` argument: None or a list of names."""
    if tables is None:
        return None
    if isinstance(tables, (str, tuple)):
        tables = [tables]
    tables = list(tables)
    for t in tables:
        if not isinstance(t, (str, tuple)):
            raise TypeError("tables are 'schema.table' or (schema, table), "
                            "got %r" % (t,))
    return tables


# -- the initial snapshot --------------------------------------------------

class _Stopped(Exception):
    """stop() was called during the snapshot."""


class InitialSnapshot:
    """The initial snapshot of a Reader created with ``snapshot=True``.

    `run()` is called by the Reader right after it created its slot with
    an exported snapshot, before any other command on its connection (the
    exported snapshot lives only until then): it opens ``workers`` plain
    connections, imports the snapshot in each, reads the tables and
    delivers their rows to ``reader.event()``.

    Order: with one worker, table after table (in the order given, or the
    publication's tables sorted by name), each as SnapshotStart, its rows
    in physical order, SnapshotEnd. With N workers, tables of at least
    `SPLIT_MIN_PAGES` pages are split into 2N block (ctid) ranges; the
    workers take the tables' ranges in table order, several at once: a
    table's SnapshotStart comes before any of its rows and its SnapshotEnd
    after all of them, but rows of different tables, and of different
    ranges of one table, may interleave between those markers.
    """

    def __init__(self, reader, tables, workers):
        if not isinstance(workers, int) or isinstance(workers, bool) \
                or workers < 1:
            raise ValueError("snapshot_workers must be an int >= 1")
        self.tables = check_tables_arg(tables)
        if self.tables is None and reader.plugin != "pgoutput":
            raise SnapshotError(
                "snapshot=True with plugin %r needs tables=[...] (only "
                "pgoutput has a publication to take the tables from)"
                % reader.plugin)
        if not reader.create_slot_if_missing:
            raise InterfaceError("snapshot=True needs create_slot=True: the "
                                 "snapshot is taken when the slot is created")
        self.workers = workers
        self.done = False           # every table was delivered
        self.delivering = False     # rows are being delivered now
        self.point = None           # the slot's consistent point
        self.rows = 0
        self.bytes = 0

    def exists_error(self, slot):
        """The error for ``snapshot=True`` on a slot that exists."""
        return SnapshotError(
            "replication slot %r exists already: an initial snapshot is "
            "taken only when the Reader creates the slot (if a previous "
            "snapshot was interrupted, its rows are incomplete). Either drop "
            "the slot and start over (reader.drop_slot(), then start() again "
            "with snapshot=True), or keep the slot and re-read the tables "
            "while streaming with reader.backfill('schema.table') and "
            "snapshot=False" % slot)

    def ack(self, lsn=None):
        """Reader.ack() during the snapshot: allowed up to the consistent point;
        it confirms nothing on the server (the slot starts there)."""
        if lsn is not None and commands.lsn_int(lsn) > self.point:
            raise ProgrammingError(
                "cannot ack %s during the snapshot: beyond its consistent "
                "point (%s)" % (commands.lsn_text(lsn),
                                commands.lsn_text(self.point)))

    def run(self, reader, slot_info, emit=None, stopped=None):
        """Copy the tables as of ``slot_info`` (a `SlotInfo` with a
        snapshot name) and deliver the rows to ``reader.event()``; return
        True once every table was delivered (False: stopped).

        ``emit(messages)`` (a list) replaces the delivery to ``event()``
        and ``stopped()`` the check of ``reader.stop()`` (`AsyncFeed`)."""
        sync = emit is None
        if sync:
            event = reader.event

            def emit(batch):
                for m in batch:
                    event(m)
            stopped = reader._stop_requested.is_set
        if not slot_info.snapshot_name:
            raise SnapshotError("the server exported no snapshot for slot %r"
                                % slot_info.slot_name)
        self.point = slot_info.consistent_point
        self.rows = self.bytes = 0
        conns = []
        try:
            params = worker_params(reader._params)
            for _ in range(self.workers):
                conn = connect(params)
                conns.append(conn)
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute("SET TRANSACTION SNAPSHOT %s"
                             % commands.quote_literal(slot_info.snapshot_name))
            # every worker holds the snapshot now: the Reader's own
            # connection may run commands again
            binary = binary_values(reader)
            plans = user_tables(conns[0], reader, self.tables,
                                reader.server_version)
            registry = make_registry(conns[0], reader)
            for t in plans:
                set_converters(t, registry, binary)
            if self.workers > 1:
                self._split(conns[0], plans)
            self.delivering = True
            if sync:
                # ack() of the snapshot's messages: see ack() (the C ack
                # needs a running stream)
                reader.__dict__["ack"] = self.ack
            try:
                if self.workers == 1:
                    self._copy_serial(reader, conns[0], plans, binary,
                                      emit, stopped)
                else:
                    self._copy_parallel(reader, conns, plans, binary,
                                        emit, stopped)
            except _Stopped:
                logger.warning("initial snapshot of slot %r stopped before "
                               "its end", reader.slot)
                return False
            self.done = True
            return True
        finally:
            self.delivering = False
            if sync:
                reader.__dict__.pop("ack", None)
            for conn in conns:
                self.bytes += conn.bytes
                try:
                    conn.close()
                except Exception:       # a worker still busy: let it go
                    pass

    def _split(self, conn, plans):
        _, rows = conn.execute("SELECT current_setting('block_size')")
        block = int(rows[0][0])
        for t in plans:
            if t.relkind != "r":
                continue
            _, rows = conn.execute(
                "SELECT pg_catalog.pg_relation_size(%d)" % t.oid)
            t.pages = int(rows[0][0]) // block
            if t.pages >= SPLIT_MIN_PAGES:
                n = 2 * self.workers
                step = -(-t.pages // n)
                bounds = list(range(0, t.pages, step))
                t.parts = [(lo, bounds[i + 1] if i + 1 < len(bounds) else None)
                           for i, lo in enumerate(bounds)]

    def _message(self, reader, change):
        msg = _core.Message(b"" if reader.binary else "", self.point,
                            self.point)
        msg.change = change
        return msg

    def _copy_serial(self, reader, conn, plans, binary, emit, stopped):
        payload = b"" if reader.binary else ""
        for t in plans:
            emit([self._message(reader, SnapshotStart(t.schema, t.table,
                                                      False))])
            n = 0
            conn.copy_start(t.copy_sql(None, binary), t.names, t.convs,
                            binary, t.schema, t.table)
            while True:
                batch = conn.read(BATCH_ROWS, self.point, payload)
                if not batch:
                    break
                emit(batch)
                n += len(batch)
                if stopped():
                    raise _Stopped()
            self.rows += n
            emit([self._message(reader, SnapshotEnd(t.schema, t.table, n,
                                                    False))])

    def _copy_parallel(self, reader, conns, plans, binary, emit, stopped):
        """N connections copy at once; this one thread reads whichever has
        rows (non-blocking reads, poll() when none has any) and delivers
        them. The server's work is spread over N backends; the decoding,
        which needs the GIL, stays on one thread, as with one worker:
        threads would only fight for the GIL (measured: 2 worker threads
        were slower than one)."""
        payload = b"" if reader.binary else ""
        tasks = []
        for i, t in enumerate(plans):
            for part in t.parts:
                tasks.append((i, t.copy_sql(part, binary)))
        tasks.reverse()             # pop() takes them in table order
        remaining = [len(t.parts) for t in plans]
        counts = [0] * len(plans)
        started = [False] * len(plans)
        running = {}                # conn -> index of its table
        poller = select.poll()
        point = self.point

        def start(conn):
            if not tasks:
                return False
            i, sql = tasks.pop()
            t = plans[i]
            if not started[i]:
                started[i] = True
                emit([self._message(reader, SnapshotStart(
                    t.schema, t.table, False))])
            conn.copy_start(sql, t.names, t.convs, binary, t.schema,
                            t.table)
            running[conn] = i
            return True

        for conn in conns:
            if start(conn):
                poller.register(conn.fileno(), select.POLLIN)
        while running:
            got = False
            for conn, i in list(running.items()):
                batch = conn.read(BATCH_ROWS, point, payload, False)
                if batch:
                    got = True
                    emit(batch)
                    counts[i] += len(batch)
                    continue
                if conn.copying:
                    continue
                # this part is over
                got = True
                del running[conn]
                remaining[i] -= 1
                if remaining[i] == 0:
                    t = plans[i]
                    self.rows += counts[i]
                    emit([self._message(reader, SnapshotEnd(
                        t.schema, t.table, counts[i], False))])
                if not start(conn):
                    poller.unregister(conn.fileno())
            if running and stopped():
                raise _Stopped()
            if not got:
                poller.poll(500)


class AsyncFeed:
    """The initial snapshot of an `AsyncReader`: `InitialSnapshot.run`
    runs in a thread of its own (COPY reads block) and hands its messages
    over in batches through a bounded queue; ``await next()`` takes them
    one by one without blocking the event loop."""

    def __init__(self, snapshot, reader, slot_info):
        self.snapshot = snapshot
        self.q = queue.Queue(maxsize=4)
        self.cancelled = threading.Event()
        self.batch = []
        self.pos = 0
        self.done = False
        self.thread = threading.Thread(
            target=self._run, args=(reader, slot_info), daemon=True,
            name="pld-snapshot-feed")
        self.thread.start()

    def _run(self, reader, slot_info):
        try:
            self.snapshot.run(reader, slot_info, emit=self._put,
                              stopped=self.cancelled.is_set)
            end = ("end", None)
        except _Stopped:
            end = ("end", None)
        except BaseException as e:      # raised in the consumer's task
            end = ("end", e)
        while not self.cancelled.is_set():
            try:
                self.q.put(end, timeout=0.1)
                return
            except queue.Full:
                pass

    def _put(self, batch):
        while True:
            if self.cancelled.is_set():
                raise _Stopped()
            try:
                self.q.put(batch, timeout=0.1)
                return
            except queue.Full:
                pass

    async def next(self):
        """The next message, or None once the snapshot is delivered."""
        while self.pos >= len(self.batch):
            if self.done:
                return None
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                # imported here: a blocking Reader does not load asyncio
                import asyncio
                loop = asyncio.get_running_loop()
                item = await loop.run_in_executor(None, self._get)
            if isinstance(item, tuple):
                self.done = True
                if item[1] is not None:
                    raise item[1]
                return None
            self.batch, self.pos = item, 0
        m = self.batch[self.pos]
        self.pos += 1
        return m

    def _get(self):
        while True:
            try:
                return self.q.get(timeout=0.1)
            except queue.Empty:
                if self.cancelled.is_set():
                    return ("end", None)

    def cancel(self):
        """Stop the copy (stop(), close(), cancellation): the thread ends
        after its current batch and closes its connections."""
        self.cancelled.set()


# -- backfills ---------------------------------------------------------------

#: The table holding the backfills' progress (created when first needed).
PROGRESS_TABLE = "public.pld_backfill_progress"

#: The prefix of the watermark messages (pg_logical_emit_message).
WATERMARK_PREFIX = "pld.backfill"

_PROGRESS_DDL = """CREATE TABLE IF NOT EXISTS %s (
    slot text NOT NULL,
    table_name text NOT NULL,
    chunk_size int NOT NULL,
    last_key text[],
    done bool NOT NULL DEFAULT false,
    chunks bigint NOT NULL DEFAULT 0,
    updated timestamptz NOT NULL DEFAULT now(),
    repairs text NOT NULL DEFAULT '[]',
    PRIMARY KEY (slot, table_name))"""


class _Job:
    """One backfill of one table: its plan and where it is."""

    __slots__ = ("table", "chunk_size", "last_key", "upper", "repair",
                 "session", "rid")

    def __init__(self, table, chunk_size, last_key=None, upper=None,
                 repair=False, rid=None):
        self.rid = rid                # repair: its entry in the progress
        self.table = table
        self.chunk_size = chunk_size
        self.last_key = last_key      # text values: read keys above it
        self.upper = upper            # repair: the range's upper bound
        self.repair = repair          # a range re-read, not a whole table
        self.session = None


class _Chunk:
    """A chunk read between its watermarks, waiting for the high one."""

    __slots__ = ("id", "job", "rows", "upper", "last")

    def __init__(self, id, job, rows, upper, last):
        self.id, self.job, self.rows = id, job, rows
        self.upper, self.last = upper, last


class Backfills:
    """The backfills of a Reader (see `Reader.backfill` and
    docs/snapshots.md).

    While backfills are pending, the Reader's ``event`` is wrapped: the
    wrapper runs a chunk whenever none is in flight (low watermark, the
    chunk's SELECT, high watermark with the progress row, each in its own
    transaction on a plain connection), drops from the buffered chunk the
    keys that the stream changes until the high watermark arrives, then
    delivers the rest of the chunk as `SnapshotRow` (backfill=True) before
    the message that follows. Watermark messages and changes of the
    progress table are not delivered.
    """

    def __init__(self, reader):
        if not reader.decode:
            raise InterfaceError("backfill() needs decode=True: the stream's "
                                 "changes are matched to the chunks by key")
        if reader.plugin == "pgoutput" and str(reader.options.get(
                "messages", "true")).lower() in ("false", "off", "0", "no"):
            raise SnapshotError("backfill() needs pgoutput's messages "
                                "option: its watermarks are logical messages")
        if reader.plugin == "wal2json":
            def prefixes(key):
                v = reader.options.get(key)
                return None if v is None else [
                    p.strip() for p in str(v).split(",")]
            dropped, only = (prefixes("filter-msg-prefixes"),
                             prefixes("add-msg-prefixes"))
            if (dropped and WATERMARK_PREFIX in dropped) or (
                    only is not None and WATERMARK_PREFIX not in only):
                raise SnapshotError(
                    "backfill() needs wal2json to send the watermark "
                    "messages: the prefix %r must be in add-msg-prefixes "
                    "(when given) and not in filter-msg-prefixes"
                    % WATERMARK_PREFIX)
        self.reader = reader
        self.conn = None
        self.registry = None
        self.jobs = []              # pending, in order
        self.chunk = None           # in flight
        self.window = {}            # key -> latest values seen in window
        self.sessions = {}          # table oid -> rows delivered
        self.next_id = 0
        self.user_event = None
        self.binary = binary_values(reader)
        self.progress_name = None   # (schema, table) of PROGRESS_TABLE
        self.running = False        # inside a chunk step
        self.restart = False        # the stream must restart to wrap event
        self.repairs_loaded = False
        # this process's watermarks: others' are sent again by a restart
        self.run_id = "%d.%s" % (os.getpid(), os.urandom(4).hex())

    # -- connection and set-up --

    def _connect(self):
        if self.conn is None or self.conn.closed:
            self.conn = connect(worker_params(self.reader._params))
            self.registry = None
        if self.registry is None:
            self.registry = make_registry(self.conn, self.reader)
        return self.conn

    def _server_version(self):
        _, rows = self.conn.execute("SHOW server_version_num")
        return int(rows[0][0])

    def _ensure_progress_table(self):
        conn = self.conn
        _, rows = conn.execute("SELECT pg_catalog.to_regclass(%s)"
                               % commands.quote_literal(PROGRESS_TABLE))
        if rows[0][0] is None:
            conn.execute(_PROGRESS_DDL % PROGRESS_TABLE)
        else:   # made by an earlier version
            _, rows = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid ="
                " pg_catalog.to_regclass(%s) AND attname = 'repairs'"
                % commands.quote_literal(PROGRESS_TABLE))
            if not rows:
                conn.execute("ALTER TABLE %s ADD COLUMN repairs text NOT NULL"
                             " DEFAULT '[]'" % PROGRESS_TABLE)
        _, rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN"
            " pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE"
            " c.oid = pg_catalog.to_regclass(%s)"
            % commands.quote_literal(PROGRESS_TABLE))
        self.progress_name = (rows[0][0], rows[0][1])

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    # -- scheduling --

    def add(self, table, chunk_size):
        """Validate ``table`` and schedule its backfill; return the
        (schema, table) pairs scheduled (a partitioned table's leaves)."""
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) \
                or chunk_size < 1:
            raise ValueError("chunk_size must be an int >= 1")
        conn = self._connect()
        reader = self.reader
        if reader.plugin == "pgoutput" and self._server_version() < 140000:
            raise SnapshotError("backfill() with pgoutput needs PostgreSQL "
                                "14 or later (logical messages)")
        t = resolve_table(conn, table)
        targets = [t]
        if t.relkind == "p" and not self._via_root(conn):
            # the stream names the partitions: backfill each of them
            _, rows = conn.execute(
                "SELECT relid::oid FROM pg_catalog.pg_partition_tree(%d)"
                " WHERE isleaf ORDER BY 1" % t.oid)
            targets = [resolve_table(conn, _oid_name(conn, r[0]))
                       for r in rows]
        tables = user_tables(conn, reader, [(x.schema, x.table)
                                            for x in targets],
                             self._server_version(), need_key=True)
        self._ensure_progress_table()
        self._load_repairs()
        for x in tables:
            set_converters(x, self.registry, self.binary)
            last = self._resume_point(x, chunk_size)
            self.jobs.append(_Job(x, chunk_size, last))
        if getattr(reader, "streaming", False) and self.user_event is None:
            # called from event() of a stream that started without
            # backfills: the stream loop holds the plain event(); restart
            # the stream (from the acked position) with the wrapper
            self.restart = True
            reader.stop()
        return [(x.schema, x.table) for x in tables]

    def resume(self):
        """Watch this slot's backfills again after a restart: resume the
        unfinished ones (see `add`) and honour the high watermarks the
        stream sends again (a chunk whose rows may not have reached the
        consumer is read again), finished backfills included. Returns the
        progress rows as (table name, done) pairs."""
        conn = self._connect()
        _, rows = conn.execute("SELECT pg_catalog.to_regclass(%s)"
                               % commands.quote_literal(PROGRESS_TABLE))
        if rows[0][0] is None:
            return []
        self._ensure_progress_table()
        _, rows = conn.execute(
            "SELECT table_name, done, chunk_size, repairs FROM %s WHERE"
            " slot = %s ORDER BY table_name"
            % (PROGRESS_TABLE, commands.quote_literal(self.reader.slot)))
        self._load_repairs()
        out = []
        for name, done, chunk_size, _ in rows:
            out.append((name, done == "t"))
            if done == "f":
                try:
                    self.add(name, int(chunk_size))
                except SnapshotError as e:
                    logger.warning("backfill of %s not resumed: %s", name, e)
        return out

    def _load_repairs(self):
        """Schedule the key ranges recorded for reading again (see
        `_watermark`), once per Backfills."""
        if self.repairs_loaded:
            return
        self.repairs_loaded = True
        _, rows = self.conn.execute(
            "SELECT table_name, repairs FROM %s WHERE slot = %s AND"
            " repairs <> '[]'" % (PROGRESS_TABLE,
                                  commands.quote_literal(self.reader.slot)))
        for name, repairs in rows:
            for entry in json.loads(repairs or "[]"):
                if any(j.rid == entry["rid"] for j in self.jobs):
                    continue
                try:
                    t = self._table(name)
                except SnapshotError as e:
                    logger.warning("repair of %s dropped: %s", name, e)
                    continue
                self.jobs.insert(0, _Job(t, 0, entry["from"], entry["to"],
                                         repair=True, rid=entry["rid"]))

    def _via_root(self, conn):
        pubs = publication_names(self.reader) \
            if self.reader.plugin == "pgoutput" else []
        if not pubs:
            return False
        _, rows = conn.execute(
            "SELECT bool_or(pubviaroot) FROM pg_catalog.pg_publication"
            " WHERE pubname IN (%s)"
            % ", ".join(commands.quote_literal(p) for p in pubs))
        return rows[0][0] == "t"

    def _resume_point(self, t, chunk_size):
        """The key after which an unfinished backfill of ``t`` resumes
        (None: from the start), recording a new one if needed."""
        _, rows = self.conn.execute(
            "SELECT last_key, done FROM %s WHERE slot = %s AND table_name = %s"
            % (PROGRESS_TABLE, commands.quote_literal(self.reader.slot),
               commands.quote_literal(t.name)))
        if rows and rows[0][1] == "f":
            last = _parse_text_array(rows[0][0])
            logger.info("backfill of %s resumes after key %r", t.name, last)
            return last
        self.conn.execute(
            "INSERT INTO %s (slot, table_name, chunk_size) VALUES (%s, %s, %d)"
            " ON CONFLICT (slot, table_name) DO UPDATE SET last_key = NULL,"
            " done = false, chunks = 0, chunk_size = EXCLUDED.chunk_size,"
            " updated = now()"
            % (PROGRESS_TABLE, commands.quote_literal(self.reader.slot),
               commands.quote_literal(t.name), chunk_size))
        return None

    def stream_starting(self):
        """Called by the Reader before each stream: wrap ``event`` and
        start the first chunk (its watermarks then drive the rest)."""
        reader = self.reader
        if self.user_event is None:
            self.user_event = reader.event
            reader.__dict__["event"] = self.event
        # a chunk in flight when the stream broke: its watermarks may be
        # sent again, or not; read it again
        if self.chunk is not None:
            job = self.chunk.job
            self.chunk = None
            if job not in self.jobs:
                self.jobs.insert(0, job)
        self._maybe_run()

    # -- AsyncReader --

    def stream_reset(self):
        """AsyncReader, before each stream: a chunk in flight when the
        stream broke is read again (see `stream_starting`)."""
        if self.chunk is not None:
            job = self.chunk.job
            self.chunk = None
            if job not in self.jobs:
                self.jobs.insert(0, job)

    def needs_run(self):
        """A chunk should start now (AsyncReader runs it in a thread)."""
        return self.chunk is None and bool(self.jobs) and not self.running

    def process(self, msg, emit):
        """AsyncReader: what to deliver for ``msg``, given to ``emit`` in
        order (nothing for a watermark, the chunk's rows at its high
        watermark). Blocks only for a replayed high watermark."""
        saved = self.user_event
        self.user_event = emit
        try:
            self._handle(msg)
        finally:
            self.user_event = saved

    # -- the wrapper --

    def event(self, msg):
        """The Reader's ``event`` while backfills run (see the class)."""
        self._handle(msg)
        self._maybe_run()

    def _handle(self, msg):
        ch = msg.change
        if isinstance(ch, list):
            # wal2json format-version 1: a transaction in one message (or,
            # with write-in-chunks, a piece of one), as a list of changes
            keep = [c for c in ch if self._change(msg, c)]
            if len(keep) != len(ch):
                msg.change = keep
            self.user_event(msg)
        elif self._change(msg, ch):
            self.user_event(msg)
        return None

    def _change(self, msg, ch):
        """Take ``ch`` (a change of ``msg``) into account; False for the
        changes not delivered (watermarks, the progress table's)."""
        if isinstance(ch, _core.LogicalMessage) \
                and ch.prefix == WATERMARK_PREFIX:
            self._watermark(msg, ch)
            return False
        if isinstance(ch, (_core.Insert, _core.Update, _core.Delete)):
            if (ch.schema, ch.table) == self.progress_name:
                return False
            if self.chunk is not None:
                self._in_window(ch)
        elif isinstance(ch, _core.Truncate) and self.chunk is not None:
            t = self.chunk.job.table
            if (t.schema, t.table) in [tuple(x) for x in ch.tables]:
                self.chunk.rows.clear()
        return True

    def _key(self, t, row):
        return tuple(row.get(c) for c in t.key)

    def _in_window(self, ch):
        """A live change while a chunk waits: drop its keys from the
        chunk; fill its unchanged TOAST values from the latest known
        values of the row (the chunk's, then the window's changes)."""
        t = self.chunk.job.table
        if (ch.schema, ch.table) != (t.schema, t.table):
            return
        rows, window = self.chunk.rows, self.window

        def take(k):
            row = rows.pop(k, None)
            known = window.get(k)
            if known is None and row is not None:
                known = row.new
            return known
        if ch.old is not None:
            k = self._key(t, ch.old)
            window[k] = take(k)
        if ch.new is not None:
            new = ch.new
            k = self._key(t, new)
            known = take(k)
            if known is not None:
                for c, v in new.items():
                    if v is _core.UNCHANGED and c in known:
                        new[c] = known[c]
            window[k] = dict(new)

    def _watermark(self, msg, ch):
        try:
            info = _decode_watermark(ch.content)
        except ValueError:
            return
        if info.get("slot") != self.reader.slot:
            return
        chunk = self.chunk
        if info.get("w") == "low":
            return
        if chunk is not None and info.get("id") == chunk.id \
                and info.get("run") == self.run_id:
            self._deliver(msg, chunk)
            return
        # a high watermark sent again (a restart replays what was not
        # acked): its rows may never have reached the consumer. Record the
        # range to read again before the stream goes past it (an ack after
        # this message would not send it again).
        rid = "%s/%s" % (info.get("run"), info.get("id"))
        if any(j.rid == rid for j in self.jobs) or (
                chunk is not None and chunk.job.rid == rid):
            return
        t = None
        for job in self.jobs + ([chunk.job] if chunk else []):
            if job.table.name == info.get("table"):
                t = job.table
        if t is None:
            try:
                t = self._table(info["table"])
            except SnapshotError:
                return      # dropped since
        self._record_repair(t, {"rid": rid, "from": info.get("from"),
                                "to": info.get("to")})
        self.jobs.insert(0, _Job(t, 0, info.get("from"), info.get("to"),
                                 repair=True, rid=rid))

    def _record_repair(self, t, entry):
        conn = self._connect()
        if self.progress_name is None:
            self._ensure_progress_table()
        one = commands.quote_literal(json.dumps([entry]))
        key = commands.quote_literal(json.dumps([{"rid": entry["rid"]}]))
        conn.execute(
            "INSERT INTO %s AS p (slot, table_name, chunk_size, done, repairs)"
            " VALUES (%s, %s, 0, true, %s) ON CONFLICT (slot, table_name) DO"
            " UPDATE SET repairs = CASE WHEN p.repairs::jsonb @> %s::jsonb"
            " THEN p.repairs ELSE (p.repairs::jsonb || %s::jsonb)::text END,"
            " updated = now()" % (
                PROGRESS_TABLE, commands.quote_literal(self.reader.slot),
                commands.quote_literal(t.name), one, key, one))

    def _table(self, name):
        conn = self._connect()
        (t,) = user_tables(conn, self.reader, [name],
                           self._server_version(), need_key=True)
        set_converters(t, self.registry, self.binary)
        return t

    def _deliver(self, msg, chunk):
        """The high watermark of the chunk in flight: deliver its rows."""
        self.chunk = None
        self.window = {}
        job = chunk.job
        t = job.table
        event = self.user_event
        payload = b"" if self.reader.binary else ""
        point = msg.data_start
        oid = t.oid
        opened = oid not in self.sessions
        if opened:
            self.sessions[oid] = 0
            event(self._marker(SnapshotStart(t.schema, t.table, True),
                               payload, point))
        for row in chunk.rows.values():
            m = _core.Message(payload, point, point)
            m.change = row
            event(m)
        self.sessions[oid] += len(chunk.rows)
        if chunk.last or (job.repair and opened):
            rows = self.sessions.pop(oid)
            event(self._marker(SnapshotEnd(t.schema, t.table, rows, True),
                               payload, point))
        if not self.jobs and self.chunk is None:
            self.close()        # opened again by the next backfill()

    @staticmethod
    def _marker(change, payload, point):
        m = _core.Message(payload, point, point)
        m.change = change
        return m

    # -- one chunk --

    def _maybe_run(self):
        if self.chunk is not None or not self.jobs or self.running:
            return
        self.running = True
        try:
            self._run_chunk(self.jobs[0])
        finally:
            self.running = False

    def _run_chunk(self, job):
        conn = self._connect()
        t = job.table
        keys = ", ".join(quote_ident(c) for c in t.key)
        types = dict(zip(t.names, (name for _, name in t.types)))
        lower = ""
        if job.last_key is not None:
            lower = " WHERE (%s) > (%s)" % (keys, _key_literal(
                t.key, job.last_key, types))
        if job.repair:
            upper = job.upper
        else:
            # ORDER BY the table's columns, not the text output columns
            # of the same names
            _, rows = conn.execute(
                "SELECT %s FROM ONLY %s AS pld_t%s ORDER BY %s OFFSET %d"
                " LIMIT 1" % (
                    ", ".join("pld_t.%s::text" % quote_ident(c)
                              for c in t.key),
                    t.name, lower, ", ".join("pld_t.%s" % quote_ident(c)
                                             for c in t.key),
                    job.chunk_size - 1))
            upper = list(rows[0]) if rows else None
        last = upper is None and not job.repair
        where = lower
        if upper is not None:
            where += (" AND " if where else " WHERE ") + "(%s) <= (%s)" % (
                keys, _key_literal(t.key, upper, types))
        self.next_id += 1
        cid = self.next_id
        base = {"slot": self.reader.slot, "run": self.run_id, "id": cid,
                "table": t.name, "from": job.last_key, "to": upper}
        # the low watermark
        conn.execute("SELECT pg_catalog.pg_logical_emit_message(true, %s, %s)"
                     % (commands.quote_literal(WATERMARK_PREFIX),
                        commands.quote_literal(_encode_watermark(
                            dict(base, w="low")))))
        # the chunk
        sql = "COPY (SELECT %s FROM ONLY %s%s ORDER BY %s) TO STDOUT%s" % (
            t.column_list(), t.name, where, keys,
            " (FORMAT binary)" if self.binary else "")
        conn.copy_start(sql, t.names, t.convs, self.binary, t.schema,
                        t.table, True)
        rows = {}
        while True:
            batch = conn.read(BATCH_ROWS)
            if not batch:
                break
            for ch in batch:
                rows[self._key(t, ch.new)] = ch
        # the high watermark, with the progress, in one transaction
        progress = ""
        if job.repair and job.rid is not None:
            progress = (
                "UPDATE %s SET repairs = coalesce((SELECT jsonb_agg(e) FROM"
                " jsonb_array_elements(repairs::jsonb) e WHERE e->>'rid' <> %s),"
                " '[]'::jsonb)::text, updated = now() WHERE slot = %s AND"
                " table_name = %s;" % (
                    PROGRESS_TABLE, commands.quote_literal(job.rid),
                    commands.quote_literal(self.reader.slot),
                    commands.quote_literal(t.name)))
        elif not job.repair:
            progress = (
                "UPDATE %s SET last_key = %s, done = %s, chunks = chunks + 1,"
                " updated = now() WHERE slot = %s AND table_name = %s;" % (
                    PROGRESS_TABLE,
                    "NULL" if upper is None else "ARRAY[%s]::text[]" % ", ".join(
                        commands.quote_literal(v) for v in upper),
                    "true" if last else "false",
                    commands.quote_literal(self.reader.slot),
                    commands.quote_literal(t.name)))
            if upper is None:   # done: keep the last key for the record
                progress = progress.replace("last_key = NULL, ", "")
        conn.execute(
            "BEGIN; %s SELECT pg_catalog.pg_logical_emit_message(true, %s, %s);"
            " COMMIT" % (progress, commands.quote_literal(WATERMARK_PREFIX),
                         commands.quote_literal(_encode_watermark(
                             dict(base, w="high")))))
        self.jobs.pop(0)
        if not last and not job.repair:
            job.last_key = upper
            self.jobs.insert(0, job)
        self.chunk = _Chunk(cid, job, rows, upper, last)
        self.window = {}


def _oid_name(conn, oid):
    _, rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN"
        " pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = %d" % int(oid))
    return (rows[0][0], rows[0][1])


def _key_literal(key, values, types):
    return ", ".join("%s::%s" % (commands.quote_literal(v), types[c])
                     for c, v in zip(key, values))


def _encode_watermark(info):
    return json.dumps(info, separators=(",", ":"))


def _decode_watermark(content):
    if isinstance(content, (bytes, bytearray, memoryview)):
        content = bytes(content).decode("utf-8")
    info = json.loads(content)
    if not isinstance(info, dict):
        raise ValueError("not a watermark")
    return info


def _parse_text_array(text):
    """A text[] as PostgreSQL prints it ('{a,"b c"}') -> list of str."""
    if text is None:
        return None
    return _types.parse_array(text)
