"""Slots and publications: create, drop, list, and how far behind a slot is.

What ``pld slots``, ``pld create-slot``, ``pld drop-slot`` and ``pld
publication`` call, usable from Python too. Every function takes a
``target``: an `AdminConnection`, a `Reader` (not while it streams) or a
DB-API connection such as psycopg2's (its cursor runs the SQL; replication
commands need one of ours).

Servers differ in what ``pg_replication_slots`` holds (``wal_status`` from
13, ``invalidation_reason``, ``failover``, ``synced`` and
``inactive_since`` from 17...): `slot_columns()` asks the server which
columns it has, and `list_slots()` selects only those, so the same call
works on PostgreSQL 10 to 18.
"""

import collections

from . import _core
from . import commands
from . import conninfo
from . import types as _types
from .errors import (
    ConnectionFailed, InvalidName, NotSupportedError, OperationalError,
    ProgrammingError, SlotNotFound)

__all__ = [
    "AdminConnection", "SLOT_COLUMNS", "slot_columns", "list_slots",
    "invalidation",
    "create_slot", "drop_slot", "create_publication", "drop_publication",
    "list_publications",
]

#: The columns of pg_replication_slots that `list_slots()` reads when the
#: server has them, in display order.
SLOT_COLUMNS = (
    "slot_name", "plugin", "slot_type", "database", "temporary", "active",
    "active_pid", "confirmed_flush_lsn", "restart_lsn", "wal_status",
    "safe_wal_size", "two_phase", "conflicting", "invalidation_reason",
    "failover", "synced", "inactive_since",
)
_BOOL_COLUMNS = ("temporary", "active", "two_phase", "conflicting",
                 "failover", "synced")
_INT_COLUMNS = ("active_pid", "safe_wal_size")
_LSN_COLUMNS = ("confirmed_flush_lsn", "restart_lsn")


class AdminConnection:
    """A connection for slot and publication commands (no stream).

    ``replication=True`` (the default) opens a replication connection
    (``replication=database``), which `create_slot()` and `drop_slot()`
    need and which takes SQL too; ``replication=False`` opens a plain one,
    enough for listing slots and for publications (a role with
    ``pg_monitor`` can list slots without the REPLICATION attribute).
    ``dsn`` and the keywords are as for `Reader`. Connects on first use;
    a context manager. The libpq connection is `connection` (a C
    `Connection`, as under a `Reader`).
    """

    def __init__(self, dsn="", *, replication=True, **conninfo_kwargs):
        self.connection = _core.Connection()
        self._params = conninfo.make_params(dsn, **conninfo_kwargs)
        if not replication:
            del self._params["replication"]

    @property
    def dsn(self):
        """The connection string in use, with any password masked."""
        return conninfo.to_string(self._params)

    @property
    def closed(self):
        """True unless the connection is open."""
        return self.connection.closed

    @property
    def server_version(self):
        """The server version as an int (150004 for 15.4); open only."""
        return self.connection.server_version

    @property
    def backend_pid(self):
        """The PID of the server process of the connection; open only."""
        return self.connection.backend_pid

    def connect(self):
        """Open the connection if it is not open."""
        if not self.closed:
            return
        keys = list(self._params)
        try:
            self.connection.connect(keys, [self._params[k] for k in keys])
        except OperationalError as e:
            if type(e) is not OperationalError:
                raise
            raise ConnectionFailed(str(e)) from None

    def execute(self, command):
        """Run a command (connecting first); return ``(names, rows)`` with
        every value a str or None."""
        self.connect()
        return self.connection.execute(command)

    def close(self):
        """Close the connection (nothing if it is closed)."""
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<%s dsn=%r %s>" % (type(self).__name__, self.dsn,
                                   "closed" if self.closed else "open")


