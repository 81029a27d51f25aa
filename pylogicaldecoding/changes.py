"""The decoded changes: what ``msg.change`` holds, whichever the plugin.

The classes are made by the C core (fast to build: a decoder fills their
fields directly); each has named fields, listed in ``_fields``, set to
None where the plugin sends nothing. They compare equal field by field,
pickle, have a readable repr, ``_asdict()``, and work with ``match``::

    match msg.change:
        case Insert(schema="public", table="users", new=row): ...
        case Update(new=row, old=old): ...

Transactions:
    `Begin` (xid, lsn, commit_time, final_lsn), `Commit` (xid, lsn,
    commit_time, end_lsn, flags).
Rows:
    `Insert`, `Update`, `Delete`: schema, table, new, old (dicts column ->
    Python value, or None), lsn (the message's WAL position), xid (of the
    transaction, when known), relid (pgoutput). ``old`` holds the replica
    identity (the key; the whole row with REPLICA IDENTITY FULL) when the
    plugin sends it. An unchanged TOAST value is `UNCHANGED`.
`Truncate`:
    tables (list of (schema, table)), cascade, restart_identity, lsn, xid,
    relids (pgoutput).
`Message`:
    a logical decoding message from ``pg_logical_emit_message()``: prefix,
    content (bytes), transactional, lsn, xid. Also exported as
    `LogicalMessage`.
Snapshots and backfills (see `pylogicaldecoding.snapshot`):
    `SnapshotRow` (schema, table, new, backfill): a row read by the initial
    snapshot or a backfill, ``new`` typed as a streamed Insert's;
    `SnapshotStart` (schema, table, backfill) and `SnapshotEnd` (schema,
    table, rows, backfill) bracket the rows of one table.
pgoutput only:
    `Relation` (with `Column` entries), `Type`, `Origin`; streamed
    transactions (protocol 2+): `StreamStart`, `StreamStop`, `StreamCommit`,
    `StreamAbort`; two-phase (protocol 3+): `BeginPrepare`, `Prepare`,
    `CommitPrepared`, `RollbackPrepared`, `StreamPrepare`. test_decoding
    also gives the stream and two-phase events it prints.

Note: ``pylogicaldecoding.Message`` is the change class above; the stream's
message type (what ``event()`` receives) is `pylogicaldecoding.StreamMessage`
(``pylogicaldecoding._core.Message``).
"""

from . import _core

#: Base class of every change.
Change = _core.Change
Begin = _core.Begin
Commit = _core.Commit
Insert = _core.Insert
Update = _core.Update
Delete = _core.Delete
Truncate = _core.Truncate
Message = LogicalMessage = _core.LogicalMessage
Relation = _core.Relation
Column = _core.Column
Type = _core.Type
Origin = _core.Origin
StreamStart = _core.StreamStart
StreamStop = _core.StreamStop
StreamCommit = _core.StreamCommit
StreamAbort = _core.StreamAbort
BeginPrepare = _core.BeginPrepare
Prepare = _core.Prepare
CommitPrepared = _core.CommitPrepared
RollbackPrepared = _core.RollbackPrepared
StreamPrepare = _core.StreamPrepare
SnapshotRow = _core.SnapshotRow
SnapshotStart = _core.SnapshotStart
SnapshotEnd = _core.SnapshotEnd

#: An unchanged TOAST value: the server did not send it because the update
#: did not change it. Never None, never a str; test with ``is``.
UNCHANGED = _core.UNCHANGED

#: Row changes: the ones with schema, table, new and old.
ROW_CHANGES = (Insert, Update, Delete)

__all__ = [
    "Change", "Begin", "Commit", "Insert", "Update", "Delete", "Truncate",
    "Message", "LogicalMessage", "Relation", "Column", "Type", "Origin",
    "StreamStart", "StreamStop", "StreamCommit", "StreamAbort",
    "BeginPrepare", "Prepare", "CommitPrepared", "RollbackPrepared",
    "StreamPrepare", "UNCHANGED", "ROW_CHANGES", "SnapshotRow",
    "SnapshotStart", "SnapshotEnd",
]
