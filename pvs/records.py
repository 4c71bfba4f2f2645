"""Result records and safe file writes.

Every number pvs reports is written as a JSON record that names the config, the code version
and the data that produced it. Files are written atomically (temp file + rename), so an
interrupted run never leaves a half-written result, and ``write_record`` refuses to replace
a finished record silently.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pvs.errors import PvsError, check
from pvs.paths import REPO_ROOT

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are for everyone to read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a one-line PvsError naming it."""
    path = Path(path)
    if not path.is_file():
        raise PvsError(f"record {str(path)!r} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PvsError(f"record {str(path)!r} is corrupt ({e.msg} at line {e.lineno}); "
                       f"delete it and rerun the stage that writes it") from None


def sha256_file(path: str | Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def sha256_dir(path: str | Path, pattern: str = "*", n: int = 16) -> str:
    """Hash of the names and contents of the files matching ``pattern`` in a directory."""
    h = hashlib.sha256()
    for p in sorted(Path(path).glob(pattern)):
        if p.is_file() and not p.name.startswith("."):
            h.update(p.name.encode())
            h.update(sha256_file(p, 64).encode())
    return h.hexdigest()[:n]


def code_version() -> dict:
    """The git commit of the pvs checkout (and whether it had uncommitted changes). A copy without git (a
    GPU machine gets the working tree, not .git) names the commit its sender put in $PVS_CODE_COMMIT."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    from pvs import __version__
    commit = git("rev-parse", "HEAD")
    if not commit and os.environ.get("PVS_CODE_COMMIT"):
        return {"pvs": __version__, "commit": os.environ["PVS_CODE_COMMIT"], "dirty": None, "copied": True}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "pvs"))
    return {"pvs": __version__, "commit": commit or "unknown", "dirty": dirty}


PACKAGES = ("torch", "transformers", "lm_eval", "accelerate", "numpy", "tokenizers", "safetensors", "datasets")
"""The packages whose versions every record names (requirements.lock pins them all)."""


def package_versions() -> dict:
    import importlib.metadata as md
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def environment() -> dict:
    import torch
    return {"python": platform.python_version(), **package_versions(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_record(path: str | Path, record: dict, overwrite: bool = False) -> dict:
    """Write a result record with provenance (code version, environment, time) added.

    A finished record is never replaced silently: pass ``overwrite=True`` to replace it. Long jobs put
    the ``code_version()`` taken when they *started* in ``record["code"]``; the commit at write time may
    already be a later one.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise PvsError(f"record {str(path)!r} already exists; delete it or pass overwrite to replace it")
    full = dict(record)
    full.setdefault("code", code_version())
    full.setdefault("environment", environment())
    full.setdefault("written_at", now())
    atomic_write_json(path, full)
    return full


@contextlib.contextmanager
def dir_lock(out_dir: Path):
    """One writer per run directory: a second process working on the same run (training, pruning) gets
    a one-line error instead of interleaving its files (a lock left by a dead process is taken over)."""
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch / torchrun only rank 0 locks
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pid = int(lock.read_text().strip() or 0)
        alive = pid > 0 and os.path.exists(f"/proc/{pid}")
        check(not alive, f"run {str(out_dir)!r} is being written by process {pid}; wait for it or stop it")
        lock.unlink()
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
