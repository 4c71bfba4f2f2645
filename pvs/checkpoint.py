"""Model directories: written whole or not at all, readable by stock transformers and lm-eval.

    save_model(model, "runs/.../model", masks=masks, tokenizer=tok)   # weights, config, masks, tokenizer
    model = load_model("runs/.../model")                                # a damaged folder: one-line PvsError
    masks = load_masks("runs/.../model")                                # None when the model is dense

Every model pvs writes carries its tokenizer, so ``AutoTokenizer.from_pretrained(dir)``,
``AutoModelForCausalLM.from_pretrained(dir)`` and the ``lm_eval`` command line work on it with no
extra arguments. A model whose layers differ in width (FLAP, Sheared LLaMA: ``model_type`` pvs_llama)
also carries its modeling code (``modeling_pvs_llama.py``, a copy of pvs.hetero, which needs
only torch and transformers) and an ``auto_map``, so stock transformers loads it with
``trust_remote_code=True``, or without it after ``import pvs.hetero``; a README in the folder says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from pvs.errors import PvsError, check
from pvs.records import atomic_write_bytes

HETERO_CODE = "modeling_pvs_llama.py"
_UMASK = os.umask(0)
os.umask(_UMASK)

_HETERO_README = """# A pvs model whose layers differ in width (model_type "pvs_llama")

FLAP and Sheared LLaMA keep a different number of heads and FFN neurons in each layer, which a stock
LlamaConfig cannot describe. The model class is in `{code}` beside this file (torch and
transformers only). Load it in either of two ways:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)   # no pvs needed
# or, with pvs installed:
import pvs.hetero                                                             # registers pvs_llama
model = AutoModelForCausalLM.from_pretrained(DIR)
tokenizer = AutoTokenizer.from_pretrained(DIR)
```

Score it with the lm-eval command line (see the pvs README, "Checkpoints outside pvs"):

    lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True --tasks ... --device cpu
"""


# --- sparse keep-masks ({parameter name: bool tensor, True = kept}), saved beside the weights -----------
MASKS_FILE = "sparse_masks.safetensors"
_FORMAT = "pvs-sparse-masks-v1"
_BITS = torch.arange(8, dtype=torch.uint8)


def _pack(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.detach().reshape(-1).cpu().to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8))
    return (flat.view(-1, 8) << _BITS).sum(1, dtype=torch.int32).to(torch.uint8)


def _unpack(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    numel = 1
    for s in shape:
        numel *= s
    bits = (packed.unsqueeze(1) >> _BITS) & 1
    return bits.reshape(-1)[:numel].bool().reshape(shape)


def check_masks(masks) -> None:
    check(isinstance(masks, dict) and all(isinstance(k, str) for k in masks),
          f"masks must be a dict {{parameter name: bool tensor}}; got {type(masks).__name__}")
    for name, m in masks.items():
        check(isinstance(m, torch.Tensor) and m.dtype == torch.bool,
              f"mask {name!r} is {getattr(m, 'dtype', type(m).__name__)}; masks must be bool tensors (True = kept)")


def save_masks(masks: dict[str, torch.Tensor], directory: str | Path) -> Path:
    """Write ``masks`` to ``directory/sparse_masks.safetensors`` atomically; returns the file path."""
    check_masks(masks)
    shapes = {name: list(m.shape) for name, m in masks.items()}
    data = st_save({name: _pack(m) for name, m in masks.items()},
                   metadata={"format": _FORMAT, "shapes": json.dumps(shapes)})
    path = Path(directory) / MASKS_FILE
    atomic_write_bytes(path, data)
    return path


def load_masks(directory: str | Path) -> dict[str, torch.Tensor] | None:
    """The masks saved in ``directory`` (CPU bool tensors), or None if it has none."""
    path = Path(directory) / MASKS_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            packed = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise PvsError(f"mask file {str(path)!r} is corrupt ({e}); delete it and rerun the pruning stage") from None
    if meta.get("format") != _FORMAT:
        raise PvsError(f"mask file {str(path)!r} has format {meta.get('format')!r}; expected {_FORMAT!r}")
    shapes = json.loads(meta.get("shapes", "{}"))
    check(set(shapes) == set(packed), f"mask file {str(path)!r} is inconsistent (names vs shapes); delete it "
                                      f"and rerun the pruning stage")
    return {name: _unpack(packed[name], shapes[name]) for name in sorted(shapes)}


def masks_hash(masks: dict[str, torch.Tensor], n: int = 16) -> str:
    """Content hash of a set of masks (names, shapes and bits), to key cached results on."""
    check_masks(masks)
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(f"{name}:{list(masks[name].shape)};".encode())
        h.update(_pack(masks[name]).numpy().tobytes())
    return h.hexdigest()[:n]


def _readable(folder: Path) -> None:
    """Files as 0644 under the usual umask (save_pretrained leaves some 0600)."""
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~_UMASK)


def _add_hetero_code(model: torch.nn.Module, folder: Path) -> None:
    from pvs import hetero
    shutil.copyfile(hetero.__file__, folder / HETERO_CODE)
    (folder / "README.md").write_text(_HETERO_README.format(code=HETERO_CODE))


def save_model(model: torch.nn.Module, path: str | Path, masks: dict | None = None,
               state_dict: dict | None = None, tokenizer=None) -> Path:
    """save_pretrained (plus masks, tokenizer, and modeling code for per-layer widths) into a temp dir,
    then rename: a model directory is complete or absent, and a failure (disk full) leaves no temp dir."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hetero = getattr(model.config, "model_type", None) == "pvs_llama"
    try:
        if hetero:  # the saved config names the code beside it, for trust_remote_code loading
            model.config.auto_map = {"AutoConfig": "modeling_pvs_llama.PvsLlamaConfig",
                                     "AutoModelForCausalLM": "modeling_pvs_llama.PvsLlamaForCausalLM"}
        model.save_pretrained(tmp, state_dict=state_dict)
        if masks:
            save_masks(masks, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if hetero:
            _add_hetero_code(model, tmp)
        _readable(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def load_model(path: str | Path, what: str = "model", dtype: torch.dtype = torch.float32):
    """A saved model (stock Llama or pvs's per-layer class); a missing, truncated or damaged folder is a
    one-line PvsError that names it."""
    from transformers import AutoModelForCausalLM

    import pvs.hetero  # noqa: F401  registers pvs_llama with the Auto classes
    path = Path(path)
    check(path.is_dir(), f"{what} {str(path)!r} does not exist; run the stage that writes it first")
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise PvsError(f"{what} {str(path)!r} cannot be loaded ({first}); it is incomplete or damaged: "
                       f"delete it and rerun the stage that wrote it") from None
    except Exception as e:  # safetensors raises its own error type on a truncated header
        if type(e).__name__ != "SafetensorError":
            raise
        raise PvsError(f"{what} {str(path)!r} cannot be loaded ({e}); it is incomplete or damaged: "
                       f"delete it and rerun the stage that wrote it") from None


def load_tokenizer(path: str | Path):
    """The tokenizer saved beside a model (None when the folder has none)."""
    from transformers import AutoTokenizer
    path = Path(path)
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return None
    return AutoTokenizer.from_pretrained(path)


def model_files(path: str | Path) -> dict:
    """{file name: size} of a model directory's weight and mask files: a cheap completeness check."""
    return {p.name: p.stat().st_size for p in sorted(Path(path).glob("*.safetensors")) if p.is_file()}


__all__ = ["save_model", "load_model", "load_tokenizer", "model_files", "save_masks", "load_masks", "masks_hash",
           "HETERO_CODE", "MASKS_FILE", "PvsError"]
