#!/usr/bin/env bash
# Reference-leak run on a debug build of CPython (Debian's python3.X-dbg has
# sys.gettotalrefcount()): build the C core for it in a scratch copy of the
# tree, then run the C-facing tests -- both decoders, the converters, the
# wire parser and the stream loop, the error paths, the AsyncIter and
# CopyConnection -- WARMUP+RUNS times each (tests/refleak_plugin.py) and fail
# any module whose references or memory blocks grew in every one of the
# measured runs, like CPython's -R 3:3, naming the tests that grow alone.
# First, the plugin's own check (tests/refleak_check.py) must catch a
# planted missing Py_DECREF. Installs what it needs (as root, with apt-get)
# and fails saying what is missing when it cannot.
#
#   bash scripts/run-refleak.sh                       # default selection
#   bash scripts/run-refleak.sh tests/test_core.py -x # your own
# Environment: PLD_REFLEAK (default 3:3), PLD_DBG_PYTHON (default
# python3.11-dbg: the debug build of the Python the project is tested with).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
bash scripts/setup-env.sh
DBG=${PLD_DBG_PYTHON:-python3.11-dbg}
VER=${DBG#python}; VER=${VER%-dbg}
PKGS="python${VER}-dbg python${VER}-dev python${VER}-venv"
have_dbg() {
    command -v "$DBG" >/dev/null 2>&1 \
        && "$DBG" -c 'import sys, venv, ensurepip; sys.gettotalrefcount' >/dev/null 2>&1 \
        && { [ -e "/usr/include/python${VER}d/Python.h" ] \
             || [ -e "/usr/include/python${VER}/Python.h" ]; }
}
if ! have_dbg; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "run-refleak: needs $DBG (a debug build of CPython), its headers" \
             "and venv; on Debian/Ubuntu install (as root): apt-get install $PKGS" >&2
        exit 1
    fi
    echo "run-refleak: installing $PKGS" >&2
    # shellcheck disable=SC2086
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends $PKGS >/dev/null; } || ! have_dbg; then
        echo "run-refleak: could not install $PKGS (see apt-get's message above)" >&2
        exit 1
    fi
fi

# A virtualenv of the debug Python, made once (.venv-dbg). psycopg2 (the
# tests' sql fixture) is built from source for it: a release build of a C
# extension (psycopg2-binary's wheel) loads into the debug interpreter, but
# its Py_INCREF/Py_DECREF do not keep sys.gettotalrefcount(), which then
# drifts by hundreds of references a run with no leak at all.
DVENV="$ROOT/.venv-dbg"
DPY="$DVENV/bin/python"
if ! "$DPY" -c 'import sys; sys.gettotalrefcount' >/dev/null 2>&1; then
    rm -rf "$DVENV"
    "$DBG" -m venv "$DVENV"
fi
debug_built_psycopg2='
import sys, sysconfig, psycopg2._psycopg as p
sys.exit(not p.__file__.endswith(sysconfig.get_config_var("EXT_SUFFIX")))'
if ! "$DPY" -c 'import pytest, hypothesis, testing.postgresql, setuptools, sys; sys.exit(not pytest.__version__.startswith("9.2."))' \
        >/dev/null 2>&1 || ! "$DPY" -c "$debug_built_psycopg2" >/dev/null 2>&1; then
    pipi() { "$DPY" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
        | grep -v -e '^WARNING: Location' -e ResourceWarning -e _get_index_content \
            -e '^DEPRECATION: --no-binary' >&2 || true; }
    pipi --upgrade "setuptools>=77" wheel
    "$DPY" -m pip uninstall -q -y psycopg2-binary >/dev/null 2>&1 || true
    # pytest pinned: tests/refleak_plugin.py uses its internals (fixture
    # finalizers, the setup state, report sections), tested with 9.2
    pipi "pytest==9.2.*" hypothesis testing.postgresql
    pipi --no-binary psycopg2 --force-reinstall --no-deps psycopg2
    if ! "$DPY" -c "$debug_built_psycopg2"; then
        echo "run-refleak: could not build psycopg2 for $DBG (needs libpq-dev," \
             "python${VER}-dev and a C compiler)" >&2
        exit 1
    fi
fi