def _query(target, sql):
    """Run SQL on any target; return (names, rows of str or None)."""
    if hasattr(target, "cursor"):               # DB-API (psycopg2)
        with target.cursor() as cur:
            cur.execute(sql)
            if cur.description is None:
                rows = []
                names = ()
            else:
                names = tuple(d[0] for d in cur.description)
                rows = [tuple(None if v is None else _text(v) for v in r)
                        for r in cur.fetchall()]
        if not getattr(target, "autocommit", True):
            target.commit()
        return names, rows
    if getattr(target, "closed", False) and hasattr(target, "connect"):
        target.connect()
    return target.execute(sql)


def _text(v):
    """A DB-API value as the text the server would print."""
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, list):
        return "{%s}" % ",".join(_text(x) for x in v)
    return str(v)


def _server_version(target):
    if getattr(target, "closed", False) and hasattr(target, "connect"):
        target.connect()
    v = getattr(target, "server_version", None)
    if isinstance(v, int):
        return v
    _, rows = _query(target, "SHOW server_version_num")
    return int(rows[0][0])


def existing_columns(target, relation):
    """The column names of a catalog relation (e.g.
    'pg_catalog.pg_replication_slots') on this server, as a set."""
    _, rows = _query(target, columns_query(relation))
    return {r[0] for r in rows}


def slot_columns(target):
    """The columns of `SLOT_COLUMNS` that this server's
    pg_replication_slots has, in `SLOT_COLUMNS` order."""
    have = existing_columns(target, "pg_catalog.pg_replication_slots")
    return [c for c in SLOT_COLUMNS if c in have]


def _bool(v):
    return None if v is None else v in ("t", "true", "True")


def columns_query(relation):
    """SQL listing the column names of a catalog relation (e.g.
    'pg_catalog.pg_replication_slots') on this server."""
    return ("SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s"
            "::regclass AND attnum > 0 AND NOT attisdropped"
            % commands.quote_literal(relation))


def slots_query(cols, name=None):
    """SQL selecting ``cols`` (columns the server has, see `slot_columns`)
    of pg_replication_slots, then lag_bytes and retained_bytes; for the
    slot ``name`` only if given."""
    here = ("CASE WHEN pg_catalog.pg_is_in_recovery() THEN "
            "pg_catalog.pg_last_wal_replay_lsn() ELSE "
            "pg_catalog.pg_current_wal_lsn() END")
    sql = ("SELECT %s, pg_catalog.pg_wal_lsn_diff(%s, confirmed_flush_lsn),"
           " pg_catalog.pg_wal_lsn_diff(%s, restart_lsn)"
           " FROM pg_catalog.pg_replication_slots" % (
               ", ".join(cols), here, here))
    if name is not None:
        sql += " WHERE slot_name = %s" % commands.quote_literal(
            commands.check_slot_name(name))
    return sql + " ORDER BY slot_name"


def parse_slot_row(cols, row):
    """A row of `slots_query` as a dict (see `list_slots`)."""
    d = dict(zip(cols, row))
    for c in _BOOL_COLUMNS:
        if c in d:
            d[c] = _bool(d[c])
    for c in _INT_COLUMNS:
        if c in d and d[c] is not None:
            d[c] = int(d[c])
    for c in _LSN_COLUMNS:
        if d.get(c) is not None:
            d[c] = _core.parse_lsn(d[c])
    if d.get("inactive_since") is not None:
        d["inactive_since"] = _types.parse_timestamptz(d["inactive_since"])
    lag, retained = row[len(cols)], row[len(cols) + 1]
    d["lag_bytes"] = None if lag is None else int(float(lag))
    d["retained_bytes"] = None if retained is None else int(float(retained))
    return d


def list_slots(target, name=None):
    """The replication slots (all, or the one named), as a list of dicts.

    Keys: the columns of `SLOT_COLUMNS` the server has (LSNs and sizes as
    ints, booleans as bool, ``inactive_since`` as an aware datetime), plus
    ``lag_bytes`` (the server's current WAL position minus
    ``confirmed_flush_lsn``: what the consumer has not confirmed yet) and
    ``retained_bytes`` (the current position minus ``restart_lsn``: the
    WAL the slot holds on the server's disk); None where a position is
    unknown (a physical slot has no confirmed_flush_lsn; an invalidated
    slot no restart_lsn). On a standby the current position is the last
    WAL replayed.
    """
    cols = slot_columns(target)
    _, rows = _query(target, slots_query(cols, name))
    return [parse_slot_row(cols, row) for row in rows]


