"""The dry-run plan: token -> step arithmetic (exact and the authors' rounding), FLOPs, GPU-hours, the runs of
the study, and data-repetition warnings. Numbers are written out by hand here, not recomputed with pvs code."""
import pytest

from pvs import tiers
from pvs.config import apply_overrides
from pvs.errors import PvsError
from pvs.plan import authors_step_tokens, format_plan, gpu_hours, plan, steps_for_budget
from pvs.shape import shape_param_counts

PAPER_STEP = 512 * 8192                     # 4,194,304 tokens per step
H100 = 989e12


@pytest.fixture(scope="module")
def paper():
    return tiers.get("paper")


@pytest.fixture(scope="module")
def paper_plan(paper):
    return plan(paper)


def _row(p, run):
    (row,) = [r for r in p.rows if r["run"] == run]
    return row


def test_token_to_step_arithmetic():
    assert authors_step_tokens(PAPER_STEP) == 4_000_000
    assert steps_for_budget(50e9, PAPER_STEP, "authors") == 12_500          # the authors' env.sh map
    assert steps_for_budget(50e9, PAPER_STEP, "exact") == 11_921            # ceil(50e9 / 4,194,304)
    for billions, steps in ((10, 2_500), (30, 7_500), (200, 50_000), (250, 62_500), (500, 125_000)):
        assert steps_for_budget(billions * 1e9, PAPER_STEP, "authors") == steps
    assert steps_for_budget(PAPER_STEP, PAPER_STEP) == 1 and steps_for_budget(PAPER_STEP + 1, PAPER_STEP) == 2


def test_authors_200b_parent_saw_209_7b_tokens(paper):
    authors = _row(plan(paper, rounding="authors"), "P")
    assert authors["steps"] == 50_000 and authors["tokens"] == 209_715_200_000
    exact = _row(plan(paper), "P")
    assert exact["steps"] == 47_684 and exact["tokens"] == 47_684 * PAPER_STEP   # >= 200B, by < one step
    assert 0 <= exact["tokens"] - 200e9 < PAPER_STEP


def test_flops_are_6n_plus_attention_times_tokens(paper_plan):
    # Llama-3.1-8B by hand: per layer q,o (32 heads) + k,v (8 KV heads) x 4096 x 128, SwiGLU 3 x 4096 x 14336,
    # two norms; plus the final norm; plus the output head (a matmul; the embedding lookup is not)
    per_layer = 4096 * 128 * (2 * 32 + 2 * 8) + 3 * 4096 * 14336 + 2 * 4096
    non_embedding = 32 * per_layer + 4096
    assert non_embedding == 6_979_588_096
    n_matmul = non_embedding + 128256 * 4096
    attention = 12 * 32 * 32 * 128 * 8192                                    # 12 L H Q T
    per_token = 6 * n_matmul + attention
    row = _row(paper_plan, "P")
    assert row["flops_per_token"] == per_token == 57_914_449_920
    assert row["flops"] == pytest.approx(per_token * 47_684 * PAPER_STEP, rel=1e-12)
    # a depth-pruned arm: 16 layers, same widths
    depth = _row(paper_plan, "P-R_50B minitron-depth r0.5 s0")
    n16 = 16 * per_layer + 4096 + 128256 * 4096
    assert depth["flops"] == pytest.approx((6 * n16 + 12 * 16 * 32 * 128 * 8192) * 11_921 * PAPER_STEP, rel=1e-12)
    # sparse arms are planned at dense FLOPs, and say so
    sparse = _row(paper_plan, "P-R_50B sparsegpt-2:4 r0.5 s0")
    assert sparse["flops_per_token"] == per_token and "dense FLOPs" in sparse["note"]


