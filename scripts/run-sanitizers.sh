#!/usr/bin/env bash
# Build the C core with AddressSanitizer (LeakSanitizer on) and
# UndefinedBehaviorSanitizer in a scratch copy of the tree and run the tests
# that run C code against it (the few left out are named below): the wire
# parser and its fuzzing, the decoders, the Reader and AsyncReader against
# the real server, the fault, signal, batching and retention tests,
# snapshots and backfills, standbys and failover slots, the JetStream sink,
# the examples, the CLI. Any sanitizer report fails the run, and so does a
# build that fails.
#
# LeakSanitizer checks the pytest process at exit (the processes the tests
# start run without leak checks, see below). Only CPython's own allocations
# are suppressed, each explained in scripts/lsan.supp.
#
#   bash scripts/run-sanitizers.sh            # the default selection
#   bash scripts/run-sanitizers.sh tests/test_core.py -x    # your own
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
source scripts/sanitize-common.sh

pld_scratch_build -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -g -O1
pld_pg_wrappers

PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="${PLD_ASAN_EXTRA:-}log_path=$REPORTS:detect_leaks=1:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=0"
export LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp:print_suppressions=0:exitcode=23"
export UBSAN_OPTIONS="log_path=$REPORTS:print_stacktrace=1:halt_on_error=1"
# every Python object from malloc: ASan sees each one
export PYTHONMALLOC=malloc

# The few assertions a sanitized build cannot meet (RSS bounds under ASan's
# quarantine, event-loop lateness, the batching trigger of wake-ups
# < 0.2 ms apart) are relaxed by PLD_SANITIZED=1 (tests/sanitized.py): those tests still run
# all their C code here and say in their output what they did not assert.
export PLD_SANITIZED=1
if [ $# -eq 0 ]; then
    # Every test file but the two that run no C code: mypy over the stubs
    # (test_typing) and the embedded server's own tests (test_testing:
    # initdb, pg_ctl, nats-server; Python only). From test_versions only
    # test_find_bindir_names_what_it_found is left out: it runs every
    # PostgreSQL installation found (pg_config, /usr/lib/postgresql) with
    # the sanitizer preloaded, which Debian's postgres hangs under (the
    # wrappers below exist for that): 60 s of timeouts, no C code of ours.
    set -- tests --ignore=tests/test_typing.py --ignore=tests/test_testing.py \
        -k "not test_find_bindir_names_what_it_found" \
        -q -p no:cacheprovider
fi
# LeakSanitizer judges this Python process at its exit. The processes the
# tests start get detect_leaks=0: a child interpreter killed or ended with
# daemon threads running (fake servers, writers) leaves their objects
# unfreed by design, and the programs that are not Python are not ours.
pld_python -c '
import os, sys
os.environ["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"].replace(
    "detect_leaks=1", "detect_leaks=0")
import pytest
sys.exit(pytest.main(sys.argv[1:]))
' "$@"
