#!/usr/bin/env bash
# Fresh machine -> the main job: set up .venv, then run the GRACE pipeline on the embedded default
# (synthetic VQA world, tiny LLaVA teacher + student, RTN / QAT-only / GRACE at W4/W3/W2, packed INT4).
# Extra arguments go to `grace quickstart` (e.g. --fast, --seeds 3, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
grace quickstart "$@"
