#!/usr/bin/env bash
# Set up the environment (scripts/setup-env.sh) and run the test suite.
# Extra arguments go to pytest, e.g. scripts/run-tests.sh -k restart -x
# Set PLD_TEST_DSN to test against an existing server (wal_level=logical)
# instead of a throwaway one.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/python -m pytest tests "$@"
