"""Output formats: typed changes as JSON records and as Debezium envelopes.

What ``pld stream --format json|debezium`` prints, and what other sinks
(the JetStream sink, your own) can reuse. Two layers:

- stateless functions: `change_to_json()` and `change_to_debezium()` turn
  one typed change into JSON-ready dicts; `jsonable()` converts one value;
  `dumps()` makes the compact JSON text of a record;
- `Formatter`: follows the stream message by message, remembering the
  transaction in progress so that every row carries its xid and, when the
  plugin sends it at BEGIN (pgoutput, wal2json), its commit time.

Values (`jsonable`), the same in both formats:

=============================== ==========================================
Python value                    JSON
=============================== ==========================================
None, bool, int, str            as is
float                           number; NaN, Infinity, -Infinity as the
                                strings "NaN", "Infinity", "-Infinity"
decimal.Decimal                 string ("12.50", "NaN"): no precision lost
bytes                           string in PostgreSQL's bytea hex form:
                                ``"\\\\xdeadbeef"`` (the text ``\\xdeadbeef``)
datetime, date, time            ISO 8601 string (``isoformat()``; aware
                                values keep their offset)
timedelta                       ISO 8601 duration ("P1DT2H3M4.5S",
                                "-PT1S"), days as counted by the converter
UUID, ipaddress values          their str()
list, tuple                     array (converted element by element)
dict (json/jsonb columns)       object (converted value by value)
`UNCHANGED`                     the marker string `UNCHANGED_MARKER` in
                                ``--format json``, Debezium's placeholder
                                `DEBEZIUM_UNAVAILABLE` in ``--format
                                debezium`` (both can be changed)
anything else                   its str()
=============================== ==========================================

LSNs are "X/Y" text in ``--format json`` (as PostgreSQL prints them) and
integers in Debezium's ``source.lsn`` (as Debezium does).
"""

import base64
import datetime as _dt
import decimal
import json
import json.encoder as _jenc
import math
import time as _time
from typing import Any, Dict, Tuple

from . import _core
from . import changes as _changes
from ._version import __version__

__all__ = [
    "UNCHANGED_MARKER", "DEBEZIUM_UNAVAILABLE", "KINDS", "jsonable",
    "change_to_json", "change_to_debezium", "read_to_json",
    "read_to_debezium", "dumps", "json_text", "Formatter",
]

#: What an unchanged TOAST value (`pylogicaldecoding.UNCHANGED`) becomes in
#: ``--format json``: the server did not send the value because the update
#: did not change it. Test for it before applying a row.
UNCHANGED_MARKER = "__pld_unchanged_toast__"

#: What an unchanged TOAST value becomes in ``--format debezium``: the
#: default of Debezium's ``unavailable.value.placeholder``.
DEBEZIUM_UNAVAILABLE = "__debezium_unavailable_value"

#: The "kind" of each change class in ``--format json``.
KINDS = {
    _changes.Begin: "begin",
    _changes.Commit: "commit",
    _changes.Insert: "insert",
    _changes.Update: "update",
    _changes.Delete: "delete",
    _changes.Truncate: "truncate",
    _changes.Message: "message",
    _changes.Relation: "relation",
    _changes.Type: "type",
    _changes.Origin: "origin",
    _changes.StreamStart: "stream_start",
    _changes.StreamStop: "stream_stop",
    _changes.StreamCommit: "stream_commit",
    _changes.StreamAbort: "stream_abort",
    _changes.BeginPrepare: "begin_prepare",
    _changes.Prepare: "prepare",
    _changes.CommitPrepared: "commit_prepared",
    _changes.RollbackPrepared: "rollback_prepared",
    _changes.StreamPrepare: "stream_prepare",
}

_DEBEZIUM_OPS = {
    _changes.Insert: "c",
    _changes.Update: "u",
    _changes.Delete: "d",
}

_UNCHANGED = _changes.UNCHANGED
_UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)


