"""The `pvs` command: one verb per stage of the study.

    pvs data     --tier cpu                 build corpus splits, tokenizer and token shards
    pvs pretrain --tier cpu                 pretrain the parent (P tokens), resumable
    pvs eval     --tier cpu [--run DIR]     validation loss and perplexities (default: the parent)
    pvs baseline --tier cpu                 unigram entropy / unigram loss of the held-out text
    pvs show     --tier cpu                 print the resolved config

Every verb takes --tier NAME, --config FILE.yaml and --set section.field=value (repeatable).
Bad input prints one line, `error: ...`, and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from pvs.errors import PvsError


def _common(p: argparse.ArgumentParser) -> None:
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
    from pvs.model import flops_per_token, shape_param_counts
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
    out = pretrain(cfg, data, args.runs and Path(args.runs))
    rec = json.loads((out / "train.json").read_text())
    print(f"parent: {out}  steps {rec['steps']}  tokens {rec['tokens']:,}  final train loss {rec['final_loss']:.4f}"
          f"  ({rec['wall_s']} s)")
    if not args.no_eval:
        _print_eval(evaluate(cfg, out, data))


def _print_eval(res: dict) -> None:
    print(f"validation loss (held-out pretraining mix): {res['val_loss']:.4f}  ({res['val_tokens']:,} tokens)")
    for src, ppl in res["ppl"].items():
        label = res.get("stand_ins", {}).get(src, src)
        print(f"  perplexity {src:>12}: {ppl:10.2f}   {label}")


def cmd_eval(args) -> None:
    from pvs.stages import evaluate, parent_dir, prepare_data
    cfg = resolve_config(args)
    data = prepare_data(cfg)
    run = Path(args.run) if args.run else parent_dir(cfg, args.runs and Path(args.runs))
    _print_eval(evaluate(cfg, run, data, overwrite=args.overwrite))


def cmd_baseline(args) -> None:
    from pvs.perplexity import unigram_cross_entropy, unigram_entropy
    from pvs.stages import prepare_data
    from pvs.tokens import TokenStream
    cfg = resolve_config(args)
    data = prepare_data(cfg)
    train, valid = TokenStream(data.shards["pretrain"]), TokenStream(data.shards["valid"])
    v = len(data.tokenizer)
    print(json.dumps({"unigram_entropy_pretrain": unigram_entropy(train, v),
                      "unigram_entropy_valid": unigram_entropy(valid, v),
                      "unigram_model_loss_on_valid": unigram_cross_entropy(train, valid, v),
                      "uniform_loss": __import__("math").log(v)}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvs", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    for name, fn, helptext in [("show", cmd_show, "print the resolved config"),
                               ("data", cmd_data, "build corpus, tokenizer and token shards"),
                               ("pretrain", cmd_pretrain, "pretrain the parent"),
                               ("eval", cmd_eval, "validation loss and perplexities of a run"),
                               ("baseline", cmd_baseline, "unigram baselines of the held-out text")]:
        p = sub.add_parser(name, help=helptext)
        _common(p)
        p.set_defaults(fn=fn)
        if name == "pretrain":
            p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
        if name == "eval":
            p.add_argument("--run", default=None, help="run directory holding model/ (default: the tier's parent)")
            p.add_argument("--overwrite", action="store_true", help="recompute an existing eval.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except PvsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("default")
    sys.exit(main())
