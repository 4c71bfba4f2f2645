"""Requests/s of pvs's in-memory lm-eval path beside lm-eval's own command line, same model and documents.

Run (from the repo root; about a minute with the default tiny model, a few minutes with SmolLM2):

    .venv/bin/python bench/bench_eval.py                                  # tiny random model
    .venv/bin/python bench/bench_eval.py --model smollm2-135m --limit 10  # the packaged parent
    .venv/bin/python bench/bench_eval.py --tasks arc_easy,hellaswag --batch-size 16 --threads 2

Both paths score the same seeded subset of documents of the same offline tasks (``pvs_<task>``):
- in-memory, packed (pvs's default): ``evaluate_downstream`` on the model object with
  ``pvs.packed_lm.PackedLM`` (each context once, its answer choices packed after it);
- in-memory, HFLM: the same call with lm-eval's HFLM as shipped;
- command line: ``lm_eval --model hf --model_args pretrained=<saved dir> --device <cpu|cuda> --include_path
  <task yaml dir> --tasks ... --samples <the same indices>``, timed end to end as a user runs it
  (process start, imports and model load included, which is most of its cost on small subsets).
Requests are counted on the in-memory run (one per answer choice; LAMBADA is left out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_model(spec: str):
    if spec == "tiny":
        from pvs.model import ModelShape, build_model
        from pvs.tokens import byte_tokenizer
        tok = byte_tokenizer()
        shape = ModelShape(n_layers=4, hidden=128, n_heads=4, n_kv_heads=2, head_dim=32, ffn=384, vocab=len(tok))
        return build_model(shape, seed=0), tok
    from pvs.parents import load_parent
    return load_parent(spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny (random, byte tokenizer), smollm2-135m, or a folder")
    ap.add_argument("--tasks", default="arc_easy,piqa,winogrande")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both paths use it)")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from lm_eval.models.huggingface import HFLM
    from pvs.downstream import evaluate_downstream, subset_indices
    from pvs.packed_lm import PackedLM
    from pvs.tasks import get_spec, prepare_tasks

    tasks = args.tasks.split(",")
    work = Path(tempfile.mkdtemp(prefix="pvs-bench-eval-"))
    prepared = prepare_tasks(work / "cache" / "tasks")
    model, tok = load_model(args.model)

    counts, walls, recs = {}, {}, {}
    for name, base in (("packed", PackedLM), ("hflm", HFLM)):
        class Counting(base):
            def loglikelihood(self, requests, disable_tqdm=False, _name=name):
                counts[_name] = counts.get(_name, 0) + len(requests)
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

        start = time.time()
        lm = Counting(pretrained=model, tokenizer=tok, device=args.device, batch_size=args.batch_size)
        recs[name] = evaluate_downstream(lm, tasks=tasks, limit=args.limit, seed=args.seed, lambada=False,
                                         cache_dir=work / "cache", checkpoint_hash=f"bench-{args.model}-{name}")
        walls[name] = time.time() - start
    assert counts["packed"] == counts["hflm"], counts
    n_requests = counts["hflm"]
    rec = recs["packed"]

    saved = work / "model"
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    samples = {get_spec(t).local_name: subset_indices(prepared.manifest["tasks"][t]["rows"], args.limit, args.seed)
               for t in tasks}
    samples = {k: v for k, v in samples.items() if v is not None}
    # lm-eval 0.4.13 rejects device= inside --model_args (it also passes its own --device)
    cmd = [str(REPO / ".venv" / "bin" / "lm_eval"), "--model", "hf",
           "--model_args", f"pretrained={saved},dtype=float32", "--device", args.device,
           "--include_path", str(prepared.yaml_dir), "--tasks", ",".join(get_spec(t).local_name for t in tasks),
           "--batch_size", str(args.batch_size), "--output_path", str(work / "cli")]
    cmd += ["--samples", json.dumps(samples)] if samples else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    cli = time.time() - start
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        raise SystemExit(f"lm_eval command line failed ({proc.returncode})")
    cli_scores = _cli_scores(work / "cli", tasks)

    print(f"model={args.model} tasks={','.join(tasks)} limit={args.limit} batch={args.batch_size} "
          f"threads={args.threads} device={args.device} requests={n_requests}")
    print(f"{'path':24s} {'wall s':>8s} {'req/s':>8s}")
    rows = [("in-memory, packed (pvs)", walls["packed"]), ("in-memory, HFLM", walls["hflm"]),
            ("lm_eval command line", cli)]
    for label, wall in rows:
        print(f"{label:24s} {wall:8.1f} {n_requests / wall:8.2f}   x{cli / wall:.2f} vs command line")
    print("same scores (packed, HFLM, command line):",
          all(abs(recs[b]["tasks"][t]["value"] - cli_scores.get(t, -1)) < 1e-6 for t in tasks for b in recs),
          {t: (round(recs["packed"]["tasks"][t]["value"], 4), round(recs["hflm"]["tasks"][t]["value"], 4),
               cli_scores.get(t)) for t in tasks})


def _cli_scores(out_dir: Path, tasks) -> dict:
    from pvs.tasks import get_spec
    files = sorted(out_dir.rglob("results_*.json"))
    if not files:
        return {}
    results = json.loads(files[-1].read_text())["results"]
    return {t: results[get_spec(t).local_name][f"{get_spec(t).metric},none"] for t in tasks
            if get_spec(t).local_name in results}


if __name__ == "__main__":
    main()
