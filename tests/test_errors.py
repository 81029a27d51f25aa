"""Bad input and misuse: clear errors from our hierarchy, promptly."""

import logging
import socket
import threading
import time

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import commands
from pylogicaldecoding.testing import Server

from readers import Background, Collector, wait_for, wait_inactive

UNUSED = "host=127.0.0.1 port=1 connect_timeout=2"


def test_hierarchy():
    for cls in (pld.InterfaceError, pld.DatabaseError, pld.OperationalError,
                pld.ProgrammingError, pld.ConnectionLost, pld.SlotInUse,
                pld.SlotNotFound, pld.WalLevelError, pld.InvalidName,
                pld.UnknownPlugin, pld.DecodingError, pld.InvalidOption,
                pld.SlotMismatch, pld.SlotExists):
        assert issubclass(cls, pld.Error)
    assert issubclass(pld.ConnectionLost, pld.OperationalError)
    assert issubclass(pld.InvalidName, ValueError)


@pytest.mark.parametrize("name", [
    "", "Upper", "with-dash", "with space", "x" * 64, 'a"; DROP', "a'b",
    "slot\n", "é", "a;START_REPLICATION",
])
def test_invalid_slot_names_refused_before_connecting(name):
    # the DSN points nowhere: an attempt to connect would fail differently
    with pytest.raises(pld.InvalidName, match="slot name"):
        Collector(UNUSED, slot=name)


def test_slot_name_limits():
    assert commands.check_slot_name("a" * 63) == "a" * 63
    assert commands.check_slot_name("s_1") == "s_1"
    with pytest.raises(pld.InvalidName):
        commands.check_slot_name(None)


@pytest.mark.parametrize("plugin", ["", "a b", 'x"', "x;y", "../evil"])
def test_invalid_plugin_names(plugin):
    with pytest.raises(pld.InvalidName):
        Collector(UNUSED, slot="s", plugin=plugin)


def test_unknown_conninfo_keyword():
    with pytest.raises(pld.ProgrammingError, match="bogus"):
        Collector(slot="s", bogus="1")


def test_malformed_dsn():
    with pytest.raises(pld.ProgrammingError):
        Collector("host=x = y", slot="s")


def test_unreachable_server_fails_fast():
    t0 = time.monotonic()
    r = Collector(UNUSED, slot="s")
    with pytest.raises(pld.OperationalError):
        r.start()
    assert time.monotonic() - t0 < 5
    assert r.closed


