#!/usr/bin/env bash
# Set up the environment (scripts/setup-env.sh) and run the demonstration:
# examples/connect.py --demo (extra arguments are passed on).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/python examples/connect.py --demo "$@"
