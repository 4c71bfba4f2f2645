"""Sheared LLaMA: hard-concrete gates, the Lagrangian, exact target shapes, masked == pruned, GQA, the
convergence check and its budget, errors."""
import dataclasses
import math
import re
import types

import pytest
import torch

from pvs import study, tiers
from pvs.prune import sheared
from pvs.config import merge
from pvs.errors import PvsError
from pvs.model import ModelShape, build_model, param_counts, shape_of, shape_param_counts
from pvs.prune import get_method
from pvs.prune.l0 import L0Masks, count_non_embedding, deterministic_gate, prob_zero, sample_hard_concrete
from pvs.prune.sheared import Gates, MaskLearningNotConverged, fold_and_cut, mask_learning_steps

PARENT = ModelShape(n_layers=4, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8, ffn=128, vocab=256)
TARGET = dataclasses.replace(PARENT, n_layers=3, hidden=48, n_heads=4, n_kv_heads=1, ffn=96)
CONVERGED_STEPS = 300
"""Enough for this parent: the expected sparsity overshoots to ~0.99 and settles by ~250 steps."""


def _calib(n=16, seq=32, seed=0):
    return torch.randint(0, PARENT.vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def _shear(**kw):
    """A short run (6 steps, no convergence check) unless ``kw`` says otherwise."""
    opts = dict(target_shape=TARGET, steps=6, batch_size=4, seed=0, sparsity_tol=None)
    opts.update(kw)
    return get_method("sheared-llama").fn(build_model(PARENT, seed=0), _calib(), 0.5, **opts)


@pytest.fixture(scope="module")
def converged():
    """One full-length run with the default convergence check, shared by the tests that inspect it (~5 s)."""
    return _shear(steps=CONVERGED_STEPS, sparsity_tol=0.02)


def test_registered_as_width():
    assert get_method("sheared-llama").granularity == "width"


def test_hard_concrete_in_unit_interval_and_closed_form_p_zero_matches_monte_carlo():
    log_alpha = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])
    z = sample_hard_concrete(log_alpha.expand(100_000, 5), torch.Generator().manual_seed(0))
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0  # exact zeros and ones occur, nothing outside
    mc = (z == 0).float().mean(0)
    assert torch.allclose(mc, prob_zero(log_alpha), atol=0.006)
    # log_alpha = 0 (droprate 0.5) gives P(z=0) = sigmoid(2/3 * log(1/11))
    assert math.isclose(float(prob_zero(torch.tensor(0.0))), 1 / (1 + 11 ** (2 / 3)), rel_tol=1e-5)


def test_deterministic_gate_keeps_exactly_k_largest_per_row():
    la = torch.tensor([[0.5, -2.0, 3.0, 1.0], [4.0, 2.0, -1.0, 0.0]])
    z = deterministic_gate(la, 2)
    assert (z > 0).sum(-1).tolist() == [2, 2]
    assert torch.equal(z > 0, torch.tensor([[False, False, True, True], [True, True, False, False]]))
    assert float(z.max()) <= 1.0


def test_param_count_couples_hidden_heads_intermediate_exactly_for_binary_masks():
    masks = L0Masks(PARENT, TARGET)
    binary = {m: (z > 0).float() for m, z in masks.deterministic().items()}
    assert int(count_non_embedding(PARENT, binary)) == shape_param_counts(TARGET)["non_embedding"]
    ones = {m: torch.ones_like(z) for m, z in binary.items()}
    assert int(count_non_embedding(PARENT, ones)) == shape_param_counts(PARENT)["non_embedding"]


@pytest.mark.parametrize("constraint", ["module", "total"])
def test_lagrangian_drives_expected_sparsity_to_target(constraint):
    masks = L0Masks(PARENT, TARGET)
    opt = torch.optim.AdamW([{"params": list(masks.log_alpha.values())},
                             {"params": list(masks.lambdas.values()), "maximize": True}],
                            lr=0.3, betas=(0.9, 0.95), weight_decay=0.0)
    target = masks.target_total_sparsity()
    start = float(masks.expected_sparsity())
    for step in range(250):
        loss, stats = masks.lagrangian(min(1.0, step / 40), constraint)
        opt.zero_grad()
        loss.backward()
        opt.step()
        masks.clamp_()
    end = float(masks.expected_sparsity())
    assert abs(start - target) > 0.5  # gates start (almost surely) open
    assert abs(end - target) < 0.03
    assert masks.lambda_values()[f"{'total' if constraint == 'total' else 'hidden'}_2"] > 0  # ascent on lambda_2


