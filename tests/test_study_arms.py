"""How the study sets up its arms (pvs.study): where each arm starts, which split it reads, what its row
says it cost, and which arms are one run.

The paper's comparison rests on these: a scratch arm (S_N, S_{P+N}) is the pruned architecture from a
fresh random init trained on the pretraining split; a pruned arm (P-R_N) is the pruned weights themselves
retrained on the disjoint retrain split; a sparse scratch arm keeps the pruned mask and redraws the
surviving weights. Pruned folders are written with pvs.prune.run.prune_to_dir on a tiny parent exactly
where the study looks for them (study.pruned_dir), and the corpus stages are replaced by tiny token
shards, so nothing here builds a corpus or trains a parent.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY, synthetic_stream
from pvs import stages, study, tiers
from pvs.config import BudgetConfig
from pvs.model import build_model, shape_of
from pvs.prune.masks import MASKS_FILE, load_masks
from pvs.prune.run import prune_to_dir
from pvs.records import read_json

P, N = 2048, 1024  # whole steps of the smoke tier's 8 x 64-token batches
DENSE = ("minitron-depth", "shortgpt")  # on a 2-layer parent both keep one layer: the same architecture
SPARSE = ("wanda", "sparsegpt")  # same ratio, different masks
RATIO = 0.5
SPLITS = ("pretrain", "retrain", "calib", "valid")


def study_config():
    """The smoke tier with token budgets of a few steps, no downstream tasks and one worker."""
    cfg = tiers.get("smoke")
    return dataclasses.replace(cfg, budget=BudgetConfig(pretrain_tokens=P, retrain_tokens=N),
                               study=dataclasses.replace(cfg.study, downstream_tasks=[], workers=1))


def set_roots(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Point runs, figures and cache at ``root`` (pvs.paths reads the variables at each call)."""
    for var, sub in (("PVS_RUNS", "runs"), ("PVS_FIGURES", "figures"), ("PVS_CACHE", "cache")):
        mp.setenv(var, str(root / sub))


def fake_data(root: Path) -> stages.DataHandle:
    """Token shards with distinct content per split (so a run's record tells which one it read)."""
    tok_dir = root / "tokens"
    tok_dir.mkdir(parents=True, exist_ok=True)
    shards = {s: synthetic_stream(tok_dir / f"{s}.bin", 6000, TINY.vocab, seed=i) for i, s in enumerate(SPLITS)}
    return stages.DataHandle(root / "corpus", tok_dir, None, shards)


def fake_evaluate(cfg, run_dir, data, overwrite=False) -> dict:
    """A held-out evaluation record of the shape stages.evaluate returns (no corpus needed)."""
    return {"val_loss": 4.0, "val_tokens": 128, "loss": {"wiki": 4.0}, "ppl": {"wiki": math.exp(4.0)},
            "val_blocks": {"tokens": [64, 64], "loss_sum": [256.0, 256.0]}}


def install_fakes(mp: pytest.MonkeyPatch, root: Path, data: stages.DataHandle) -> None:
    set_roots(mp, root)
    mp.setattr(stages, "prepare_data", lambda cfg, cache=None: data)
    mp.setattr(stages, "evaluate", fake_evaluate)


def write_pruned(cfg, parent, variant: str) -> Path:
    """The pruned folder of ``variant`` at RATIO, written where study.prune looks for it."""
    out = study.pruned_dir(cfg, variant, RATIO)
    calib = torch.randint(0, TINY.vocab, (8, 32), generator=torch.Generator().manual_seed(0))
    prune_to_dir(parent, variant, RATIO, calib, out, study.prune_options(cfg, variant, RATIO))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Pruned folders of every variant above and three trained arms (P-R_N, S_N, S_{P+N} of minitron-depth)."""
    root = tmp_path_factory.mktemp("study")
    cfg, data = study_config(), fake_data(root)
    with pytest.MonkeyPatch.context() as mp:
        install_fakes(mp, root, data)
        parent = build_model(TINY, seed=0)
        pruned = {v: write_pruned(cfg, parent, v) for v in DENSE + SPARSE}
        v = DENSE[0]
        arms = {"P-R": study.Arm("pruned", v, RATIO, N, "N"), "S": study.Arm("scratch", v, RATIO, N, "N"),
                "S_P+N": study.Arm("scratch", v, RATIO, P + N, "P+N")}
        runs = {k: study.run_arm(cfg, a) for k, a in arms.items()}
    return {"root": root, "cfg": cfg, "data": data, "pruned": pruned, "arms": arms, "runs": runs}


@pytest.fixture
def env(world, monkeypatch):
    install_fakes(monkeypatch, world["root"], world["data"])
    return world


def saved_weights(pruned: Path) -> dict:
    """The pruned checkpoint's tensors read straight from its safetensors file."""
    return load_file(str(pruned / "model" / "model.safetensors"))


