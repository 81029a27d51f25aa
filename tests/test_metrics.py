"""Reader.stats(), the Prometheus exposition (scraped over HTTP and parsed
with prometheus-client's own parser) and the log lines of the
"pylogicaldecoding" logger."""

import datetime as dt
import logging
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pylogicaldecoding as pld
from pylogicaldecoding import metrics

from readers import Collector, current_lsn, is_commit


def test_stats_count_what_was_streamed(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name, ack_commits=True) as r:
        s0 = r.stats()
        assert (s0.messages, s0.bytes, s0.transactions, s0.acks) == (0, 0, 0, 0)
        assert s0.lag_bytes is None and s0.last_commit_age is None
        r.create_slot(snapshot="nothing")
        for i in range(3):
            sql("INSERT INTO %s (data) VALUES ('%s')" % (table, "x" * 10))
        r.options = {"include-timestamp": True}
        before = time.time()
        r.start(until_lsn=current_lsn(sql))
        s = r.stats()
    payloads = [m.payload for m in r.msgs]
    assert s.messages == len(r.msgs) == 9
    assert s.bytes == sum(len(p.encode()) for p in payloads)
    assert s.transactions == 3 == sum(1 for m in r.msgs if is_commit(m))
    assert s.acks == 3
    assert s.reconnections == 0 and s.status_updates >= 1
    assert s.received_lsn == r.msgs[-1].data_start
    assert s.flushed_lsn == r.msgs[-1].data_start
    assert s.server_lsn >= s.flushed_lsn
    assert s.lag_bytes == s.server_lsn - s.flushed_lsn
    # the commit timestamp of the last transaction (include-timestamp)
    assert s.last_commit_time == r.msgs[-1].change.commit_time
    assert 0 <= s.last_commit_age < time.time() - before + 60
    assert isinstance(s.last_commit_time, dt.datetime)


def test_stats_pgoutput_and_lag_while_behind(dsn, sql, slot_name, table):
    """pgoutput sends the commit time; an unacked backlog shows as lag."""
    pub = "pub_" + table
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (pub, table))
    try:
        sql("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
            slot_name)
        sql("INSERT INTO %s (data) SELECT 'y' FROM generate_series(1, 50)"
            % table)
        with Collector(dsn, slot=slot_name, plugin="pgoutput",
                       options={"publication_names": pub},
                       create_slot=False) as r:
            r.start(until_lsn=current_lsn(sql))      # no acks
            s = r.stats()
    finally:
        sql("DROP PUBLICATION IF EXISTS %s" % pub)
    assert s.transactions == 1 and s.acks == 0
    assert s.flushed_lsn == 0 or s.flushed_lsn < s.received_lsn
    assert s.lag_bytes >= s.received_lsn - s.flushed_lsn > 0
    commits = [m.change for m in r.msgs if isinstance(m.change, pld.Commit)]
    assert s.last_commit_time == commits[-1].commit_time is not None


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=30) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {s.name: s for fam in text_string_to_metric_families(text)
            for s in fam.samples}


def test_prometheus_endpoint_is_scraped_while_streaming(dsn, sql, slot_name,
                                                        table):
    """The endpoint serves the live stats of a running stream, in the text
    format prometheus-client's parser reads."""
    sql("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
        slot_name)
    seen = {}

    def on_event(reader, msg):
        if is_commit(msg) and "first" not in seen:
            seen["first"] = scrape(port)

    r = Collector(dsn, slot=slot_name, create_slot=False, ack_commits=True,
                  on_event=on_event,
                  options={"include-timestamp": True})
    server = metrics.serve(r, 0, addr="127.0.0.1")
    port = server.server_port
    try:
        sql("INSERT INTO %s (data) VALUES ('a')" % table)
        sql("INSERT INTO %s (data) VALUES ('b')" % table)
        with r:
            r.start(until_lsn=current_lsn(sql))
        after = scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    first = seen["first"]
    # scraped from the first COMMIT's event(), before its ack
    assert first["pld_messages_total"].value == 3     # BEGIN, INSERT, COMMIT
    assert first["pld_messages_total"].labels == {"slot": slot_name}
    assert first["pld_transactions_total"].value == 1
    assert first["pld_acks_total"].value == 0
    assert after["pld_messages_total"].value == 6
    assert after["pld_transactions_total"].value == 2
    assert after["pld_acks_total"].value == 2
    assert after["pld_received_bytes_total"].value == r.stats().bytes > 0
    assert after["pld_flushed_lsn"].value == r.msgs[-1].data_start
    assert after["pld_lag_bytes"].value == r.stats().lag_bytes
    assert after["pld_reconnections_total"].value == 0
    assert 0 <= after["pld_last_commit_age_seconds"].value < 600
    assert after["pld_last_commit_timestamp_seconds"].value == \
        r.msgs[-1].change.commit_time.timestamp()
    # the exposition helper gives the same families
    text = metrics.exposition(r, labels={"job": "x"}).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"pld_messages", "pld_lag_bytes", "pld_acks"} <= names


