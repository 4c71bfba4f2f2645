#!/usr/bin/env bash
# The GPU window: the miniature's full grid (configs/gpu_window.yaml: every method, the paper's five budgets,
# the ratio sweep with S_{P+N}, five seeds for every arm) on one GPU within 8 minutes, after two short benchmarks:
# whether training an arm's seeds as one batched model pays (bench/bench_seeds.py) and the gpu tier's training
# throughput; all in one device command (under 10 minutes), everything it writes under $OUT.
#
# Here, once per checkout: build the cpu tier's token shards and print the folder the device call carries
#   bash bench/gpu_check.sh --prepare
# On the device machine (its preinstalled python3 with torch, transformers, accelerate, safetensors; no venv,
# no pip, no network; the working tree arrives without .git, so name the commit):
#   PVS_CODE_COMMIT=<commit> bash bench/gpu_check.sh                   # carry: the folder --prepare printed
# The same command line on this CPU, shrunk to seconds (smoke tier, two methods, two seeds), as the tests run it:
#   WINDOW_TEST=1 OUT=/tmp/window bash bench/gpu_check.sh
#
# Runs and figures go to runs/gpu-window/ ($WINDOW_WORK), an ignored folder kept while the machine stays
# warm, so a grid stopped by its time limit resumes when the command is run again at once.
# $OUT receives log.txt (everything printed), summary.txt (the GPU, wall time per stage, runs, tokens, model
# FLOPs and MFU against the bf16 dense peak; bench/window_summary.py) and window.tar.gz (figures/<tier>/: the
# metrics records, figures, tables and claims; and every run's train.json). Back here, unpack it and render
# the report notebook from the records: `pvs study --tier cpu --config configs/gpu_window.yaml --figures-only`
# with PVS_FIGURES pointing at the unpacked figures/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
die() { echo "gpu_check.sh: $*" >&2; exit 2; }

if [ "${1:-}" = "--prepare" ]; then
    [ -x .venv/bin/pvs ] || die "no .venv here; run bash scripts/setup.sh first"
    .venv/bin/pvs data --tier cpu >/dev/null
    dir="$(.venv/bin/python -c 'from pvs import stages, tiers; print(stages.tokens_dir(tiers.get("cpu")))')"
    rel="${dir#"$ROOT"/}"
    echo "carry: $rel ($(du -sm "$dir" | cut -f1) MiB: tokenizer and token shards, no corpus)"
    echo "run:   PVS_CODE_COMMIT=$(git rev-parse HEAD) bash bench/gpu_check.sh"
    exit 0
fi
[ $# -eq 0 ] || die "unknown argument '$1'; allowed: --prepare, or none (env: OUT, WINDOW_TEST, PEAK_TFLOPS, PY)"

OUT="${OUT:-$ROOT/window-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
if [ -n "${WINDOW_TEST:-}" ]; then  # this CPU: the venv's python, a grid of seconds
    PY="${PY:-$ROOT/.venv/bin/python}"
    TIER=smoke
    ARGS=(--tier smoke --config configs/gpu_window.yaml --set "study.methods=[minitron-depth,sparsegpt-2:4]"
          --set "study.scaling_methods=[minitron-depth]" --set "study.scaling_fracs=[0.25,1.25]"
          --set "study.sweep_methods=[minitron-depth]" --set "study.sweep_ratios=[0.5,0.7]"
          --set "study.seeds=[0,1]" --set "study.headline_seeds=[0,1]" --set study.workers=2
          --set budget.pretrain_tokens=20480 --set budget.retrain_tokens=5120 --set train.threads=1)
    EXPERIMENTS=(--experiment equal_tokens --experiment ratio_sweep)
    GRID_LIMIT=600; PROBE=(--tier smoke --threads 1 --steps 5); SEEDS=(--tier smoke --seeds 2 --threads 1 --steps 2)
else
    PY="${PY:-python3}"
    TIER=cpu
    ARGS=(--tier cpu --config configs/gpu_window.yaml)
    EXPERIMENTS=()
    GRID_LIMIT=480; PROBE=(--tier gpu --threads 4 --steps 30); SEEDS=(--tier cpu --seeds 5 --threads 4 --steps 20)
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || die "torch sees no CUDA GPU"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
       HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# runs and figures in an ignored folder of the checkout, kept while the device machine stays warm: a grid stopped
# by its time limit resumes when the same command is run again at once (finished runs are skipped)
WORK="${WINDOW_WORK:-$ROOT/runs/gpu-window${WINDOW_TEST:+-test}}"
mkdir -p "$WORK"
export PVS_RUNS="$WORK/runs" PVS_FIGURES="$WORK/figures"
"$PY" - <<'EOF'
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU test)"
print(f"gpu_check.sh: python {platform.python_version()}, torch {torch.__version__}, GPU {gpu}")
EOF

# the two benchmarks first (40 s each at most), then the grid: the whole script stays inside one device
# command's 10 minutes
start=$(date +%s)
echo "== the seeds of an arm as one batched model vs one by one, at the miniature's shape: bench/bench_seeds.py ${SEEDS[*]}"
# (a "batching rule" warning names an operator vmap runs seed by seed: the batched time then undersells the idea)
timeout 40 "$PY" bench/bench_seeds.py "${SEEDS[@]}" 2>&1 || echo "gpu_check.sh: bench_seeds.py failed or ran past 40 s"

echo "== training throughput at the gpu tier's shape (SmolLM2-135M): bench/bench_train.py ${PROBE[*]}"
probe_status=0
timeout 40 "$PY" bench/bench_train.py "${PROBE[@]}" > "$WORK/probe.txt" 2>&1 || probe_status=$?
cat "$WORK/probe.txt"

grid_start=$(date +%s)
echo "== the grid: pvs study ${ARGS[*]} ${EXPERIMENTS[*]} --no-notebooks (limit $GRID_LIMIT s)"
status=0
timeout "$GRID_LIMIT" "$PY" -m pvs.cli study "${ARGS[@]}" "${EXPERIMENTS[@]}" --no-notebooks || status=$?
grid_s=$(( $(date +%s) - grid_start ))
[ "$status" -eq 0 ] || echo "gpu_check.sh: the grid stopped with status $status after $grid_s s (124: the time limit)"

"$PY" bench/window_summary.py --runs "$PVS_RUNS/$TIER" --wall "$grid_s" --since "$grid_start" --status "$status" \
    --probe "$WORK/probe.txt" ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"} | tee "$OUT/summary.txt"
(cd "$WORK" && find runs -name train.json -print0 | tar -czf "$OUT/window.tar.gz" --null -T - \
    $( [ -d "figures/$TIER" ] && echo "figures/$TIER" ))
echo "gpu_check.sh: wrote $(ls "$OUT" | tr '\n' ' ')in $(( $(date +%s) - start )) s"
[ "$status" -eq 0 ] && [ "$probe_status" -eq 0 ] || exit 1
