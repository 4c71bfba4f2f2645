"""pvs.lm_loss: the blocked loss is the unfused cross-entropy of the logits, in value and in both gradients."""
import pytest
import torch
import torch.nn.functional as F

from pvs.lm_loss import linear_cross_entropy


def _reference(hidden, weight, targets):
    return F.cross_entropy(hidden @ weight.t(), targets)


# row counts that leave a partial last block (256, 104 and 64 rows per block), and fewer rows than a block
@pytest.mark.parametrize("n, d, vocab", [(1000, 32, 2048), (300, 16, 5000), (7, 8, 50)])
def test_value_and_gradients_match_the_unfused_loss(n, d, vocab):
    g = torch.Generator().manual_seed(n)
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_()
    weight = (torch.randn(vocab, d, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g)
    ref = _reference(hidden, weight, targets)
    ref_grads = torch.autograd.grad(3.0 * ref, (hidden, weight))  # an upstream gradient other than 1
    got = linear_cross_entropy(hidden, weight, targets)
    got_grads = torch.autograd.grad(3.0 * got, (hidden, weight))
    assert torch.allclose(got, ref, rtol=1e-12, atol=0)
    for a, b in zip(got_grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12 * b.abs().max().item())


def test_fp32_agrees_to_rounding():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2048, 32, generator=g).requires_grad_()
    weight = (torch.randn(2048, 32, generator=g) * 0.3).requires_grad_()
    targets = torch.randint(0, 2048, (2048,), generator=g)
    ref = _reference(hidden, weight, targets)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    got = linear_cross_entropy(hidden, weight, targets)
    got_grads = torch.autograd.grad(got, (hidden, weight))
    assert abs(got.item() - ref.item()) <= 1e-5 * ref.item()
    for a, b in zip(got_grads, ref_grads):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_a_model_trains_the_same_through_either_loss():
    from pvs.model import ModelShape, build_model
    from pvs.train import next_token_loss

    shape = ModelShape(n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64, vocab=300, max_seq=64)
    model = build_model(shape, seed=0)
    x = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, dims=1)
    losses, grads = [], []
    for fused in (False, True):
        model.zero_grad()
        loss = next_token_loss(model, x, y, fused)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert abs(losses[0] - losses[1]) <= 1e-5 * losses[0]
    assert (grads[0] - grads[1]).abs().max() <= 1e-4 * grads[0].abs().max()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"hidden \(4, 8\) and weight \(10, 6\)"):
        linear_cross_entropy(torch.zeros(4, 8), torch.zeros(10, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets \(3,\) must be \(4,\)"):
        linear_cross_entropy(torch.zeros(4, 8), torch.zeros(10, 8), torch.zeros(3, dtype=torch.long))