def test_missing_prometheus_client_names_the_extra(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("prometheus_client"):
            raise ImportError("No module named 'prometheus_client'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    r = pld.Reader(slot="s")
    with pytest.raises(ImportError, match=r"pylogicaldecoding\[metrics\]"):
        metrics.serve(r, 0)
    assert r.stats().messages == 0      # stats never need it


def test_log_lines(dsn, sql, slot_name, table, caplog):
    """connect, slot created, streaming, stream end and why, slot dropped;
    never the password."""
    caplog.set_level(logging.INFO, logger="pylogicaldecoding")
    sql("INSERT INTO %s (data) VALUES ('a')" % table)
    with Collector(dsn, slot=slot_name, password="s3cret-pw") as r:
        r.create_slot(snapshot="nothing")
        r.start(until_lsn=current_lsn(sql))
        r.connect()
        r.drop_slot()
    msgs = [(rec.levelno, rec.getMessage()) for rec in caplog.records
            if rec.name == "pylogicaldecoding"]
    text = "\n".join(m for _, m in msgs)
    assert "s3cret" not in text
    assert all(level == logging.INFO for level, _ in msgs), msgs
    assert "connected to " in text and "dbname=" in text
    assert "created replication slot %r (plugin test_decoding)" % slot_name in text
    assert "streaming slot %r" % slot_name in text
    assert "stream of slot %r ended: every change up to" % slot_name in text
    assert "dropped replication slot %r" % slot_name in text
    caplog.clear()

    class Boom(pld.Reader):
        def event(self, msg):
            raise RuntimeError("boom")

    sql("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
        slot_name)
    sql("INSERT INTO %s (data) VALUES ('b')" % table)
    with Boom(dsn, slot=slot_name) as b, pytest.raises(RuntimeError):
        b.start()
    (rec,) = [r for r in caplog.records if "ended by" in r.getMessage()]
    assert rec.levelno == logging.WARNING
    assert rec.getMessage() == \
        "stream of slot %r ended by RuntimeError: boom" % slot_name


def test_async_reader_stats(dsn, sql, slot_name, table):
    """AsyncReader.stats() counts the same things from the same C core."""
    import asyncio
    from pylogicaldecoding.aio import AsyncReader

    sql("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
        slot_name)
    sql("INSERT INTO %s (data) VALUES ('a')" % table)
    sql("INSERT INTO %s (data) VALUES ('b')" % table)

    async def main():
        async with AsyncReader(dsn, slot=slot_name, create_slot=False,
                               options={"include-timestamp": True}) as r:
            assert r.stats().messages == 0
            msgs = []
            async for m in r.drain():
                msgs.append(m.change)
                if isinstance(m.change, pld.Commit):
                    await r.ack()
            return r.stats(), msgs

    s, changes = asyncio.run(asyncio.wait_for(main(), 60))
    assert s.messages == 6 and s.transactions == 2 and s.acks == 2
    assert s.bytes > 0 and s.reconnections == 0
    assert s.last_commit_time == changes[-1].commit_time
    assert s.flushed_lsn == s.received_lsn > 0
