#!/usr/bin/env bash
# Set up the machine, then run the project's checks: lint, format, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
ruff check .
ruff format --check .
mypy
python3 -m pytest -q "$@"
