"""Run the study's notebooks with papermill: one parameterized notebook per experiment, then the
final notebook that renders every table and figure from the cached metrics.

    run_study(cfg, "cpu")                           # all experiments of the tier, then the figures
    run_study(cfg, "cpu", figures_only=True)        # re-render from figures/cpu/metrics/*.json only
    run_plain(cfg, "cpu")                           # the same runs, records and figures without notebooks

Executed notebooks are written to runs/<tier>/notebooks/ for inspection; the executed final notebook is
also published as figures/<tier>/report.ipynb (claims, figures and tables inline), free of volatile
metadata (times, kernel details, absolute paths), so re-rendering from the same records rewrites it
byte for byte and it opens in any notebook viewer without running anything.

``run_plain`` (`pvs study --no-notebooks`) runs the same experiments (pvs.study.run_experiment) and renders
the same tables and figures (pvs.report.render_all) with no notebook: for a machine without jupyter or
papermill, such as a GPU machine with only its preinstalled Python (bench/gpu_check.sh). The report notebook
is then made here, from the records it wrote: `pvs study --figures-only`.
"""
from __future__ import annotations

import time
from pathlib import Path

from pvs.errors import PvsError
from pvs.paths import REPO_ROOT
from pvs.experiments import EXPERIMENTS, FIGURES_NOTEBOOK, NOTEBOOKS, check_experiment

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def execute(notebook: str, out: Path, parameters: dict, cwd: Path = REPO_ROOT) -> float:
    """Execute one notebook headless (kernel python3 of this environment); return its wall time."""
    import papermill as pm
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        pm.execute_notebook(str(NOTEBOOK_DIR / notebook), str(out), parameters=parameters, kernel_name="python3",
                            progress_bar=False, log_output=True, cwd=str(cwd))
    except pm.PapermillExecutionError as e:
        raise PvsError(f"notebook {notebook} failed in cell {e.exec_count}: {e.ename}: {e.evalue.splitlines()[0] if e.evalue else ''}"
                       f" (executed copy: {out})") from None
    return time.time() - t0


def publish_report(executed: Path, target: Path) -> Path:
    """Copy an executed notebook without what changes from run to run (papermill's timings and paths,
    execution timestamps, the kernel's language details)."""
    import nbformat
    from pvs.records import atomic_write_text
    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata = nbformat.from_dict({"kernelspec": nb.metadata.get("kernelspec", {}),
                                      "language_info": {"name": "python"}})
    for cell in nb.cells:
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k == "tags"})
        cell.pop("id", None)
    nb.nbformat_minor = 4  # cell ids (4.5) are random per execution
    atomic_write_text(target, nbformat.writes(nb) + "\n")
    return target


def _chosen(experiments: list[str] | None) -> list[str]:
    """The experiments asked for (default: all), each checked before anything runs."""
    chosen = experiments or list(EXPERIMENTS)
    for name in chosen:
        check_experiment(name)
    return chosen


def run_study(cfg, tier: str, experiments: list[str] | None = None, figures_only: bool = False) -> dict:
    """Execute the experiment notebooks (unless figures_only) with the resolved config ``cfg`` as their
    ``config`` parameter (so each runs exactly what `pvs study` resolved), then the figures notebook."""
    from pvs.config import to_dict
    from pvs.paths import runs_root
    chosen = _chosen(experiments)
    out_dir = runs_root() / tier / "notebooks"
    times = {}
    if not figures_only:
        for name in chosen:
            nb = NOTEBOOKS[name]
            print(f"== notebook {nb} ({name})", flush=True)
            times[name] = execute(nb, out_dir / nb, {"tier": tier, "config": to_dict(cfg), "experiment": name})
            print(f"   done in {times[name]:.0f} s -> {out_dir / nb}", flush=True)
    print(f"== notebook {FIGURES_NOTEBOOK} (tables and figures from figures/{tier}/metrics)", flush=True)
    from pvs.study import metrics_dir_for
    metrics_dir_for(tier).mkdir(parents=True, exist_ok=True)
    # run in figures/<tier>/ with the metrics folder named relative to it, so the published notebook holds
    # no path of this machine
    times["figures"] = execute(FIGURES_NOTEBOOK, out_dir / FIGURES_NOTEBOOK, {"tier": tier, "metrics_root": "metrics"},
                               cwd=metrics_dir_for(tier).parent)
    publish_report(out_dir / FIGURES_NOTEBOOK, metrics_dir_for(tier).parent / "report.ipynb")
    print(f"   done in {times['figures']:.0f} s -> figures/{tier}/", flush=True)
    return times


def run_plain(cfg, tier: str, experiments: list[str] | None = None, figures_only: bool = False) -> dict:
    """``run_study`` without notebooks: each experiment's runs and metrics record, then every table and
    figure of figures/<tier>/ except report.ipynb. Returns the wall time per stage."""
    from pvs.report import render_all
    from pvs.study import run_experiment
    chosen = _chosen(experiments)
    times = {}
    if not figures_only:
        for name in chosen:
            print(f"== experiment {name}", flush=True)
            t0 = time.time()
            run_experiment(name, cfg)
            times[name] = time.time() - t0
            print(f"   done in {times[name]:.0f} s", flush=True)
    t0 = time.time()
    written = render_all(tier)
    times["figures"] = time.time() - t0
    print(f"== tables and figures: {len(written)} outputs in figures/{tier}/ ({times['figures']:.0f} s)", flush=True)
    return times
