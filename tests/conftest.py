"""Test settings: offline, one torch thread, a private Hugging Face cache."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="pvs-test-hf-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402

pytest.register_assert_rewrite("helpers")  # helpers' asserts report their operands like the tests' own


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """One data cache (smoke-tier corpus, tokenizer, shards, task copies) for every test that needs it:
    $PVS_TEST_CACHE if set (reused across runs), else a fresh folder for this session."""
    from pathlib import Path
    return Path(os.environ.get("PVS_TEST_CACHE") or tmp_path_factory.mktemp("smoke-cache"))


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, smoke_cache):
    """A tiny smoke parent (helpers.SMOKE) and a wanda-4:8 pruned model in a runs folder of their own; tests
    copy it before changing anything."""
    from helpers import SMOKE
    from pvs.cli import main
    runs = tmp_path_factory.mktemp("smoke-runs")
    old = {k: os.environ.get(k) for k in ("PVS_RUNS", "PVS_CACHE")}
    os.environ.update(PVS_RUNS=str(runs), PVS_CACHE=str(smoke_cache))
    try:
        for argv in (["pretrain", *SMOKE, "--no-eval"], ["prune", *SMOKE, "--method", "wanda-4:8"]):
            assert main(argv) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return runs
