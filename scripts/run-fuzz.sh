#!/usr/bin/env bash
# Coverage-guided fuzzing (atheris + libFuzzer) of the wire parser and of
# both C decoders, each for a bounded time, starting from the seed corpus
# captured from a real server (tests/fuzz/corpus, made by
# tests/fuzz/capture_corpus.py). The C core is built with clang for
# libFuzzer's coverage and with AddressSanitizer, in a scratch copy of the
# tree. A crash, a sanitizer report, a hang or an unexpected exception fails
# the run; the input that caused it is kept in fuzz-artifacts/.
#
#   bash scripts/run-fuzz.sh              # each target for PLD_FUZZ_SECONDS (50)
#   bash scripts/run-fuzz.sh wire         # one target
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
source scripts/sanitize-common.sh

# clang, and its sanitizer runtimes (libclang-rt-<major>-dev on Debian)
if ! command -v clang >/dev/null 2>&1; then
    pld_apt_install /nonexistent -- clang
fi
CLANG_MAJOR=$(clang -dumpversion | cut -d. -f1)
pld_apt_install "$(clang -print-resource-dir)/lib/linux/libclang_rt.asan_static-x86_64.a" \
    -- "libclang-rt-$CLANG_MAJOR-dev"
if ! "$VPY" -c 'import atheris' >/dev/null 2>&1; then
    "$VPY" -m pip install -q --disable-pip-version-check "atheris==3.0.0"
fi
PRELOAD=$("$VPY" -c 'import atheris, glob, os; print(glob.glob(os.path.join(os.path.dirname(os.path.dirname(atheris.__file__)), "asan_with_fuzzer.so"))[0])')

CC=clang LDSHARED="clang -shared" pld_scratch_build \
    -fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer -g -O1

# libFuzzer's leak check would judge CPython's caches: leaks are
# run-sanitizers.sh's (LeakSanitizer) and run-refleak.sh's business
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export PYTHONMALLOC=malloc
SECONDS_EACH=${PLD_FUZZ_SECONDS:-50}
ARTIFACTS="$ROOT/fuzz-artifacts"
mkdir -p "$ARTIFACTS"
status=0
for target in ${@:-wire pgoutput test_decoding}; do
    mkdir -p "$WORK/new-$target"
    echo "run-fuzz: $target for ${SECONDS_EACH}s"
    if ! pld_python tests/fuzz/run_atheris.py "$target" \
            -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=4096 \
            -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$target-" \
            "$WORK/new-$target" "tests/fuzz/corpus/$target" \
            >"$WORK/$target.log" 2>&1; then
        tail -n 60 "$WORK/$target.log" >&2
        echo "run-fuzz: $target FAILED; the input is in $ARTIFACTS" >&2
        status=1
    else
        grep -E "INFO: Loaded|stat::number_of_executed_units|DONE" "$WORK/$target.log"
    fi
done
[ "$status" = 0 ] && rmdir "$ARTIFACTS" 2>/dev/null || true
exit "$status"
