"""The `pvs` command: one verb per stage of the study.

    pvs data     --tier cpu                 build corpus splits, tokenizer and token shards
    pvs pretrain --tier cpu                 pretrain the parent (P tokens), resumable
    pvs eval     --tier cpu [--run DIR]     validation loss and perplexities (default: the parent)
    pvs baseline --tier cpu                 unigram entropy / unigram loss of the held-out text
    pvs prune    --tier cpu --method wanda-2:4 --ratio 0.5     prune the tier's parent (or --parent DIR|smollm2-135m)
    pvs train    --tier cpu --method minitron-depth --init pruned|scratch --tokens N   one arm of the study
    pvs downstream --tier cpu --run DIR [--limit N]            the eight zero-shot tasks through lm-eval
    pvs study    --tier cpu [--experiment NAME] [--figures-only] [--no-notebooks] the experiments as notebooks
    pvs shapes   --tier cpu [--search]      target-shape table of the parent at ratios 0.5-0.8
    pvs check-accelerate configs/accelerate/ddp_1node.yaml --num_processes 8
    pvs plan     --tier paper [--measure]   every run of the study with steps, tokens, FLOPs, GPU-hours
    pvs show     --tier cpu                 print the resolved config

Every verb takes --tier NAME, --config FILE.yaml, --set section.field=value (repeatable), --runs DIR
and -v (library logs and progress bars). Bad input prints one line, `error: ...`, and exits with
status 2; Ctrl-C prints one line and exits with 130.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from pvs.errors import PvsError, check
from pvs.experiments import EXPERIMENTS


METHODS_HELP = ("depth: minitron-depth, shortgpt; width: minitron-width, flap, sheared-llama; sparse: sparsegpt, "
                "wanda, magnitude, each also as NAME-2:4 or NAME-4:8 (N:M semi-structured)")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): `error: pvs VERB: message`."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _token_count(text: str) -> int:
    """A positive number of tokens, written as 2000000, 2e6 or 2_000_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid token count {text!r} (allowed: a positive number, e.g. 2e6)")
    if not (value >= 1 and value.is_integer()):
        raise argparse.ArgumentTypeError(f"invalid token count {text!r} (allowed: a positive whole number, e.g. 2e6)")
    return int(value)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and progress bars")
    p.add_argument("--tier", default="cpu", help="smoke | cpu | gpu | paper (default: cpu)")
    p.add_argument("--config", default=None, help="YAML file of overrides (same nesting as the config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--runs", default=None, help="root folder for run outputs (default: runs/ or $PVS_RUNS)")


def resolve_config(args):
    from pvs import tiers
    from pvs.config import apply_overrides
    cfg = tiers.get(args.tier)
    return apply_overrides(cfg, args.overrides, args.config)


def cmd_show(args) -> None:
    from pvs.config import config_hash, to_dict
    from pvs.shape import flops_per_token, shape_param_counts
    cfg = resolve_config(args)
    print(json.dumps({"config": to_dict(cfg), "hash": config_hash(cfg),
                      "parent_params": shape_param_counts(cfg.parent),
                      "parent_train_flops_per_token": flops_per_token(cfg.parent, cfg.train.seq_len)}, indent=2))


def cmd_data(args) -> None:
    from pvs.stages import prepare_data
    data = prepare_data(resolve_config(args))
    for name, path in sorted(data.shards.items()):
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        print(f"{name:>20}: {meta['tokens']:>10,} tokens  {path}")
    print(f"tokenizer: {data.tok_dir} (vocab {len(data.tokenizer)})")


def cmd_pretrain(args) -> None:
    from pvs.stages import evaluate, prepare_data, pretrain
    cfg = resolve_config(args)
    data = prepare_data(cfg)
    out = pretrain(cfg, data)
    rec = json.loads((out / "train.json").read_text())
    print(f"parent: {out}  steps {rec['steps']}  tokens {rec['tokens']:,}  final train loss {rec['final_loss']:.4f}"
          f"  ({rec['wall_s']} s)")
    if not args.no_eval:
        _print_eval(evaluate(cfg, out, data))


def _print_eval(res: dict) -> None:
    print(f"validation loss (token-weighted over every held-out source): {res['val_loss']:.4f}  "
          f"({res['val_tokens']:,} tokens)")
    for src, ppl in res["ppl"].items():
        label = res.get("stand_ins", {}).get(src, src)
        print(f"  {src:>12}: loss {res['loss'][src]:.4f}  perplexity {ppl:10.2f}  ({res['tokens'][src]:,} tokens)"
              f"   {label}")