_INVALIDATION_HELP = {
    "wal_removed": "the WAL it needed was removed (it fell behind "
                   "max_slot_wal_keep_size)",
    "rows_removed": "the primary removed rows it needed (on a standby: set "
                    "hot_standby_feedback and primary_slot_name)",
    "wal_level_insufficient": "the primary's wal_level went below logical",
    "idle_timeout": "it stayed inactive longer than "
                    "idle_replication_slot_timeout",
}


def invalidation(status):
    """Why the slot of ``status`` (a `list_slots` dict) is invalidated, as
    ``(reason, explanation)``, or None if it is not. ``reason`` is the
    server's ``invalidation_reason`` (17+); before 17 a lost slot that is
    not ``conflicting`` lost its WAL (``wal_removed``); a conflicting one
    (16) gives None: rows_removed or wal_level_insufficient."""
    reason = status.get("invalidation_reason")
    if reason is None:
        if status.get("conflicting"):
            return (None, "it conflicted with recovery on this standby "
                    "(rows_removed or wal_level_insufficient)")
        if status.get("wal_status") != "lost":
            return None
        reason = "wal_removed"
    return reason, "%s (%s)" % (reason, _INVALIDATION_HELP.get(reason, reason))


SlotCreated = collections.namedtuple(
    "SlotCreated", "slot_name consistent_point snapshot_name output_plugin")


def create_slot(target, name, plugin, *, temporary=False, two_phase=False,
                failover=False):
    """Create a logical replication slot; return what the server said
    (slot_name, consistent_point as an int LSN, snapshot_name,
    output_plugin). ``two_phase`` needs PostgreSQL 15+ (decoding of
    prepared transactions), ``failover`` 17+ (a standby keeps a synced
    copy). Needs a replication connection (`AdminConnection`, `Reader`).
    Raises `SlotExists` if it exists."""
    version = _server_version(target)
    commands.check_slot_features(version, two_phase=two_phase,
                                 failover=failover)
    _, rows = _query(target, commands.create_slot(
        name, plugin, temporary=temporary, snapshot="nothing",
        server_version=version, two_phase=two_phase, failover=failover))
    slot, point, snapshot, out_plugin = rows[0]
    return SlotCreated(slot, _core.parse_lsn(point), snapshot, out_plugin)


def drop_slot(target, name, *, wait=False, missing_ok=False):
    """Drop a replication slot. Raises `SlotNotFound` if it does not exist
    (unless ``missing_ok``; then return False) and `SlotInUse` if a
    consumer holds it (unless ``wait``: then wait until it is released).
    Returns True when a slot was dropped."""
    try:
        _query(target, commands.drop_slot(name, wait=wait))
    except SlotNotFound:
        if not missing_ok:
            raise
        return False
    return True


# -- publications --

