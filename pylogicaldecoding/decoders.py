"""Decoders: turn each plugin's output into the changes of `changes`.

A decoder is a callable ``decoder(msg) -> change`` that the Reader calls on
every message, in order, before ``event(msg)``; the result is ``msg.change``.
Decoders keep state (pgoutput's relation cache, the transaction in
progress): make a fresh one per stream with `make_decoder()`.

- ``test_decoding``: `TestDecodingDecoder` (rows parsed in C).
- ``pgoutput``: `PgoutputDecoder` (all of it in C), protocol versions 1-4,
  text and binary tuple data.
- ``wal2json``: `Wal2JsonDecoder` (format-version 1 and 2, with the json
  module). For format-version 1 one message holds a whole transaction:
  ``msg.change`` is then a list ``[Begin, change..., Commit]``.

Column values are converted by the converters of a `types.TypeRegistry`
(`types.registry` unless another is given).
"""

import json
import logging
import re

from . import _core
from . import changes
from . import commands
from . import types as _types
from .errors import DecodingError, Error, ProgrammingError

logger = logging.getLogger("pylogicaldecoding")

__all__ = [
    "make_decoder", "default_options", "create_publication",
    "drop_publication", "TestDecodingDecoder", "PgoutputDecoder",
    "Wal2JsonDecoder", "DECODERS", "load_wal2json_columns",
    "CatalogConnection",
]


# -- test_decoding ------------------------------------------------------------

_TD_BEGIN = re.compile(r"BEGIN(?: (\d+))?\Z")
_TD_COMMIT = re.compile(r"COMMIT(?: (\d+))?(?: \(at (.+)\))?\Z")
_TD_MESSAGE = re.compile(rb"message: transactional: ([01]) prefix: ")
_TD_STREAM_MESSAGE = re.compile(
    r"streaming message: transactional: ([01]) prefix: (.*), sz: (\d+)\Z",
    re.S)
_GID = r"'((?:[^']|'')*)'"
_TD_2PC = re.compile(
    r"(PREPARE TRANSACTION|COMMIT PREPARED|ROLLBACK PREPARED) " + _GID
    + r"(?:, txid (\d+))?(?: \(at (.+)\))?\Z", re.S)
_TD_STREAM_PREPARE = re.compile(
    r"preparing streamed transaction(?: TXN)? " + _GID
    + r"(?:, txid (\d+))?(?: \(at (.+)\))?\Z", re.S)
_TD_STREAM = re.compile(
    r"(opening a streamed block for|closing a streamed block for"
    r"|committing streamed"
    r"|aborting streamed \(sub\)) ?transaction(?: TXN (\d+))?"
    r"(?: \(at (.+)\))?\Z")
_TD_STREAM_CHANGE = re.compile(r"streaming (?:change|truncate) for ")


def _int_or_none(s):
    return None if s is None else int(s)


def _time_or_none(s):
    return None if s is None else _types.parse_timestamptz(s)


def _td_message(msg, decoder, payload):
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    m = _TD_MESSAGE.match(data)
    if not m:
        return None
    rest = data[m.end():]
    # 'prefix, sz: N content:BYTES': the prefix may hold ', sz: '; the
    # right split is the one where N is the length of what follows.
    for sz in re.finditer(rb", sz: (\d+) content:", rest):
        n = int(sz.group(1))
        if len(rest) - sz.end() == n:
            transactional = m.group(1) == b"1"
            return changes.Message(
                rest[:sz.start()].decode("utf-8", "replace"),
                rest[sz.end():], transactional, msg.data_start,
                decoder.xid if transactional else None)
    return None