WORK=$(mktemp -d /tmp/pld-refleak.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
tar -C "$ROOT" --exclude=./.venv --exclude=./.venv-dbg --exclude=./.git \
    --exclude='*.so' --exclude=./build -cf - . | tar -C "$WORK" -xf -
if ! (cd "$WORK" && "$DPY" setup.py build_ext --inplace) >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    echo "run-refleak: the build for $DBG failed" >&2
    exit 1
fi
cd "$WORK"
"$DPY" -c "import pylogicaldecoding._core as c, sys; sys.exit(0 if '$WORK' in c.__file__ else 1)" \
    || { echo "run-refleak: the debug build is not the one imported" >&2; exit 1; }

# The plugin's own check: one missing Py_DECREF a run and one object kept
# a run must each fail, named; tests that leak nothing must pass.
export PYTHONPATH="$WORK:$WORK/tests"
set +e
"$DPY" -m pytest -p refleak_plugin --refleak 3:3 --refleak-each -q -rf \
    -p no:cacheprovider tests/refleak_check.py >"$WORK/check.log" 2>&1
set -e
if [ "$(grep -c '^FAILED ' "$WORK/check.log")" != 2 ] \
        || ! grep -q '^FAILED tests/refleak_check.py::test_leak_missing_decref - this test leaked' "$WORK/check.log" \
        || ! grep -q '^FAILED tests/refleak_check.py::test_leak_kept_object - this test leaked' "$WORK/check.log"; then
    cat "$WORK/check.log" >&2
    echo "run-refleak: the plugin's own check failed (tests/refleak_check.py):" \
         "it must fail exactly the two test_leak_* tests" >&2
    exit 1
fi

if [ $# -eq 0 ]; then
    # The C-facing tests: both decoders and wal2json's, the converters
    # (test_types, test_differential), the stream loop and the wire parser
    # (test_core, test_reader, the captured corpus), the JSON text of rows
    # (test_encode_json), the error paths
    # (test_errors, test_core_safety, test_faults' reconnects, every
    # truncation of valid messages in test_decode_fuzz), the
    # AsyncIter (test_aio on asyncio) and CopyConnection (test_snapshot).
    # Left out, each for a reason:
    # - hypothesis tests: up to 2,000 examples each, times 6, on a debug
    #   build: minutes a test (test_decode_fuzz.py's took 8 min; with
    #   --hypothesis-seed=0 none grew). They run in the ordinary suite,
    #   under ASan and beside the fuzzer;
    # - uvloop: a release-built C extension (see psycopg2 above), not
    #   installed here; the asyncio loop runs the same AsyncIter code;
    # - the slow ones (seconds a run, times 6): SIGKILL cycles, TLS, the
    #   wal_sender_timeout and idle-connection waits, the server restarts,
    #   the RSS and event-loop-latency measures, the stall after CopyDone,
    #   and the asyncio example (a subprocess: not counted here anyway).
    set -- tests/test_core.py tests/test_encode_json.py \
        tests/test_decode_pgoutput.py \
        tests/test_decode_test_decoding.py tests/test_decode_wal2json.py \
        tests/test_types.py tests/test_differential.py tests/test_fuzz_corpus.py \
        tests/test_decode_fuzz.py \
        tests/test_errors.py tests/test_reader.py tests/test_core_safety.py \
        tests/test_faults.py tests/test_aio.py \
        tests/test_snapshot.py::test_copyconnection_rows \
        tests/test_snapshot.py::test_copyconnection_messages_and_errors \
        tests/test_snapshot.py::test_copyconnection_uuid_and_json_fast_paths \
        tests/test_snapshot.py::test_snapshot_on_existing_slot_is_an_error \
        tests/test_snapshot.py::test_snapshot_bad_tables \
        tests/test_snapshot.py::test_async_snapshot_on_existing_slot \
        -k "$(echo not hypothesis and not uvloop and not sigkill and not tls_with \
            and not slow_consumer and not idle_healthy \
            and not reconnect_after_server_restart and not backpressure_rss \
            and not loop_never_blocked and not example_demo \
            and not stalls_after_copy_done)" \
        -q -p no:cacheprovider
fi
"$DPY" -m pytest -p refleak_plugin --refleak "${PLD_REFLEAK:-3:3}" "$@"
