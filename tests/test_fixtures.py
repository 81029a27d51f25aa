"""Tests of the shared fixtures of conftest.py."""

import os
import re
import subprocess
import time

import pytest

from conftest import drop_slot


def test_sql_fixture(sql):
    assert sql("SELECT %s::int + 1", 41) == [(42,)]
    assert sql("SELECT '100%'") == [("100%",)]
    assert sql("CREATE TEMP TABLE fx (a int)") is None
    # autocommit: a failed statement does not poison the next one
    with pytest.raises(Exception):
        sql("SELECT * FROM no_such_table")
    assert sql("SELECT 1") == [(1,)]


def test_table_fixture(table, sql):
    assert re.match(r"^[a-z][a-z0-9_]{0,62}$", table)
    sql("INSERT INTO %s (data) VALUES ('a'), (NULL)" % table)
    assert sql("SELECT id, data FROM %s ORDER BY id" % table) == [(1, "a"), (2, None)]


def test_slot_names_are_valid_and_unique(slot_name, request):
    assert re.match(r"^[a-z0-9_]{1,63}$", slot_name)
    from conftest import unique_name
    assert unique_name("pld", request) != unique_name("pld", request)


def _wait_active(sql, name, active=True):
    deadline = time.monotonic() + 30
    while sql("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
              name) != [(active,)]:
        assert time.monotonic() < deadline, "slot %s never became active" % name
        time.sleep(0.05)


def test_drop_slot_terminates_the_walsender(pg_server, dsn, sql, slot_name):
    sql("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", slot_name)
    client = subprocess.Popen(
        [pg_server.pg_bin("pg_recvlogical"), "-d", dsn, "-S", slot_name, "--start",
         "-f", os.devnull, "--no-loop"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_active(sql, slot_name)
        drop_slot(dsn, slot_name)
        assert sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                   slot_name) == []
        assert client.wait(timeout=30) != 0
    finally:
        client.kill()
        client.wait()
    drop_slot(dsn, slot_name)  # a missing slot is fine


def test_sql_reconnects_after_restart(pg_server, sql):
    if not pg_server.can_restart:
        pytest.skip("PLD_TEST_DSN names an external server, which cannot be restarted")
    before = sql("SELECT pg_backend_pid()")
    pg_server.restart()
    assert sql("SELECT pg_backend_pid()") != before


def test_wait_for_fails_at_once_when_the_reader_thread_died():
    from readers import Background, wait_for
    import pylogicaldecoding as pld

    # nothing listens on port 1: start() fails at once
    bg = Background(pld.Reader("host=127.0.0.1 port=1 connect_timeout=5",
                               slot="nope"))
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="the Reader thread died") as info:
        wait_for(lambda: False, timeout=60, what="something the reader does")
    assert isinstance(info.value.__cause__, pld.OperationalError)
    # at once, not after the 60 s deadline
    assert time.monotonic() - t0 < 30
    assert bg.join() is info.value.__cause__
