#!/usr/bin/env bash
# Test the binary wheel as a user gets it: build it (scripts/build-wheel.sh),
# install it into a fresh virtualenv outside the source tree, check that the
# extension resolves libpq inside the wheel (ldd, and the libraries the
# running process has mapped), then run the seed walkthrough
# (examples/connect.py --demo, on a throwaway server) and `pld --version`
# with it. Run by .ci/run after the test suite.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
log() { echo "test-wheel: $*" >&2; }
fail() { echo "test-wheel: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d /tmp/pld-test-wheel.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"        # the throwaway server runs as postgres when root

bash scripts/build-wheel.sh "$tmp/wheelhouse"
whl=$(ls "$tmp"/wheelhouse/pylogicaldecoding-*manylinux*.whl)
log "wheel: $(basename "$whl") ($(du -h "$whl" | cut -f1))"

log "fresh virtualenv, pip install the wheel (no compiler used)"
"$PYTHON" -m venv "$tmp/venv"
VPY="$tmp/venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$VPY" -m pip install -q --only-binary=:all: --no-index "$whl" \
    || fail "the wheel does not install without an index"
"$VPY" -m pip install -q "testing.postgresql>=1.3"   # the demo's server helper

cd "$tmp"       # not the source tree: import the installed package
so=$("$VPY" -c 'import pylogicaldecoding._core as c; print(c.__file__)')
case "$so" in
    "$tmp/venv/"*) ;;
    *) fail "imported $so, not the installed wheel" ;;
esac
libpq=$(ldd "$so" | awk '/libpq/ {print $3}')
log "ldd: the extension resolves libpq to $libpq"
case "$libpq" in
    "$tmp/venv/"*/pylogicaldecoding.libs/libpq*) ;;
    *) fail "libpq resolves to '$libpq', not inside the wheel" ;;
esac
"$VPY" - "$tmp/venv" <<'PYEOF' || fail "the process did not load the bundled libpq"
import sys
import pylogicaldecoding as pld
maps = open("/proc/self/maps").read()
libpqs = sorted({line.split()[-1] for line in maps.splitlines()
                 if "/libpq" in line})
print("test-wheel: libpq mapped in the process:", libpqs,
      "version", pld.libpq_version(), file=sys.stderr)
assert libpqs and all(p.startswith(sys.argv[1]) and "pylogicaldecoding.libs"
                      in p for p in libpqs), libpqs
PYEOF

log "the seed walkthrough with the bundled libpq: examples/connect.py --demo"
"$VPY" "$ROOT/examples/connect.py" --demo > "$tmp/demo.out" 2>&1 || {
    cat "$tmp/demo.out" >&2
    fail "examples/connect.py --demo"
}
grep -q "table public.data: INSERT: id\[integer\]:1 data\[text\]:'1'" "$tmp/demo.out" \
    || { cat "$tmp/demo.out" >&2; fail "the demo did not print the insert"; }
"$tmp/venv/bin/pld" --version | grep -q '^pld (pylogicaldecoding) ' \
    || fail "the pld console script"
log "OK"
