#!/usr/bin/env bash
# Build the C core with ThreadSanitizer in a scratch copy of the tree and run
# the tests that use it from several threads: the keepalive thread, ack()
# and stop() from other threads, signal handlers, reconnects, AsyncReader,
# the snapshot's COPY reads in a thread. Any data race
# (or other ThreadSanitizer report) fails the run, and so does a build that
# fails.
#
# Python is not built with ThreadSanitizer: the runtime is preloaded, so only
# our C code's memory accesses are checked, against every lock and thread
# start (the GIL's too) it sees.
#
#   bash scripts/run-tsan.sh                   # the default selection
#   bash scripts/run-tsan.sh tests/test_core.py -x     # your own
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
source scripts/sanitize-common.sh
pld_apt_install "$(gcc -print-file-name=libtsan.so)" -- libtsan2

pld_scratch_build -fsanitize=thread -fno-omit-frame-pointer -g -O1
pld_pg_wrappers

PRELOAD="$(gcc -print-file-name=libtsan.so)"
export TSAN_OPTIONS="log_path=$REPORTS:halt_on_error=1:exitcode=66:second_deadlock_stack=1:suppressions=$ROOT/scripts/tsan.supp"
export PYTHONMALLOC=malloc

# As in run-sanitizers.sh, PLD_SANITIZED=1 (tests/sanitized.py) relaxes
# only the assertions a sanitized build is too slow to meet (the batching
# trigger, event-loop lateness); those tests still run all their C code
# here.
export PLD_SANITIZED=1
# The threads: the keepalive thread (the C loop's and AsyncReader's),
# ack()/stop()/close() from other threads and signal handlers, reconnects,
# AsyncReader's snapshot (its COPY reads in a thread of their own while the
# event loop runs).
if [ $# -eq 0 ]; then
    set -- tests/test_core.py tests/test_core_safety.py tests/test_reader.py tests/test_faults.py \
        tests/test_batching.py tests/test_retention.py tests/test_signals.py \
        tests/test_aio.py tests/test_snapshot.py -q -p no:cacheprovider
fi
pld_python -m pytest "$@"
