# Shared by run-sanitizers.sh, run-tsan.sh and run-fuzz.sh (sourced, not run).
#
#   pld_scratch_build FLAGS...   copy the tree to $WORK (made here) and build
#                                the C core there with these compiler flags;
#                                a failed build ends the script with its log
#   pld_pg_wrappers              make $WORK/pgbin: the PostgreSQL programs and
#                                openssl wrapped (scripts/unpreload.c) so they
#                                run without LD_PRELOAD, and point
#                                PLD_PG_BINDIR and PATH at it
#
# A sanitizer runtime is preloaded (LD_PRELOAD) into Python because Python
# itself is not built with it. Python subprocesses of the tests (signal tests,
# the examples) keep the preload and so the sanitizer; the server programs
# must not get it (initdb hangs under ASan, and their own one-time
# allocations are not ours to judge), hence the wrappers.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VPY="$ROOT/.venv/bin/python"

pld_apt_install() {
    # install the Debian packages named (as root, on a fresh machine) when
    # one of the files before "--" is missing
    local files=() pkgs=() f
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do files+=("$1"); shift; done
    shift
    pkgs=("$@")
    for f in "${files[@]}"; do
        if ! ls $f >/dev/null 2>&1; then
            if [ "$(id -u)" != 0 ]; then
                echo "$(basename "$0"): missing $f; install (as root): apt-get install ${pkgs[*]}" >&2
                exit 1
            fi
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${pkgs[@]}" >/dev/null
            return
        fi
    done
}

pld_scratch_build() {
    WORK=$(mktemp -d /tmp/pld-sanitize.XXXXXX)
    trap 'rm -rf "$WORK" "$REPORTS_DIR"' EXIT
    # a copy of the sources: the in-place build of the tree stays a normal one
    tar -C "$ROOT" --exclude=./.venv --exclude=./.git --exclude='*.so' \
        --exclude=./build -cf - . | tar -C "$WORK" -xf -
    local log="$WORK/build.log"
    if ! (cd "$WORK" && PLD_CFLAGS="$*" "$VPY" setup.py build_ext --inplace --force) \
            >"$log" 2>&1; then
        cat "$log" >&2
        echo "$(basename "$0"): the sanitized build failed (flags: $*)" >&2
        exit 1
    fi
    if grep -E "(error|warning):" "$log" >&2; then
        echo "$(basename "$0"): (compiler diagnostics above)" >&2
    fi
}

pld_pg_wrappers() {
    local real prog
    real=$("$VPY" -c 'import os; from pylogicaldecoding.testing import pg_bin; print(os.path.dirname(pg_bin("postgres")))')
    mkdir -p "$WORK/pgbin" "$WORK/osbin"
    gcc -O1 -DREALDIR="\"$real\"" -o "$WORK/pgbin/.unpreload" "$ROOT/scripts/unpreload.c"
    for prog in "$real"/*; do
        [ -x "$prog" ] && ln -s .unpreload "$WORK/pgbin/$(basename "$prog")"
    done
    if prog=$(command -v openssl); then
        gcc -O1 -DREALDIR="\"$(dirname "$prog")\"" -o "$WORK/osbin/openssl" \
            "$ROOT/scripts/unpreload.c"
    fi
    # Server(root) runs initdb/postgres as user postgres: let it in
    chmod 755 "$WORK" "$WORK/pgbin" "$WORK/osbin"
    export PLD_PG_BINDIR="$WORK/pgbin" PATH="$WORK/pgbin:$WORK/osbin:$PATH"
}

# Run Python with the sanitizer runtime(s) $PRELOAD preloaded, checking
# first that the sanitized build in $WORK is the one imported.
pld_python() {
    (cd "$WORK" && LD_PRELOAD="$PRELOAD" PYTHONPATH="$WORK" "$VPY" -c \
        "import pylogicaldecoding._core as c, sys; sys.exit(0 if '$WORK' in c.__file__ else 1)") \
        || { echo "$(basename "$0"): the sanitized build is not the one imported" >&2; exit 1; }
    local rc=0
    # (tests that start interpreters with their own environment preload
    # PLD_TEST_PRELOAD into them)
    (cd "$WORK" && LD_PRELOAD="$PRELOAD" PLD_TEST_PRELOAD="$PRELOAD" \
        PYTHONPATH="$WORK" "$VPY" "$@") || rc=$?
    pld_reports || rc=1
    return $rc
}

# The sanitizers write their reports to $REPORTS.<pid> (log_path): pytest
# captures the standard error of a test, and a sanitizer that halts the
# process would take its report with it. Show them; fail if there are any.
REPORTS_DIR=$(mktemp -d /tmp/pld-sanitizer-reports.XXXXXX)
chmod 777 "$REPORTS_DIR"
REPORTS="$REPORTS_DIR/report"
pld_reports() {
    local f found=0
    for f in "$REPORTS_DIR"/report*; do
        [ -e "$f" ] || continue
        found=1
        echo "== $(basename "$0"): sanitizer report $f" >&2
        cat "$f" >&2
    done
    rm -rf "$REPORTS_DIR"
    return $found
}
