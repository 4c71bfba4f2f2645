#!/usr/bin/env bash
# GPU check for a session that has one: the smoke tier end to end on the GPU, then the gpu tier's training
# throughput for about two minutes, reported as tokens/s and MFU against the GPU's bf16 dense peak.
#
#   bash bench/gpu_check.sh                     # needs .venv with a CUDA build of torch, and the data packages
#   PEAK_TFLOPS=989 bash bench/gpu_check.sh     # peak for a GPU the script does not know
#   BENCH_SECONDS=60 bash bench/gpu_check.sh    # a shorter throughput run
#
# Each stage has a hard time limit (smoke 210 s, throughput probe 75 s, throughput run 180 s, downstream
# 150 s), so the whole check ends within ~10 minutes. The smoke run writes to a temporary PVS_RUNS (a cached run would be skipped,
# and the repository's runs/ stays untouched); built data in data/cache is reused.
#
# MFU = (tokens/s x pvs.model.flops_per_token) / peak: bench/bench_train.py prints the achieved FLOP/s
# (6 N + 12 L H Q T per token, PaLM's convention) and this script divides it by the peak.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
PVS="$ROOT/.venv/bin/pvs"
BENCH_SECONDS="${BENCH_SECONDS:-120}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false

die() { echo "gpu_check.sh: $*" >&2; exit 2; }
stage() { echo; echo "== $* ($(date +%H:%M:%S))"; }

[ -x "$PY" ] && [ -x "$PVS" ] || die "$PVS not found; set up the venv first (bash scripts/setup.sh, with a CUDA torch)"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || die "torch sees no CUDA GPU (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
GPU_NAME="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
if [ -z "${PEAK_TFLOPS:-}" ]; then
    case "$GPU_NAME" in
        *H100*|*H200*|*H800*|*GH200*) PEAK_TFLOPS=989 ;;   # Hopper SXM bf16 dense (H200: H100 compute)
        *A100*|*A800*)                PEAK_TFLOPS=312 ;;
        *) die "no bf16 peak known for '$GPU_NAME'; set PEAK_TFLOPS (dense bf16 TFLOP/s)" ;;
    esac
fi
start=$(date +%s)
echo "gpu_check.sh: $GPU_NAME, bf16 dense peak $PEAK_TFLOPS TFLOP/s"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

stage "smoke tier end to end on the GPU: pvs pretrain --tier smoke (data, parent, held-out eval)"
RUNS="$(mktemp -d)"
trap 'rm -rf "$RUNS"' EXIT
PVS_RUNS="$RUNS" timeout 210 "$PVS" pretrain --tier smoke || die "smoke pretrain failed or ran past 210 s"
record="$(find "$RUNS" -name train.json | head -n 1)"
[ -n "$record" ] || die "smoke pretrain wrote no train.json under $RUNS"
"$PY" - "$record" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"smoke parent: {r['steps']} steps, {r['tokens']:,} tokens, precision {r['precision']}, "
      f"final loss {r['final_loss']:.3f}, {r['wall_s']} s")
assert r["precision"] == "bf16", f"expected bf16 autocast on a GPU, got {r['precision']}"
EOF

parse() {  # parse OUTPUT FIELD: tok_s | gflops | batch_tokens from bench_train.py's output
    case "$2" in
        tok_s)        sed -n 's/^training: \([0-9,]*\) tokens\/s.*/\1/p' <<<"$1" | tr -d , ;;
        gflops)       sed -n 's/.*-> \([0-9,.]*\) GFLOP\/s.*/\1/p' <<<"$1" | tr -d , ;;
        batch_tokens) sed -n 's/.*batch \([0-9]*\) x seq \([0-9]*\).*/\1 \2/p' <<<"$1" | awk '{print $1 * $2}' ;;
    esac
}

stage "gpu tier throughput probe (20 steps)"
probe="$(timeout 75 "$PY" bench/bench_train.py --tier gpu --threads 4 --steps 20)" || die "throughput probe failed or ran past 75 s"
echo "$probe"
tok_s="$(parse "$probe" tok_s)"; batch_tokens="$(parse "$probe" batch_tokens)"
[ -n "$tok_s" ] && [ -n "$batch_tokens" ] || die "could not read tokens/s from bench_train.py's output"
steps=$(awk -v s="$BENCH_SECONDS" -v r="$tok_s" -v b="$batch_tokens" \
    'BEGIN { n = int(s * r / b); if (n < 20) n = 20; if (n > 100000) n = 100000; print n }')

stage "gpu tier throughput, $steps steps (~${BENCH_SECONDS} s)"
out="$(timeout 180 "$PY" bench/bench_train.py --tier gpu --threads 4 --steps "$steps")" || die "throughput run failed or ran past 180 s"
echo "$out"
tok_s="$(parse "$out" tok_s)"; gflops="$(parse "$out" gflops)"
[ -n "$gflops" ] || die "could not read the achieved GFLOP/s from bench_train.py's output"
awk -v t="$tok_s" -v g="$gflops" -v p="$PEAK_TFLOPS" -v name="$GPU_NAME" 'BEGIN {
    printf "\nresult: %s tokens/s, %.1f TFLOP/s achieved = MFU %.1f%% of %s bf16 dense peak %g TFLOP/s\n",
           t, g / 1000, 100 * g / (p * 1000), name, p }'

stage "downstream on CUDA: PackedLM vs HFLM vs the lm_eval command line, SmolLM2-135M, 100 docs per task"
timeout 150 "$PY" bench/bench_eval.py --model smollm2-135m --device cuda --tasks arc_easy,boolq,hellaswag,piqa \
    --limit 100 --batch-size 32 2>&1 | grep -E '^(model=|path|in-memory|lm_eval|same scores)' \
    || die "bench_eval.py on CUDA failed or ran past 150 s"
echo "gpu_check.sh: done in $(( $(date +%s) - start )) s"
