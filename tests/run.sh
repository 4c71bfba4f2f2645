#!/usr/bin/env bash
# The test command: sets up the environment (idempotent) and runs the test suite offline.
#
#   bash tests/run.sh            # all tests
#   bash tests/run.sh -k train   # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
