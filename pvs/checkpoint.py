"""Model directories: written whole or not at all, readable by stock transformers and lm-eval.

    save_model(model, "runs/.../model", masks=masks, tokenizer=tok)   # weights, config, masks, tokenizer
    model = load_model("runs/.../model")                                # a damaged folder: one-line PvsError

Every model pvs writes carries its tokenizer, so ``AutoTokenizer.from_pretrained(dir)``,
``AutoModelForCausalLM.from_pretrained(dir)`` and the ``lm_eval`` command line work on it with no
extra arguments. A model whose layers differ in width (FLAP, Sheared LLaMA: ``model_type`` pvs_llama)
also carries its modeling code (``modeling_pvs_llama.py``, a copy of pvs.prune.hetero, which needs
only torch and transformers) and an ``auto_map``, so stock transformers loads it with
``trust_remote_code=True``, or without it after ``import pvs.prune``; a README in the folder says so.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from pvs.errors import PvsError, check

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
import pvs.prune                                                              # registers pvs_llama
model = AutoModelForCausalLM.from_pretrained(DIR)
tokenizer = AutoTokenizer.from_pretrained(DIR)
```

Score it with the lm-eval command line (see the pvs README, "Checkpoints outside pvs"):

    lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True --tasks ... --device cpu
"""


def _readable(folder: Path) -> None:
    """Files as 0644 under the usual umask (save_pretrained leaves some 0600)."""
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~_UMASK)


def _add_hetero_code(model: torch.nn.Module, folder: Path) -> None:
    from pvs.prune import hetero
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
            from pvs.prune.masks import save_masks
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

    import pvs.prune.hetero  # noqa: F401  registers pvs_llama with the Auto classes
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


__all__ = ["save_model", "load_model", "load_tokenizer", "model_files", "HETERO_CODE", "PvsError"]