def quote_ident(name):
    """Quote an SQL identifier ("..." with quotes doubled)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise InvalidName("an SQL identifier must be a non-empty str "
                          "without NUL: %r" % (name,))
    return '"' + name.replace('"', '""') + '"'


def table_name(t):
    """'table', 'schema.table' or (schema, table) as quoted SQL."""
    if isinstance(t, (tuple, list)):
        schema, table = t
        return "%s.%s" % (quote_ident(schema), quote_ident(table))
    if not isinstance(t, str):
        raise TypeError("a table is 'name', 'schema.name' or (schema, name)")
    return ".".join(quote_ident(p) for p in t.split(".", 1))


def create_publication(target, name, tables=None, *, where=None,
                       columns=None):
    """CREATE PUBLICATION `name` FOR ALL TABLES (``tables`` None) or FOR
    TABLE `tables` (names 'table' or 'schema.table', or (schema, table)
    pairs).

    ``where`` maps a table (as written in ``tables``) to a row filter, an
    SQL boolean expression on its columns (PostgreSQL 15+; the server
    checks it: it may use only the replica identity's columns when the
    publication publishes updates and deletes); ``columns`` maps a table
    to the list of its published columns (PostgreSQL 15+). The expression
    is SQL text: pass only trusted input.

    ``target`` is an `AdminConnection`, a `Reader` (not streaming) or a
    DB-API connection. FOR ALL TABLES needs a superuser.
    """
    if not isinstance(name, str) or not name:
        raise ProgrammingError("a publication name must be a non-empty str")
    where = dict(where or {})
    columns = dict(columns or {})
    if tables is None:
        if where or columns:
            raise ProgrammingError(
                "row filters and column lists need a list of tables, not "
                "FOR ALL TABLES")
        sql = "CREATE PUBLICATION %s FOR ALL TABLES" % quote_ident(name)
    else:
        if isinstance(tables, (str, tuple)):
            tables = [tables]
        tables = list(tables)
        unknown = (set(where) | set(columns)) - set(
            t if isinstance(t, str) else tuple(t) for t in tables)
        if unknown:
            raise ProgrammingError(
                "row filter or column list for a table not in the "
                "publication: %s" % ", ".join(sorted(map(str, unknown))))
        if (where or columns) and _server_version(target) < 150000:
            raise NotSupportedError(
                "row filters and column lists need PostgreSQL 15 or later")
        parts = []
        for t in tables:
            key = t if isinstance(t, str) else tuple(t)
            part = table_name(t)
            if key in columns:
                cols = columns[key]
                if isinstance(cols, str):
                    cols = [c.strip() for c in cols.split(",")]
                part += " (%s)" % ", ".join(quote_ident(c) for c in cols)
            if key in where:
                part += " WHERE (%s)" % where[key]
            parts.append(part)
        sql = "CREATE PUBLICATION %s FOR TABLE %s" % (
            quote_ident(name), ", ".join(parts))
    _query(target, sql)


def drop_publication(target, name, missing_ok=True):
    """DROP PUBLICATION [IF EXISTS] `name` (target as for
    `create_publication`)."""
    _query(target, "DROP PUBLICATION %s%s" % (
        "IF EXISTS " if missing_ok else "", quote_ident(name)))


def list_publications(target):
    """The publications of the database, as a list of dicts: name,
    all_tables, the operations published (insert, update, delete,
    truncate) and tables: a list of dicts (schema, table, and on
    PostgreSQL 15+ columns and row_filter)."""
    _, rows = _query(
        target,
        "SELECT pubname, puballtables, pubinsert, pubupdate, pubdelete,"
        " pubtruncate FROM pg_catalog.pg_publication ORDER BY pubname")
    pubs = []
    by_name = {}
    for name, alltables, ins, upd, dele, trunc in rows:
        p = {"name": name, "all_tables": _bool(alltables),
             "insert": _bool(ins), "update": _bool(upd),
             "delete": _bool(dele), "truncate": _bool(trunc), "tables": []}
        pubs.append(p)
        by_name[name] = p
    have = existing_columns(target, "pg_catalog.pg_publication_tables")
    extra = [c for c in ("attnames", "rowfilter") if c in have]
    _, rows = _query(
        target,
        "SELECT pubname, schemaname, tablename%s FROM "
        "pg_catalog.pg_publication_tables ORDER BY pubname, schemaname, "
        "tablename" % "".join(", " + c for c in extra))
    for row in rows:
        t = {"schema": row[1], "table": row[2]}
        more = dict(zip(extra, row[3:]))
        if "attnames" in more:
            t["columns"] = (None if more["attnames"] is None
                            else _types.parse_array(more["attnames"]))
        if "rowfilter" in more:
            t["row_filter"] = more["rowfilter"]
        if row[0] in by_name:
            by_name[row[0]]["tables"].append(t)
    return pubs