def test_gpu_hours_are_flops_over_peak_times_mfu(paper, paper_plan):
    row = _row(paper_plan, "P")
    assert row["gpu_hours"] == pytest.approx(row["flops"] / (H100 * 0.4) / 3600, rel=1e-12)
    assert gpu_hours(3.6e15, 1e12, 1.0) == pytest.approx(1.0)
    a100 = _row(plan(paper, gpu="a100", mfu=0.5), "P")
    assert a100["gpu_hours"] == pytest.approx(row["flops"] / (312e12 * 0.5) / 3600, rel=1e-12)
    assert paper_plan.totals["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in paper_plan.rows))


def test_the_runs_of_the_study(paper_plan):
    runs = {r["run"] for r in paper_plan.rows}
    for method in ("minitron-depth", "minitron-width", "flap"):                # the token-scaling study
        for n in ("10B", "30B", "50B", "250B", "500B"):
            assert f"P-R_{n} {method} r0.5 s0" in runs
    assert {f"P-R_50B minitron-depth r0.5 s{s}" for s in (0, 1, 2)} <= runs   # headline seeds
    for ratio in ("0.6", "0.7", "0.8"):                                        # the ratio sweep
        assert {f"P-R_50B sparsegpt r{ratio} s0", f"S_50B minitron-width r{ratio} s0",
                f"S_{{P+N}} minitron-depth r{ratio} s0"} <= runs
    # scratch arms of methods with the same target shape are one run, as pvs.study shares their directories;
    # the 250B scaling arm of the scratch side is the equal-total-tokens arm S_{P+N}
    shared = _row(paper_plan, "S_{P+N} minitron-depth r0.5 s0")
    assert "shared by minitron-depth, shortgpt" in shared["note"] and "also S_250B" in shared["note"]
    assert set(shared["experiments"]) == {"equal_tokens", "token_scaling", "ratio_sweep"}
    assert not any(r["run"].startswith("S_") and " shortgpt " in r["run"] for r in paper_plan.rows)
    assert sum(r["stage"] == "prune" for r in paper_plan.rows) == 10 + 3 * 3   # 10 variants at 0.5, 3 x 3 sweep


def test_data_repetition_is_warned_and_recorded(paper):
    p = plan(paper)
    retrain_supply = paper.data.retrain_frac * 260e9
    r500 = _row(p, "P-R_500B minitron-depth r0.5 s0")
    assert r500["epochs"] == pytest.approx(r500["tokens"] / retrain_supply)
    assert any("exceed the retrain split" in w and "P-R_500B minitron-depth" in w for w in p.warnings)
    assert _row(p, "P-R_10B minitron-depth r0.5 s0")["epochs"] < 1
    big = plan(paper, corpus_tokens=4e12)                                     # the whole of DCLM-Baseline
    assert not any("exceed" in w for w in big.warnings)
    unknown = plan(apply_overrides(tiers.get("smoke"), ["data.max_docs=17"]))  # shards never built
    assert _row(unknown, "P")["epochs"] is None and "unknown" in unknown.assumptions["data_supply_source"]


def test_format_plan_states_its_assumptions(paper):
    exact = format_plan(paper, gpu="H100", mfu=0.4, rounding="exact")         # how `pvs plan` calls it
    assert "MFU 40%" in exact and "989 TFLOP/s" in exact and "ceil(tokens / tokens_per_step)" in exact
    assert "47,684" in exact and "warning:" in exact
    authors = format_plan(paper, gpu="A100", mfu=0.3, rounding="authors")
    assert "4,000,000 tokens" in authors and "50,000" in authors and "209.7B" in authors and "MFU 30%" in authors


@pytest.mark.parametrize("kwargs,match", [({"gpu": "V100"}, "allowed: H100, H200, A100"),
                                          ({"mfu": 0.0}, "mfu=0.0"), ({"mfu": 1.5}, "mfu=1.5"),
                                          ({"rounding": "nearest"}, "allowed: exact, authors"),
                                          ({"n_gpus": 0}, "n_gpus=0")])
def test_bad_options_are_one_line_errors(paper, kwargs, match):
    with pytest.raises(PvsError, match=match) as e:
        plan(paper, **kwargs)
    assert "\n" not in str(e.value)


def test_cpu_tier_keeps_the_papers_regime():
    """The default study is a faithful miniature: tokens per parameter, P:N, budgets, distinct ratios, steps,
    recipe (pvs.regime.TARGETS); the table prints both columns."""
    from pvs import regime, tiers
    cfg = tiers.get("cpu")
    assert regime.problems(cfg) == []
    r = regime.regime(cfg)
    assert r["tokens_per_param"] >= 20 and r["p_over_n"] == 4 and r["distinct_depth_shapes"] == 4
    assert len(r["scaling_fracs"]) >= 4 and r["seeds"] >= 3
    # attention's share of a step's FLOPs, by hand: 12 L H Q T over 6 N + 12 L H Q T
    p = cfg.parent
    attn = 12 * p.n_layers * p.n_heads * p.attn_head_dim * cfg.train.seq_len
    matmul = 6 * (shape_param_counts(p)["non_embedding"] + p.vocab * p.hidden)
    assert r["attention_share"] == pytest.approx(attn / (attn + matmul), rel=1e-9)
    assert abs(r["attention_share"] - regime.paper_regime()["attention_share"]) <= 0.05
    text = regime.format_regime(cfg)
    assert "keeps the paper's regime" in text and "28.7" in text  # the paper's 200B / 6.98B
    # and a tier that does not keep it says where
    bad = apply_overrides(cfg, ["budget.pretrain_tokens=400000", "budget.retrain_tokens=200000"])
    found = regime.problems(bad)
    assert any("tokens per non-embedding parameter" in p for p in found) and any("P:N is 2.00" in p for p in found)
    long = regime.problems(apply_overrides(cfg, ["train.seq_len=256", "train.batch_size=8"]))
    assert any("attention is 51% of a training step's FLOPs at 256 tokens" in p for p in long)


def test_a_built_models_flops_per_token_are_counted_from_its_modules():
    """pvs.model.model_flops_per_token (what train.json records) equals the shape formula for a uniform model
    and counts each layer's own widths for a per-layer-width (FLAP) model; both by hand here."""
    from pvs.hetero import PvsLlamaConfig, PvsLlamaForCausalLM
    from pvs.model import ModelShape, build_model, model_flops_per_token
    from pvs.shape import flops_per_token
    shape = ModelShape(n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64, vocab=97)
    per_layer = 32 * 8 * (2 * 4 + 2 * 2) + 3 * 32 * 64 + 2 * 32       # q,o + k,v; SwiGLU; two norms
    by_hand = 6 * (2 * per_layer + 32 + 97 * 32) + 12 * 2 * 4 * 8 * 256  # + final norm, head; 12 L H Q T
    assert model_flops_per_token(build_model(shape), 256) == flops_per_token(shape, 256) == by_hand
    cfg = PvsLlamaConfig(hidden_size=64, num_hidden_layers=2, head_dim=8, vocab_size=256, tie_word_embeddings=False,
                         layer_num_heads=[8, 4], layer_num_kv_heads=[2, 1], layer_intermediate_size=[128, 96])
    layers = [64 * 8 * (2 * 8 + 2 * 2) + 3 * 64 * 128 + 2 * 64, 64 * 8 * (2 * 4 + 2 * 1) + 3 * 64 * 96 + 2 * 64]
    by_hand = 6 * (sum(layers) + 64 + 256 * 64) + 12 * (8 + 4) * 8 * 100
    assert model_flops_per_token(PvsLlamaForCausalLM(cfg), 100) == by_hand


def test_wall_time_estimate_prices_each_run_by_its_shapes_step_time(monkeypatch):
    """pvs plan --measure: every training run costs its steps x the measured time per step of its shape; arms add
    up per experiment over the workers, the parent alone; each (shape, threads) is timed once. The timing is
    replaced by a known rate here (10 ms per layer per step), so the sums can be checked by hand."""
    import pvs.walltime as W
    timed = []

    def fake(shape, cfg, threads, steps=W.TIMED_STEPS):
        timed.append((shape.n_layers, shape.hidden, shape.ffn, threads))
        return 0.01 * shape.n_layers

    monkeypatch.setattr(W, "seconds_per_step", fake)
    cfg = tiers.get("cpu")
    p = plan(cfg)
    est = W.estimate(p, cfg, workers=1)
    assert len(timed) == len(set(timed)) == est["shapes_timed"]
    train_rows = [r for r in p.rows if r["stage"] in ("pretrain", "retrain", "scratch")]
    assert len(est["runs"]) == len(train_rows)
    by_hand = {}
    for r in train_rows:
        seconds = r["steps"] * 0.01 * p.shapes[r["run"]].n_layers
        key = "parent" if r["stage"] == "pretrain" else r["experiments"][0]
        by_hand[key] = by_hand.get(key, 0.0) + seconds
    assert est["parent_s"] == pytest.approx(by_hand.pop("parent"), rel=1e-12)
    assert est["experiments_s"] == pytest.approx(by_hand, rel=1e-12)
    assert est["total_s"] == pytest.approx(est["parent_s"] + sum(by_hand.values()), rel=1e-12)
    assert "equal_tokens" in W.format_estimate(est)