def _duration(td):
    """A timedelta as an ISO 8601 duration."""
    usecs = (td.days * 86400 + td.seconds) * 1000000 + td.microseconds
    sign = "-" if usecs < 0 else ""
    usecs = abs(usecs)
    days, usecs = divmod(usecs, 86400 * 1000000)
    hours, usecs = divmod(usecs, 3600 * 1000000)
    minutes, usecs = divmod(usecs, 60 * 1000000)
    secs, usecs = divmod(usecs, 1000000)
    out = sign + "P"
    if days:
        out += "%dD" % days
    clock = ""
    if hours:
        clock += "%dH" % hours
    if minutes:
        clock += "%dM" % minutes
    if secs or usecs or not (days or hours or minutes):
        if usecs:
            clock += ("%d.%06d" % (secs, usecs)).rstrip("0") + "S"
        else:
            clock += "%dS" % secs
    if clock:
        out += "T" + clock
    return out


def jsonable(value, unchanged=UNCHANGED_MARKER):
    """Convert a column value (as the decoders make it) to a value that
    `json.dumps` writes as valid JSON, by the table of the module's doc.

    ``unchanged`` replaces `UNCHANGED` (an unchanged TOAST value).
    """
    if value is None or value is True or value is False:
        return value
    t = type(value)
    if t is int or t is str:
        return value
    if t is float:
        if math.isfinite(value):
            return value
        return "NaN" if value != value else (
            "Infinity" if value > 0 else "-Infinity")
    if t is decimal.Decimal:
        return str(value)
    if value is _UNCHANGED:
        return unchanged
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (_dt.date, _dt.time)):     # datetime is a date
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return _duration(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v, unchanged) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v, unchanged) for k, v in value.items()}
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return jsonable(float(value), unchanged)
    if isinstance(value, str):
        return str(value)
    return str(value)


def _row(row, unchanged):
    if row is None:
        return None
    return {k: jsonable(v, unchanged) for k, v in row.items()}


def _lsn_text(lsn):
    return None if not lsn else _core.format_lsn(lsn)


def _field(name, value, unchanged):
    """One field of a change other than a row, for --format json."""
    if value is None:
        return None
    if name.endswith("lsn") and isinstance(value, int):
        return _core.format_lsn(value)
    if hasattr(value, "_asdict"):               # Relation's Column
        return {k: _field(k, v, unchanged)
                for k, v in value._asdict().items()}
    if isinstance(value, list) and value and hasattr(value[0], "_asdict"):
        return [_field(name, v, unchanged) for v in value]
    return jsonable(value, unchanged)


def kind_of(change):
    """The "kind" of a change in --format json (its class, in snake_case)."""
    kind = KINDS.get(type(change))
    if kind is None:
        for cls, k in KINDS.items():
            if isinstance(change, cls):
                return k
        name = type(change).__name__
        kind = "".join("_" + c.lower() if c.isupper() else c
                       for c in name).lstrip("_")
    return kind


