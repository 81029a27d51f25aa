#!/usr/bin/env bash
# Build the C core with AddressSanitizer (LeakSanitizer on) and
# UndefinedBehaviorSanitizer in a scratch copy of the tree and run every test
# that runs C code against it: the wire parser and its fuzzing, the
# decoders, the Reader against the real server, the fault, signal, batching
# and retention tests, the examples. Any sanitizer report fails the run,
# and so does a build that fails.
#
# LeakSanitizer checks the Python process (and each Python subprocess) at
# exit. Only CPython's and libpq's own one-time allocations are suppressed,
# each explained in scripts/lsan.supp.
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

if [ $# -eq 0 ]; then
    # everything but the type checker (mypy runs no C code of ours) and the
    # embedded server's own tests (no C code either)
    set -- tests --ignore=tests/test_typing.py --ignore=tests/test_testing.py \
        -q -p no:cacheprovider
fi
pld_python -m pytest "$@"
