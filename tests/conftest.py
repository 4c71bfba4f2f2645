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
