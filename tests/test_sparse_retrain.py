"""Sparse models through the spine's training loop: the pruned mask (zeros and N:M pattern) survives
retraining, and the sparse scratch baseline trains under the same mask."""
import torch

from helpers import TINY, synthetic_stream
from pvs.config import TrainConfig
from pvs.model import build_model
from pvs.prune.masks import check_nm, load_masks, reinit_with_masks
from pvs.prune.run import prune_model
from pvs.tokens import TokenStream
from pvs.train import train

CFG = TrainConfig(seq_len=16, batch_size=4, lr=1e-2, checkpoint_every=100, log_every=5)


def _pruned(variant):
    parent = build_model(TINY, seed=0)
    calib = torch.randint(0, TINY.vocab, (8, 16), generator=torch.Generator().manual_seed(0))
    result, _ = prune_model(parent, variant, 0.5, calib)
    return result


def test_wanda_2_4_pattern_survives_retraining_exactly(tmp_path):
    result = _pruned("wanda-2:4")
    before = {n: p.detach().clone() for n, p in result.model.named_parameters()}
    train(result.model, TokenStream(synthetic_stream(tmp_path / "d.bin")), CFG, 12 * 64, tmp_path / "run",
          masks=result.masks)
    for name, p in result.model.named_parameters():
        if name in result.masks:
            keep = result.masks[name]
            assert torch.equal(p != 0, keep), name                       # the same weights are zero, no others
            assert check_nm(p != 0, 2, 4), name                           # still 2:4 along each row
            assert not torch.equal(p[keep], before[name][keep]), name     # and the kept weights did train
    saved = load_masks(tmp_path / "run" / "model")
    assert all(torch.equal(saved[k], result.masks[k]) for k in result.masks)


def test_sparse_scratch_baseline_keeps_the_mask_through_training(tmp_path):
    result = _pruned("sparsegpt")
    model = reinit_with_masks(result.model, result.masks, seed=3)
    train(model, TokenStream(synthetic_stream(tmp_path / "d.bin")), CFG, 12 * 64, tmp_path / "run",
          masks=result.masks)
    for name, p in model.named_parameters():
        if name in result.masks:
            assert torch.equal(p != 0, result.masks[name]), name
