#!/usr/bin/env bash
# Build the C core with AddressSanitizer and UndefinedBehaviorSanitizer in a
# scratch copy of the tree and run the tests that drive it (the wire parser
# and its fuzzing, the decoders, the Reader against the real server), then
# the reference-leak loop. Any sanitizer report fails the run.
#
#   bash scripts/run-sanitizers.sh            # default test selection
#   bash scripts/run-sanitizers.sh tests/test_core.py -x    # your own
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
ROOT=$(pwd)
WORK=$(mktemp -d /tmp/pld-sanitize.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# a copy of the sources: the in-place build of the tree stays a normal one
tar -C "$ROOT" --exclude=./.venv --exclude=./.git --exclude='*.so' \
    --exclude=./build -cf - . | tar -C "$WORK" -xf -
cd "$WORK"
export PLD_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
"$ROOT/.venv/bin/python" setup.py -q build_ext --inplace --force 2>&1 \
    | grep -v -i -E "warn|deprecat|^\s*$|!!|\*\*\*\*|See https|Please|tool\.setuptools|by 20|project\." || true

ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
# CPython's own allocations are not freed at exit: no leak report; any other
# error (overflow, use after free, undefined behaviour) aborts the test run.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc
export PYTHONPATH="$WORK"

if [ $# -eq 0 ]; then
    set -- tests/test_core.py tests/test_core_safety.py tests/test_reader.py tests/test_errors.py \
        tests/test_retention.py tests/test_leaks.py \
        $(ls tests/test_decode_*.py 2>/dev/null || true) -q -p no:cacheprovider
fi
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" "$ROOT/.venv/bin/python" -c \
    "import pylogicaldecoding._core as c, sys; sys.exit(0 if '$WORK' in c.__file__ else 1)" \
    || { echo "run-sanitizers: the sanitized build is not the one imported" >&2; exit 1; }
# The preload is for this Python only: initdb, postgres and psql started by
# the tests must not inherit it (initdb hangs under it).
# child interpreters started by the tests preload it again (run_isolated)
export PLD_TEST_PRELOAD="$ASAN_LIB $UBSAN_LIB"
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" "$ROOT/.venv/bin/python" -c '
import os, sys
os.environ.pop("LD_PRELOAD")
import pytest
sys.exit(pytest.main(sys.argv[1:]))
' "$@"
