#!/usr/bin/env bash
# Reference-leak run on a debug build of CPython (Debian's python3.X-dbg has
# sys.gettotalrefcount()): build the C core for it in a scratch copy of the
# tree, then run the C-facing tests -- both decoders, the converters, the
# wire parser and the stream loop, the error paths -- WARMUP+RUNS times each
# (tests/refleak_plugin.py) and fail any test whose references or memory
# blocks grew in every one of the measured runs, like CPython's -R 3:3.
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
if ! command -v "$DBG" >/dev/null 2>&1 || { [ ! -e "/usr/include/python${VER}d/Python.h" ] \
        && [ ! -e "/usr/include/python${VER}/Python.h" ]; }; then
    if [ "$(id -u)" != 0 ]; then
        echo "run-refleak: needs $DBG and its headers; install (as root): apt-get install python${VER}-dbg python${VER}-dev python${VER}-venv" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "python${VER}-dbg" "python${VER}-dev" "python${VER}-venv" >/dev/null
fi

# A virtualenv of the debug Python, made once (.venv-dbg); its test
# dependencies are the release ones (the debug build shares their ABI).
DVENV="$ROOT/.venv-dbg"
DPY="$DVENV/bin/python"
if ! "$DPY" -c 'import sys; sys.gettotalrefcount' >/dev/null 2>&1; then
    rm -rf "$DVENV"
    "$DBG" -m venv "$DVENV"
fi
if ! "$DPY" -c 'import pytest, hypothesis, psycopg2, testing.postgresql, setuptools' \
        >/dev/null 2>&1; then
    "$DPY" -m pip install -q --disable-pip-version-check --upgrade "setuptools>=77" wheel
    "$DPY" -m pip install -q --disable-pip-version-check pytest hypothesis \
        psycopg2-binary testing.postgresql
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

if [ $# -eq 0 ]; then
    # hypothesis' own bookkeeping grows with every example: its fuzz tests
    # run in the ordinary suite and under ASan, not here
    set -- tests/test_core.py tests/test_decode_pgoutput.py \
        tests/test_decode_test_decoding.py tests/test_decode_wal2json.py \
        tests/test_types.py tests/test_errors.py tests/test_reader.py \
        -k "not hypothesis and not fuzz" -q -p no:cacheprovider
fi
PYTHONPATH="$WORK/tests" "$DPY" -m pytest -p refleak_plugin \
    --refleak "${PLD_REFLEAK:-3:3}" "$@"
