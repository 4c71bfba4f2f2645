"""PackedLM computes the same log-likelihoods as lm-eval's HFLM, from fewer tokens.

The reference is HFLM itself on the same model: every (context, continuation) log-probability and
greedy flag must agree, for shared contexts, one-token and long continuations, repeated choices,
an empty context, requests longer than the model's window (HFLM's truncating path), per-layer
pruned models (PvsLlamaForCausalLM) and any batch size.
"""
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from pvs.tokens import byte_tokenizer

from pvs.downstream import evaluate_downstream
from pvs.model import ModelShape, build_model
from pvs.packed_lm import PackedLM, _pack, packable
from pvs.prune.surgery import prune_width


class Req:
    """The part of lm-eval's Instance that ``loglikelihood`` reads."""

    def __init__(self, context, continuation):
        self.args = (context, continuation)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    shape = ModelShape(n_layers=3, hidden=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn=128, vocab=len(tok))
    return build_model(shape, seed=0).eval()


def greedy_ids(model, ids, n):
    ids = list(ids)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-n:]


def requests(model, tok):
    return [Req("The cat sat on", " the mat"), Req("The cat sat on", " a hat, and then it left."),
            Req("The cat sat on", "!"), Req("The cat sat on", " the mat"),  # a repeated choice
            Req("Question: is the sky blue?\nAnswer:", " yes"), Req("Question: is the sky blue?\nAnswer:", " no"),
            Req("", "An empty context is scored after the prefix token"),
            Req("A long context " * 6, " and its continuation")]


def assert_same(a, b, tol=1e-4):
    assert len(a) == len(b)
    for (la, ga), (lb, gb) in zip(a, b):
        assert abs(la - lb) <= tol * max(1.0, abs(la)) and ga == gb


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_same_loglikelihoods_as_hflm(model, tok, batch_size, monkeypatch):
    calls = []
    monkeypatch.setattr(PackedLM, "_score_packed", lambda self, g, _f=PackedLM._score_packed: calls.append(1)
                        or _f(self, g))
    reqs = requests(model, tok)
    ref = HFLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=4).loglikelihood(reqs, disable_tqdm=True)
    got = PackedLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=batch_size).loglikelihood(
        reqs, disable_tqdm=True)
    assert_same(ref, got)
    assert calls  # the packed path ran (not HFLM's fallback)
    assert got[0] == pytest.approx(got[3], rel=1e-6)


def test_greedy_flag(model, tok):
    """The model's own argmax continuation is greedy, one token changed is not (token-level requests)."""
    ctx = tok("Once upon")["input_ids"]
    greedy = greedy_ids(model, ctx, 5)
    other = greedy[:2] + [(greedy[2] + 1) % len(tok)] + greedy[3:]
    reqs = [(("a", "b"), ctx, greedy), (("a", "c"), ctx, other), (("a", "d"), ctx, greedy[:1])]
    ref = HFLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=4)._loglikelihood_tokens(reqs, True)
    got = PackedLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=4)._loglikelihood_tokens(reqs, True)
    assert_same(ref, got)
    assert [g for _, g in got] == [True, False, True]


def test_packing_lays_out_each_context_once():
    tokens, positions, segments, spans = _pack((5, 6, 7), [[1, 2], [3], [4, 4, 4]])
    assert tokens == [5, 6, 7, 1, 4, 4] and positions == [0, 1, 2, 3, 3, 4] and segments == [0, 0, 0, 1, 3, 3]
    assert spans == [([2, 3], [1, 2]), ([2], [3]), ([2, 4, 5], [4, 4, 4])]


def test_too_long_requests_take_hflms_truncating_path(model, tok):
    reqs = requests(model, tok)
    ref = HFLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=4, max_length=64).loglikelihood(
        reqs, disable_tqdm=True)
    got = PackedLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=4, max_length=64).loglikelihood(
        reqs, disable_tqdm=True)
    assert_same(ref, got)


def test_per_layer_pruned_model(model, tok):
    hetero = prune_width(model, kv_heads_keep=[torch.tensor([1]), torch.tensor([]), None],
                         ffn_keep=[torch.arange(k) for k in (40, 0, 128)]).eval()
    assert packable(hetero) and hetero.config.model_type == "pvs_llama"
    reqs = requests(hetero, tok)
    ref = HFLM(pretrained=hetero, tokenizer=tok, device="cpu", batch_size=4).loglikelihood(reqs, disable_tqdm=True)
    got = PackedLM(pretrained=hetero, tokenizer=tok, device="cpu", batch_size=4).loglikelihood(
        reqs, disable_tqdm=True)
    assert_same(ref, got)


def test_same_task_results_and_resume_from_the_request_cache(model, tok, tmp_path, monkeypatch):
    from pvs.tasks import prepare_tasks
    prepare_tasks(tmp_path / "tasks")
    kw = dict(tasks=["hellaswag", "boolq", "winogrande"], limit=4, lambada=False, cache_dir=tmp_path, device="cpu")
    packed = evaluate_downstream(model, tok, backend="packed", **kw)
    hflm = evaluate_downstream(model, tok, backend="hflm", **kw)
    assert packed["key"] != hflm["key"] and packed["settings"]["backend"] == "packed"
    for t in kw["tasks"]:
        assert packed["tasks"][t]["metrics"] == pytest.approx(hflm["tasks"][t]["metrics"], abs=1e-9)
    # a stopped run resumes: with the record gone, every request comes from the request cache
    (tmp_path / "downstream" / f"{packed['key']}.json").unlink()

    def no_scoring(*args, **kwargs):
        raise AssertionError("a request was scored again")
    monkeypatch.setattr(PackedLM, "_score_packed", no_scoring)
    again = evaluate_downstream(model, tok, backend="packed", **kw)
    assert again["resumed"] and not again.get("from_cache") and again["tasks"] == packed["tasks"]


def test_other_architectures_take_hflms_path(tok):
    """A model outside the Llama family (GPT-2: learned positions, its own attention) is not packed."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2)).eval()
    assert not packable(gpt2)
    flash = build_model(ModelShape(n_layers=1, hidden=16, n_heads=2, n_kv_heads=1, head_dim=8, ffn=32, vocab=64))
    flash.config._attn_implementation = "flash_attention_2"  # set by hand: no kernel is loaded on a CPU
    assert not packable(flash)
    reqs = requests(gpt2, tok)
    ref = HFLM(pretrained=gpt2, tokenizer=tok, device="cpu", batch_size=4).loglikelihood(reqs, disable_tqdm=True)
    got = PackedLM(pretrained=gpt2, tokenizer=tok, device="cpu", batch_size=4).loglikelihood(reqs, disable_tqdm=True)
    assert_same(ref, got)
