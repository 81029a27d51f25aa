#!/usr/bin/env bash
# Build the C core with the code paths of the other platforms forced
# (src/pld.h): -DPLD_NO_CONDATTR_SETCLOCK (macOS has no
# pthread_condattr_setclock(): the keepalive thread's waits on the realtime
# clock) and -DPLD_NO_PPOLL (poll() instead of Linux's ppoll()), in a
# scratch copy of the tree, check that the build really does without both
# functions, and run the tests of the keepalive thread, of every timeout
# and wait, and of signals against it. macOS itself is not tested here
# (INSTALL.md): this proves that the portable code compiles, links and
# behaves.
#
#   bash scripts/run-portable.sh                  # the default selection
#   bash scripts/run-portable.sh tests/test_core.py -x     # your own
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
source scripts/sanitize-common.sh

pld_scratch_build -DPLD_NO_CONDATTR_SETCLOCK -DPLD_NO_PPOLL -O2 -g
so=$(ls "$WORK"/pylogicaldecoding/_core*.so)
for fn in ppoll pthread_condattr_setclock; do
    if nm -D --undefined-only "$so" | grep -qw "$fn"; then
        echo "$(basename "$0"): the portable build still calls $fn()" >&2
        exit 1
    fi
done
PRELOAD=""

if [ $# -eq 0 ]; then
    set -- tests/test_core.py tests/test_core_safety.py tests/test_signals.py \
        tests/test_faults.py tests/test_retention.py \
        -q -p no:cacheprovider
fi
pld_python -m pytest "$@"
