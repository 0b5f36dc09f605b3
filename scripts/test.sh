#!/usr/bin/env bash
# Set up a virtual environment (if needed) and run lint + the default test suite.
# This is the README's test command; .ci/run calls it unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests bench
python -m pytest -q -n 2 --durations=15 tests
