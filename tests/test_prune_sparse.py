"""Sparse pruning (magnitude, Wanda, SparseGPT), the layer-wise calibration pass and the mask utilities."""
import copy

import pytest
import torch

from pvs.errors import PvsError
from pvs.model import ModelShape, build_model
from pvs.prune import get_method, parse_variant
from pvs.prune.calib import Hessian, InputNorms, layer_linears, run_layerwise
from pvs.prune.masks import (apply_masks_, check_nm, load_masks, masks_hash, reinit_with_masks, save_masks)
from pvs.prune.sparse import (magnitude_keep, nm_keep, prune_sparse, row_keep, sparsegpt_prune, wanda_keep)

SHAPE = ModelShape(n_layers=4, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8, ffn=128, vocab=256)
METHODS = ("magnitude", "wanda", "sparsegpt")
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _calib(n=6, t=24, seed=1):
    return torch.randint(0, SHAPE.vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def _prune(method, ratio, pattern="unstructured", seed=0, **opts):
    model = build_model(SHAPE, seed=seed)
    parent = copy.deepcopy(model)
    opts = opts if method == "magnitude" else {"micro_batch": 4, **opts}
    return parent, get_method(method).fn(model, _calib(), ratio, pattern=pattern, **opts)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_layerwise_pass_reproduces_full_forward(attn):
    model = build_model(SHAPE, seed=0)
    model.set_attn_implementation(attn)
    calib = _calib()
    seen = []
    out = run_layerwise(model, calib, lambda name, lin: None, lambda i, layer, stats: seen.append(i),
                        micro_batch=4, act_device="cpu", compute_device="cpu")  # 6 samples: uneven micro-batches
    with torch.no_grad():
        ref = model.model(calib).last_hidden_state
    assert seen == list(range(SHAPE.n_layers))
    assert torch.allclose(model.model.norm(out), ref, atol=1e-5, rtol=0)


def test_stats_accumulate_over_micro_batches():
    model = build_model(SHAPE, seed=0)
    calib = _calib()
    captured = {}

    def grab(mb):
        def fn(i, layer, stats):
            if i == 1:
                captured[mb] = {k: (s.hessian().clone() if isinstance(s, Hessian) else s.col_norms().clone())
                                for k, s in stats.items()}
        return fn

    for mb in (1, 4, 6):
        make = (lambda name, lin: Hessian(lin.in_features)) if mb != 4 else \
            (lambda name, lin: Hessian(lin.in_features) if name.endswith("q_proj") else InputNorms(lin.in_features))
        run_layerwise(model, calib, make, grab(mb), micro_batch=mb)
    for k in captured[6]:
        assert torch.allclose(captured[1][k], captured[6][k], rtol=1e-5, atol=1e-7)
    # the defining formulas, on layer 1's inputs taken from an ordinary forward
    xs = {}
    hooks = [lin.register_forward_hook(lambda m, a, o, k=k: xs.__setitem__(k, a[0].reshape(-1, a[0].shape[-1])))
             for k, lin in layer_linears(model.model.layers[1]).items()]
    with torch.no_grad():
        model(calib)
    for h in hooks:
        h.remove()
    x = xs["self_attn.q_proj"]
    assert torch.allclose(captured[6]["self_attn.q_proj"], 2 / x.shape[0] * x.t() @ x, rtol=1e-4, atol=1e-6)
    assert torch.allclose(captured[4]["mlp.down_proj"], xs["mlp.down_proj"].norm(dim=0), rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_unstructured_sparsity_is_the_ratio_and_dense_parts_stay(method):
    parent, res = _prune(method, 0.6)
    model, masks = res.model, res.masks
    expected = {f"model.layers.{i}.{blk}.{lin}.weight" for i in range(SHAPE.n_layers)
                for blk, lins in (("self_attn", LINEARS[:4]), ("mlp", LINEARS[4:])) for lin in lins}
    assert set(masks) == expected
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        w = params[name]
        assert keep.dtype == torch.bool and keep.shape == w.shape
        assert torch.all(w[~keep] == 0)
        pruned = int((~keep).sum())
        if method == "wanda":  # compared within each output row
            assert torch.all((~keep).sum(1) == round(0.6 * keep.shape[1]))
        else:  # compared over the whole matrix
            assert pruned == round(0.6 * keep.numel())
    for name, p in parent.named_parameters():
        if name not in masks:  # embeddings, norms, head
            assert torch.equal(p, params[name]), name
    info = res.info
    assert abs(info["matrix_sparsity"] - 0.6) < 0.01
    assert info["achieved_ratio"] == info["pruned_params"] / info["non_embedding_params"]
    assert info["achieved_ratio"] < info["matrix_sparsity"]  # norms are dense non-embedding params
    assert info["nonzero_non_embedding_params"] >= info["non_embedding_params"] - info["pruned_params"]
    assert len(info["per_layer_sparsity"]) == SHAPE.n_layers and info["pattern"] == "unstructured"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_masks_and_wrong_ratio(method, pattern):
    n, m = (int(v) for v in pattern.split(":"))
    _, res = _prune(method, 0.5, pattern)
    for keep in res.masks.values():
        assert check_nm(keep, n, m)
        assert int((~keep).sum()) == keep.numel() // 2
    assert res.info["matrix_sparsity"] == 0.5 and res.info["pattern"] == pattern
    with pytest.raises(PvsError, match=f"pattern {pattern} prunes exactly 0.5 of the weights; got ratio 0.6"):
        _prune(method, 0.6, pattern)


def test_check_nm_rejects_invalid_masks():
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[:, [0, 1, 4, 5]] = False
    assert check_nm(keep, 2, 4) and check_nm(keep, 4, 8)
    lopsided = torch.ones(2, 8, dtype=torch.bool)
    lopsided[:, :4] = False  # valid 4:8, not 2:4
    assert check_nm(lopsided, 4, 8) and not check_nm(lopsided, 2, 4)
    assert not check_nm(torch.ones(2, 6, dtype=torch.bool), 2, 4)


def test_registry_and_bad_options():
    assert parse_variant("sparsegpt-2:4") == ("sparsegpt", {"pattern": "2:4"})
    assert get_method("magnitude").needs_calib is False and get_method("wanda").granularity == "sparse"
    model = build_model(SHAPE)
    with pytest.raises(PvsError, match="sparse pattern '3:4'"):
        get_method("wanda").fn(model, _calib(), 0.5, pattern="3:4")
    with pytest.raises(PvsError, match="unknown option"):
        get_method("sparsegpt").fn(model, _calib(), 0.5, blocksze=64)
    with pytest.raises(PvsError, match="pruning ratio"):
        get_method("magnitude").fn(model, None, 0.0)
    with pytest.raises(PvsError, match="calibration token ids span"):
        get_method("wanda").fn(model, _calib() + SHAPE.vocab, 0.5)
    with pytest.raises(PvsError, match="needs calibration tokens"):
        get_method("sparsegpt").fn(model, None, 0.5)


def _layer_problem(seed=0, rows=64, cols=256, tokens=1024):
    """One linear layer whose inputs are correlated and have very uneven column norms (log-normal scales
    spanning about two orders of magnitude, as LLM activations do), so activation-aware scores matter."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(cols) + torch.randn(cols, cols, generator=g) / cols ** 0.5
    scales = torch.exp(torch.randn(cols, generator=g))
    X = (torch.randn(tokens, cols, generator=g) @ mix) * scales
    W = torch.randn(rows, cols, generator=g)
    return W, X


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(pattern):
    W, X = _layer_problem()
    nm = (2, 4) if pattern == "2:4" else None
    norms, hess = InputNorms(X.shape[1]), Hessian(X.shape[1])
    for chunk in X.split(200):  # statistics accumulated over micro-batches
        norms.add(chunk)
        hess.add(chunk)
    err = {}
    err["magnitude"] = W * magnitude_keep(W, 0.5, nm)
    err["wanda"] = W * wanda_keep(W, norms.col_norms(), 0.5, nm)
    w_sg, keep_sg = sparsegpt_prune(W, hess.hessian(), 0.5, nm)  # two blocks of 128 columns
    assert torch.all(w_sg[~keep_sg] == 0) and int((~keep_sg).sum()) == W.numel() // 2
    err["sparsegpt"] = w_sg
    err = {k: float(((W - v) @ X.t()).square().sum()) for k, v in err.items()}
    assert err["sparsegpt"] < 0.9 * err["wanda"] and 2 * err["wanda"] < err["magnitude"], err
    # SparseGPT's weight update, not only its mask, is what lowers the error
    assert err["sparsegpt"] < float(((W - W * keep_sg) @ X.t()).square().sum())


def test_sparsegpt_prunes_dead_inputs_first():
    W, X = _layer_problem(rows=8, cols=32, tokens=256)
    X[:, :5] = 0  # five inputs never active
    hess = Hessian(32)
    hess.add(X)
    _, keep = sparsegpt_prune(W, hess.hessian(), 0.5)
    assert not keep[:, :5].any()


@pytest.mark.parametrize("method", METHODS)
def test_sparsity_zero_changes_nothing(method):
    model = build_model(SHAPE, seed=0)
    calib = _calib()
    with torch.no_grad():
        before = model(calib).logits
    res = prune_sparse(model, calib, method, 0.0, micro_batch=4)
    with torch.no_grad():
        after = res.model(calib).logits
    assert torch.equal(before, after)
    assert all(bool(k.all()) for k in res.masks.values())


def test_wanda_masks_follow_the_pruned_lower_layers():
    # layer l is scored on what the PRUNED layers below it emit, with layer l itself still dense (all its
    # linears from one pass, as Wanda does): rebuild that model for each l and recompute every mask
    parent, res = _prune("wanda", 0.5, micro_batch=6)
    parent_w = dict(parent.named_parameters())
    agree = []
    for i in range(SHAPE.n_layers):
        hybrid = copy.deepcopy(res.model)
        hybrid.model.layers[i] = copy.deepcopy(parent.model.layers[i])
        norms = {}
        hooks = [lin.register_forward_hook(lambda m, a, o, k=f"model.layers.{i}.{k}.weight": norms.__setitem__(
                 k, a[0].reshape(-1, a[0].shape[-1]).norm(dim=0)))
                 for k, lin in layer_linears(hybrid.model.layers[i]).items()]
        with torch.no_grad():
            hybrid(_calib())
        for h in hooks:
            h.remove()
        agree += [float((wanda_keep(parent_w[k], v, 0.5) == res.masks[k]).float().mean()) for k, v in norms.items()]
    assert len(agree) == 7 * SHAPE.n_layers and min(agree) > 0.999, agree


def test_mask_selection_primitives():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 6.0, 7.0, 8.0]])
    assert row_keep(score, 0.5).tolist() == [[True, False, False, False, False, True, True, True]]
    assert nm_keep(score, 2, 4).tolist() == [[True, False, True, False, False, False, True, True]]
    with pytest.raises(PvsError, match="divisible by 8"):
        nm_keep(torch.ones(2, 12), 4, 8)


def test_masks_save_load_hash_apply(tmp_path):
    _, res = _prune("magnitude", 0.7)
    assert load_masks(tmp_path) is None
    save_masks(res.masks, tmp_path)
    loaded = load_masks(tmp_path)
    assert set(loaded) == set(res.masks) and all(torch.equal(loaded[k], res.masks[k]) for k in loaded)
    assert masks_hash(loaded) == masks_hash(res.masks)
    flipped = dict(loaded)
    name = sorted(flipped)[0]
    flipped[name] = flipped[name].clone()
    flipped[name][0, 0] = ~flipped[name][0, 0]
    assert masks_hash(flipped) != masks_hash(loaded)
    dense = build_model(SHAPE, seed=3)
    apply_masks_(dense, loaded)
    params = dict(dense.named_parameters())
    for k, keep in loaded.items():
        assert torch.all(params[k][~keep] == 0) and torch.all(params[k][keep] != 0)
    with pytest.raises(PvsError, match="matches no parameter"):
        apply_masks_(dense, {"nope.weight": torch.ones(1, dtype=torch.bool)})
    (tmp_path / "sparse_masks.safetensors").write_bytes(b"garbage")
    with pytest.raises(PvsError, match="corrupt"):
        load_masks(tmp_path)


@pytest.mark.parametrize("scheme", ["authors", "fresh"])
def test_reinit_keeps_masks_redraws_survivors_and_is_seeded(scheme):
    _, res = _prune("magnitude", 0.5, pattern="2:4")
    pruned = res.model
    a = reinit_with_masks(copy.deepcopy(pruned), res.masks, seed=42, scheme=scheme)
    b = reinit_with_masks(copy.deepcopy(pruned), res.masks, seed=42, scheme=scheme)
    c = reinit_with_masks(copy.deepcopy(pruned), res.masks, seed=7, scheme=scheme)
    pa, pb, pc, p0 = (dict(m.named_parameters()) for m in (a, b, c, pruned))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    for k, keep in res.masks.items():
        assert torch.equal(pa[k] != 0, keep)  # the mask, exactly
        assert not torch.equal(pa[k], pc[k])
        assert not torch.isclose(pa[k][keep], p0[k][keep]).any()
    assert not torch.equal(pa["lm_head.weight"], p0["lm_head.weight"])  # untied head is an nn.Linear
    kept = torch.cat([pa[k][keep] for k, keep in res.masks.items()]).detach()
    widest = float(kept.abs().max())
    emb, norm = "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"
    if scheme == "authors":  # their reinit script: untruncated N(0, 0.02) linears; embeddings and norms kept
        assert torch.equal(pa[emb], p0[emb]) and torch.equal(pa[norm], p0[norm])
        assert torch.equal(pa["model.norm.weight"], p0["model.norm.weight"])
        assert abs(float(kept.std()) / 0.02 - 1) < 0.05
        assert widest > 0.04  # not truncated at 2 std (P(all of ~3k draws inside) is ~1e-60)
    else:
        assert widest <= 0.04 + 1e-7  # truncated at 2 std
        assert not torch.equal(pa[emb], p0[emb]) and abs(float(pa[emb].detach().std()) - 0.02) < 0.002
        assert torch.all(pa[norm] == 1) and torch.all(pa["model.norm.weight"] == 1)


def test_reinit_scheme_is_checked():
    _, res = _prune("magnitude", 0.5, pattern="2:4")
    with pytest.raises(PvsError, match=r"sparse scratch init 'paper'; allowed: authors, fresh"):
        reinit_with_masks(res.model, res.masks, seed=0, scheme="paper")
