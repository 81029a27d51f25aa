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

import logging
import queue
import threading

from . import _core
from . import commands
from . import types as _types
from .changes import SnapshotEnd, SnapshotRow, SnapshotStart
from .errors import InterfaceError, ProgrammingError, SnapshotError

logger = logging.getLogger("pylogicaldecoding")

__all__ = ["InitialSnapshot", "BATCH_ROWS", "SPLIT_MIN_PAGES"]

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
        tables = [(r[0], r[1]) for r in rows]
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

    def run(self, reader, slot_info):
        """Copy the tables as of ``slot_info`` (a `SlotInfo` with a
        snapshot name) and deliver the rows to ``reader.event()``."""
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
            # ack() of the snapshot's messages: see ack() (the C ack needs
            # a running stream)
            reader.__dict__["ack"] = self.ack
            try:
                if self.workers == 1:
                    self._copy_serial(reader, conns[0], plans, binary)
                else:
                    self._copy_parallel(reader, conns, plans, binary)
            except _Stopped:
                logger.warning("initial snapshot of slot %r stopped before "
                               "its end", reader.slot)
                return False
            self.done = True
            return True
        finally:
            self.delivering = False
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

    def _copy_serial(self, reader, conn, plans, binary):
        event = reader.event
        payload = b"" if reader.binary else ""
        stop = reader._stop_requested
        for t in plans:
            event(self._message(reader, SnapshotStart(t.schema, t.table,
                                                      False)))
            n = 0
            conn.copy_start(t.copy_sql(None, binary), t.names, t.convs,
                            binary, t.schema, t.table)
            while True:
                batch = conn.read(BATCH_ROWS, self.point, payload)
                if not batch:
                    break
                for m in batch:
                    event(m)
                n += len(batch)
                if stop.is_set():
                    raise _Stopped()
            self.rows += n
            event(self._message(reader, SnapshotEnd(t.schema, t.table, n,
                                                    False)))

    def _copy_parallel(self, reader, conns, plans, binary):
        event = reader.event
        payload = b"" if reader.binary else ""
        tasks = queue.Queue()
        owner = []
        for i, t in enumerate(plans):
            for part in t.parts:
                tasks.put((len(owner), t.copy_sql(part, binary)))
                owner.append(i)
        out = queue.Queue(maxsize=2 * len(conns))
        stop = threading.Event()
        threads = [threading.Thread(
            target=self._worker, name="pld-snapshot-%d" % i, daemon=True,
            args=(conn, plans, owner, tasks, out, stop, binary, payload))
            for i, conn in enumerate(conns)]
        remaining = [len(t.parts) for t in plans]
        counts = [0] * len(plans)
        started = [False] * len(plans)
        for th in threads:
            th.start()
        try:
            alive = len(threads)
            while alive:
                try:
                    kind, task, batch = out.get(timeout=0.5)
                except queue.Empty:
                    if reader._stop_requested.is_set():
                        raise _Stopped()
                    continue
                if kind == "exit":
                    alive -= 1
                    continue
                if kind == "error":
                    raise batch
                i = owner[task]
                t = plans[i]
                if not started[i]:
                    started[i] = True
                    event(self._message(reader, SnapshotStart(
                        t.schema, t.table, False)))
                if batch is None:
                    remaining[i] -= 1
                    if remaining[i] == 0:
                        self.rows += counts[i]
                        event(self._message(reader, SnapshotEnd(
                            t.schema, t.table, counts[i], False)))
                    continue
                for m in batch:
                    event(m)
                counts[i] += len(batch)
                if reader._stop_requested.is_set():
                    raise _Stopped()
        finally:
            stop.set()
            while any(th.is_alive() for th in threads):
                try:            # unblock workers waiting to put
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass
            for th in threads:
                th.join()

    @staticmethod
    def _put(out, item, stop):
        while True:
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                if stop.is_set():
                    return False

    def _worker(self, conn, plans, owner, tasks, out, stop, binary, payload):
        try:
            while not stop.is_set():
                try:
                    task, sql = tasks.get_nowait()
                except queue.Empty:
                    break
                t = plans[owner[task]]
                conn.copy_start(sql, t.names, t.convs, binary, t.schema,
                                t.table)
                while not stop.is_set():
                    batch = conn.read(BATCH_ROWS, self.point, payload)
                    if not batch:
                        break
                    if not self._put(out, ("rows", task, batch), stop):
                        return
                else:
                    return
                if not self._put(out, ("rows", task, None), stop):
                    return
        except BaseException as e:     # handed to the delivering thread
            self._put(out, ("error", None, e), stop)
        finally:
            self._put(out, ("exit", None, None), stop)
