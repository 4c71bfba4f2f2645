"""The import graph of pvs/: every import, at module top or inside a function, points down the layers
(data -> model -> prune -> train -> eval -> report -> orchestration), and there is no cycle, so no lazy
import can be hiding one. Read from the source with ast: nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pvs"

LAYERS = [
    # settings and plumbing every layer may read
    ("base", {"pvs", "pvs.errors", "pvs.paths", "pvs.records", "pvs.experiments", "pvs.shape", "pvs.config",
              "pvs.tiers", "pvs.stats", "pvs.chance", "pvs.accelerate_check"}),
    ("data", {"pvs.corpus_sources", "pvs.corpus", "pvs.tokens", "pvs.tasks", "pvs.tasks.specs",
              "pvs.tasks.prepare"}),
    ("model", {"pvs.model", "pvs.hetero", "pvs.checkpoint", "pvs.parents"}),
    ("prune", {"pvs.prune"}),  # and every pvs.prune.* module
    ("train", {"pvs.train", "pvs.lm_loss", "pvs.cpu_attention"}),
    ("eval", {"pvs.perplexity", "pvs.packed_lm", "pvs.downstream"}),
    ("report", {"pvs.catchup", "pvs.claims", "pvs.regime", "pvs.report", "pvs.report_claims",
                "pvs.report_figures", "pvs.report_tables"}),
    ("orchestration", {"pvs.stages", "pvs.study", "pvs.plan", "pvs.walltime", "pvs.notebooks", "pvs.cli"}),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if module in members or (module.startswith("pvs.prune.") and "pvs.prune" in members):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_imports.py; add it where it belongs")


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The pvs modules ``path`` imports anywhere (annotations-only imports under TYPE_CHECKING excepted)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pvs import hetero` imports the module pvs.hetero; `from pvs.x import f` imports pvs.x
            names = [f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                     for a in node.names]
        else:
            continue
        if not _type_checking_only(node, parents):
            found |= {n for n in names if n == "pvs" or n.startswith("pvs.")}
    return found


def graph() -> dict[str, set[str]]:
    g = {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}
    for mod, deps in g.items():
        # a package's own __init__ is not a dependency of its submodules (Python runs it first anyway)
        deps.discard(mod)
        deps -= {d for d in deps if mod.startswith(d + ".") and d != "pvs"}
    return g


def test_every_module_has_a_layer_and_imports_point_down():
    g = graph()
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
              for m, deps in g.items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycle():
    g = graph()
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_walker_sees_lazy_imports_and_ignores_type_checking(tmp_path):
    """The test's own reader: a function-level import counts, an annotations-only one does not."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pvs.config import RunConfig\n"
                   "def f():\n    from pvs.study import prune\n    import pvs.train\n")
    assert imports(src) == {"pvs.study", "pvs.train"}
