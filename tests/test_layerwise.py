"""Pruning that fits large parents: Wanda and SparseGPT through the layer-by-layer calibration pass
(pvs.prune.calib: one layer's activations at a time, kept on a chosen device, samples in micro-batches) give
the same masks and weights as a plain whole-model reference.

The reference (written here, independent of pvs.prune.calib): for each decoder layer l in order, run the FULL
model on all calibration samples at once, with hooks capturing the inputs of layer l's linears (layers < l are
already pruned, layer l not yet); compute the statistic straight from the captured inputs (Wanda: column
norms; SparseGPT: H = 2/n X^T X); prune layer l with the same per-matrix rule (pvs.prune.sparse wanda_keep /
sparsegpt_prune). Masks must be identical; weights equal to float tolerance (the two paths sum activations
and statistics in different orders: micro-batches of 3 vs one batch, a running-mean Hessian vs one product;
measured: Wanda weights identical, SparseGPT within 1.8e-6, hence the 1e-5 tolerance).
"""
import pytest
import torch

from pvs.model import ModelShape, build_model
from pvs.prune import get_method
from pvs.prune.calib import layer_linears
from pvs.prune.sparse import parse_pattern, sparsegpt_prune, wanda_keep

SHAPE = ModelShape(n_layers=4, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8, ffn=128, vocab=256)
BLOCKSIZE = 32          # 64- and 128-column weights: several SparseGPT blocks, so the lazy updates are exercised
WEIGHT_TOL = 1e-5


def _calib(n=8, t=32, seed=3):
    return torch.randint(0, SHAPE.vocab, (n, t), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def whole_model_prune(model, calib, method: str, ratio: float, pattern: str) -> dict:
    """The straightforward reference: full forward per layer, statistics from all tokens at once."""
    nm = parse_pattern(pattern, ratio)
    model.eval()
    masks = {}
    for index, layer in enumerate(model.model.layers):
        linears = layer_linears(layer)
        inputs, hooks = {}, []
        for name, lin in linears.items():
            hooks.append(lin.register_forward_hook(
                lambda _m, args, _o, name=name: inputs.__setitem__(name, args[0].reshape(-1, args[0].shape[-1]))))
        model(input_ids=calib)
        for h in hooks:
            h.remove()
        for name, lin in linears.items():
            X = inputs[name].double()
            W = lin.weight.data
            if method == "wanda":
                keep = wanda_keep(W, X.square().sum(0).sqrt().float(), ratio, nm)
            else:
                H = (2.0 / X.shape[0]) * X.t() @ X
                new_w, keep = sparsegpt_prune(W, H.float(), ratio, nm, BLOCKSIZE, 0.01, name)
                W.copy_(new_w)
            W.masked_fill_(~keep, 0)
            masks[f"model.layers.{index}.{name}.weight"] = keep
    return masks


@pytest.mark.parametrize("method,pattern", [("wanda", "unstructured"), ("wanda", "2:4"),
                                            ("sparsegpt", "unstructured"), ("sparsegpt", "2:4")])
def test_layer_by_layer_equals_whole_model(method, pattern):
    calib = _calib()
    ref_model = build_model(SHAPE, seed=0)
    ref_masks = whole_model_prune(ref_model, calib, method, 0.5, pattern)

    model = build_model(SHAPE, seed=0)
    options = {"pattern": pattern, "micro_batch": 3, "act_device": "cpu", "compute_device": "cpu"}
    if method == "sparsegpt":
        options["blocksize"] = BLOCKSIZE
    result = get_method(method).fn(model, calib, 0.5, **options)       # 8 samples in micro-batches of 3

    assert result.masks.keys() == ref_masks.keys() and len(ref_masks) == 7 * SHAPE.n_layers
    for name, ref in ref_masks.items():
        assert torch.equal(result.masks[name], ref), f"{method} {pattern}: masks differ at {name}"
        assert (~ref).sum() == ref.numel() // 2                         # and they prune what was asked
    got, want = dict(model.named_parameters()), dict(ref_model.named_parameters())
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst < WEIGHT_TOL, f"{method} {pattern}: weights differ by {worst:.2e}"
    if method == "sparsegpt":  # the comparison is not vacuous: SparseGPT moved the surviving weights
        parent = dict(build_model(SHAPE, seed=0).named_parameters())
        name = "model.layers.3.mlp.down_proj.weight"
        kept = ref_masks[name]
        assert (want[name][kept] - parent[name][kept]).abs().max() > 100 * WEIGHT_TOL


def test_layer_inputs_depend_on_the_pruned_layers_below():
    """Why the order matters: calibrating every layer on the DENSE parent's activations gives other masks, so
    agreeing with the sequential reference above is a real check of the layer-by-layer propagation."""
    calib = _calib()
    sequential = whole_model_prune(build_model(SHAPE, seed=0), calib, "wanda", 0.5, "unstructured")
    dense = build_model(SHAPE, seed=0)
    inputs, hooks = {}, []
    for index, layer in enumerate(dense.model.layers):
        for name, lin in layer_linears(layer).items():
            hooks.append(lin.register_forward_hook(lambda _m, a, _o, key=f"model.layers.{index}.{name}.weight":
                                                   inputs.__setitem__(key, a[0].reshape(-1, a[0].shape[-1]))))
    with torch.no_grad():
        dense(input_ids=calib)
    params = dict(dense.named_parameters())
    one_shot = {k: wanda_keep(params[k].data, x.square().sum(0).sqrt(), 0.5) for k, x in inputs.items()}
    assert all(torch.equal(one_shot[k], sequential[k]) for k in sequential if k.startswith("model.layers.0."))
    assert not all(torch.equal(one_shot[k], sequential[k]) for k in sequential)