def cmd_eval(args) -> None:
    from pvs.stages import evaluate, parent_dir, prepare_data
    cfg = resolve_config(args)
    data = prepare_data(cfg)
    run = Path(args.run) if args.run else parent_dir(cfg)
    _print_eval(evaluate(cfg, run, data, overwrite=args.overwrite))


def cmd_baseline(args) -> None:
    import math
    from pvs.stages import baselines, prepare_data
    cfg = resolve_config(args)
    data = prepare_data(cfg)
    b = baselines(cfg, data)
    print(f"count-based baselines fitted on the parent's P = {b['fit_tokens']:,} pretraining tokens, scored on "
          f"the validation loss's own {b['scored_tokens']:,} tokens (every held-out source):")
    print(f"  uniform over {len(data.tokenizer):,} tokens: {math.log(len(data.tokenizer)):.4f}")
    print(f"  unigram (add-one):                {b['unigram']:.4f}")
    if "bigram" in b:
        print(f"  bigram (interpolated, lambda {b['bigram_lambda']}): {b['bigram']:.4f}")
    print("a trained parent must at least match the bigram for the equal-total-tokens claim to be testable")


def cmd_prune(args) -> None:
    from pvs.prune.registry import check_ratio, parse_variant
    from pvs.prune.run import check_cached
    from pvs.records import read_json
    from pvs.stages import prepare_data
    from pvs import study
    cfg = resolve_config(args)
    parse_variant(args.method)
    check_ratio(args.ratio)
    if args.parent:
        from pvs.config import merge
        cfg = merge(cfg, {"study": {"parent": args.parent}})
    study.check_parent_exists(cfg)  # before spending time on data
    out = Path(args.out) if args.out else None
    if out and (out / "prune.json").is_file():  # reuse only what was asked, complete; before loading anything
        rec = check_cached(read_json(out / "prune.json"), out, args.method, args.ratio,
                           study.prune_options(cfg, args.method, args.ratio))
    else:  # the study's own path (options, calibration, budget), into --out or the study's run folder
        out = study.prune(cfg, prepare_data(cfg), args.method, args.ratio, out=out)
        rec = read_json(out / "prune.json")
    print(f"{args.method} at ratio {args.ratio}: achieved {rec['achieved_ratio']:.4f} of non-embedding parameters "
          f"removed; {rec['params']['total']:,} params ({rec['params']['nonzero']:,} nonzero); {rec['wall_s']} s, "
          f"peak memory +{rec['peak_memory_mb']} MB -> {out}")


def cmd_train(args) -> None:
    from pvs import stages, study
    from pvs.experiments import Arm
    from pvs.prune.registry import check_ratio, parse_variant
    cfg = resolve_config(args)
    parse_variant(args.method)
    check_ratio(args.ratio)
    study.check_parent_exists(cfg)
    tokens = args.tokens or cfg.budget.retrain_tokens
    arm = Arm(args.init, args.method, args.ratio, tokens, "N", args.seed)
    run = study.run_arm(cfg, arm)
    rec = json.loads((run / "train.json").read_text())
    print(f"{args.init} {args.method} r{args.ratio}: {rec['tokens']:,} tokens, final train loss {rec['final_loss']:.4f}"
          f" -> {run}")
    _print_eval(stages.evaluate(cfg, run, stages.prepare_data(cfg)))


def cmd_downstream(args) -> None:
    from pvs.downstream import _check_tasks, evaluate_downstream, summary_table
    from pvs.stages import parent_dir
    cfg = resolve_config(args)
    run = Path(args.run) if args.run else parent_dir(cfg)
    from pvs.checkpoint import load_model, load_tokenizer
    model_dir = run / "model" if (run / "model").is_dir() else run
    check(model_dir.is_dir(), f"--run {str(run)!r} does not exist; allowed: a run folder holding model/ or a model folder")
    limit = args.limit if args.limit is not None else (cfg.study.downstream_limit or None)
    check(limit is None or limit > 0, f"--limit {limit} must be a positive number of documents per task")
    _check_tasks(args.tasks or cfg.study.downstream_tasks)
    tokenizer = load_tokenizer(model_dir)
    if tokenizer is None:  # models written before pvs saved tokenizers beside them: the tier's own
        from pvs.stages import prepare_data
        tokenizer = prepare_data(cfg).tokenizer
    load_model(model_dir, "model")  # a damaged checkpoint: one line, before lm-eval starts
    rec = evaluate_downstream(str(model_dir), tokenizer, limit=limit, tasks=args.tasks or cfg.study.downstream_tasks,
                              backend=args.backend)
    print(summary_table(rec))


