"""lm-eval's HFLM, scoring the answer choices of a question in one packed sequence.

A multiple-choice request set asks for log p(choice_k | context) for every choice k of a question,
and lm-eval's ``HFLM`` runs the context once per choice (HellaSwag: 4 copies of a ~60-token context
for four ~25-token endings). ``PackedLM`` lays the context out once and the choices after it:

    tokens     c0 c1 c2 c3 | a0 a1 | b0 b1 b2        (choice a = a0 a1 a2, choice b = b0 b1 b2 b3)
    positions   0  1  2  3 |  4  5 |  4  5  6        (each choice continues the context's positions)
    attends to  causal     | ctx + own earlier tokens, never another choice

with a 4-D attention mask, so every position sees exactly what it sees in its own unpacked
sequence and the log-probabilities are the same numbers up to float rounding (tested against
HFLM in ``tests/test_packed_lm.py``). The LM head and log-softmax run only on the positions that
predict continuation tokens, not on every context position. Everything else (tokenisation of
(context, continuation) pairs, rolling log-likelihood, generation, lm-eval's request cache hook)
is HFLM's own, so tasks, prompts and metrics are unchanged.

    from pvs.packed_lm import PackedLM
    lm = PackedLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=16)
    lm_eval.simple_evaluate(model=lm, tasks=[...])

Models whose logits are more than ``lm_head(decoder(x))`` (soft-capping, logit scales), models
loaded with an attention kernel that takes no 4-D mask (flash-attention), and requests longer than
the model's window fall back to HFLM's path.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

PACKABLE_MODEL_TYPES = ("llama", "pvs_llama", "mistral", "qwen2", "qwen3")
"""Architectures whose logits are exactly ``lm_head(final hidden state)`` and whose attention takes
a custom 4-D mask and explicit position ids."""


def packable(model) -> bool:
    """Whether ``PackedLM`` may score ``model`` with packed sequences (else it uses HFLM's path)."""
    config = getattr(model, "config", None)
    return (getattr(config, "model_type", None) in PACKABLE_MODEL_TYPES
            # flash-attention kernels take no arbitrary 4-D mask
            and getattr(config, "_attn_implementation", None) in (None, "eager", "sdpa")
            and getattr(config, "final_logit_softcapping", None) is None
            and hasattr(model, "get_decoder") and model.get_output_embeddings() is not None)


class PackedLM(HFLM):
    """HFLM whose ``_loglikelihood_tokens`` packs each context with all of its continuations."""

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if self.backend != "causal" or not packable(self.model):
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        # requests: ((context str, continuation str) or None, context ids, continuation ids)
        groups: OrderedDict[tuple, list[int]] = OrderedDict()
        too_long = []
        for i, (_, ctx, cont) in enumerate(requests):
            assert len(ctx) > 0 and len(cont) > 0  # HFLM guarantees both (an empty context gets a prefix token)
            if len(ctx) + len(cont) - 1 > self.max_length:
                too_long.append(i)  # HFLM truncates these from the left; let it
            else:
                groups.setdefault(tuple(ctx), []).append(i)
        results: list = [None] * len(requests)
        if too_long:
            for i, r in zip(too_long, super()._loglikelihood_tokens([requests[i] for i in too_long],
                                                                      disable_tqdm, override_bs)):
                results[i] = r

        items = sorted(groups.items(), key=lambda kv: -_packed_len(kv[0], [requests[i][2] for i in kv[1]]))
        per_batch = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 16)
        pbar = tqdm(total=len(requests) - len(too_long), disable=disable_tqdm or self.rank != 0,
                    desc="Running loglikelihood requests (packed)")
        for start in range(0, len(items), per_batch):
            batch = items[start:start + per_batch]
            scored = self._score_packed([(ctx, [requests[i][2] for i in idx]) for ctx, idx in batch])
            for (_, idx), answers in zip(batch, scored):
                for i, answer in zip(idx, answers):
                    results[i] = answer
                    if requests[i][0] is not None:  # rolling requests are cached by their caller
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                    pbar.update(1)
        pbar.close()
        return results

    @torch.no_grad()
    def _score_packed(self, groups: list[tuple[tuple, list[list[int]]]]) -> list[list[tuple[float, bool]]]:
        """(log-prob sum, greedy?) of every continuation of every (context, continuations) group."""
        rows = [_pack(ctx, conts) for ctx, conts in groups]
        width = max(len(r[0]) for r in rows)
        n = len(rows)
        ids = torch.zeros(n, width, dtype=torch.long)
        pos = torch.zeros(n, width, dtype=torch.long)
        seg = torch.full((n, width), -1, dtype=torch.long)  # -1 padding, 0 context, k+1 choice k
        for b, (tok, p, s, _) in enumerate(rows):
            ids[b, :len(tok)], pos[b, :len(p)], seg[b, :len(s)] = (torch.tensor(tok), torch.tensor(p),
                                                                    torch.tensor(s))
        q, k = seg.unsqueeze(2), seg.unsqueeze(1)  # (n, width, 1), (n, 1, width)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = causal & (k >= 0) & ((k == 0) | (k == q))
        allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves: no empty softmax
        dtype = self.model.dtype
        mask = torch.zeros(n, 1, width, width, dtype=dtype).masked_fill(~allowed.unsqueeze(1),
                                                                         torch.finfo(dtype).min)
        with torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                            enabled=self.mixed_precision_dtype is not None):
            hidden = self.model.get_decoder()(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                              position_ids=pos.to(self.device), use_cache=False).last_hidden_state
            # only the positions that predict a continuation token go through the LM head
            where = [(b, at) for b, row in enumerate(rows) for spans in row[3] for at in spans[0]]
            bidx = torch.tensor([b for b, _ in where], device=self.device)
            tidx = torch.tensor([t for _, t in where], device=self.device)
            logits = self.model.get_output_embeddings()(hidden[bidx, tidx])
        logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        targets = torch.tensor([t for row in rows for spans in row[3] for t in spans[1]], device=self.device)
        picked = logprobs.gather(1, targets.unsqueeze(1)).squeeze(1).double().cpu()
        greedy = (logprobs.argmax(dim=-1) == targets).cpu()
        out, at = [], 0
        for row in rows:
            answers = []
            for predict_at, _ in row[3]:
                m = len(predict_at)
                answers.append((float(picked[at:at + m].sum()), bool(greedy[at:at + m].all())))
                at += m
            out.append(answers)
        return out


def _packed_len(ctx, conts) -> int:
    return len(ctx) + sum(len(c) - 1 for c in conts)


def _pack(ctx, conts):
    """One packed row: token ids, position ids, segment ids, and for each continuation the row
    positions whose next-token prediction scores it, with the tokens they must predict."""
    tokens, positions, segments = list(ctx), list(range(len(ctx))), [0] * len(ctx)
    spans = []
    for k, cont in enumerate(conts):
        start = len(tokens)
        # the last context token predicts cont[0]; cont[j] (placed here, j < len-1) predicts cont[j+1]
        tokens += cont[:-1]
        positions += range(len(ctx), len(ctx) + len(cont) - 1)
        segments += [k + 1] * (len(cont) - 1)
        spans.append(([len(ctx) - 1] + list(range(start, start + len(cont) - 1)), list(cont)))
    return tokens, positions, segments, spans
