#!/usr/bin/env bash
# Build a manylinux wheel that bundles libpq (and what libpq links to), so
# that `pip install` needs no compiler and no libpq on the target machine.
#
#   bash scripts/build-wheel.sh [OUTDIR]     # default: wheelhouse/
#
# 1. `python -m build --wheel` compiles the extension against the libpq that
#    pg_config names (as a source build does);
# 2. `auditwheel repair` copies libpq and its dependencies into
#    pylogicaldecoding.libs/ inside the wheel, points the extension's RPATH
#    there (with patchelf) and gives the wheel the manylinux tag the build
#    machine's glibc allows (Debian 12: manylinux_2_34). For the widest tag
#    run this inside a manylinux image (quay.io/pypa/manylinux_2_28 with
#    libpq built there); on this project's machines it runs as is.
# The tools (build, auditwheel, patchelf) are installed from PyPI into the
# virtualenv made by scripts/setup-env.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=$(realpath -m "${1:-wheelhouse}")
VPY=.venv/bin/python
log() { echo "build-wheel: $*" >&2; }

if ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    bash scripts/setup-env.sh
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$VPY" -m pip install -q "build>=1.0" "auditwheel>=6.0" "patchelf>=0.17"
# patchelf from PyPI installs its binary next to the virtualenv's python
export PATH="$(cd "$(dirname "$VPY")" && pwd):$PATH"

tmp=$(mktemp -d /tmp/pld-wheel.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# from a clean copy: no object file of an earlier (e.g. sanitizer) build
mkdir "$tmp/src"
tar --exclude=./.venv --exclude=./.git --exclude='*.so' --exclude='*.o' \
    --exclude=./build --exclude=./dist --exclude=./wheelhouse -cf - . \
    | tar -C "$tmp/src" -xf -
unset PLD_CFLAGS
log "python -m build --wheel"
"$VPY" -m build --wheel --outdir "$tmp/dist" "$tmp/src" >"$tmp/build.log" 2>&1 || {
    cat "$tmp/build.log" >&2
    exit 1
}
mkdir -p "$OUT"
log "auditwheel repair"
"$VPY" -m auditwheel repair "$tmp"/dist/*.whl -w "$OUT" >"$tmp/repair.log" 2>&1 || {
    cat "$tmp/repair.log" >&2
    exit 1
}
grep -o 'Fixed-up wheel written to .*' "$tmp/repair.log" | sed 's/^/build-wheel: /' >&2
