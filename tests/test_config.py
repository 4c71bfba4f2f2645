"""Configs, tiers, model shapes and the CLI's handling of bad input."""
import subprocess
import sys

import pytest
import torch

from pvs import tiers
from pvs.config import RunConfig, apply_overrides, config_hash, from_dict, to_dict
from pvs.errors import PvsError
from pvs.model import ModelShape, build_model, flops_per_token, param_counts, shape_of, shape_param_counts


@pytest.mark.parametrize("name", list(tiers.TIERS))
def test_every_tier_is_valid_and_keeps_the_paper_budget_proportion(name):
    cfg = tiers.get(name)
    cfg.parent.validate()
    assert cfg.budget.pretrain_tokens * 50 == cfg.budget.retrain_tokens * 200
    assert from_dict(RunConfig, to_dict(cfg)) == cfg                       # round-trips through plain dicts


def test_paper_tier_is_llama_3_1_8b():
    counts = shape_param_counts(tiers.get("paper").parent)
    assert round(counts["total"] / 1e9, 2) == 8.03 and round(counts["non_embedding"] / 1e9, 2) == 6.98


def test_shape_counts_agree_with_the_built_model_and_shape_round_trips():
    for shape in (tiers.get("smoke").parent, ModelShape(n_layers=2, hidden=48, n_heads=6, n_kv_heads=3,
                                                         head_dim=4, ffn=40, vocab=50, tied=True)):
        model = build_model(shape)
        got = param_counts(model)
        assert {k: got[k] for k in ("total", "non_embedding")} == shape_param_counts(shape)
        assert shape_of(model) == shape
        assert flops_per_token(shape, 128) > 6 * shape_param_counts(shape)["non_embedding"]


def test_build_is_deterministic_in_seed():
    a, b, c = (build_model(tiers.get("smoke").parent, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_overrides_are_typed_and_change_the_hash():
    cfg = tiers.get("cpu")
    new = apply_overrides(cfg, ["train.lr=1e-3", "budget.pretrain_tokens=2e6", "parent.n_layers=4"])
    assert new.train.lr == 1e-3 and new.budget.pretrain_tokens == 2_000_000 and new.parent.n_layers == 4
    assert config_hash(new) != config_hash(cfg) and config_hash(tiers.get("cpu")) == config_hash(cfg)


@pytest.mark.parametrize("override, message", [
    ("budget.pretrain_tokens=0", "budget.pretrain_tokens=0 must be a positive number of tokens"),
    ("budget.retrain_tokens=-1", "budget.retrain_tokens=-1 must be a positive"),
    ("parent.n_kv_heads=3", "n_heads=4 is not divisible by model.n_kv_heads=3"),
    ("train.lr=fast", "expected a number, got 'fast'"),
    ("train.nope=1", "unknown field 'nope'"),
    ("data.max_docs=[1]", "expected an integer"),
])
def test_bad_overrides_name_the_value_and_what_is_allowed(override, message):
    with pytest.raises(PvsError, match=message.replace("(", r"\(").replace("[", r"\[")):
        apply_overrides(tiers.get("cpu"), [override])


def test_hidden_must_match_heads_times_head_dim_when_head_dim_is_derived():
    with pytest.raises(PvsError, match=r"hidden=130 is not a multiple of n_heads=8 \(n_heads x head_dim = hidden"):
        ModelShape(hidden=130, n_heads=8, head_dim=0).validate()
    with pytest.raises(PvsError, match=r"hidden=130 is not a multiple of n_heads=8"):
        ModelShape(hidden=130, n_heads=8, head_dim=16).validate()
    ModelShape(hidden=96, n_heads=8, head_dim=16).validate()               # explicit head_dim: hidden may differ


def test_unknown_tier():
    with pytest.raises(PvsError, match="unknown tier 'laptop'; known tiers: smoke, cpu, gpu, paper"):
        tiers.get("laptop")


@pytest.mark.parametrize("argv, message", [
    (["show", "--tier", "laptop"], "error: unknown tier 'laptop'"),
    (["show", "--set", "budget.pretrain_tokens=0"], "error: budget.pretrain_tokens=0 must be a positive"),
    (["show", "--config", "/nonexistent.yaml"], "error: config file '/nonexistent.yaml' does not exist"),
])
def test_cli_prints_one_line_and_exits_2(argv, message):
    proc = subprocess.run([sys.executable, "-m", "pvs.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1
