"""pvs.cpu_attention computes SDPA's causal attention (outputs and gradients), inside a model too, and hands
larger heads and windows to SDPA; masks and caches are refused."""
import pytest
import torch
import torch.nn.functional as F

from pvs import cpu_attention
from pvs.cpu_attention import causal_attention
from pvs.model import ModelShape, build_model


def _qkv(b, h, kv, t, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    # (B, T, H, D) memory viewed as (B, H, T, D), the layout a transformers attention layer hands over
    return [torch.randn(b, t, n, d, generator=g, dtype=torch.float64).transpose(1, 2).requires_grad_()
            for n in (h, kv, kv)]


@pytest.mark.parametrize("b, h, kv, t, d", [(2, 4, 2, 64, 8), (3, 4, 4, 17, 8), (2, 8, 2, 33, 16), (1, 6, 1, 5, 4)])
def test_outputs_and_gradients_are_sdpa_causal(b, h, kv, t, d):
    q, k, v = _qkv(b, h, kv, t, d)
    grad_out = torch.randn(b, t, h, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    got = causal_attention(q, k, v, d ** -0.5)
    got_grads = torch.autograd.grad(got, (q, k, v), grad_out)
    assert got.shape == (b, t, h, d)
    for a, r in zip((got, *got_grads), (ref, *ref_grads)):
        assert torch.allclose(a, r, rtol=1e-10, atol=1e-12 * r.abs().max().item())


def test_a_model_gives_the_same_logits_and_gradients_with_either_kernel():
    shape = ModelShape(n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64, vocab=300, max_seq=64)
    model = build_model(shape, seed=0)
    x = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(2))
    out = []
    for impl in ("sdpa", cpu_attention.ATTENTION):
        model.set_attn_implementation(impl)
        model.zero_grad()
        logits = model(input_ids=x, use_cache=False).logits
        logits.square().mean().backward()
        out.append((logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (l0, g0), (l1, g1) = out
    assert (l0 - l1).abs().max() <= 1e-5 * l0.abs().max()
    assert (g0 - g1).abs().max() <= 1e-4 * g0.abs().max()


def test_large_heads_and_windows_go_to_sdpa(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_attention, "causal_attention", lambda *a: calls.append(a) or causal_attention(*a))
    module = torch.nn.Module()
    module.is_causal = True
    for t, d, ours in ((64, 8, True), (64, 16, False), (300, 8, False)):
        q, k, v = (x.detach().float() for x in _qkv(1, 2, 1, t, d))
        got, _ = cpu_attention.attention_forward(module, q, k, v, None, scaling=d ** -0.5)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)
        assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
        assert len(calls) == int(ours)
        calls.clear()


def test_masks_and_caches_are_refused():
    q, k, v = (x.detach() for x in _qkv(1, 2, 1, 8, 8))
    with pytest.raises(RuntimeError, match="got a mask: True"):
        cpu_attention.attention_forward(None, q, k, v, torch.ones(1, 8, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="1 queries over 8 keys"):
        cpu_attention.attention_forward(None, q[:, :, -1:], k, v, None)