def change_to_json(change, *, lsn=None, xid=None, commit_time=None,
                   unchanged=UNCHANGED_MARKER):
    """One typed change as the dict ``pld stream --format json`` prints.

    Every record has ``kind`` (see `KINDS`), ``lsn`` (the change's WAL
    position as "X/Y" text, else ``lsn``, an int from the stream message;
    null when unknown) and ``xid`` (the change's, else ``xid``, else null).

    - insert, update, delete: ``schema``, ``table``, ``new``, ``old``
      (rows as objects column -> value, or null; ``old`` holds the replica
      identity when the plugin sends it) and ``commit_time`` (ISO 8601,
      when known: ``commit_time``, given by `Formatter` from the BEGIN).
    - begin, commit: ``commit_time``, ``final_lsn`` / ``end_lsn``.
    - truncate: ``tables`` (list of [schema, table]), ``cascade``,
      ``restart_identity``.
    - message: ``prefix``, ``transactional``, ``content`` (bytes, as
      "\\\\x..." hex) and ``content_text`` (the content decoded as UTF-8,
      null if it is not valid UTF-8).
    - every other change (relation, type, origin, stream and two-phase
      events): its fields by name, LSN fields as "X/Y" text.
    """
    if isinstance(change, _changes.SnapshotRow):     # snapshot, backfill
        return read_to_json(change.schema, change.table, change.new, lsn=lsn,
                            unchanged=unchanged)
    kind = kind_of(change)
    fields = change._asdict()
    out = {"lsn": _lsn_text(fields.pop("lsn", None) or lsn),
           "xid": None, "kind": kind}
    cxid = fields.pop("xid", None)
    out["xid"] = cxid if cxid is not None else xid
    if kind in ("insert", "update", "delete"):
        out["schema"] = change.schema
        out["table"] = change.table
        out["new"] = _row(change.new, unchanged)
        out["old"] = _row(change.old, unchanged)
        out["commit_time"] = jsonable(commit_time)
        return out
    if kind == "message":
        content = change.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        out["prefix"] = change.prefix
        out["transactional"] = bool(change.transactional)
        out["content"] = jsonable(content)
        try:
            out["content_text"] = content.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            out["content_text"] = None
        return out
    if kind == "truncate":
        out["tables"] = [list(t) for t in change.tables]
        out["cascade"] = change.cascade
        out["restart_identity"] = change.restart_identity
        out["relids"] = change.relids
        return out
    for name, value in fields.items():
        out[name] = _field(name, value, unchanged)
    return out


def read_to_json(schema, table, row, *, lsn=None, unchanged=UNCHANGED_MARKER):
    """A row read by a snapshot (not a change), as a --format json record:
    ``kind`` "read", ``schema``, ``table``, ``new`` (the row), ``old``
    null, ``lsn`` (the snapshot's consistent point, if given), ``xid``
    null."""
    return {"lsn": _lsn_text(lsn) if isinstance(lsn, int) else lsn,
            "xid": None, "kind": "read", "schema": schema, "table": table,
            "new": _row(row, unchanged), "old": None, "commit_time": None}