def cmd_study(args) -> None:
    from pvs.notebooks import run_plain, run_study
    from pvs.prune.registry import parse_variant
    cfg = resolve_config(args)
    s = cfg.study
    for field in ("methods", "scaling_methods", "sweep_methods"):  # up front, not inside a notebook
        for v in getattr(s, field):
            try:
                parse_variant(v)
            except PvsError as e:
                raise PvsError(f"study.{field}: {e}") from None
    run = run_plain if args.no_notebooks else run_study
    run(cfg, args.tier, experiments=args.experiment or None, figures_only=args.figures_only)


def cmd_shapes(args) -> None:
    from pvs import study
    from pvs.model import shape_of
    from pvs.prune.shape_search import build_table
    from pvs.paths import display
    from pvs.prune.shapes import find_table, table_name, table_path
    from pvs.stages import prepare_data
    cfg = resolve_config(args)
    if args.parent:
        from pvs.config import merge
        cfg = merge(cfg, {"study": {"parent": args.parent}})
    name = table_name(cfg)
    if args.if_missing and find_table(name).is_file():
        print(f"shape table {name}: {display(find_table(name))} (kept; without --if-missing it is rewritten)")
        return
    data = prepare_data(cfg)
    model = study.load_parent_model(cfg, data)
    if args.search:  # calibration-loss criterion: one-shot prune each candidate, keep the lowest loss
        table = build_table(name, shape_of(model), model, study.calib_tokens(cfg, data))
    else:
        table = build_table(name, shape_of(model))
    for e in table["entries"]:
        sh = e["shape"]
        print(f"{e['kind']:5s} ratio {e['ratio']}: layers {sh['n_layers']:3d} hidden {sh['hidden']:5d} heads "
              f"{sh['n_heads']}/{sh['n_kv_heads']} ffn {sh['ffn']:6d} -> achieved {e['achieved_ratio']:.3f} "
              f"({e['criterion']}, {e['n_candidates']} candidates)")
    print(f"written: {display(table_path(name, None))} (read before the table shipped in pvs/prune/shapes/)")


def cmd_tasks(args) -> None:
    from pvs.tasks import PAPER_TASKS, TASKS, prepare_tasks
    prepared = prepare_tasks()
    names = ",".join(TASKS[t].local_name for t in PAPER_TASKS)
    print(f"offline task definitions: {prepared.yaml_dir}")
    print("score any saved model (pvs writes its tokenizer beside it) with the lm-eval command line:")
    print(f"  lm_eval --model hf --model_args pretrained=MODEL_DIR,trust_remote_code=True "
          f"--include_path {prepared.yaml_dir} --tasks {names} --device cpu --batch_size 16")


def cmd_check_accelerate(args) -> None:
    from pvs.accelerate_check import check_accelerate_config
    check_accelerate_config(args.file, num_processes=args.num_processes)
    print(f"{args.file}: matches this machine")