def _td_other(msg, decoder):
    """The lines of test_decoding that are not rows."""
    payload = msg.payload
    text = payload if isinstance(payload, str) else payload.decode(
        "utf-8", "replace")
    m = _TD_BEGIN.match(text)
    if m:
        decoder.xid = _int_or_none(m.group(1))
        return changes.Begin(decoder.xid, msg.data_start)
    m = _TD_COMMIT.match(text)
    if m:
        xid = _int_or_none(m.group(1))
        decoder.xid = None
        return changes.Commit(xid, msg.data_start, _time_or_none(m.group(2)))
    if text.startswith("message: "):
        ch = _td_message(msg, decoder, payload)
        if ch is not None:
            return ch
    m = _TD_2PC.match(text)
    if m:
        kind = {"PREPARE TRANSACTION": changes.Prepare,
                "COMMIT PREPARED": changes.CommitPrepared,
                "ROLLBACK PREPARED": changes.RollbackPrepared}[m.group(1)]
        gid = m.group(2).replace("''", "'")
        xid = _int_or_none(m.group(3))
        if xid is None:
            xid = decoder.xid
        decoder.xid = None
        # the time printed is the time of the event the line reports
        when = {changes.Prepare: "prepare_time",
                changes.CommitPrepared: "commit_time",
                changes.RollbackPrepared: "rollback_time"}[kind]
        return kind(xid, gid, msg.data_start,
                    **{when: _time_or_none(m.group(4))})
    m = _TD_STREAM.match(text)
    if m:
        xid = _int_or_none(m.group(2))
        what = m.group(1)
        if what.startswith("opening"):
            return changes.StreamStart(xid)
        if what.startswith("closing"):
            return changes.StreamStop()
        if what.startswith("committing"):
            return changes.StreamCommit(xid, msg.data_start,
                                        _time_or_none(m.group(3)))
        return changes.StreamAbort(xid)
    m = _TD_STREAM_PREPARE.match(text)
    if m:
        return changes.StreamPrepare(
            _int_or_none(m.group(2)), m.group(1).replace("''", "'"),
            msg.data_start, None, _time_or_none(m.group(3)))
    m = _TD_STREAM_MESSAGE.match(text)
    if m:
        # in streaming mode test_decoding prints no content
        return changes.Message(m.group(2), None, m.group(1) == "1",
                               msg.data_start, None)
    if _TD_STREAM_CHANGE.match(text):
        # test_decoding's streaming mode prints no row data: nothing to give
        return None
    raise DecodingError("test_decoding output at %s: unknown line: %r"
                        % (_core.format_lsn(msg.data_start), text[:60]))


def TestDecodingDecoder(registry=None):
    """A decoder of test_decoding's output (payloads str or bytes).

    Rows (INSERT, UPDATE, DELETE, TRUNCATE) are parsed in C; BEGIN,
    COMMIT, messages, stream and two-phase lines in Python. Values are
    converted by the registry's converter for the printed type name.
    With ``stream-changes`` test_decoding prints no row data: those
    lines decode to None.
    """
    reg = _types.registry if registry is None else registry
    return _core.TestDecodingDecoder(reg.resolve_name, _td_other)


# -- pgoutput -----------------------------------------------------------------

def PgoutputDecoder(registry=None):
    """A decoder of pgoutput's binary messages (payloads bytes), for
    protocol versions 1 to 4, with text or binary tuple data."""
    reg = _types.registry if registry is None else registry

    def resolve(oid, tname, binary):
        if tname is None:
            return reg.resolve(oid, None, binary)
        schema, name = tname
        default = _types.bin_str_or_bytes if binary else _types.text_str
        if schema != "pg_catalog":
            conv = reg.resolve(oid, "%s.%s" % (schema, name), binary)
            if conv is not default:
                return conv
        return reg.resolve(oid, name, binary)
    return _core.PgoutputDecoder(resolve)


# -- wal2json -----------------------------------------------------------------

def _wal2json_bytea(s):
    return bytes.fromhex(s) if not s.startswith("\\") else \
        _types.text_bytea(s)


#: The columns of every user table, in order, for wal2json's left-out
#: unchanged TOAST values: (schema, table, column, 't' if the column can
#: hold a TOAST pointer). Stored generated columns are in (wal2json
#: prints them).
WAL2JSON_COLUMNS_QUERY = (
    "SELECT n.nspname, c.relname, a.attname,"
    " CASE WHEN a.attlen = -1 AND a.attstorage <> 'p' THEN 't' ELSE 'f' END"
    " FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND a.attnum > 0"
    " AND NOT a.attisdropped"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%'"
    " ORDER BY c.oid, a.attnum")


def wal2json_table_query(schema, table):
    """`WAL2JSON_COLUMNS_QUERY` for one table."""
    where = " AND n.nspname = %s AND c.relname = %s ORDER BY" % (
        commands.quote_literal(schema), commands.quote_literal(table))
    return WAL2JSON_COLUMNS_QUERY.replace(" ORDER BY", where, 1)


