"""Tokenizer and token shards (pvs.tokens): documents joined by the end-of-text id, the id width chosen
from the vocabulary size, and text -> shard -> text without loss.

A byte-level BPE is trained here on a few documents (the smallest vocabulary pvs allows), so no corpus is
built; the id-width checks use a stand-in tokenizer whose vocabulary sits at the uint16 boundary.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pvs.config import DataConfig
from pvs.tokens import EOT, TokenStream, prepare_shards, prepare_tokenizer

UINT16_IDS = 65536  # ids 0..65535 fit two bytes

DOCS = {
    "pretrain": [("wiki/a", "wiki", "The cat sat on the mat. The cat sat again, and again."),
                 ("bbc/b", "bbc", "Shares rose 3% on Monday; analysts said the rally was \"fragile\".\n\nMore later."),
                 ("wiki/c", "wiki", "Café au lait, naïve façade – und Grüße 😀 from 東京.")],
    "retrain": [("bbc/d", "bbc", "  Leading spaces, trailing spaces  "), ("wiki/e", "wiki", "tab\tand\nnewline")],
    "calib": [("wiki/f", "wiki", "Calibration text is short.")],
    # written out of id order: a held-out source's shard is in document-id order
    "valid": [("wiki/z", "wiki", "Zebra last."), ("bbc/y", "bbc", "Held-out news."),
              ("wiki/m", "wiki", "Middle of the wiki.")],
}


def write_corpus(root: Path) -> Path:
    """A corpus folder laid out as pvs.corpus writes it (<split>.jsonl of {id, source, text})."""
    root.mkdir(parents=True, exist_ok=True)
    for split, docs in DOCS.items():
        lines = [json.dumps({"id": i, "source": s, "text": t}, ensure_ascii=False) for i, s, t in docs]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    corpus = write_corpus(root / "corpus")
    tok = prepare_tokenizer(corpus, DataConfig(tokenizer="bpe", vocab_size=300), root / "tokenizer")
    return tok, prepare_shards(corpus, tok, root / "tokenizer")


def shard_ids(path: Path) -> np.ndarray:
    """A shard's ids read with the dtype its metadata names."""
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    return np.fromfile(path, dtype=np.dtype(meta["dtype"]))


def split_at(ids: np.ndarray, eot: int) -> list[list[int]]:
    """The documents of a shard: the pieces before each end-of-text id (the shard must end with one)."""
    assert len(ids) and int(ids[-1]) == eot
    docs, start = [], 0
    for end in np.flatnonzero(ids == eot):
        docs.append([int(x) for x in ids[start:end]])
        start = end + 1
    return docs


def test_documents_are_joined_by_the_end_of_text_id(shards):
    tok, paths = shards
    eot = tok.convert_tokens_to_ids(EOT)
    assert tok.eos_token == EOT and tok.eos_token_id == eot
    for split in ("pretrain", "retrain", "calib"):
        ids = shard_ids(paths[split])
        pieces = split_at(ids, eot)
        texts = [t for _, _, t in DOCS[split]]
        assert len(pieces) == len(texts), split  # one end-of-text per document, none inside one
        for piece, text in zip(pieces, texts):
            assert piece == tok(text, add_special_tokens=False)["input_ids"], (split, text)
        meta = json.loads(paths[split].with_suffix(".json").read_text())
        assert meta["tokens"] == len(ids) == sum(map(len, pieces)) + len(pieces)


def test_text_shard_text_round_trip(shards):
    tok, paths = shards
    eot = tok.eos_token_id
    for split in ("pretrain", "retrain", "calib", "valid"):
        back = [tok.decode(p, clean_up_tokenization_spaces=False) for p in split_at(shard_ids(paths[split]), eot)]
        assert sorted(back) == sorted(t for _, _, t in DOCS[split]), split
    # the held-out text of one source, in document-id order
    wiki = [tok.decode(p, clean_up_tokenization_spaces=False) for p in split_at(shard_ids(paths["valid.wiki"]), eot)]
    assert wiki == ["Middle of the wiki.", "Zebra last."]
    assert set(paths) == {"pretrain", "retrain", "calib", "valid", "valid.bbc", "valid.wiki"}


def test_token_stream_reads_the_shard_it_was_given(shards):
    tok, paths = shards
    ids, stream = shard_ids(paths["pretrain"]), TokenStream(paths["pretrain"])
    assert len(stream) == len(ids) and stream.ids.dtype == np.uint16
    assert np.array_equal(stream.window(1, 8), ids[8:17].astype(np.int64))


class WideTokenizer:
    """A stand-in tokenizer with ``size`` ids: characters map onto the top of the id range and the
    end-of-text id is the largest, so every id written is near the boundary."""

    def __init__(self, size: int):
        self.size, self.eos_token_id = size, size - 1

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str) -> list[int]:
        return [self.size - 2 - (ord(c) % 40) for c in text]

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [self.encode(t) for t in texts]}


@pytest.mark.parametrize("size, dtype", [(300, np.uint16), (UINT16_IDS - 1, np.uint16),
                                         (UINT16_IDS, np.uint32), (70_000, np.uint32)])
def test_id_width_follows_the_vocabulary_size(tmp_path, size, dtype):
    """Two bytes per id while the vocabulary is below 65,536 ids, four from there (the code's rule keeps
    65,536 itself at four bytes); every id, the largest included, reads back unchanged."""
    corpus = write_corpus(tmp_path / "corpus")
    tok = WideTokenizer(size)
    paths = prepare_shards(corpus, tok, tmp_path / "shards")
    for split in ("pretrain", "valid.bbc"):
        meta = json.loads(paths[split].with_suffix(".json").read_text())
        assert meta["dtype"] == np.dtype(dtype).name
        texts = [t for _, s, t in DOCS["valid" if split.startswith("valid") else split]
                 if split == "pretrain" or s == "bbc"]
        expected = [i for t in texts for i in tok.encode(t) + [tok.eos_token_id]]
        assert paths[split].stat().st_size == len(expected) * np.dtype(dtype).itemsize
        assert TokenStream(paths[split]).ids.tolist() == expected
        assert max(expected) == size - 1


def test_a_tokens_folder_without_its_corpus_is_the_data(tmp_path, smoke_cache, monkeypatch):
    """What a GPU machine gets: the tokens folder copied alone. prepare_data returns the same shards and
    tokenizer from it, builds no corpus; a folder missing a shard is not taken as complete."""
    import shutil
    from pvs import stages, tiers
    from pvs.tokens import SHARDS_MANIFEST, carried_shards
    cfg = tiers.get("smoke")
    full = stages.prepare_data(cfg, smoke_cache)
    cache = tmp_path / "cache"
    shutil.copytree(full.tok_dir, stages.tokens_dir(cfg, cache))
    alone = stages.prepare_data(cfg, cache)
    assert not stages.corpus_dir(cfg, cache).exists()
    assert {k: p.name for k, p in alone.shards.items()} == {k: p.name for k, p in full.shards.items()}
    assert alone.tokenizer.get_vocab() == full.tokenizer.get_vocab()
    (stages.tokens_dir(cfg, cache) / "calib.bin").unlink()
    assert carried_shards(stages.tokens_dir(cfg, cache)) is None
    assert (stages.tokens_dir(cfg, cache) / SHARDS_MANIFEST).is_file()