def cmd_plan(args) -> None:
    from pvs.plan import format_plan, plan
    cfg = resolve_config(args)
    p = plan(cfg, gpu=args.gpu, mfu=args.mfu, rounding=args.rounding)
    print(format_plan(cfg, computed=p))
    if args.measure:  # time a few steps of each shape here: the GPU-hours above assume an MFU, this measures
        from pvs.walltime import estimate, format_estimate
        print()
        print(format_estimate(estimate(p, cfg)))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pvs", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for name, fn, helptext in [("show", cmd_show, "print the resolved config"),
                               ("data", cmd_data, "build corpus, tokenizer and token shards"),
                               ("pretrain", cmd_pretrain, "pretrain the parent"),
                               ("eval", cmd_eval, "validation loss and perplexities of a run"),
                               ("baseline", cmd_baseline, "unigram baselines of the held-out text"),
                               ("prune", cmd_prune, "prune the parent with one method"),
                               ("train", cmd_train, "train and evaluate one arm (pruned or scratch)"),
                               ("downstream", cmd_downstream, "zero-shot tasks through lm-eval"),
                               ("study", cmd_study, "run the experiment notebooks and the figures"),
                               ("shapes", cmd_shapes, "target-shape table of the parent at ratios 0.5-0.8"),
                               ("plan", cmd_plan, "dry-run plan of every run with its cost"),
                               ("tasks", cmd_tasks, "prepare the offline task copies; print the lm_eval command line"),
                               ("check-accelerate", cmd_check_accelerate,
                                "check an accelerate config against this machine before launching")]:
        p = sub.add_parser(name, help=helptext, description=f"pvs {name}: {helptext}. " + VERB_NOTES.get(name, ""))
        _common(p)
        p.set_defaults(fn=fn)
        if name == "pretrain":
            p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
        if name in ("prune", "train"):
            p.add_argument("--method", required=True, help=f"pruning method; allowed: {METHODS_HELP}")
            p.add_argument("--ratio", type=float, default=0.5,
                           help="fraction of the parent's non-embedding parameters removed, in (0, 1) (default 0.5)")
        if name == "shapes":
            p.add_argument("--parent", default=None, help="a released parent (default: the tier's own)")
            p.add_argument("--search", action="store_true", help="choose by calibration loss (needs forward passes)")
            p.add_argument("--if-missing", action="store_true",
                           help="keep a table that exists (the user's or the shipped one); write one otherwise")
        if name == "prune":
            p.add_argument("--parent", default=None, help="a released parent (smollm2-135m), a model dir or a hub id")
            p.add_argument("--out", default=None, help="output directory (default: runs/<tier>/pruned/...)")
        if name == "train":
            p.add_argument("--init", choices=["pruned", "scratch"], default="pruned")
            p.add_argument("--tokens", type=_token_count, default=None,
                           help="training tokens, e.g. 2e6 (default: budget.retrain_tokens)")
            p.add_argument("--seed", type=int, default=0)
        if name == "downstream":
            p.add_argument("--run", default=None, help="run directory or model directory (default: the parent)")
            p.add_argument("--limit", type=int, default=None, help="documents per task (default: the tier's)")
            p.add_argument("--tasks", nargs="*", default=None, help="task names (default: the paper's eight)")
            p.add_argument("--backend", default="packed", choices=["packed", "hflm"],
                           help="packed: each context once, choices packed after it; hflm: lm-eval's HFLM")
        if name == "study":
            p.add_argument("--experiment", action="append", default=[], help="run only this experiment (repeatable)")
            p.add_argument("--figures-only", action="store_true", help="re-render tables and figures from metrics")
            p.add_argument("--no-notebooks", action="store_true",
                           help="the same runs, records and figures without papermill (no report.ipynb)")
        if name == "check-accelerate":
            p.add_argument("file", help="an accelerate config, e.g. configs/accelerate/ddp_1node.yaml")
            p.add_argument("--num_processes", type=int, default=None, help="as passed to accelerate launch")
        if name == "plan":
            p.add_argument("--gpu", default="H100", help="GPU to estimate hours for (H100, H200, A100)")
            p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
            p.add_argument("--rounding", choices=["exact", "authors"], default="exact",
                           help="token->step rounding: exact, or the authors' 4M tokens per step")
            p.add_argument("--measure", action="store_true",
                           help="time a few training steps of every shape here and estimate the wall time")
        if name == "eval":
            p.add_argument("--run", default=None, help="run directory holding model/ (default: the tier's parent)")
            p.add_argument("--overwrite", action="store_true", help="recompute an existing eval.json")
    return parser


VERB_NOTES = {
    "prune": "Writes runs/<tier>/pruned/<method>-r<ratio>-<hash>/ (or --out DIR): model/ (weights, tokenizer, "
             "masks) and prune.json. A folder holding another result is refused, never overwritten.",
    "train": "P-R (--init pruned) reads the retrain split from the pruned weights; S (--init scratch) the pretrain "
             "split from a fresh init of the same shape. Output under runs/<tier>/arms/.",
    "study": f"Runs the experiment notebooks ({', '.join(EXPERIMENTS)}), then "
             "renders every table and figure into figures/<tier>/.",
}


def _quiet_libraries() -> None:
    """Library noise (load bars, aggregation warnings) off unless -v."""
    import logging
    import os
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("lm-eval", "lm_eval", "transformers", "datasets", "accelerate", "papermill", "traitlets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="(transformers|lm_eval|datasets|accelerate|jupyter_client|ipywidgets)")


def _os_error(e: OSError) -> str:
    """One line for a failed file operation: what, where, and what to do."""
    where = f" {e.filename!r}" if e.filename else ""
    return f"{e.strerror or e}:{where} (need a writable folder with free space; nothing was half-written)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet_libraries()
    try:
        if args.runs:
            import os
            runs = Path(args.runs)
            if runs.exists() and not runs.is_dir():
                raise PvsError(f"--runs {args.runs!r} is a file; allowed: a folder (created if missing)")
            os.environ["PVS_RUNS"] = str(runs.absolute())  # read by pvs.paths; inherited by notebooks
        args.fn(args)
    except PvsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"error: {_os_error(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("default")
    sys.exit(main())