def load_wal2json_columns(execute, server_version=None, table=None):
    """Read the columns of the user tables with ``execute(sql) -> (names,
    rows)``: {(schema, table): [(column, toastable), ...]} in column
    order, for `Wal2JsonDecoder`'s ``columns``. With ``table`` (a
    (schema, name) pair) only that table's. (``server_version`` is
    unused: the query works on every version wal2json supports.)"""
    _, rows = execute(WAL2JSON_COLUMNS_QUERY if table is None
                      else wal2json_table_query(*table))
    out = {}
    for schema, name, column, toastable in rows:
        out.setdefault((schema, name), []).append((column, toastable == "t"))
    return out


class CatalogConnection:
    """A plain (SQL, not replication) connection to the Reader's server,
    opened on first use, for what a decoder must read from the catalog
    while the stream runs (its replication connection, in COPY BOTH,
    cannot run queries): ``execute(sql) -> (names, rows)``. It is a
    `_core.CopyConnection` made with the Reader's connection parameters
    less ``replication``; `close()` closes it (the next `execute()`
    opens another)."""

    def __init__(self, params):
        from . import snapshot as _snapshot
        self._params = _snapshot.worker_params(params)
        self._connect = _snapshot.connect
        self._conn = None

    def execute(self, sql):
        """Run ``sql`` (connecting first if needed): (names, rows)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = self._connect(self._params)
        try:
            return conn.execute(sql)
        except BaseException:
            if conn.closed:
                self._conn = None
            raise

    __call__ = execute

    def close(self):
        """Close the connection, if open."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @property
    def closed(self):
        """True when no connection is open."""
        return self._conn is None or self._conn.closed


