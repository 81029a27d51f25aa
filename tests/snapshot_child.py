"""A consumer killed and restarted by test_snapshot.py's kill tests.

usage: snapshot_child.py DSN SLOT SCHEMA MODE LOG
MODE: "snapshot" (Reader(snapshot=True); on SnapshotError, the documented
fallback: backfill every table) or "backfill". Every change is appended
to LOG (pickled, flushed) before it is acked. Prints "DONE" once the
snapshot or every backfill is complete, and stops at the test's end
marker (a logical message 'pld_test_end' with the schema as content).
"""

import pickle
import sys
import time

import pylogicaldecoding as pld
from pylogicaldecoding import snapshot as snapmod

dsn, slot, schema, mode, log_path = sys.argv[1:6]
TABLES = [(schema, "types"), (schema, "parted_a"), (schema, "parted_b"),
          (schema, 'Quoted "Table"'), (schema, "empty")]
log = open(log_path, "xb")      # one file per run


def record(obj):
    pickle.dump(obj, log)
    log.flush()


class Child(pld.Reader):
    pending = ()
    done_said = False
    end_seen = False

    def event(self, msg):
        ch = msg.change
        record(ch)
        if isinstance(ch, (pld.SnapshotRow, pld.SnapshotStart)):
            time.sleep(0.0004)          # slow: the kills land mid-copy
        if isinstance(ch, pld.SnapshotEnd):
            self.pending = [t for t in self.pending
                            if t != (ch.schema, ch.table)]
        if not self.pending and not self.done_said:
            self.done_said = True
            print("DONE", flush=True)
        if (isinstance(ch, pld.LogicalMessage) and ch.prefix == "pld_test_end"
                and bytes(ch.content) == schema.encode()):
            self.end_seen = True
        self.ack()
        # stop at the end marker, once no chunk (a repair) is in flight
        bf = self._backfills
        if self.end_seen and (bf is None or (bf.chunk is None
                                             and not bf.jobs)):
            self.stop()


def unrecorded(reader):
    """Tables whose backfill was never scheduled."""
    conn = snapmod.connect(snapmod.worker_params(reader._params))
    try:
        _, rows = conn.execute(
            "SELECT to_regclass('%s')" % snapmod.PROGRESS_TABLE)
        seen = set()
        if rows[0][0] is not None:
            _, rows = conn.execute(
                "SELECT table_name FROM %s WHERE slot = '%s'"
                % (snapmod.PROGRESS_TABLE, slot))
            seen = {r[0] for r in rows}
        return [t for t in TABLES if snapmod.qualified(*t) not in seen]
    finally:
        conn.close()


_run_chunk = snapmod.Backfills._run_chunk


def traced_run_chunk(self, job):      # the chunks, in the log
    record(("chunk", job.table.name, job.last_key, job.upper, job.repair))
    return _run_chunk(self, job)


snapmod.Backfills._run_chunk = traced_run_chunk


def snapmod_name(name):
    for t in TABLES:
        if snapmod.qualified(*t) == name:
            return t
    raise AssertionError(name)


def backfill_run():
    r = Child(dsn, slot=slot, create_slot=True)
    # the documented restart: resume_backfills(), then backfill() what
    # was never scheduled
    progress = r.resume_backfills()
    todo = unrecorded(r)
    record(("backfill", todo, progress))
    for t in todo:
        r.backfill(t, chunk_size=150)
    r.pending = list(todo) + [snapmod_name(n) for n, done in progress
                              if not done]
    r.start()
    r.close()


if mode == "snapshot":
    r = Child(dsn, slot=slot, snapshot=True, tables=TABLES)
    r.pending = list(TABLES)
    try:
        r.start()
        r.close()
    except pld.SnapshotError as e:
        record(("snapshot_error", str(e)))
        r.close()
        backfill_run()
else:
    backfill_run()
