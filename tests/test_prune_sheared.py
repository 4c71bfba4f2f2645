"""Sheared LLaMA: hard-concrete gates, the Lagrangian, exact target shapes, masked == pruned, GQA, errors."""
import dataclasses
import math

import pytest
import torch

from pvs.errors import PvsError
from pvs.model import ModelShape, build_model, param_counts, shape_of, shape_param_counts
from pvs.prune import get_method
from pvs.prune.l0 import L0Masks, count_non_embedding, deterministic_gate, prob_zero, sample_hard_concrete
from pvs.prune.sheared import Gates, fold_and_cut

PARENT = ModelShape(n_layers=4, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8, ffn=128, vocab=256)
TARGET = dataclasses.replace(PARENT, n_layers=3, hidden=48, n_heads=4, n_kv_heads=1, ffn=96)


def _calib(n=16, seq=32, seed=0):
    return torch.randint(0, PARENT.vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def _shear(**kw):
    opts = dict(target_shape=TARGET, steps=6, batch_size=4, seed=0)
    opts.update(kw)
    return get_method("sheared-llama").fn(build_model(PARENT, seed=0), _calib(), 0.5, **opts)


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
    unmasked = model(input_ids=ids).logits  # hooks are gone once the context exits
    pruned = fold_and_cut(model, parent, z)
    with torch.no_grad():
        got = pruned(input_ids=ids).logits
    assert shape_of(pruned.config) == target
    assert not torch.allclose(masked, unmasked, atol=1e-3)
    assert torch.allclose(got, masked, atol=1e-4, rtol=1e-4), float((got - masked).abs().max())


def test_final_model_has_exactly_the_target_shape_and_counts():
    res = _shear()
    model, info = res.model, res.info
    assert shape_of(model.config) == TARGET
    counts = param_counts(model)
    assert counts["non_embedding"] == shape_param_counts(TARGET)["non_embedding"] == info["non_embedding_params"]
    assert info["achieved_shape"] == dataclasses.asdict(TARGET) == info["target_shape"]
    assert math.isclose(info["achieved_ratio"], info["target_ratio"])
    assert info["steps"] == 6 and info["tokens"] == 6 * 4 * 32
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
                                         tokens=10_000, train_weights=False)
    assert res.info["steps"] == 3 and res.info["tokens"] == 3 * 4 * 16  # the data ran out first
    assert res.info["achieved_shape"] == res.info["target_shape"]
    assert abs(res.info["achieved_ratio"] - 0.5) < 0.05


def test_seeded_runs_are_reproducible():
    a, b, c = _shear(seed=5), _shear(seed=5), _shear(seed=6)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.info["lagrangian"]["lambdas"] == b.info["lagrangian"]["lambdas"]
    assert a.info["lagrangian"]["lambdas"] != c.info["lagrangian"]["lambdas"]


@pytest.mark.parametrize("bad", [
    dict(hidden=80),                       # larger than the parent
    dict(n_layers=5),
    dict(n_heads=6, n_kv_heads=2),         # not whole groups of 4
    dict(n_heads=4, n_kv_heads=2),         # valid GQA but a different group size: not reachable by group masks
    dict(head_dim=4),
    {},                                    # equals the parent
    dict(hiden=32),                        # unknown field
])
def test_bad_targets_raise(bad):
    with pytest.raises(PvsError):
        get_method("sheared-llama").fn(build_model(PARENT, seed=0), _calib(), 0.5, target_shape=bad, steps=1)


def test_bad_options_raise():
    fn = get_method("sheared-llama").fn
    model = build_model(PARENT, seed=0)
    with pytest.raises(PvsError):
        fn(model, _calib(), 0.5, target_shape=TARGET, steps=1, modules=("hidden", "head", "intermediate"))
    with pytest.raises(PvsError):
        fn(model, _calib(), 0.5, target_shape=TARGET, steps=1, tokens=100)
    with pytest.raises(PvsError):
        fn(model, None, 0.5, target_shape=TARGET, steps=1)
    with pytest.raises(PvsError):
        fn(model, _calib().float(), 0.5, target_shape=TARGET, steps=1)