class Wal2JsonDecoder:
    """A decoder of wal2json's output, format-version 1 or 2 (str payloads).

    wal2json prints numbers as JSON numbers (kept exact here), NaN and
    infinite floats and numerics as null. Non-UTF-8 message contents
    arrive empty.

    Unchanged TOAST values: wal2json leaves those columns out of an
    update's new row. With ``columns`` (the tables' column lists, as
    `load_wal2json_columns()` reads them: `make_decoder()` does when
    given the Reader's ``execute``) they are put back as `UNCHANGED`, as
    pgoutput and test_decoding give them.

    With ``catalog`` (an ``execute(sql)`` on a plain connection: the
    Readers give a `CatalogConnection`) a table's list is read again
    while streaming, for an update of a table the lists lack, an update
    whose columns do not fit its table's list (a column added, renamed or
    dropped), and, after an empty transaction (which is what a DDL-only
    transaction looks like in wal2json's output), for the next update of
    each table that leaves columns out. The catalog read is the table as
    it is when the change is decoded, not as it was when it was written:
    docs/decoding.md says what that can give. Without ``catalog`` (or
    when it fails: logged once) a table whose updates do not fit its
    list has its rows left as wal2json prints them.

    ``write-in-chunks`` (format-version 1): wal2json then splits a
    transaction over several messages (the header, one per change, the
    end); each decodes to a list of its own changes: ``[Begin]``,
    ``[change]``..., ``[Commit]``.
    """

    def __init__(self, registry=None, columns=None, catalog=None):
        self.registry = _types.registry if registry is None else registry
        self._convs = {}
        self.xid = None
        self._loads = json.JSONDecoder(parse_float=str, parse_int=str).decode
        self._columns_of = dict(columns or {})
        self._names_of = {}
        self._chunk = None      # the header of a chunked transaction
        self.catalog = catalog
        # DDL hints: +1 after each empty transaction; the hint at which
        # each table's list was read; column sets a fresh list still did
        # not fit (not read again for them until the next hint)
        self._hint = 0
        self._read_at = dict.fromkeys(self._columns_of, 0)
        self._misfits = {}
        self._in_txn = 0        # changes in the transaction so far

    def close(self):
        """Close the catalog connection (if it has a ``close``)."""
        close = getattr(self.catalog, "close", None)
        if close is not None:
            close()

    def _conv(self, tname, oid):
        key = (tname, oid)
        conv = self._convs.get(key)
        if conv is None:
            if tname is not None:
                conv = self.registry.resolve_name(tname)
                if conv is _types.text_str and oid is not None:
                    conv = self.registry.resolve(int(oid), None, False)
            else:
                conv = self.registry.resolve(
                    None if oid is None else int(oid), None, False)
            if conv is _types.text_bytea:
                # wal2json prints bytea as bare hex digits
                conv = _wal2json_bytea
            self._convs[key] = conv
        return conv

    def _value(self, v, tname, oid):
        if v is None or v is True or v is False:
            return v
        return self._conv(tname, oid)(v)

    def _columns(self, cols):
        if cols is None:
            return None
        return {c["name"]: self._value(c.get("value"), c.get("type"),
                                       c.get("typeoid")) for c in cols}

    def _lists(self, names, types_, oids, values):
        if names is None:
            return None
        oids = oids or [None] * len(names)
        types_ = types_ or [None] * len(names)
        return {n: self._value(v, t, o)
                for n, t, o, v in zip(names, types_, oids, values)}

    def _refresh(self, key):
        """Read `key`'s columns again; False if there is no catalog."""
        if self.catalog is None:
            return False
        try:
            got = load_wal2json_columns(self.catalog, table=key)
        except Error as e:
            logger.warning(
                "wal2json: cannot read the columns of %s.%s (%s): updates "
                "whose columns changed are left as printed", key[0], key[1],
                e)
            close = getattr(self.catalog, "close", None)
            if close is not None:
                close()
            self.catalog = None
            return False
        self._columns_of[key] = got.get(key)
        self._names_of.pop(key, None)
        self._read_at[key] = self._hint
        self._misfits.pop(key, None)
        return True

    def _fill(self, key, new):
        """`new` completed from `key`'s list; `new` itself when nothing
        is left out; None when it does not fit the list."""
        cols = self._columns_of.get(key)
        if cols is None:
            return None
        names = self._names_of.get(key)
        if names is None:
            names = self._names_of[key] = {c for c, _ in cols}
        if not new.keys() <= names or any(
                c not in new for c, toastable in cols if not toastable):
            return None
        if len(new) == len(cols):
            return new
        return {c: new[c] if c in new else changes.UNCHANGED
                for c, _ in cols}

    def _unchanged(self, schema, table, new):
        """An update's new row with the TOAST columns wal2json left out
        put back as UNCHANGED, in the table's column order."""
        if new is None:
            return new
        key = (schema, table)
        refreshed = False
        if key not in self._read_at:
            # a table created since the lists were read
            refreshed = self._refresh(key)
        elif self._read_at[key] < self._hint:
            cols = self._columns_of.get(key)
            if cols is None or len(new) != len(cols):
                # DDL may have run since the list was read
                refreshed = self._refresh(key)
        out = self._fill(key, new)
        if out is not None:
            return out
        sig = frozenset(new)
        if not refreshed and sig not in self._misfits.get(key, ()):
            if self._refresh(key):
                out = self._fill(key, new)
                if out is not None:
                    return out
        if self.catalog is None:
            # the table changed since the list was read: leave its rows
            # as printed rather than guess
            self._columns_of.pop(key, None)
            self._read_at[key] = self._hint
        else:
            # the catalog has moved on since this change was written
            self._misfits.setdefault(key, set()).add(sig)
        return new

    def _begin(self):
        self._in_txn = 0

    def _commit(self):
        if not self._in_txn:
            # a transaction with no change: DDL, perhaps
            self._hint += 1
        self._in_txn = 0

    def __call__(self, msg):
        payload = msg.payload
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8")
        try:
            try:
                doc = self._loads(payload)
            except ValueError:
                out = self._chunked(msg, payload)
                if out is None:
                    raise
                return out
            if not isinstance(doc, dict):
                raise DecodingError("wal2json output at %s: not a JSON "
                                    "object" % _core.format_lsn(
                                        msg.data_start))
            if "action" in doc:
                return self._v2(msg, doc)
            if "kind" in doc:
                # write-in-chunks: a transaction's first change
                if self._chunk is None:
                    raise DecodingError(
                        "wal2json output at %s: a change outside a "
                        "transaction" % _core.format_lsn(msg.data_start))
                return [self._v1_change(msg, doc, self._chunk[0])]
            return self._v1(msg, doc)
        except DecodingError:
            raise
        except Exception as e:
            raise DecodingError("wal2json output at %s: %s: %s" % (
                _core.format_lsn(msg.data_start), type(e).__name__, e)) from e

    def _chunked(self, msg, payload):
        """format-version 1 with write-in-chunks: the header (the document
        up to '"change":['), a change (after the first: with a leading
        comma) or the end (']}'); None if the payload is none of them."""
        text = payload.strip()
        if text.startswith("{") and text.endswith("["):
            head = self._loads(text + "]}")
            xid = _int_or_none(head.get("xid"))
            ts = _time_or_none(head.get("timestamp"))
            self._chunk = (xid, ts, self._lsn(head, "nextlsn"))
            self._begin()
            return [changes.Begin(xid, msg.data_start, ts)]
        if self._chunk is None:
            return None
        if "".join(text.split()) == "]}":
            xid, ts, nextlsn = self._chunk
            self._chunk = None
            self._commit()
            return [changes.Commit(xid, msg.data_start, ts, nextlsn)]
        if text.startswith(","):
            doc = self._loads(text[1:])
            if isinstance(doc, dict) and "kind" in doc:
                return [self._v1_change(msg, doc, self._chunk[0])]
        return None

    @staticmethod
    def _lsn(doc, key="lsn"):
        v = doc.get(key)
        return _core.parse_lsn(v) if v else None

    def _v2(self, msg, doc):
        action = doc["action"]
        xid = _int_or_none(doc.get("xid"))
        lsn = self._lsn(doc) or msg.data_start
        if action not in ("B", "C"):
            self._in_txn += 1
        if action == "B":
            self.xid = xid
            self._begin()
            return changes.Begin(xid, lsn, _time_or_none(doc.get("timestamp")))
        if action == "C":
            self.xid = None
            self._commit()
            return changes.Commit(xid, lsn, _time_or_none(doc.get("timestamp")),
                                  self._lsn(doc, "nextlsn"))
        if action in ("I", "U", "D"):
            cls = {"I": changes.Insert, "U": changes.Update,
                   "D": changes.Delete}[action]
            new = self._columns(doc.get("columns")) if action != "D" else None
            if action == "U":
                new = self._unchanged(doc["schema"], doc["table"], new)
            old = self._columns(doc.get("identity"))
            return cls(doc["schema"], doc["table"], new, old, lsn,
                       xid if xid is not None else self.xid)
        if action == "T":
            return changes.Truncate([(doc["schema"], doc["table"])], None,
                                    None, lsn, xid)
        if action == "M":
            content = doc.get("content")
            return changes.Message(
                doc.get("prefix"),
                None if content is None else content.encode("utf-8"),
                bool(doc.get("transactional")), lsn, xid)
        raise DecodingError("wal2json output at %s: unknown action %r"
                            % (_core.format_lsn(msg.data_start), action))

    def _v1_change(self, msg, c, xid):
        kind = c["kind"]
        self._in_txn += 1
        if kind == "message":
            content = c.get("content")
            return changes.Message(
                c.get("prefix"),
                None if content is None else content.encode("utf-8"),
                bool(c.get("transactional")), msg.data_start, xid)
        cls = {"insert": changes.Insert, "update": changes.Update,
               "delete": changes.Delete}.get(kind)
        if cls is None:
            raise DecodingError("wal2json output at %s: unknown kind %r"
                                % (_core.format_lsn(msg.data_start), kind))
        new = self._lists(c.get("columnnames"), c.get("columntypes"),
                          c.get("columntypeoids"), c.get("columnvalues"))
        if kind == "update":
            new = self._unchanged(c["schema"], c["table"], new)
        ok = c.get("oldkeys")
        old = None if ok is None else self._lists(
            ok.get("keynames"), ok.get("keytypes"), ok.get("keytypeoids"),
            ok.get("keyvalues"))
        return cls(c["schema"], c["table"], new, old, msg.data_start, xid)

    def _v1(self, msg, doc):
        xid = _int_or_none(doc.get("xid"))
        ts = _time_or_none(doc.get("timestamp"))
        out = [changes.Begin(xid, msg.data_start, ts)]
        self._begin()
        for c in doc.get("change", ()):
            out.append(self._v1_change(msg, c, xid))
        self._commit()
        out.append(changes.Commit(xid, msg.data_start, ts,
                                  self._lsn(doc, "nextlsn")))
        return out


