"""Tests of pylogicaldecoding.testing: the throwaway server used by the suite.

These tests start their own servers (not the session's ``pg_server``).
"""

import os
import pwd
import signal
import subprocess
import time

import psycopg2
import pytest

from pylogicaldecoding.testing import (ExternalServer, PsqlError, Server,
                                       ServerError, pg_bin)


@pytest.fixture(scope="module")
def server():
    with Server() as srv:
        yield srv


def _server_uid(srv):
    with open("/proc/%d/status" % srv.server_pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_starts_with_logical_decoding_settings(server):
    assert server.running
    assert server.execute("SHOW wal_level") == [["logical"]]
    assert server.execute("SHOW max_replication_slots") == [["32"]]
    assert server.execute("SHOW max_wal_senders") == [["32"]]
    assert server.execute("SHOW listen_addresses") == [["127.0.0.1"]]
    assert server.execute("SHOW fsync") == [["off"]]
    assert server.execute("SELECT current_database(), current_user") == [["test", "postgres"]]


def test_execute_rows_nulls_and_several_statements(server):
    rows = server.execute(
        "CREATE TEMP TABLE x (a int); SELECT 1, NULL, '', 'two\nlines', 'a|b'; "
        "SELECT g FROM generate_series(1, 3) g; SELECT 1 WHERE false")
    assert rows == [["1", None, "", "two\nlines", "a|b"], ["1"], ["2"], ["3"]]
    assert server.execute("SELECT current_database()", dbname="postgres") == [["postgres"]]


def test_execute_error_carries_psql_stderr(server):
    with pytest.raises(PsqlError) as exc:
        server.execute("SELECT 1; SELECT * FROM no_such_table; SELECT 2")
    assert 'relation "no_such_table" does not exist' in str(exc.value)
    assert "no_such_table" in exc.value.stderr
    assert exc.value.returncode != 0


def test_dsn_connects(server):
    params = server.dsn_params
    assert params == {"host": "127.0.0.1", "port": str(server.port),
                      "dbname": "test", "user": "postgres"}
    with psycopg2.connect(server.dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT inet_server_port()")
            assert cur.fetchone()[0] == server.port
    conn.close()


def test_psql_command_can_be_pasted(server):
    out = subprocess.run(server.psql_command() + " -X -A -t -c 'SELECT 40 + 2'",
                         shell=True, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"


def test_runs_as_unprivileged_user(server):
    # PostgreSQL refuses root: as root the server runs as "postgres"
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert _server_uid(server) == expected
    assert os.stat(server.data_dir).st_uid == expected
    assert server.os_user == ("postgres" if os.geteuid() == 0 else None)


def test_restart_keeps_data_and_port(server):
    port, data_dir, pid = server.port, server.data_dir, server.server_pid
    starts = server.start_count
    server.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')")
    server.restart()
    assert server.running
    assert (server.port, server.data_dir) == (port, data_dir)
    assert server.server_pid != pid
    assert server.start_count == starts + 1
    assert server.execute("SELECT v FROM kept") == [["before"]]
    server.execute("DROP TABLE kept")


def test_immediate_stop_then_start_recovers(server):
    server.execute("CREATE TABLE crash (v int); INSERT INTO crash VALUES (1)")
    server.stop("immediate")
    assert not server.running
    with pytest.raises(ServerError):
        server.execute("SELECT 1")
    server.start()
    assert server.execute("SELECT v FROM crash") == [["1"]]
    server.execute("DROP TABLE crash")


def test_stop_rejects_unknown_mode(server):
    with pytest.raises(ValueError):
        server.stop("now")
    assert server.running


def test_fast_stop_falls_back_when_a_walsender_waits(server):
    # A replication client that stopped reading keeps a fast shutdown
    # waiting for its walsender; stop() must give up and shut down harder.
    server.execute("SELECT pg_create_logical_replication_slot('stuck', 'test_decoding')")
    client = subprocess.Popen(
        [server.pg_bin("pg_recvlogical"), "-d", server.dsn, "-S", "stuck",
         "--start", "-f", os.devnull, "-s", "3600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while server.execute("SELECT active FROM pg_replication_slots "
                             "WHERE slot_name = 'stuck'") != [["t"]]:
            assert time.monotonic() < deadline, "pg_recvlogical did not connect"
            time.sleep(0.05)
        client.send_signal(signal.SIGSTOP)
        server.execute("CREATE TABLE stuck AS SELECT g FROM generate_series(1, 100000) g")
        started = time.monotonic()
        server.restart("fast", timeout=1)
        assert time.monotonic() - started < 20
        assert "immediate shutdown request" in server.read_log()
    finally:
        client.kill()
        client.wait()
    assert server.running
    server.execute("SELECT pg_drop_replication_slot('stuck'); DROP TABLE stuck")


def test_pg_bin():
    path = pg_bin("pg_recvlogical")
    assert os.path.isabs(path) and os.access(path, os.X_OK)
    with pytest.raises(ServerError, match="no_such_program"):
        pg_bin("no_such_program")


def test_password_and_settings():
    secret = "it's a s3cret"
    with Server(password=secret, settings={"wal_sender_timeout": "7s"}) as srv:
        assert secret not in repr(srv)
        assert "password=***" in repr(srv)
        assert srv.dsn_params["password"] == secret
        assert srv.execute("SHOW wal_sender_timeout") == [["7s"]]
        # TCP needs the password...
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host="127.0.0.1", port=srv.port, dbname="test",
                             user="postgres", password="wrong").close()
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host="127.0.0.1", port=srv.port, dbname="test",
                             user="postgres").close()
        # ...which the (quoted) dsn carries
        conn = psycopg2.connect(srv.dsn)
        conn.close()
        ext = ExternalServer(srv.dsn)
        assert secret not in repr(ext)
        assert ext.execute("SELECT current_database()", dbname="postgres") == [["postgres"]]
        assert secret not in ext.psql_command()


@pytest.mark.needs("ssl")
def test_ssl_require_and_verify():
    with Server(ssl=True) as srv:
        assert os.path.isfile(srv.ssl_cert)
        for extra in [" sslmode=require",
                      " sslmode=verify-full sslrootcert=" + srv.ssl_cert]:
            conn = psycopg2.connect(srv.dsn + extra)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    assert cur.fetchone() == (True,)
            finally:
                conn.close()


def test_two_servers_and_cleanup(server):
    other = Server()
    base_dir = other.base_dir
    try:
        assert other.port != server.port
        assert other.execute("SELECT 2") == [["2"]]
        assert server.execute("SELECT 1") == [["1"]]
    finally:
        other.cleanup()
    assert not other.running
    assert not os.path.exists(base_dir)
    other.cleanup()  # twice is fine
    with pytest.raises(ServerError, match="cleaned up"):
        other.start()
    assert server.running


def test_external_server_cannot_restart(server):
    ext = ExternalServer(server.dsn)
    assert not ext.can_restart and server.can_restart
    assert ext.dsn_params == server.dsn_params
    assert ext.execute("SELECT 1") == [["1"]]
    with pytest.raises(ServerError, match="external"):
        ext.restart()