def differs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of entries where two tensors differ."""
    return float((a != b).float().mean())


# ---------------------------------------------------------------- where an arm starts


def test_scratch_arm_is_a_fresh_seeded_init_of_the_pruned_shape(env):
    cfg, pruned = env["cfg"], env["pruned"][DENSE[0]]
    saved = saved_weights(pruned)
    a0, a0_again, a1 = (study._init_model(cfg, study.Arm("scratch", DENSE[0], RATIO, N, "N", seed), pruned)
                        for seed in (0, 0, 1))
    model, masks, split = a0
    assert split == "pretrain" and masks is None
    assert shape_of(model) == shape_of(study._init_model(cfg, env["arms"]["P-R"], pruned)[0])  # pruned shape
    state = model.state_dict()
    for name, w in saved.items():
        if w.dim() == 2:  # every matrix is new, not the pruned (parent's) weights
            assert differs(state[name], w) > 0.99, name
    # the parent's own init recipe at the arm's seed, reproducible, and a different draw per seed
    recipe = build_model(shape_of(model), seed=0).state_dict()
    assert all(torch.equal(state[k], recipe[k]) for k in state)
    assert all(torch.equal(state[k], a0_again[0].state_dict()[k]) for k in state)
    other = a1[0].state_dict()
    assert all(differs(state[k], other[k]) > 0.99 for k in state if state[k].dim() == 2)


def test_pruned_arm_starts_from_the_pruned_weights_and_reads_retrain(env):
    cfg = env["cfg"]
    for variant in (DENSE[0], SPARSE[0]):
        pruned = env["pruned"][variant]
        model, masks, split = study._init_model(cfg, study.Arm("pruned", variant, RATIO, N, "N", 1), pruned)
        assert split == "retrain"
        state, saved = model.state_dict(), saved_weights(pruned)
        assert set(saved) <= set(state)
        assert all(torch.equal(state[k], saved[k]) for k in saved), variant
        if variant in SPARSE:
            on_disk = load_masks(pruned / "model")
            assert masks.keys() == on_disk.keys() and all(torch.equal(masks[k], on_disk[k]) for k in masks)
        else:
            assert masks is None


def with_scheme(cfg, scheme: str):
    """``cfg`` drawing sparse scratch arms with ``scheme`` (study.sparse_scratch_init)."""
    return dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, sparse_scratch_init=scheme))


@pytest.mark.parametrize("scheme", ["authors", "fresh"])
def test_sparse_scratch_keeps_the_mask_and_redraws_the_surviving_weights(env, scheme):
    """Either scheme (the parent's embeddings and norms kept, or redrawn too): the mask exactly, and every
    masked-in Linear weight new."""
    cfg, pruned = with_scheme(env["cfg"], scheme), env["pruned"][SPARSE[0]]
    on_disk, saved = load_masks(pruned / "model"), saved_weights(pruned)
    assert (pruned / "model" / MASKS_FILE).is_file() and on_disk
    model, masks, split = study._init_model(cfg, study.Arm("scratch", SPARSE[0], RATIO, N, "N", 0), pruned)
    assert split == "pretrain"
    assert masks.keys() == on_disk.keys() and all(torch.equal(masks[k], on_disk[k]) for k in masks)
    state = model.state_dict()
    for name, keep in on_disk.items():
        w = state[name]
        assert torch.all(w[~keep] == 0), name                        # pruned weights stay pruned
        assert differs(w[keep], saved[name][keep]) > 0.99, name      # survivors are redrawn
        assert bool((w[keep] != 0).all()), name                      # and none of them is zero
    again = study._init_model(cfg, study.Arm("scratch", SPARSE[0], RATIO, N, "N", 0), pruned)[0].state_dict()
    other = study._init_model(cfg, study.Arm("scratch", SPARSE[0], RATIO, N, "N", 1), pruned)[0].state_dict()
    name = next(iter(on_disk))
    assert torch.equal(state[name], again[name]) and differs(state[name], other[name]) > 0.4


def test_trained_arms_read_their_own_split(env):
    shards = env["data"].shards
    for key, split in (("P-R", "retrain"), ("S", "pretrain"), ("S_P+N", "pretrain")):
        rec = read_json(env["runs"][key] / "train.json")
        assert rec["split"] == split and rec["data"]["shard"] == str(shards[split]), key
        assert rec["tokens"] == env["arms"][key].tokens, key  # budgets are whole steps here


# ---------------------------------------------------------------- what a row says


def test_row_total_tokens_count_the_parent_for_pruned_arms_only(env):
    cfg, data, runs, arms = env["cfg"], env["data"], env["runs"], env["arms"]
    rows = {k: study.row(cfg, arms[k], runs[k], data) for k in runs}
    assert (rows["P-R"]["arm"], rows["S"]["arm"], rows["S_P+N"]["arm"]) == ("P-R", "S", "S")
    assert rows["P-R"]["train_tokens"] == N and rows["P-R"]["total_tokens"] == N + P
    assert rows["S"]["train_tokens"] == N and rows["S"]["total_tokens"] == N
    assert rows["S_P+N"]["train_tokens"] == P + N and rows["S_P+N"]["total_tokens"] == P + N
    assert rows["S_P+N"]["budget"] == "P+N" and rows["P-R"]["mask_learning_tokens"] == 0
    pr = read_json(env["pruned"][DENSE[0]] / "prune.json")
    assert rows["P-R"]["achieved_ratio"] == pr["achieved_ratio"] == rows["S"]["achieved_ratio"]


def test_row_adds_mask_learning_tokens_to_a_pruned_arm(env, monkeypatch):
    """Sheared LLaMA trains its masks on retrain tokens before retraining: a P-R total is P + those + N."""
    cfg, data, runs, arms = env["cfg"], env["data"], env["runs"], env["arms"]
    real = study.read_json

    def with_mask_learning(path):
        rec = real(path)
        if Path(path).name == "prune.json":
            rec = {**rec, "info": {**rec.get("info", {}), "mask_learning_tokens": 777}}
        return rec

    monkeypatch.setattr(study, "read_json", with_mask_learning)
    pr, s = study.row(cfg, arms["P-R"], runs["P-R"], data), study.row(cfg, arms["S"], runs["S"], data)
    assert pr["mask_learning_tokens"] == 777 and pr["total_tokens"] == N + P + 777
    assert s["mask_learning_tokens"] == 0 and s["total_tokens"] == N


# ---------------------------------------------------------------- which arms are one run


def test_scratch_arms_of_one_architecture_share_a_directory(env):
    cfg = env["cfg"]
    a, b = DENSE
    configs = [read_json(env["pruned"][v] / "prune.json")["config"] for v in DENSE]
    assert configs[0] == configs[1]  # the premise: both methods reach the same architecture
    d = lambda init, v, tokens=N, seed=0: study.arm_dir(cfg, study.Arm(init, v, RATIO, tokens, "N", seed))  # noqa: E731
    assert d("scratch", a) == d("scratch", b)
    assert d("pruned", a) != d("pruned", b)
    assert d("scratch", a) != d("pruned", a)
    assert d("scratch", a, seed=1) != d("scratch", a) and d("scratch", a, tokens=P + N) != d("scratch", a)
    assert d("pruned", a, seed=1) != d("pruned", a) and d("pruned", a, tokens=P + N) != d("pruned", a)
    # sparse scratch arms keep their method's mask: different masks are different runs
    assert d("scratch", SPARSE[0]) != d("scratch", SPARSE[1])


def test_sparse_scratch_runs_are_keyed_by_their_init_scheme(env):
    cfgs = [with_scheme(env["cfg"], s) for s in ("authors", "fresh")]
    sparse, dense = (study.Arm("scratch", v, RATIO, N, "N") for v in (SPARSE[0], DENSE[0]))
    assert study.arm_dir(cfgs[0], sparse) != study.arm_dir(cfgs[1], sparse)
    assert study.arm_dir(cfgs[0], dense) == study.arm_dir(cfgs[1], dense)  # a dense init has no such choice


def test_run_arms_trains_a_shared_scratch_arm_once(env, monkeypatch):
    cfg = env["cfg"]
    calls = []

    def fake_run_arm(cfg_, arm):
        calls.append(arm)
        return study.arm_dir(cfg_, arm)

    monkeypatch.setattr(study, "run_arm", fake_run_arm)
    a, b = DENSE
    arms = [study.Arm("scratch", a, RATIO, N, "N", 0), study.Arm("pruned", a, RATIO, N, "N", 0),
            study.Arm("scratch", b, RATIO, N, "N", 0), study.Arm("pruned", b, RATIO, N, "N", 0),
            study.Arm("scratch", a, RATIO, N, "N", 1), study.Arm("scratch", a, RATIO, P + N, "P+N", 0)]
    out = study.run_arms(cfg, arms)
    assert len(calls) == 5 and arms[2] not in calls  # the shared S_N of the second method is not rerun
    assert out[0] == out[2] and len(set(out)) == 5
    assert out == [study.arm_dir(cfg, x) for x in arms]