# -- the registry of decoders ------------------------------------------------

#: plugin name -> factory(registry) of a decoder
DECODERS = {
    "test_decoding": TestDecodingDecoder,
    "pgoutput": PgoutputDecoder,
    "wal2json": Wal2JsonDecoder,
}


def make_decoder(plugin, options=None, server_version=None, *,
                 registry=None, execute=None, catalog=None):
    """A fresh decoder for `plugin`, or None if we have none for it.

    Call it for each new stream (a reconnect starts with an empty
    relation cache). With ``execute`` (the Reader's ``execute``, before
    START_REPLICATION), the user-defined domains, enums and array types
    are read from the catalog first, so that test_decoding and wal2json
    convert domains as their base type and pgoutput's binary form knows
    enums (else they are bytes); for wal2json also the tables' columns,
    to give its left-out unchanged TOAST values as `UNCHANGED`, and with
    ``catalog`` (an ``execute`` usable while streaming: a
    `CatalogConnection`) to read them again when a table changes while
    streaming. ``registry``: the `types.TypeRegistry` to use (default
    `types.registry`).
    """
    factory = DECODERS.get(plugin)
    if factory is None:
        return None
    reg = _types.registry if registry is None else registry
    if execute is not None:
        reg = reg.copy()
        _types.load_catalog(execute, reg)
        if plugin == "wal2json":
            return factory(reg, load_wal2json_columns(execute,
                                                      server_version),
                           catalog)
    return factory(reg)