def _ms(when):
    """An aware datetime as milliseconds since the Unix epoch."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_UTC)
    return (when - _EPOCH) // _dt.timedelta(milliseconds=1)


def _source(schema, table, *, lsn, xid, ts_ms, name, db, snapshot):
    return {
        "version": __version__,
        "connector": "pylogicaldecoding",
        "name": name,
        "ts_ms": ts_ms,
        "snapshot": snapshot,
        "db": db,
        "schema": schema,
        "table": table,
        "txId": xid,
        "lsn": lsn or None,
    }


def change_to_debezium(change, *, lsn=None, xid=None, commit_time=None,
                       name=None, db=None, ts_ms=None,
                       unchanged=DEBEZIUM_UNAVAILABLE):
    """One typed change as Debezium envelopes (the value part of Debezium's
    PostgreSQL connector events, schema-less JSON); a list, usually of one.

    - insert, update, delete: ``{"before", "after", "source", "op",
      "ts_ms", "transaction"}`` with op "c", "u", "d". ``before`` is the
      old row or key as the server sent it (null for an update unless the
      table has REPLICA IDENTITY FULL or the key changed), ``after`` the
      new row (null for a delete).
    - truncate: one envelope per table, op "t", before and after null.
    - message: op "m", with ``message`` {"prefix", "content"} (content in
      base64, as Debezium), ``source.table`` null.
    - everything else (begin, commit, relation, stream and two-phase
      framing): an empty list; Debezium sends transaction boundaries to a
      separate topic, not as change events.

    ``source`` holds ``version``, ``connector`` ("pylogicaldecoding"),
    ``name`` (``name``: the logical server name, e.g. the slot), ``ts_ms``
    (the commit time in ms since the epoch: ``commit_time``, else
    ``ts_ms``; see `Formatter`), ``snapshot`` ("false"), ``db``,
    ``schema``, ``table``, ``txId`` and ``lsn`` (an int). The envelope's
    own ``ts_ms`` is when it was made. Values are converted as in --format
    json (`jsonable`), which is not Debezium's schema-bound encoding of
    temporal and decimal types (Debezium's ``decimal.handling.mode=string``
    matches ours for numerics).
    """
    if isinstance(change, _changes.SnapshotRow):     # snapshot, backfill
        return [read_to_debezium(change.schema, change.table, change.new,
                                 lsn=lsn, name=name, db=db,
                                 unchanged=unchanged)]
    op = _DEBEZIUM_OPS.get(type(change))
    if op is None:
        for cls, o in _DEBEZIUM_OPS.items():
            if isinstance(change, cls):
                op = o
    kind = kind_of(change)
    clsn = getattr(change, "lsn", None) or lsn
    cxid = getattr(change, "xid", None)
    if cxid is None:
        cxid = xid
    source_ts = _ms(commit_time) if commit_time is not None else ts_ms
    now = int(_time.time() * 1000)
    if op is not None:
        return [{
            "before": _row(change.old, unchanged),
            "after": None if op == "d" else _row(change.new, unchanged),
            "source": _source(change.schema, change.table, lsn=clsn, xid=cxid,
                              ts_ms=source_ts, name=name, db=db,
                              snapshot="false"),
            "op": op,
            "ts_ms": now,
            "transaction": None,
        }]
    if kind == "truncate":
        return [{
            "before": None, "after": None,
            "source": _source(schema, table, lsn=clsn, xid=cxid,
                              ts_ms=source_ts, name=name, db=db,
                              snapshot="false"),
            "op": "t", "ts_ms": now, "transaction": None,
        } for schema, table in change.tables]
    if kind == "message":
        content = change.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        return [{
            "source": _source(None, None, lsn=clsn, xid=cxid,
                              ts_ms=source_ts, name=name, db=db,
                              snapshot="false"),
            "op": "m", "ts_ms": now,
            "message": {"prefix": change.prefix,
                        "content": base64.b64encode(content).decode("ascii")},
        }]
    return []


def read_to_debezium(schema, table, row, *, lsn=None, name=None, db=None,
                     last=False, unchanged=DEBEZIUM_UNAVAILABLE):
    """A row read by a snapshot as a Debezium envelope: op "r", before
    null, after the row, ``source.snapshot`` "true" ("last" for the last
    row when ``last``)."""
    now = int(_time.time() * 1000)
    if isinstance(lsn, str):
        lsn = _core.parse_lsn(lsn)
    return {
        "before": None,
        "after": _row(row, unchanged),
        "source": _source(schema, table, lsn=lsn, xid=None, ts_ms=now,
                          name=name, db=db,
                          snapshot="last" if last else "true"),
        "op": "r",
        "ts_ms": now,
        "transaction": None,
    }


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                            allow_nan=False)

# The C encoder of the json module with _ENCODER's settings, made once
# (json.dumps and JSONEncoder.encode make one per call); without the check
# for circular references, which records never have.
try:
    _encode = getattr(_jenc, "c_make_encoder")(
        None, _ENCODER.default, _jenc.encode_basestring, None, ":", ",",
        False, False, False)
except (AttributeError, TypeError):          # no C accelerator
    _encode = None


def dumps(record):
    """The compact JSON text of a record (one line, no trailing newline,
    non-ASCII kept as is)."""
    if _encode is not None and type(record) is dict:
        try:
            return "".join(_encode(record, 0))
        except RecursionError:
            pass        # a circular reference: json says so
    return _ENCODER.encode(record)

# Values that `jsonable` returns unchanged and the encoder writes as
# json.dumps does (floats are not: NaN and infinities are converted).
_NATIVE = frozenset((int, str, bool, type(None)))
_ROW_KINDS = {_changes.Insert: "insert", _changes.Update: "update",
              _changes.Delete: "delete"}


def _row_text(row, unchanged):
    if row is None:
        return "null"
    for v in row.values():
        if type(v) not in _NATIVE:
            row = {k: jsonable(v, unchanged) for k, v in row.items()}
            break
    return "".join(_encode(row, 0))


def json_text(change, *, lsn=None, xid=None, commit_time=None,
              unchanged=UNCHANGED_MARKER):
    """``dumps(change_to_json(change, ...))``, the same text, made faster
    for inserts, updates and deletes (the hot path of the JetStream sink):
    no intermediate dict, the row encoded by the json module's C encoder
    once its values are converted by `jsonable`."""
    kind = _ROW_KINDS.get(type(change))
    if kind is None or _encode is None:
        return dumps(change_to_json(change, lsn=lsn, xid=xid,
                                    commit_time=commit_time,
                                    unchanged=unchanged))
    clsn = change.lsn or lsn
    cxid = change.xid
    if cxid is None:
        cxid = xid
    key = (kind, change.schema, change.table)
    head = _heads.get(key)
    if head is None:
        head = ',"kind":"%s","schema":%s,"table":%s,"new":' % (
            kind, "".join(_encode(change.schema, 0)),
            "".join(_encode(change.table, 0)))
        if len(_heads) < 10000:
            _heads[key] = head
    return '{"lsn":%s,"xid":%s%s%s,"old":%s,"commit_time":%s}' % (
        '"%s"' % _core.format_lsn(clsn) if clsn else "null",
        cxid if type(cxid) is int else "".join(_encode(jsonable(cxid), 0)),
        head, _row_text(change.new, unchanged),
        _row_text(change.old, unchanged),
        "".join(_encode(jsonable(commit_time), 0)))


# (kind, schema, table) -> the middle of the record
_heads: Dict[Tuple[str, Any, Any], str] = {}


class Formatter:
    """Turns stream messages into records of one format, in order.

    ``fmt`` is "json" or "debezium". Feed it every `StreamMessage` with
    `records()`; it remembers the transaction in progress (the xid and,
    when the plugin sends it at BEGIN, the commit time) and adds them to
    the rows, which carry neither by themselves with every plugin. When
    the commit time is not known before the COMMIT (test_decoding),
    Debezium's ``source.ts_ms`` falls back to the message's send time.

    ``name`` and ``db`` fill Debezium's ``source.name`` and ``source.db``.
    """

    FORMATS = ("json", "debezium")

    def __init__(self, fmt="json", *, name=None, db=None, unchanged=None):
        if fmt not in self.FORMATS:
            raise ValueError("format must be one of %s, got %r"
                             % (", ".join(self.FORMATS), fmt))
        self.format = fmt
        self.name = name
        self.db = db
        self.unchanged = unchanged if unchanged is not None else (
            UNCHANGED_MARKER if fmt == "json" else DEBEZIUM_UNAVAILABLE)
        self.xid = None
        self.commit_time = None

    def records(self, msg):
        """The records (dicts, 0 or more) for one stream message.

        A message without a typed change (``decode=False``) gives none;
        wal2json's format-version 1 (a list of changes) gives several.
        """
        change = msg.change
        if change is None:
            return []
        if isinstance(change, list):
            out = []
            for c in change:
                out.extend(self._one(c, msg))
            return out
        return self._one(change, msg)

    def _one(self, change, msg):
        if isinstance(change, (_changes.Begin, _changes.BeginPrepare)):
            self.xid = change.xid
            self.commit_time = getattr(change, "commit_time", None)
        lsn = msg.data_start or None
        if self.format == "json":
            rec = [change_to_json(change, lsn=lsn, xid=self.xid,
                                  commit_time=self.commit_time,
                                  unchanged=self.unchanged)]
        else:
            rec = change_to_debezium(
                change, lsn=lsn, xid=self.xid, commit_time=self.commit_time,
                name=self.name, db=self.db,
                ts_ms=_ms(msg.send_time) if msg.send_time_us else None,
                unchanged=self.unchanged)
        if isinstance(change, (_changes.Commit, _changes.Prepare,
                               _changes.StreamCommit,
                               _changes.CommitPrepared,
                               _changes.RollbackPrepared)):
            self.xid = None
            self.commit_time = None
        return rec
