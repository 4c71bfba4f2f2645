"""The authors' settings offered as options beside pvs's defaults (issue 13): FLAP's per-query-head unit
under GQA, Minitron-depth scored by a task's accuracy, and named shape-table entries (the authors'
Minitron-width shape for Llama-3.1-8B). Tiny models only; each test states the property it checks."""
import dataclasses

import pytest
import torch
from helpers import TINY, scaled_parent

from pvs.errors import PvsError
from pvs.model import ModelShape, param_counts, shape_param_counts
from pvs.prune import get_method
from pvs.prune.flap import equal_heads_per_group
from pvs.hetero import PvsLlamaForCausalLM
from pvs.prune.shape_search import build_table
from pvs.prune.shapes import achieved_ratio, table_shape
from pvs.prune.surgery import layer_widths

HEADS = dataclasses.replace(TINY, n_layers=3, n_heads=8, n_kv_heads=2)  # 4 query heads per KV group
DEEP = dataclasses.replace(TINY, n_layers=6)
LLAMA_8B = ModelShape(32, 4096, 32, 8, 128, 14336, 128256, max_seq=8192)


make = scaled_parent


def tokens(shape, n, t, seed):
    return torch.randint(0, shape.vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


def one_line_error(fn, match):
    with pytest.raises(PvsError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------- FLAP: per-query-head unit


def kept_rows(parent_w: torch.Tensor, child_w: torch.Tensor) -> list[int]:
    """For each row of ``child_w``, the index of the identical row of ``parent_w``."""
    same = (child_w[:, None, :] == parent_w[None, :, :]).all(-1)
    assert bool((same.sum(1) == 1).all()), "every kept row is a copy of exactly one parent row"
    return same.float().argmax(1).tolist()


def input_means(model, calib) -> list[dict[str, torch.Tensor]]:
    """Per layer, the float64 mean over calibration tokens of the inputs of o_proj and down_proj."""
    sums, handles = [], []
    for layer in model.model.layers:
        acc = {}
        sums.append(acc)
        for name, lin in (("o_proj", layer.self_attn.o_proj), ("down_proj", layer.mlp.down_proj)):
            handles.append(lin.register_forward_pre_hook(
                lambda _m, a, acc=acc, name=name: acc.__setitem__(name, a[0].double().flatten(0, 1).mean(0))))
    logits(model, calib)
    for h in handles:
        h.remove()
    return sums


def masked_logits(parent, calib, x, heads_kept, ffn_kept):
    """The parent with the removed heads' o_proj input columns and the removed FFN neurons zeroed, each
    module adding the bias W[:, removed] @ mean(X[removed]) (FLAP's compensation), on tokens ``x``."""
    hd = parent.config.head_dim
    means = input_means(parent, calib)
    handles = []
    for layer, mean, heads, ffn in zip(parent.model.layers, means, heads_kept, ffn_kept):
        keep_o = torch.zeros(layer.self_attn.o_proj.in_features, dtype=torch.bool)
        for h in heads:
            keep_o[h * hd:(h + 1) * hd] = True
        keep_d = torch.zeros(layer.mlp.down_proj.in_features, dtype=torch.bool)
        keep_d[ffn] = True
        for lin, keep, m in ((layer.self_attn.o_proj, keep_o, mean["o_proj"]),
                             (layer.mlp.down_proj, keep_d, mean["down_proj"])):
            bias = (lin.weight.detach().double()[:, ~keep] @ m[~keep]).float()
            handles.append(lin.register_forward_pre_hook(lambda _m, a, k=keep: (a[0] * k.to(a[0].dtype),)))
            handles.append(lin.register_forward_hook(lambda _m, _a, out, b=bias: out + b))
    try:
        return logits(parent, x)
    finally:
        for h in handles:
            h.remove()


def test_flap_per_head_unit_equals_head_masked_parent_with_compensation():
    parent, calib = make(HEADS), tokens(HEADS, 8, 24, seed=0)
    res = get_method("flap").fn(parent, calib, 0.5, unit="head")
    pruned, rep, hd = res.model, HEADS.n_heads // HEADS.n_kv_heads, HEADS.head_dim
    assert isinstance(pruned, PvsLlamaForCausalLM) and res.info["attention_unit"] == "head"
    heads_kept, ffn_kept = [], []
    for i, (lp, lc, w) in enumerate(zip(parent.model.layers, pruned.model.layers, layer_widths(pruned))):
        q_rows = kept_rows(lp.self_attn.q_proj.weight, lc.self_attn.q_proj.weight)
        heads = sorted({r // hd for r in q_rows})
        assert heads == res.info["layers"][i]["heads_kept"]
        groups = sorted({h // rep for h in heads})
        # valid GQA, the same number of query heads in every kept group
        assert w["kv_heads"] == len(groups) and w["heads"] == len(heads)
        assert all(sum(h // rep == g for h in heads) == w["heads"] // max(w["kv_heads"], 1) for g in groups)
        # the kept KV heads are exactly the groups with a surviving query head; the others are removed
        kv_rows = kept_rows(lp.self_attn.k_proj.weight, lc.self_attn.k_proj.weight)
        assert sorted({r // hd for r in kv_rows}) == groups
        heads_kept.append(heads)
        ffn_kept.append(kept_rows(lp.mlp.up_proj.weight, lc.mlp.up_proj.weight))
    # the unit really is a head: some kept group lost some (not all) of its query heads
    assert any(0 < w["heads"] < rep * w["kv_heads"] for w in layer_widths(pruned))
    x = tokens(HEADS, 3, 20, seed=1)  # not the calibration tokens
    ref = masked_logits(parent, calib, x, heads_kept, ffn_kept)
    got = logits(pruned, x)
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    # one head's parameters (q, o and its share of k, v) bound how far the ratio can miss
    nonemb = param_counts(parent)["non_embedding"]
    assert abs(res.info["achieved_ratio"] - 0.5) <= HEADS.hidden * hd * (2 + 2 / rep) / nonemb
    # the default unit is unchanged: whole KV groups
    default = get_method("flap").fn(parent, calib, 0.5)
    assert default.info["attention_unit"] == "kv_group"
    assert all(w["heads"] == rep * w["kv_heads"] for w in layer_widths(default.model))


def test_equal_heads_per_group_keeps_groups_with_a_surviving_head():
    # group 0 = heads 0..3, group 1 = heads 4..7; selections are what a score threshold picks
    scores = torch.tensor([0.9, 0.6, 0.5, 0.2, 0.3, 0.8, 0.7, 0.0])
    cases = {  # selected -> (query heads kept, KV groups kept)
        (0,): ([0], [0]),                           # group 1 has no selected head: removed
        (0, 5): ([0, 5], [0, 1]),                   # one head per group
        (0, 1, 5, 6): ([0, 1, 5, 6], [0, 1]),       # already equal
        (0, 1, 2, 5, 6): ([0, 1, 2, 4, 5, 6], [0, 1]),  # 5 heads / 2 groups -> 3 each (half rounds up)
        (0, 1, 2, 5): ([0, 1, 5, 6], [0, 1]),       # 4 / 2 -> 2 each: group 1 gains its next best head
        (): ([], []),
    }
    for selected, (heads, groups) in cases.items():
        got_heads, got_groups = equal_heads_per_group(scores, torch.tensor(selected, dtype=torch.long), 4)
        assert (got_heads.tolist(), got_groups.tolist()) == (heads, groups), selected


def test_flap_unit_option_rejects_unknown_units():
    parent, calib = make(HEADS), tokens(HEADS, 2, 8, seed=0)
    msg = one_line_error(lambda: get_method("flap").fn(parent, calib, 0.5, unit="query"), "unit='query'")
    assert "kv-group" in msg and "head" in msg


# ---------------------------------------------------------------- Minitron-depth: task-accuracy scorer


class PlantedTask:
    """A fake task: the parent scores 0.70; removing the planted block scores 0.69 (nearest the parent);
    removing layers 0..2 scores 0.99 (best, but far above the parent: the authors' rule must not take it);
    any other removal scores 0.30. Records the state of every model it is given."""

    name = "planted-task"

    def __init__(self, parent, planted):
        self.ids = [id(layer) for layer in parent.model.layers]
        self.planted = planted
        self.seen = []

    def __call__(self, model):
        kept = [self.ids.index(id(layer)) for layer in model.model.layers]
        self.seen.append({"n_layers": model.config.num_hidden_layers, "kept": kept, "training": model.training,
                          "use_cache": model.config.use_cache, "grad": torch.is_grad_enabled()})
        removed = sorted(set(range(len(self.ids))) - set(kept))
        if not removed:
            return 0.70
        return {tuple(self.planted): 0.69, (0, 1, 2): 0.99}.get(tuple(removed), 0.30)


def test_task_scorer_removes_the_block_the_planted_task_prefers():
    parent = make(DEEP)
    parent.config.use_cache = True  # as released parents ship; the scorer must see it off
    parent.train()
    calib = tokens(DEEP, 2, 8, seed=0)
    task = PlantedTask(parent, planted=[2, 3, 4])
    res = get_method("minitron-depth").fn(parent, calib, 0.5, scorer="task", task_score=task)
    assert res.info["removed_layers"] == [2, 3, 4] and res.info["scorer"] == "task"
    assert res.info["parent_score"] == 0.70 and res.info["task"] == "planted-task"
    assert res.info["block_scores"] == [0.99, 0.30, 0.69, 0.30]  # starts 0..3, k = 3
    # one call on the parent, one per candidate block, each on a consistent view without cache or grad
    assert [s["kept"] for s in task.seen] == [[0, 1, 2, 3, 4, 5], [3, 4, 5], [0, 4, 5], [0, 1, 5], [0, 1, 2]]
    assert all(s["n_layers"] == len(s["kept"]) and not s["use_cache"] and not s["training"] and not s["grad"]
               for s in task.seen)
    # the pruned model is the parent's layers 0, 1, 5; the parent is left as it was
    for kept, layer in zip((0, 1, 5), res.model.model.layers):
        assert torch.equal(layer.mlp.up_proj.weight, parent.model.layers[kept].mlp.up_proj.weight)
    assert parent.config.use_cache and parent.training and parent.config.num_hidden_layers == 6
    assert len(parent.model.layers) == 6


def test_depth_scorer_options_are_checked():
    parent, calib = make(DEEP), tokens(DEEP, 2, 8, seed=0)
    fn = get_method("minitron-depth").fn
    msg = one_line_error(lambda: fn(parent, calib, 0.5, scorer="winogrande"), "scorer='winogrande'")
    assert "allowed: loss, task" in msg
    one_line_error(lambda: fn(parent, calib, 0.5, scorer="task"), "needs task_score")
    one_line_error(lambda: fn(parent, calib, 0.5, task_score=lambda m: 0.5), "only with scorer='task'")
    one_line_error(lambda: fn(parent, calib, 0.5, scorer="task", task_score=lambda m: float("nan")),
                   "finite number")
    # the default is still the calibration-loss scorer
    res = fn(parent, calib, 0.5)
    assert res.info["scorer"] == "loss" and len(res.info["block_losses"]) == 4


# ---------------------------------------------------------------- named shape-table entries


def test_authors_minitron_width_shape_is_a_named_entry_beside_ours():
    ours = table_shape("llama3.1-8b", 0.5, "width")
    authors = table_shape("llama3.1-8b", 0.5, "width", entry="authors")
    assert (ours.hidden, ours.ffn) == (2816, 9504) and table_shape("llama3.1-8b", 0.5, "width", entry="pvs") == ours
    assert (authors.hidden, authors.ffn) == (3072, 9216)
    assert dataclasses.replace(authors, hidden=4096, ffn=14336) == LLAMA_8B  # everything else is the parent's
    # by pvs's count (non-embedding parameters removed) the authors' shape removes about 46.6 %
    assert achieved_ratio(LLAMA_8B, authors) == pytest.approx(0.466, abs=5e-4)
    assert achieved_ratio(LLAMA_8B, ours) == pytest.approx(0.5, abs=1e-3)
    msg = one_line_error(lambda: table_shape("llama3.1-8b", 0.5, "width", entry="paper"), "'paper'")
    assert "authors" in msg and "pvs" in msg


def test_missing_table_or_ratio_names_the_table_and_the_command_that_fills_it():
    msg = one_line_error(lambda: table_shape("cpu-parent", 0.55, "width"), "ratio=0.55")
    assert "cpu-parent" in msg and "pvs shapes --tier cpu" in msg
    msg = one_line_error(lambda: table_shape("llama3.1-8b", 0.9, "depth"), "ratio=0.9")
    assert "llama3.1-8b.json" in msg and "pvs shapes" in msg and "build_table" in msg
    msg = one_line_error(lambda: table_shape("smoke-parent", 0.5, "width", table_dir="/nonexistent"),
                         "no shape table")
    assert "pvs shapes --tier smoke" in msg


def test_build_table_keeps_named_entries_when_it_rewrites_a_table(tmp_path):
    table = build_table("tiny-parent", TINY, ratios=(0.5,), table_dir=tmp_path)
    path = tmp_path / "tiny-parent.json"
    named = dataclasses.replace(TINY, ffn=16)
    table["entries"].append({"ratio": 0.5, "kind": "width", "name": "authors",
                             "shape": dataclasses.asdict(named), **shape_param_counts(named)})
    from pvs.records import atomic_write_json
    atomic_write_json(path, table)
    build_table("tiny-parent", TINY, ratios=(0.5,), table_dir=tmp_path)  # a rewrite, e.g. by `pvs shapes`
    assert table_shape("tiny-parent", 0.5, "width", table_dir=tmp_path, entry="authors") == named
    assert table_shape("tiny-parent", 0.5, "width", table_dir=tmp_path) != named
    # a table rebuilt for another parent shape drops them: they were counted against the old parent
    build_table("tiny-parent", dataclasses.replace(TINY, ffn=96), ratios=(0.5,), table_dir=tmp_path)
    one_line_error(lambda: table_shape("tiny-parent", 0.5, "width", table_dir=tmp_path, entry="authors"),
                   "allowed: pvs")


def test_tables_are_written_beside_the_data_cache_and_read_before_the_shipped_ones(tmp_path, monkeypatch):
    """build_table (and so `pvs shapes`) writes $PVS_CACHE/shapes/<parent>.json, never the package's table; a
    written table is read before the shipped one and keeps the shipped table's named entries."""
    from pvs.prune.shapes import TABLE_DIR, find_table, user_table_dir
    monkeypatch.setenv("PVS_CACHE", str(tmp_path))
    shipped = (TABLE_DIR / "llama3.1-8b.json").read_bytes()
    assert find_table("llama3.1-8b") == TABLE_DIR / "llama3.1-8b.json"
    mine = dataclasses.replace(LLAMA_8B, ffn=12288)  # another parent of the same name
    build_table("llama3.1-8b", mine, ratios=(0.5,), kinds=("depth",))
    assert user_table_dir() == tmp_path / "shapes" and find_table("llama3.1-8b") == tmp_path / "shapes" / "llama3.1-8b.json"
    assert (TABLE_DIR / "llama3.1-8b.json").read_bytes() == shipped
    one_line_error(lambda: table_shape("llama3.1-8b", 0.5, "width"), "no width entry")  # the user's table answers
    build_table("llama3.1-8b", LLAMA_8B, ratios=(0.5,))  # the shipped parent shape again: its named entries kept
    assert table_shape("llama3.1-8b", 0.5, "width", entry="authors").hidden == 3072


def test_shapes_if_missing_keeps_an_existing_table(tmp_path, monkeypatch, capsys):
    from pvs.cli import main
    monkeypatch.setenv("PVS_CACHE", str(tmp_path))
    assert main(["shapes", "--tier", "cpu", "--if-missing"]) == 0  # the shipped table: no data, no parent needed
    assert "cpu-parent" in capsys.readouterr().out and not (tmp_path / "shapes").exists()


# the same settings reached from a study's config ---------------------------------------------------------
def test_study_config_reaches_the_method_options_and_the_named_shape(monkeypatch, tmp_path):
    """--set study.method_options.flap.unit=head reaches FLAP and keys its pruned run apart; study.shape_entry
    picks the authors' Minitron-width shape at the paper tier; an unknown entry names the allowed ones."""
    from pvs import study, tiers
    from pvs.config import apply_overrides

    monkeypatch.setenv("PVS_RUNS", str(tmp_path))
    cpu = tiers.get("cpu")
    per_head = apply_overrides(cpu, ["study.method_options.flap.unit=head"])
    assert per_head.study.method_options == {"flap": {"unit": "head"}}
    assert study.prune_options(per_head, "flap", 0.5) == {"unit": "head"}
    assert study.prune_options(cpu, "flap", 0.5) == {}
    assert study.pruned_dir(per_head, "flap", 0.5) != study.pruned_dir(cpu, "flap", 0.5)
    assert study.pruned_dir(per_head, "sparsegpt", 0.5) == study.pruned_dir(cpu, "sparsegpt", 0.5)

    paper = tiers.get("paper")
    ours = study.prune_options(paper, "minitron-width", 0.5)["target_shape"]
    theirs = study.prune_options(apply_overrides(paper, ["study.shape_entry=authors"]), "minitron-width",
                                 0.5)["target_shape"]
    assert (ours["hidden"], ours["ffn"]) == (2816, 9504)
    assert (theirs["hidden"], theirs["ffn"], theirs["n_heads"], theirs["n_kv_heads"]) == (3072, 9216, 32, 8)
    with pytest.raises(PvsError, match=r"no width entry named 'theirs' at ratio=0.5; allowed: authors, pvs"):
        study.prune_options(apply_overrides(paper, ["study.shape_entry=theirs"]), "minitron-width", 0.5)


def test_method_options_must_be_a_mapping_of_mappings():
    from pvs import tiers
    from pvs.config import apply_overrides
    with pytest.raises(PvsError, match=r"study.method_options.flap: expected a mapping, got 'head'"):
        apply_overrides(tiers.get("cpu"), ["study.method_options.flap=head"])


AUTHORS_CALIBRATION = {  # (sequences, tokens each) in the authors' scripts, as the README's table cites them
    "minitron-depth": (1024, 8192), "shortgpt": (1024, 8192), "minitron-width": (1024, 8192),
    "flap": (2048, 128), "sheared-llama": (32, 4096), "sparsegpt": (128, 8192), "wanda": (128, 8192)}


def test_paper_tier_calibrates_each_method_as_its_authors_did():
    from pvs import tiers
    paper, cpu = tiers.get("paper"), tiers.get("cpu")
    assert {m: get_method(m).calibration(paper) for m in AUTHORS_CALIBRATION} == AUTHORS_CALIBRATION
    assert not get_method("magnitude").needs_calib
    # the smaller tiers give every one-shot method the tier's one shared size
    shared = (cpu.study.calib_samples, cpu.study.calib_seq_len)
    assert {get_method(m).calibration(cpu) for m in AUTHORS_CALIBRATION if m != "sheared-llama"} == {shared}


def test_study_config_scores_depth_blocks_by_a_few_shot_task(trained_runs, smoke_cache, tmp_path, monkeypatch):
    """study.method_options.minitron-depth = {scorer: task, task: winogrande, num_fewshot: 5, task_limit: 8}
    reaches `pvs prune` as a WinoGrande 5-shot scorer (lm-eval): the parent and every candidate block are
    scored (accuracies on 8 documents), the block nearest the parent's score goes, prune.json keeps the
    scorer's settings, the same request is reused and another shot count is a pruned run of its own."""
    import json
    import shutil
    from helpers import SMOKE
    from pvs.cli import main

    shutil.copytree(trained_runs, tmp_path / "runs")
    monkeypatch.setenv("PVS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PVS_CACHE", str(smoke_cache))
    opt = "study.method_options.minitron-depth."
    argv = [*SMOKE, "--method", "minitron-depth", "--set", f"{opt}scorer=task", "--set", f"{opt}task=winogrande",
            "--set", f"{opt}task_limit=8", "--set"]
    assert main(["prune", *argv, f"{opt}num_fewshot=5"]) == 0
    (folder,) = [p for p in (tmp_path / "runs" / "smoke" / "pruned").iterdir() if p.name.startswith("minitron")]
    record = json.loads((folder / "prune.json").read_text())
    info = record["info"]
    assert record["options"] == {"scorer": "task",
                                 "task_score": {"task": "winogrande", "num_fewshot": 5, "limit": 8, "seed": 0}}
    assert info["task"] == "winogrande 5-shot acc (lm-eval, 8 documents, seed 0)"
    scores, parent = info["block_scores"], info["parent_score"]
    assert len(scores) == 3 and all(0 <= 8 * s <= 8 and 8 * s == round(8 * s) for s in scores + [parent])
    start = min(range(3), key=lambda i: (abs(scores[i] - parent), i))
    assert info["removed_layers"] == [start, start + 1]
    shots = {json.loads(p.read_text())["tasks"]["winogrande"]["n_shot"]
             for p in (smoke_cache / "downstream").glob("*.json")
             if "winogrande" in json.loads(p.read_text())["tasks"]}
    assert 5 in shots
    before = (folder / "prune.json").read_bytes()
    assert main(["prune", *argv, f"{opt}num_fewshot=5"]) == 0  # the same request: reused, not redone
    assert (folder / "prune.json").read_bytes() == before
    assert main(["prune", *argv, f"{opt}num_fewshot=0"]) == 0  # another scorer setting: its own folder
    assert len([p for p in folder.parent.iterdir() if p.name.startswith("minitron")]) == 2
