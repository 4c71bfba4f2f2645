"""Structured pruning (depth, width, FLAP), the model surgery under it, and the ratio -> shape search.

Each test states the defining property of one piece on tiny GQA models (8 query heads, 2 KV heads).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from helpers import scaled_parent
from pvs.errors import PvsError
from pvs.model import ModelShape, build_model, param_counts, shape_of
from pvs.prune import get_method, known_methods
from pvs.prune.depth import block_influence, calibration_loss
from pvs.prune.flap import compensation_biases, flap_scores, input_moments, select_units
from pvs.hetero import PvsLlamaForCausalLM
from pvs.prune.shape_search import build_table, search_shape
from pvs.prune.shapes import (DEFAULT_TOLERANCE, RATIOS, candidate_shapes, depth_tolerance, non_embedding, table_shape,
                              target_shape)
from pvs.prune.surgery import keep_layers, layer_widths, layers_view, prune_width
from pvs.prune.width import activation_importance

SHAPE = ModelShape(n_layers=4, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8, ffn=256, vocab=256)
LLAMA_8B = ModelShape(32, 4096, 32, 8, 128, 14336, 128256)


def make(shape=SHAPE, seed=0, scale=4.0):
    return scaled_parent(shape, seed, scale)


@pytest.fixture(scope="module")
def parent():
    return make()


@pytest.fixture(scope="module")
def calib():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, SHAPE.vocab, (8, 24), generator=g)


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


def check_gqa(model):
    for i, w in enumerate(layer_widths(model)):
        empty = w["heads"] == 0 and w["kv_heads"] == 0
        assert empty or (w["kv_heads"] > 0 and w["heads"] % w["kv_heads"] == 0), (i, w)


# ---------------------------------------------------------------- surgery


def test_keep_layers_equals_hand_built_model(parent, calib):
    keep = [0, 2, 3]
    small = keep_layers(parent, keep)
    hand = build_model(ModelShape(**{**SHAPE.__dict__, "n_layers": 3}), seed=1).eval()
    sd = {}
    for name, t in parent.state_dict().items():
        if name.startswith("model.layers."):
            i, rest = name.split(".")[2], name.split(".", 3)[3]
            if int(i) in keep:
                sd[f"model.layers.{keep.index(int(i))}.{rest}"] = t
        else:
            sd[name] = t
    hand.load_state_dict(sd)
    assert small.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in small.model.layers] == [0, 1, 2]
    assert torch.equal(logits(small, calib), logits(hand, calib))
    with layers_view(parent, keep):
        assert torch.equal(logits(parent, calib), logits(small, calib))
    assert parent.config.num_hidden_layers == 4 and len(parent.model.layers) == 4


def test_prune_width_keeping_everything_is_the_parent(parent, calib):
    n = SHAPE.n_layers
    same = prune_width(parent, hidden_keep=torch.arange(64), heads_keep=[torch.arange(8)] * n,
                       kv_heads_keep=[torch.arange(2)] * n, ffn_keep=[torch.arange(256)] * n)
    assert type(same) is LlamaForCausalLM
    assert same.config.head_dim == 8
    for (k, a), (_, b) in zip(parent.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(logits(same, calib), logits(parent, calib))


def _heads_to_o_cols(heads, hd=8):
    return (torch.as_tensor(heads)[:, None] * hd + torch.arange(hd)).flatten()


def test_head_and_ffn_pruning_equals_masking_the_parent(parent, calib):
    g = torch.Generator().manual_seed(1)
    ffn_keep = [torch.randperm(256, generator=g)[:k] for k in (200, 128, 64, 8)]
    heads_keep = [torch.tensor([0, 1, 2, 3]),            # one whole KV group
                  torch.tensor([1, 3, 4, 6]),            # two per group
                  None,                                  # all
                  torch.tensor([7])]                     # one head of group 1
    pruned = prune_width(parent, heads_keep=heads_keep, ffn_keep=ffn_keep)
    assert isinstance(pruned, PvsLlamaForCausalLM)
    assert [w["heads"] for w in layer_widths(pruned)] == [4, 4, 8, 1]
    assert [w["kv_heads"] for w in layer_widths(pruned)] == [1, 2, 2, 1]
    check_gqa(pruned)
    masked = make()
    with torch.no_grad():
        for i, layer in enumerate(masked.model.layers):
            keep_f = torch.zeros(256, dtype=torch.bool)
            keep_f[ffn_keep[i]] = True
            layer.mlp.down_proj.weight[:, ~keep_f] = 0
            if heads_keep[i] is not None:
                keep_o = torch.zeros(64, dtype=torch.bool)
                keep_o[_heads_to_o_cols(heads_keep[i])] = True
                layer.self_attn.o_proj.weight[:, ~keep_o] = 0
    assert torch.allclose(logits(pruned, calib), logits(masked, calib), atol=1e-5)


def test_hidden_pruning_equals_hand_rescaled_parent(calib):
    """RMSNorm divides by the RMS over the channels present, so a parent with channels zeroed is not the
    pruned model; but zeroed channels change that RMS by exactly sqrt(d'/d). A parent whose removed channels
    are zero in the embedding and in every residual write (o_proj, down_proj rows), with every RMSNorm weight
    scaled by sqrt(d'/d) and a negligible eps, computes what the pruned model computes."""
    shape = ModelShape(**{**SHAPE.__dict__, "norm_eps": 1e-12})
    base = make(shape)
    keep = torch.sort(torch.randperm(64, generator=torch.Generator().manual_seed(2))[:40]).values
    pruned = prune_width(base, hidden_keep=keep)
    assert type(pruned) is LlamaForCausalLM and pruned.config.hidden_size == 40
    drop = torch.ones(64, dtype=torch.bool)
    drop[keep] = False
    hand = make(shape)
    with torch.no_grad():
        hand.model.embed_tokens.weight[:, drop] = 0
        for layer in hand.model.layers:
            layer.self_attn.o_proj.weight[drop] = 0
            layer.mlp.down_proj.weight[drop] = 0
        for name, mod in hand.named_modules():
            if name.endswith("norm"):
                mod.weight.mul_(math.sqrt(40 / 64))
    assert torch.allclose(logits(pruned, calib), logits(hand, calib), atol=1e-4)


def test_gqa_violations_raise(parent):
    n = SHAPE.n_layers
    with pytest.raises(PvsError, match="same positive number"):
        prune_width(parent, heads_keep=[torch.tensor([0, 1, 4])] + [None] * (n - 1))
    with pytest.raises(PvsError, match="must be kept"):
        prune_width(parent, heads_keep=[torch.tensor([0, 4])] * n, kv_heads_keep=[torch.tensor([0])] * n)
    with pytest.raises(PvsError, match="0..63"):
        prune_width(parent, hidden_keep=torch.tensor([0, 64]))
    with pytest.raises(PvsError, match="duplicate"):
        prune_width(parent, ffn_keep=[torch.tensor([1, 1])] * n)
    with pytest.raises(PvsError, match="one entry per layer"):
        prune_width(parent, ffn_keep=[torch.arange(4)])
    for bad, message in (([], "got an empty list"), ([0, 0], r"\[0, 0\] contain duplicates"),
                         ([4], r"\[4\] are out of range; allowed: 0..3"),
                         ([-1], r"\[-1\] are out of range; allowed: 0..3")):
        with pytest.raises(PvsError, match=message):
            keep_layers(parent, bad)


def test_save_and_load_round_trip(parent, calib, tmp_path):
    uniform = prune_width(parent, hidden_keep=torch.arange(48), ffn_keep=[torch.arange(100)] * 4)
    # hetero: per-layer widths, a layer without attention, compensation biases
    bias = [torch.randn(64) if i % 2 else None for i in range(4)]
    hetero = prune_width(parent, hidden_keep=torch.arange(56), kv_heads_keep=[torch.tensor([1]), torch.tensor([]),
                         None, torch.tensor([0])], ffn_keep=[torch.arange(k) for k in (10, 0, 30, 256)],
                         o_proj_bias=bias, down_proj_bias=bias[::-1])
    tied = prune_width(make(ModelShape(**{**SHAPE.__dict__, "tied": True})), hidden_keep=torch.arange(32))
    assert type(uniform) is LlamaForCausalLM and type(hetero) is PvsLlamaForCausalLM
    assert hetero.config.layer_num_heads == [4, 0, 8, 4] and hetero.config.layer_intermediate_size == [10, 0, 30, 256]
    for name, model in (("uniform", uniform), ("hetero", hetero), ("tied", tied)):
        model.save_pretrained(tmp_path / name)
        back = AutoModelForCausalLM.from_pretrained(tmp_path / name)
        assert type(back) is type(model)
        ignore = ("dtype", "_name_or_path")
        assert ({k: v for k, v in back.config.to_dict().items() if k not in ignore}
                == {k: v for k, v in model.config.to_dict().items() if k not in ignore})
        for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
            assert k == k2 and torch.equal(a, b), (name, k)
        assert torch.equal(logits(back, calib), logits(model, calib)), name
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()


# ---------------------------------------------------------------- depth


def test_minitron_depth_removes_the_block_with_lowest_loss(parent, calib):
    res = get_method("minitron-depth").fn(parent, calib, 0.5)
    k = 2
    losses = [calibration_loss(keep_layers(parent, [i for i in range(4) if not s <= i < s + k]), calib)
              for s in range(4 - k + 1)]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert res.info["removed_layers"] == [best, best + 1]
    assert res.info["block_losses"] == pytest.approx(losses, rel=1e-6)
    kept = [i for i in range(4) if i not in res.info["removed_layers"]]
    assert torch.equal(logits(res.model, calib), logits(keep_layers(parent, kept), calib))


def test_shortgpt_drops_the_least_influential_layers(parent, calib):
    # block influence by hand: run the decoder layers one by one
    with torch.no_grad():
        h = parent.model.embed_tokens(calib)
        pe = parent.model.rotary_emb(h, torch.arange(calib.shape[1])[None])
        bi = []
        for layer in parent.model.layers:
            out = layer(h, attention_mask=None, position_embeddings=pe)
            bi.append(1 - F.cosine_similarity(h, out, dim=-1).mean().item())
            h = out
    assert block_influence(parent, calib, batch_size=3) == pytest.approx(bi, abs=1e-5)
    res = get_method("shortgpt").fn(parent, calib, 0.5)
    assert res.info["removed_layers"] == sorted(sorted(range(4), key=bi.__getitem__)[:2])
    kept = [i for i in range(4) if i not in res.info["removed_layers"]]
    assert torch.equal(logits(res.model, calib), logits(keep_layers(parent, kept), calib))


# ---------------------------------------------------------------- width


def test_minitron_width_keeps_the_most_important_units(parent, calib):
    res = get_method("minitron-width").fn(parent, calib, 0.5)
    target = target_shape(SHAPE, 0.5, "width")
    assert shape_of(res.model) == target
    scores = activation_importance(parent, calib)
    top_hidden = torch.sort(torch.argsort(scores["hidden"], descending=True)[:target.hidden]).values
    assert torch.equal(res.model.model.embed_tokens.weight, parent.model.embed_tokens.weight[:, top_hidden])
    for layer_p, layer_c, s in zip(parent.model.layers, res.model.model.layers, scores["ffn"]):
        top = torch.sort(torch.argsort(s, descending=True)[:target.ffn]).values
        assert torch.equal(layer_c.mlp.down_proj.weight, layer_p.mlp.down_proj.weight[top_hidden][:, top])


def test_minitron_width_head_pruning_keeps_whole_groups_then_best_heads(parent, calib):
    target = ModelShape(**{**SHAPE.__dict__, "n_heads": 2, "n_kv_heads": 1, "hidden": 64, "ffn": 256})
    res = get_method("minitron-width").fn(parent, calib, 0.5, target_shape=target)
    check_gqa(res.model)
    scores = activation_importance(parent, calib, heads=True)["heads"]
    for layer_p, layer_c, s in zip(parent.model.layers, res.model.model.layers, scores):
        group = int(torch.argmax(s.view(2, 4).sum(1)))
        best = torch.sort(group * 4 + torch.argsort(s.view(2, 4)[group], descending=True)[:2]).values
        assert torch.equal(layer_c.self_attn.o_proj.weight, layer_p.self_attn.o_proj.weight[:, _heads_to_o_cols(best)])
        assert torch.equal(layer_c.self_attn.k_proj.weight, layer_p.self_attn.k_proj.weight[group * 8:(group + 1) * 8])


# ---------------------------------------------------------------- FLAP


def test_flap_bias_compensation_lowers_output_error(parent, calib):
    stats = input_moments(parent, calib)
    groups, ffn = select_units(parent, *flap_scores(parent, stats), 0.5, param_counts(parent)["non_embedding"])
    o_bias, down_bias = compensation_biases(parent, stats, groups, ffn)
    plain = prune_width(parent, kv_heads_keep=groups, ffn_keep=ffn)
    comp = prune_width(parent, kv_heads_keep=groups, ffn_keep=ffn, o_proj_bias=o_bias, down_proj_bias=down_bias)
    ref = logits(parent, calib)
    err_plain = (logits(plain, calib) - ref).square().mean()
    err_comp = (logits(comp, calib) - ref).square().mean()
    assert err_comp < err_plain
    # layer 0 sees identical inputs, so compensation makes its mean MLP output over calibration exact
    outs = {}
    hooks = [m.model.layers[0].mlp.register_forward_hook(lambda _m, _a, o, m=m: outs.setdefault(id(m), o))
             for m in (parent, comp, plain)]
    for m in (parent, comp, plain):
        logits(m, calib)
    for h in hooks:
        h.remove()
    mean = {k: v.flatten(0, 1).mean(0) for k, v in outs.items()}
    assert torch.allclose(mean[id(comp)], mean[id(parent)], atol=1e-5)
    assert not torch.allclose(mean[id(plain)], mean[id(parent)], atol=1e-5)
    # the registered method with and without the option
    with_b = get_method("flap").fn(parent, calib, 0.5)
    without = get_method("flap").fn(parent, calib, 0.5, bias_compensation=False)
    assert with_b.info["bias_compensation"] and not without.info["bias_compensation"]
    assert (logits(with_b.model, calib) - ref).square().mean() < (logits(without.model, calib) - ref).square().mean()


def test_flap_ranks_units_jointly_by_standardised_score(parent, calib):
    res = get_method("flap").fn(parent, calib, 0.6)
    stats = input_moments(parent, calib)
    group_scores, ffn_scores = flap_scores(parent, stats)
    for z in ffn_scores:  # standardised per layer
        assert abs(float(z.mean())) < 1e-9 and float(z.std()) == pytest.approx(1.0)
    # one threshold across layers: every kept FFN neuron outscores every removed one, in any layer
    kept, removed = [], []
    for layer_c, z in zip(res.model.model.layers, ffn_scores):
        n = layer_c.mlp.down_proj.in_features
        order = torch.argsort(z, descending=True)
        kept.append(z[order[:n]]), removed.append(z[order[n:]])
    assert float(torch.cat(kept).min()) >= float(torch.cat(removed).max())
    check_gqa(res.model)


# ---------------------------------------------------------------- importance by hand (one-layer toy)

TOY = ModelShape(n_layers=1, hidden=16, n_heads=4, n_kv_heads=2, head_dim=4, ffn=24, vocab=32)


@pytest.fixture(scope="module")
def toy():
    """One decoder layer whose q_proj is zero, so every query attends uniformly to the positions up to its
    own (RoPE rotates a zero query to zero): the whole forward pass is a few lines of tensor algebra.
    Norm gains are random so a score that ignores them would differ."""
    model = make(TOY, seed=3, scale=6.0)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.zero_()
        for norm in (model.model.layers[0].input_layernorm, model.model.layers[0].post_attention_layernorm,
                     model.model.norm):
            norm.weight.copy_(0.5 + torch.rand(TOY.hidden, generator=g))
    calib = torch.randint(0, TOY.vocab, (8, 12), generator=torch.Generator().manual_seed(5))
    return model, calib


def rms_norm(x, norm):
    return norm.weight * x / torch.sqrt(x.square().mean(-1, keepdim=True) + norm.variance_epsilon)


def toy_forward(model, x) -> dict:
    """The toy's activations written out: attention with a zero query is a running mean of the values."""
    layer, T = model.model.layers[0], x.shape[1]
    att, mlp = layer.self_attn, layer.mlp
    h0 = model.model.embed_tokens.weight[x]
    n1 = rms_norm(h0, layer.input_layernorm)
    v = (n1 @ att.v_proj.weight.T).unflatten(-1, (TOY.n_kv_heads, TOY.head_dim))
    running = v.cumsum(1) / torch.arange(1, T + 1)[None, :, None, None]
    heads = running[:, :, torch.arange(TOY.n_heads) // (TOY.n_heads // TOY.n_kv_heads)]  # GQA: head h -> kv h // rep
    x_o = heads.flatten(-2)
    r = h0 + x_o @ att.o_proj.weight.T
    n2 = rms_norm(r, layer.post_attention_layernorm)
    x_d = F.silu(n2 @ mlp.gate_proj.weight.T) * (n2 @ mlp.up_proj.weight.T)
    logits = rms_norm(r + x_d @ mlp.down_proj.weight.T, model.model.norm) @ model.lm_head.weight.T
    return {"n1": n1, "n2": n2, "x_o": x_o, "x_d": x_d, "logits": logits}


def test_the_toy_forward_is_the_model(toy):
    model, calib = toy
    assert torch.allclose(toy_forward(model, calib)["logits"], logits(model, calib), rtol=1e-4, atol=1e-4)


def test_calibration_loss_by_hand(toy):
    model, calib = toy
    with torch.no_grad():
        logp = toy_forward(model, calib)["logits"].log_softmax(-1)
    hand = -logp[:, :-1].gather(-1, calib[:, 1:, None]).mean()  # each position predicts the next token
    assert calibration_loss(model, calib, batch_size=3) == pytest.approx(float(hand), rel=1e-5)


def test_activation_importance_by_hand(toy):
    """Per micro-batch of 4 sequences: sum over positions of (mean over the batch of |activation|)², summed
    over the two micro-batches (and, for hidden channels, over both norms); a head: the L2 norms of its
    slice of o_proj's input summed over every token."""
    model, calib = toy
    with torch.no_grad():
        acts = [toy_forward(model, calib[i:i + 4]) for i in (0, 4)]
    sq_mean = (lambda a: a.abs().mean(0).square().sum(0).double())  # noqa: E731
    hidden = sum(sq_mean(a["n1"]) + sq_mean(a["n2"]) for a in acts)
    ffn = sum(sq_mean(a["x_d"]) for a in acts)
    heads = sum(a["x_o"].unflatten(-1, (TOY.n_heads, TOY.head_dim)).norm(dim=-1).sum((0, 1)).double() for a in acts)
    got = activation_importance(model, calib, batch_size=4, heads=True)
    for name, want, have in (("hidden", hidden, got["hidden"]), ("ffn", ffn, got["ffn"][0]),
                             ("heads", heads, got["heads"][0])):
        assert torch.allclose(have, want, rtol=1e-4, atol=1e-6 * float(want.abs().max())), name


def test_flap_scores_by_hand(toy):
    """WIFV: a channel scores its input's sample variance over all calibration tokens times its weight
    column's squared norm (squared again for attention), standardised per layer; a KV group is the mean of
    its query heads' channels."""
    model, calib = toy
    layer = model.model.layers[0]
    with torch.no_grad():
        a = toy_forward(model, calib)
    var = (lambda t: t.flatten(0, 1).double().var(0))  # noqa: E731
    col = (lambda w: w.detach().double().square().sum(0))  # noqa: E731
    z = (lambda t: (t - t.mean()) / t.std())  # noqa: E731
    attn = z((var(a["x_o"]) * col(layer.self_attn.o_proj.weight)).square())
    groups = attn.view(TOY.n_kv_heads, -1).mean(1)  # group g: the channels of query heads g*rep .. (g+1)*rep-1
    ffn = z(var(a["x_d"]) * col(layer.mlp.down_proj.weight))
    got_groups, got_ffn = flap_scores(model, input_moments(model, calib, batch_size=3))
    assert torch.allclose(got_groups[0], groups, atol=1e-4) and torch.allclose(got_ffn[0], ffn, atol=1e-4)
    assert float(groups[0] - groups[1]) != pytest.approx(0, abs=1e-2)  # the two groups are told apart


# ---------------------------------------------------------------- ratios, shapes, GQA


@pytest.mark.parametrize("ratio", RATIOS)
def test_achieved_ratio_within_stated_tolerance(ratio, calib):
    parent = make()
    nonemb = param_counts(parent)["non_embedding"]
    width = get_method("minitron-width").fn(parent, calib, ratio)
    assert abs(width.info["achieved_ratio"] - ratio) <= DEFAULT_TOLERANCE * (1 - ratio)
    heads = get_method("minitron-width").fn(parent, calib, ratio, prune_heads=True)
    assert abs(heads.info["achieved_ratio"] - ratio) <= DEFAULT_TOLERANCE * (1 - ratio)
    flap = get_method("flap").fn(parent, calib, ratio)
    group_params = 64 * 8 * (2 * 4 + 2)  # the largest unit FLAP moves: one KV group
    assert abs(flap.info["achieved_ratio"] - ratio) <= group_params / nonemb
    deep = make(ModelShape(**{**SHAPE.__dict__, "n_layers": 8, "ffn": 64}))
    for name in ("minitron-depth", "shortgpt"):
        res = get_method(name).fn(deep, calib, ratio)
        assert abs(res.info["achieved_ratio"] - ratio) <= depth_tolerance(shape_of(deep))
    for res in (width, heads, flap):
        check_gqa(res.model)
        assert res.info["non_embedding_params"] == param_counts(res.model)["non_embedding"]
        assert torch.isfinite(logits(res.model, calib)).all()


@pytest.mark.parametrize("ratio", RATIOS)
def test_candidate_shapes_meet_tolerance_and_llama_rules(ratio):
    for parent, heads in ((SHAPE, False), (SHAPE, True), (LLAMA_8B, False), (LLAMA_8B, True)):
        cands = candidate_shapes(parent, ratio, prune_heads=heads)
        assert cands, (parent, ratio)
        target = (1 - ratio) * non_embedding(parent)
        for e in cands:
            s = e["shape"]
            assert abs(e["non_embedding"] - target) <= DEFAULT_TOLERANCE * target
            assert s.hidden % s.n_heads == 0 and s.n_heads % s.n_kv_heads == 0
            assert s.n_layers == parent.n_layers and s.attn_head_dim == parent.attn_head_dim
        assert cands[0]["balance"] == min(e["balance"] for e in cands)
    depth = target_shape(LLAMA_8B, ratio, "depth")
    assert depth.n_layers == round(32 * (1 - ratio))


def test_llama_8b_table_is_checked_in_and_current():
    fresh = build_table("llama3.1-8b", LLAMA_8B, write=False)
    for e in fresh["entries"]:
        assert table_shape("llama3.1-8b", e["ratio"], e["kind"]) == ModelShape(**e["shape"])
        tol = DEFAULT_TOLERANCE * (1 - e["ratio"]) if e["kind"] == "width" else depth_tolerance(LLAMA_8B)
        assert abs(e["achieved_ratio"] - e["ratio"]) <= tol
    assert {(e["kind"], e["ratio"]) for e in fresh["entries"]} == {(k, r) for k in ("depth", "width") for r in RATIOS}


def test_search_shape_picks_lowest_calibration_loss(parent, calib, tmp_path):
    shape, info = search_shape(parent, calib, 0.6, "width", max_candidates=3)
    losses = {tuple(sorted(e["shape"].items())): e["loss"] for e in info["evaluated"]}
    assert len(losses) >= 2
    best = min(info["evaluated"], key=lambda e: e["loss"])
    assert ModelShape(**best["shape"]) == shape
    table = build_table("tiny", SHAPE, parent, calib, ratios=(0.6,), table_dir=tmp_path, max_candidates=3)
    assert table_shape("tiny", 0.6, "width", table_dir=tmp_path) == shape
    assert table_shape("tiny", 0.6, "depth", table_dir=tmp_path).n_layers == 2
    assert table["entries"][0]["criterion"] == "calib_loss"


def test_keep_layers_of_a_hetero_model(parent, calib):
    flap = get_method("flap").fn(parent, calib, 0.5).model
    small = keep_layers(flap, [3, 1])
    assert small.config.layer_num_heads == [flap.config.layer_num_heads[3], flap.config.layer_num_heads[1]]
    with layers_view(flap, [3, 1]):
        assert torch.equal(logits(flap, calib), logits(small, calib))


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_pvs_error(parent, calib):
    assert {"minitron-depth", "shortgpt", "minitron-width", "flap"} <= set(known_methods())
    for name in ("minitron-depth", "shortgpt", "minitron-width", "flap"):
        for ratio in (0, 1, -0.2, 1.5):
            with pytest.raises(PvsError, match="ratio"):
                get_method(name).fn(parent, calib, ratio)
        with pytest.raises(PvsError, match="unknown option"):
            get_method(name).fn(parent, calib, 0.5, nonsense=1)
    for n in (4, 5, 0):
        with pytest.raises(PvsError, match="n_layers"):
            get_method("minitron-depth").fn(parent, calib, 0.5, n_layers=n)
    with pytest.raises(PvsError, match="scorer"):
        get_method("minitron-depth").fn(parent, calib, 0.5, scorer="winogrande")
    with pytest.raises(PvsError, match="removes no whole layer"):
        get_method("shortgpt").fn(parent, calib, 0.05)
    for bad, message in (({"n_layers": 5}, "target n_layers=5 exceeds the parent's 4"),
                         ({"hidden": 72}, "target hidden=72 exceeds the parent's 64"),
                         ({"ffn": 512}, "target ffn=512 exceeds the parent's 256"),
                         ({"n_heads": 16}, "target n_heads=16 exceeds the parent's 8"),
                         ({"head_dim": 16, "n_heads": 4},
                          "target head_dim=16; structured pruning keeps the parent's 8")):
        with pytest.raises(PvsError, match=message):
            get_method("minitron-width").fn(parent, calib, 0.5, target_shape=bad)
    with pytest.raises(PvsError, match="target has n_layers=2; width pruning keeps the parent's 4"):
        get_method("minitron-width").fn(parent, calib, 0.5, target_shape={"n_layers": 2})
    with pytest.raises(PvsError, match="tolerance"):
        target_shape(SHAPE, 0.55, "width", tolerance=1e-7)
    with pytest.raises(PvsError, match="kind"):
        target_shape(SHAPE, 0.5, "sparse")
    with pytest.raises(PvsError, match="no shape table"):
        table_shape("no-such-parent", 0.5, "width")
    with pytest.raises(PvsError, match="ratio=0.55"):
        table_shape("llama3.1-8b", 0.55, "width")
    with pytest.raises(PvsError, match="token ids"):
        get_method("flap").fn(parent, calib.float(), 0.5)


def test_depth_pruning_works_on_parents_whose_config_enables_the_kv_cache():
    # released parents (SmolLM2 from GGUF) ship use_cache=True; scoring a model with layers removed
    # must not build a cache sized for the full depth
    from pvs.model import ModelShape, build_model
    from pvs.prune.registry import get_method
    model = build_model(ModelShape(n_layers=4, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8, ffn=128, vocab=256))
    model.config.use_cache = True
    calib = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    for name in ("minitron-depth", "shortgpt"):
        result = get_method(name).fn(model, calib, 0.5)
        assert result.model.config.num_hidden_layers == 2
