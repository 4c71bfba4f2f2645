#!/usr/bin/env bash
# Regenerate requirements.lock: every package of the Python stack at an exact version, with hashes.
#
#   bash scripts/lock.sh            # after changing the dependencies in pyproject.toml
#   bash scripts/lock.sh --upgrade  # also move every package to the newest version allowed
#
# The lock is for CPython 3.11 on x86-64 Linux (the machines pvs is developed and tested on).
# torch is the CPU build 2.13.0+cpu; uv finds its wheel through a find-links folder
# ($PVS_WHEELS, default /opt/wheels) or an index you add with UV_EXTRA_INDEX_URL.
# Commit the new lock together with the tests run on it (bash tests/run.sh reinstalls from it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --no-data >/dev/null   # brings .venv/bin/uv
FIND=()
[ -d "${PVS_WHEELS:-/opt/wheels}" ] && FIND=(--find-links "${PVS_WHEELS:-/opt/wheels}")
# the current lock is the starting point: versions move only where pyproject.toml asks or with --upgrade
grep -v '^#' requirements.lock > requirements.lock.new 2>/dev/null || true
.venv/bin/uv pip compile pyproject.toml --extra test --extra setup \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --generate-hashes --no-header --quiet "${FIND[@]}" "$@" -o requirements.lock.new
{ echo "# The whole Python stack of pvs, exact versions with hashes; scripts/setup.sh installs exactly this."
  echo "# Regenerate with: bash scripts/lock.sh   (CPython 3.11, x86-64 Linux; torch is the 2.13.0 CPU build)"
  cat requirements.lock.new; } > requirements.lock
rm -f requirements.lock.new
echo "lock: requirements.lock has $(grep -c '==' requirements.lock) packages"