def test_silent_server_fails_within_connect_timeout():
    """A server that accepts and never answers: connect_timeout holds."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    try:
        t0 = time.monotonic()
        r = Collector("host=127.0.0.1 sslmode=disable gssencmode=disable",
                      port=port, connect_timeout=2, slot="s")
        with pytest.raises(pld.OperationalError, match="timeout"):
            r.connect()
        assert time.monotonic() - t0 < 6
    finally:
        srv.close()


def test_unknown_plugin(dsn, sql, slot_name):
    r = Collector(dsn, slot=slot_name, plugin="no_such_plugin")
    with pytest.raises(pld.UnknownPlugin) as info:
        r.start()
    if sql("SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries'"):
        # 18.6, 17.11, 16.15: refused before the library is looked for
        assert type(info.value) is pld.PluginNotAllowed
        assert info.value.pgcode == "42501"
        assert "output_plugin_libraries" in str(info.value)
    else:
        assert type(info.value) is pld.UnknownPlugin
        assert info.value.pgcode == "58P01"
    assert "no_such_plugin" in str(info.value)
    r.close()


def test_unknown_plugin_option(dsn, slot_name):
    r = Collector(dsn, slot=slot_name, options={"no-such-option": "1"})
    with pytest.raises(pld.InvalidOption, match="no-such-option"):
        r.start()
    r.close()


def test_missing_slot(dsn, slot_name):
    r = Collector(dsn, slot=slot_name, create_slot=False)
    with pytest.raises(pld.SlotNotFound, match=slot_name):
        r.start()
    r.close()


def test_slot_with_other_plugin(dsn, slot_name, sql):
    sql("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", slot_name)
    r = Collector(dsn, slot=slot_name, plugin="test_decoding")
    with pytest.raises(pld.SlotMismatch, match="pgoutput"):
        r.start()
    r.close()


def test_physical_slot_refused(dsn, slot_name, sql):
    sql("SELECT pg_create_physical_replication_slot(%s)", slot_name)
    r = Collector(dsn, slot=slot_name)
    with pytest.raises(pld.SlotMismatch, match="physical"):
        r.start()
    r.close()


def test_busy_slot(dsn, slot_name):
    first = Collector(dsn, slot=slot_name)
    bg = Background(first)
    wait_for(lambda: first.streaming, what="streaming")
    second = Collector(dsn, slot=slot_name)
    t0 = time.monotonic()
    with pytest.raises(pld.SlotInUse) as info:
        second.start()
    assert time.monotonic() - t0 < 5
    assert info.value.pgcode == "55006"
    assert "active" in info.value.pgerror
    assert not info.value.pgerror.startswith("ERROR")
    second.close()
    first.stop()
    assert bg.join() is None
    first.close()


def test_dropped_connection(dsn, slot_name, sql):
    r = Collector(dsn, slot=slot_name)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    sql("SELECT pg_terminate_backend(%s)", r.backend_pid)
    t0 = time.monotonic()
    error = bg.join()
    assert isinstance(error, pld.ConnectionLost), repr(error)
    assert time.monotonic() - t0 < 5
    assert r.closed


def test_closed_connection_use(dsn, slot_name):
    r = Collector(dsn, slot=slot_name)
    r.connect()
    r.close()
    with pytest.raises(pld.InterfaceError, match="closed"):
        r.fileno()
    with pytest.raises(pld.InterfaceError, match="closed"):
        r.send_feedback()


def test_server_error_carries_sqlstate(dsn, slot_name):
    with Collector(dsn, slot=slot_name) as r:
        with pytest.raises(pld.DataError) as info:
            r.execute("SELECT 1/0")
    assert info.value.pgcode == "22012"
    assert info.value.pgerror == str(info.value)
    assert str(info.value).startswith("division by zero")


def test_start_twice_refused(dsn, slot_name):
    r = Collector(dsn, slot=slot_name)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    with pytest.raises(pld.InterfaceError, match="already running"):
        r.start()
    with pytest.raises(pld.ProgrammingError):
        r.execute("SELECT 1")
    r.stop()
    assert bg.join() is None
    r.close()


def test_injection_in_options_is_quoted(dsn, slot_name, sql):
    """Option names and values reach the plugin as data: the plugin
    refuses them, nothing else runs."""
    evil_value = "1'); DROP_REPLICATION_SLOT x; --"
    r = Collector(dsn, slot=slot_name, options={"include-xids": evil_value})
    with pytest.raises(pld.InvalidOption, match="DROP_REPLICATION_SLOT"):
        r.start()
    r.close()
    evil_name = "x') ; START_REPLICATION (y"
    r = Collector(dsn, slot=slot_name, options={evil_name: "1"})
    with pytest.raises(pld.InvalidOption, match="START_REPLICATION"):
        r.start()
    r.close()
    with pytest.raises(pld.InvalidName):
        Collector(dsn, slot=slot_name, options={'x" \'1\') ("y': "1"})
    with pytest.raises(pld.InvalidName):
        Collector(dsn, slot=slot_name, options={"a\0b": "1"})


def test_injection_in_conninfo_is_a_value(dsn, slot_name, sql):
    name = "app' dbname='postgres"
    r = Collector(dsn, slot=slot_name, application_name=name)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    rows = sql("SELECT application_name, datname FROM pg_stat_activity"
               " WHERE pid = %s", r.backend_pid)
    assert rows == [(name, "test")]
    r.stop()
    assert bg.join() is None
    r.close()


@pytest.fixture(scope="module")
def replica_server():
    with Server(settings={"wal_level": "replica"}) as srv:
        yield srv


def test_wal_level_not_logical(replica_server):
    r = Collector(replica_server.dsn, slot="s")
    t0 = time.monotonic()
    with pytest.raises(pld.WalLevelError, match="wal_level"):
        r.start()
    assert time.monotonic() - t0 < 5
    assert r.closed


PASSWORD = "Sup3r-s3cret pw'"


@pytest.fixture(scope="module")
def password_server():
    with Server(password=PASSWORD) as srv:
        yield srv


def test_password_never_shown(password_server):
    p = password_server.dsn_params
    dsn = "host=%s port=%s dbname=%s user=%s" % (
        p["host"], p["port"], p["dbname"], p["user"])
    good = Collector(dsn, slot="pw_slot", password=PASSWORD, temporary=True)
    assert PASSWORD not in repr(good) and PASSWORD not in good.dsn
    assert "password=***" in good.dsn
    good.connect()      # the password does work
    assert PASSWORD not in repr(good)
    good.close()

    bad = Collector(dsn, slot="pw_slot", password=PASSWORD + "x")
    with pytest.raises(pld.OperationalError) as info:
        bad.start()
    text = str(info.value) + repr(info.value) + repr(bad)
    assert "password authentication failed" in str(info.value)
    assert PASSWORD not in text

    uri = "postgresql://%s:%s@%s:%s/%s" % (
        p["user"], "uri-secret-pw", p["host"], p["port"], p["dbname"])
    r = Collector(uri, slot="pw_slot")
    assert "uri-secret-pw" not in repr(r)
    with pytest.raises(pld.OperationalError) as info:
        r.start()
    assert "uri-secret-pw" not in str(info.value)


def test_password_not_in_reconnect_logs(password_server, caplog):
    p = password_server.dsn_params
    dsn = "host=%s port=%s dbname=%s user=%s password='%s'" % (
        p["host"], p["port"], p["dbname"], p["user"],
        PASSWORD.replace("'", "\\'"))
    r = Collector(dsn, slot="pw_logs", reconnect=pld.Reconnect(
        initial_delay=0.01, max_attempts=2))
    with caplog.at_level(logging.DEBUG):
        bg = Background(r)
        wait_for(lambda: r.streaming, what="streaming")
        pid = r.backend_pid
        password_server.execute("SELECT pg_terminate_backend(%d)" % pid)
        wait_for(lambda: r.reconnections >= 1 and r.streaming
                 and r.backend_pid != pid, what="the reconnection")
        r.stop()
        assert bg.join() is None
    r.drop_slot()
    r.close()
    assert any("reconnecting" in rec.getMessage() for rec in caplog.records)
    assert all(PASSWORD not in rec.getMessage() for rec in caplog.records)
    assert PASSWORD not in repr(r)


def test_sqlstate_42501_and_55000_told_apart_by_message():
    """The server's wording of 15-18, without a server: which class each
    message becomes (the C core calls these entries of the map)."""
    from pylogicaldecoding import errors
    e = errors.SQLSTATE_MAP["42501"](
        'library "wal2json" may not be used as an output plugin')
    assert type(e) is pld.PluginNotAllowed
    e = errors.SQLSTATE_MAP["42501"](
        "permission denied to start WAL sender")
    assert type(e) is pld.InsufficientPrivilege
    cases = [
        # 18 and 17
        ('can no longer access replication slot "s1"\nDETAIL:  This '
         'replication slot has been invalidated due to "idle_timeout".',
         "idle_timeout"),
        # 15 and 16, WAL removed
        ('can no longer get changes from replication slot "s1"\nDETAIL:  '
         'This slot has been invalidated because it exceeded the maximum '
         'reserved size.', "wal_removed"),
        # 16 on a standby: rows_removed or wal_level_insufficient
        ('can no longer get changes from replication slot "s1"\nDETAIL:  '
         'This slot has been invalidated because it was conflicting with '
         'recovery.', None),
    ]
    for message, reason in cases:
        e = errors.SQLSTATE_MAP["55000"](message)
        assert type(e) is pld.SlotInvalidated, message
        assert e.reason == reason and e.slot == "s1"
        assert "drop it and create it again" in str(e)
    other = errors.SQLSTATE_MAP["55000"]("cannot do that in this state")
    assert type(other) is pld.OperationalError