def _proto_version(server_version):
    if server_version is None:
        return "1"
    if server_version >= 160000:
        return "4"
    if server_version >= 150000:
        return "3"
    if server_version >= 140000:
        return "2"
    return "1"


def default_options(plugin, options=None, server_version=None):
    """The plugin options to send: `options` completed with what decoding
    needs and a user should not have to think about.

    - pgoutput: ``proto_version`` (the highest this server has: 1 before
      PostgreSQL 14, 2 on 14, 3 on 15, 4 on 16+) and ``messages`` 'true'
      (14+). ``publication_names`` is required: without it a
      ProgrammingError says how to create a publication.
    - wal2json: ``format-version`` '2', ``include-xids``,
      ``include-timestamp``, ``include-lsn``, ``include-type-oids`` and
      ``include-domain-data-type`` on (format-version 1: the same, less
      ``include-lsn``).
    - test_decoding: unchanged (its defaults print xids).

    Options given by the caller always win.
    """
    opts = dict(options or {})
    if plugin == "pgoutput":
        if not opts.get("publication_names"):
            raise ProgrammingError(
                "pgoutput needs a publication: create one with "
                "pylogicaldecoding.decoders.create_publication(reader, "
                "'my_pub') (or CREATE PUBLICATION my_pub FOR ALL TABLES) and "
                "pass options={'publication_names': 'my_pub'}")
        opts.setdefault("proto_version", _proto_version(server_version))
        if server_version is None or server_version >= 140000:
            opts.setdefault("messages", "true")
    elif plugin == "wal2json":
        version = str(opts.setdefault("format-version", "2"))
        opts.setdefault("include-xids", "1")
        opts.setdefault("include-timestamp", "1")
        if version == "2":
            opts.setdefault("include-lsn", "1")
        opts.setdefault("include-type-oids", "1")
        opts.setdefault("include-domain-data-type", "1")
    return opts


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _table_name(t):
    if isinstance(t, (tuple, list)):
        schema, table = t
        return "%s.%s" % (_quote_ident(schema), _quote_ident(table))
    if not isinstance(t, str):
        raise TypeError("a table is 'name', 'schema.name' or (schema, name)")
    return ".".join(_quote_ident(p) for p in t.split(".", 1))


def _run(target, sql):
    if hasattr(target, "cursor"):       # a DB-API connection (psycopg2)
        with target.cursor() as cur:
            cur.execute(sql)
        if not getattr(target, "autocommit", True):
            target.commit()
    else:                               # a Reader: execute(sql)
        if getattr(target, "closed", False) and hasattr(target, "connect"):
            target.connect()
        target.execute(sql)


def create_publication(target, name, tables=None):
    """CREATE PUBLICATION `name` FOR ALL TABLES (or FOR TABLE `tables`:
    names 'table' or 'schema.table', or (schema, table) pairs).

    `target` is a Reader (not streaming: the command runs on its
    connection) or a DB-API connection such as psycopg2's. FOR ALL TABLES
    needs a superuser.
    """
    if not isinstance(name, str) or not name:
        raise ProgrammingError("a publication name must be a non-empty str")
    if tables is None:
        sql = "CREATE PUBLICATION %s FOR ALL TABLES" % _quote_ident(name)
    else:
        if isinstance(tables, (str, tuple)):
            tables = [tables]
        sql = "CREATE PUBLICATION %s FOR TABLE %s" % (
            _quote_ident(name), ", ".join(_table_name(t) for t in tables))
    _run(target, sql)


def drop_publication(target, name, missing_ok=True):
    """DROP PUBLICATION [IF EXISTS] `name` (target as for
    `create_publication`)."""
    _run(target, "DROP PUBLICATION %s%s" % (
        "IF EXISTS " if missing_ok else "", _quote_ident(name)))
