"""Helpers of the JetStream sink's tests: nats-server fixtures, reading a
stream back, a writer committing continuously, the slot's position."""

import asyncio
import json
import os
import threading

import pytest

from pylogicaldecoding import testing as pldtesting


def start_nats(cls, *args):
    """Start a NatsServer/NatsCluster or fail the test saying why."""
    try:
        server = cls(*args)
    except pldtesting.NatsServerError as e:
        pytest.fail("cannot run nats-server: %s" % e, pytrace=False)
    try:
        server.start()
    except pldtesting.NatsServerError as e:
        server.cleanup()
        pytest.fail("nats-server did not start: %s" % e, pytrace=False)
    return server


def servers(url):
    return [u.strip() for u in url.split(",")]


async def read_stream(url, stream, timeout=30.0):
    """Every message of ``stream``, in stream order, as (seq, subject,
    headers, body dict)."""
    import nats
    nc = await nats.connect(servers(url), connect_timeout=5)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        last = info.state.last_seq
        out = []
        if info.state.messages == 0:
            return out
        sub = await js.pull_subscribe(">", stream=stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not out or out[-1][0] < last:
            assert loop.time() < deadline, "reading the stream timed out"
            try:
                batch = await sub.fetch(1000, timeout=2)
            except nats.errors.TimeoutError:
                continue
            for m in batch:
                out.append((m.metadata.sequence.stream, m.subject,
                            dict(m.headers or {}), json.loads(m.data)))
                await m.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def read_stream_sync(url, stream, timeout=30.0):
    """read_stream(), tried again for up to 60 s while the cluster answers
    "no responders" or times out (a node back from a crash catching up)."""
    import time
    deadline = time.monotonic() + 60
    while True:
        try:
            return asyncio.run(read_stream(url, stream, timeout))
        except AssertionError:
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class Writer(threading.Thread):
    """Commits small transactions into two tables until stopped; records
    the ids committed, in commit order, per table."""

    def __init__(self, dsn, tables, pause=0.003):
        super().__init__(daemon=True)
        import psycopg2
        self.conn = psycopg2.connect(dsn)
        self.tables = tables
        self.pause = pause
        self.committed = {t: [] for t in tables}
        self.transactions = 0
        self._halt = threading.Event()
        self.error = None

    def run(self):
        import random
        rnd = random.Random(14)
        try:
            cur = self.conn.cursor()
            while not self._halt.is_set():
                rows = []
                for _ in range(rnd.randint(1, 3)):
                    t = rnd.choice(self.tables)
                    cur.execute("INSERT INTO %s (data) VALUES ('x') RETURNING id"
                                % t)
                    rows.append((t, cur.fetchone()[0]))
                self.conn.commit()
                for t, i in rows:
                    self.committed[t].append(i)
                self.transactions += 1
                self._halt.wait(self.pause)
        except Exception as e:         # reported by stop()
            self.error = e

    def stop(self):
        self._halt.set()
        self.join(30)
        self.conn.close()
        assert self.error is None, "the writer failed: %r" % self.error
        return self.committed


def slot_position(sql, slot):
    """(confirmed_flush_lsn as int, active pid) of ``slot``."""
    from pylogicaldecoding import parse_lsn
    rows = sql("SELECT confirmed_flush_lsn::text, active_pid FROM "
               "pg_replication_slots WHERE slot_name = %s", slot)
    assert rows, "slot %s is gone" % slot
    return parse_lsn(rows[0][0]), rows[0][1]


def current_lsn(sql):
    from pylogicaldecoding import parse_lsn
    return parse_lsn(sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])