def _random_gates(shape, target, seed, binary_hidden=False):
    masks = L0Masks(shape, target, seed=seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for la in masks.log_alpha.values():
            la.copy_(torch.randn(la.shape, generator=g) * 2)
    return masks.deterministic(binary_hidden=binary_hidden)


@pytest.mark.parametrize("tied", [False, True])
def test_pruned_model_equals_masked_model(tied):
    parent = dataclasses.replace(PARENT, tied=tied)
    target = dataclasses.replace(TARGET, tied=tied)
    model = build_model(parent, seed=1)
    with torch.no_grad():  # larger weights than the init's, so a wrong fold would show in the logits
        for p in model.parameters():
            p.mul_(5.0)
    z = _random_gates(parent, target, seed=2, binary_hidden=tied)
    assert 0 < float(z["hidden"][z["hidden"] > 0].min()) and (tied or float(z["hidden"].max()) < 1)
    ids = _calib(2, 24, seed=3)
    gates = Gates(model, parent)
    with gates.installed(), torch.no_grad():
        gates.z = z
        masked = model(input_ids=ids).logits
    with torch.no_grad():
        unmasked = model(input_ids=ids).logits  # hooks are gone once the context exits
    pruned = fold_and_cut(model, parent, z)
    with torch.no_grad():
        got = pruned(input_ids=ids).logits
    assert shape_of(pruned.config) == target
    # tolerances relative to the logits' size (~5 here): float32 round-off of a different summation order
    # grows with it (1.1e-4 was seen on one CPU), while a wrong fold moves the logits by a large fraction
    scale = float(masked.abs().max())
    assert float((masked - unmasked).abs().max()) > 0.05 * scale
    assert float((got - masked).abs().max()) <= 1e-4 * scale, (float((got - masked).abs().max()), scale)


def test_final_model_has_exactly_the_target_shape_and_counts(converged):
    model, info = converged.model, converged.info
    assert shape_of(model.config) == TARGET
    counts = param_counts(model)
    assert counts["non_embedding"] == shape_param_counts(TARGET)["non_embedding"] == info["non_embedding_params"]
    assert info["achieved_shape"] == dataclasses.asdict(TARGET) == info["target_shape"]
    assert math.isclose(info["achieved_ratio"], info["target_ratio"])
    assert info["steps"] == CONVERGED_STEPS
    assert info["tokens"] == info["mask_learning_tokens"] == CONVERGED_STEPS * 4 * 32
    assert len(info["kept_layers"]) == 3
    lag = info["lagrangian"]
    assert lag["expected_sparsity_start"] < 0.05 and lag["expected_sparsity_end"] > lag["expected_sparsity_start"]
    # the multipliers are trained by ascent: d L / d lambda_2 = (s - t)^2 >= 0, so lambda_2 only grows
    assert all(lag["lambdas"][f"{m}_2"] > 0 for m in ("layer", "head", "intermediate", "hidden"))
    # GQA stays valid in every layer: the config's heads are whole groups and the weights agree
    cfg = model.config
    assert cfg.num_attention_heads % cfg.num_key_value_heads == 0
    for layer in model.model.layers:
        assert layer.self_attn.q_proj.out_features == cfg.num_attention_heads * cfg.head_dim
        assert layer.self_attn.k_proj.out_features == cfg.num_key_value_heads * cfg.head_dim
    assert model(input_ids=_calib(1, 8)).logits.shape == (1, 8, PARENT.vocab)


def test_target_from_ratio_masks_only_and_data_iterator():
    res = get_method("sheared-llama").fn(build_model(PARENT, seed=0), None, 0.5, data=iter([_calib(4, 16)] * 3),
                                         tokens=10_000, train_weights=False, sparsity_tol=None)
    assert res.info["steps"] == 3 and res.info["mask_learning_tokens"] == 3 * 4 * 16  # the data ran out first
    assert res.info["achieved_shape"] == res.info["target_shape"]
    assert abs(res.info["achieved_ratio"] - 0.5) < 0.05


def test_seeded_runs_are_reproducible():
    a, b, c = _shear(seed=5), _shear(seed=5), _shear(seed=6)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.info["lagrangian"]["lambdas"] == b.info["lagrangian"]["lambdas"]
    assert a.info["lagrangian"]["lambdas"] != c.info["lagrangian"]["lambdas"]


@pytest.mark.parametrize("bad, message", [
    (dict(hidden=80), r"target hidden=80 exceeds the parent's 64"),
    (dict(n_layers=5), r"target n_layers=5 exceeds the parent's 4"),
    # groups of 3 query heads (hidden 48 keeps the config valid): not whole groups of 4
    (dict(n_heads=6, n_kv_heads=2, hidden=48),
     r"n_heads=6 with n_kv_heads=2; heads are pruned in whole GQA groups of 4"),
    # valid GQA but a different group size: not reachable by group masks
    (dict(n_heads=4, n_kv_heads=2), r"n_heads=4 with n_kv_heads=2; heads are pruned in whole GQA groups of 4"),
    (dict(head_dim=4), r"target head_dim=4; structured pruning keeps the parent's 8"),
    ({}, r"target shape equals the parent; nothing to prune"),
    (dict(hiden=32), r"target_shape fields \['hiden'\]"),
])
def test_bad_targets_raise(bad, message):
    with pytest.raises(PvsError, match=message):
        get_method("sheared-llama").fn(build_model(PARENT, seed=0), _calib(), 0.5, target_shape=bad, steps=1)


@pytest.mark.parametrize("options, message", [
    (dict(modules=("hidden", "head", "intermediate")), r"target changes the layer size \(4 -> 3\) but module 'layer'"),
    (dict(tokens=100), r"give tokens or steps, not both"),
    (dict(calib=None), r"needs calib or data"),
    (dict(calib=_calib().float()), r"data batch Tensor .*allowed: LongTensor"),
    (dict(sparsity_tol=-0.1), r"sparsity_tol=-0.1; allowed: >= 0 or None"),
])
def test_bad_options_raise(options, message):
    calib = options.pop("calib", _calib())
    with pytest.raises(PvsError, match=message):
        get_method("sheared-llama").fn(build_model(PARENT, seed=0), calib, 0.5, target_shape=TARGET, steps=1,
                                       **options)


# convergence and its budget -------------------------------------------------------------------
def test_mask_learning_converges_within_002_of_the_target(converged):
    lag = converged.info["lagrangian"]
    target = 1 - shape_param_counts(TARGET)["non_embedding"] / shape_param_counts(PARENT)["non_embedding"]
    assert math.isclose(lag["target_sparsity"], target)
    assert abs(lag["expected_sparsity_start"] - target) > 0.5  # it had far to go: every gate starts open
    assert abs(lag["expected_sparsity_end"] - target) <= 0.02


def test_a_starved_budget_fails_with_one_line_error_naming_the_budget():
    with pytest.raises(MaskLearningNotConverged) as err:
        _shear(steps=10, sparsity_tol=0.02)
    text = str(err.value)
    assert "\n" not in text
    assert err.value.steps == 10 and abs(err.value.expected - err.value.target) > 0.02
    pattern = (r"^sheared-llama: mask learning ended at expected sparsity 0\.\d{3}, target 0\.619 "
               r"\(\|diff\| > 0\.02\) after 10 steps; raise steps= or tokens=$")
    assert re.match(pattern, text), text


def test_mask_learning_steps_have_a_floor_and_follow_the_share_above_it():
    assert mask_learning_steps(0.0084, 200_000, 8 * 256, 300) == 300            # cpu tier: the floor
    assert mask_learning_steps(0.0084, 50_000_000_000, 512 * 256, 300) == 3205  # paper tier: the share, ~3200
    assert mask_learning_steps(0.0, 10, 10, 1) == 1
    with pytest.raises(PvsError, match=r"study\.sheared_min_steps=0; allowed: >= 1"):
        mask_learning_steps(0.01, 1000, 10, 0)
    with pytest.raises(PvsError, match=r"study\.sheared_tokens_frac=-0\.1; allowed: >= 0"):
        mask_learning_steps(-0.1, 1000, 10, 1)


def test_study_sizes_mask_learning_in_steps_at_every_tier():
    # the default share is the authors': 3200 steps x 32 x 4096 tokens against N = 50B
    assert math.isclose(tiers.get("paper").study.sheared_tokens_frac, 3200 * 32 * 4096 / 50e9, rel_tol=0.01)
    # cpu: batches of train.batch_size x study.calib_seq_len, the 300-step floor; paper: the authors' 32 x 4096
    for tier, steps, batch in (("cpu", 300, tiers.get("cpu").train.batch_size), ("paper", 3205, 32)):
        opts = study.prune_options(tiers.get(tier), "sheared-llama", 0.5)
        assert opts["steps"] == steps and opts["batch_size"] == batch


def _tiny_study(monkeypatch, tmp_path, min_steps):
    """Run pvs.study.prune for sheared-llama on PARENT with stand-ins for the data and the parent."""
    monkeypatch.setenv("PVS_RUNS", str(tmp_path))
    monkeypatch.setattr(study, "load_parent_model", lambda cfg, data: build_model(PARENT, seed=0))
    monkeypatch.setattr(study, "calib_tokens", lambda cfg, data, variant=None: _calib())
    monkeypatch.setattr(study, "parent_tokenizer", lambda cfg, data: None)
    monkeypatch.setattr(sheared, "study_width_target", lambda cfg, ratio: dataclasses.asdict(TARGET))

    class Stream:  # the retrain split: seeded random batches
        def __init__(self, path):
            pass

        def batch(self, step, b, t, seed):
            return _calib(b, t, seed=seed * 1000 + step), None

    monkeypatch.setattr("pvs.tokens.TokenStream", Stream)
    cfg = merge(tiers.get("smoke"), {"train": {"batch_size": 4}, "budget": {"retrain_tokens": 1000},
                                     "study": {"parent": "tiny", "calib_seq_len": 32, "sheared_min_steps": min_steps}})
    return study.prune(cfg, types.SimpleNamespace(shards={"retrain": None}), "sheared-llama", 0.5)


def test_study_error_names_its_budget_settings(monkeypatch, tmp_path):
    with pytest.raises(PvsError) as err:
        _tiny_study(monkeypatch, tmp_path, min_steps=10)
    assert not isinstance(err.value, MaskLearningNotConverged) and "\n" not in str(err.value)
    pattern = (r"^sheared-llama: mask learning ended at expected sparsity 0\.\d{3}, target 0\.619 "
               r"\(\|diff\| > 0\.02\) after 10 steps; raise study\.sheared_min_steps \(now 10\) or "
               r"study\.sheared_tokens_frac \(now 0\.0084\)$")
    assert re.match(pattern, str(err.value)), str(err.value)
