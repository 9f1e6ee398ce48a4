"""Who may import whom inside hyptest (docs/architecture.md), read from the source, not by importing it.

Every ``import`` statement counts, the ones inside functions too: a lazy
import is still a dependency, and a cycle hidden in a function is still a
cycle. The graph is built from the abstract syntax tree of each module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hyptest"

#: The stages above the numeric core, in the order of the data flow.
_STAGES = ("hyptest.collect", "hyptest.models", "hyptest.store", "hyptest.tasks", "hyptest.importers",
           "hyptest.analysis", "hyptest.workflows", "hyptest.validation", "hyptest.report", "hyptest.study",
           "hyptest.results", "hyptest.records", "hyptest.contract")

#: Layer -> the hyptest modules (prefixes) it must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the numeric core: numpy/scipy functions that know nothing of studies, runs or reports
    "hyptest.stats": _STAGES,
    "hyptest.metrics": _STAGES,
    # the shared contracts stand on the core only
    "hyptest.results": _STAGES,
    "hyptest.records": _STAGES,
    "hyptest.contract": _STAGES,
    # readers of others' logs: they parse, they do not analyse or run models
    "hyptest.importers": ("hyptest.collect", "hyptest.models", "hyptest.tasks", "hyptest.analysis",
                          "hyptest.workflows", "hyptest.validation", "hyptest.report", "hyptest.study"),
    # collection runs models; it never analyses, orchestrates or reports
    "hyptest.collect": ("hyptest.analysis", "hyptest.workflows", "hyptest.validation", "hyptest.report",
                        "hyptest.results"),
    # the analysis reads records and writes comparisons; it never runs models, touches the store or draws
    "hyptest.analysis": ("hyptest.collect", "hyptest.models", "hyptest.store", "hyptest.workflows",
                         "hyptest.validation", "hyptest.report"),
    # the report only draws what the analysis wrote: it reads the contract, never the numeric core or the versions
    "hyptest.report": ("hyptest.collect", "hyptest.models", "hyptest.store", "hyptest.tasks", "hyptest.importers",
                       "hyptest.analysis", "hyptest.workflows", "hyptest.validation", "hyptest.results",
                       "hyptest.study", "hyptest.stats", "hyptest.metrics", "hyptest.provenance",
                       "hyptest.records", "hyptest.preflight"),
    # the experiments of validation/ are run by the CLI and the study workflow, never the reverse
    "hyptest.validation": ("hyptest.workflows",),
    # display names and metric lists are plain data below every layer (the report reads them too)
    "hyptest.names": ("hyptest",),
}


def test_only_the_cli_and_workflows_orchestrate():
    """Nothing but the CLI, the workflows themselves and the package's lazy exports imports a workflow."""
    users = {name for name, targets in GRAPH.items() if any(t.startswith("hyptest.workflows") for t in targets)}
    assert users - {"hyptest.cli"} - {n for n in users if n.startswith("hyptest.workflows")} == set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(name: str) -> set[str]:
    """The hyptest modules that module ``name`` imports anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a module's own packages are imported before it anyway
                out.add(target)
    return out


GRAPH = {name: _imported(name) for name in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    assert len(MODULES) > 50
    assert "hyptest.results" in GRAPH["hyptest.analysis.order"]  # a module-level import
    assert "hyptest.analysis.baseline_tests" in GRAPH["hyptest.workflows.study"]  # an import inside a function


def test_the_report_imports_only_the_contract():
    """report/ reads typed results: besides its own modules, only hyptest.contract, hyptest._util and the
    plain-data display names of hyptest.names."""
    used = {t for name, targets in GRAPH.items() if name == "hyptest.report" or name.startswith("hyptest.report.")
            for t in targets if not t.startswith("hyptest.report")}
    assert used <= {"hyptest.contract", "hyptest._util", "hyptest.names"}, used
    assert "hyptest.contract" in used


def test_no_import_cycles():
    assert _cycles() == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer):
    offending = {name: sorted(t for t in targets if t.startswith(FORBIDDEN[layer]))
                 for name, targets in GRAPH.items() if name == layer or name.startswith(layer + ".")}
    assert {k: v for k, v in offending.items() if v} == {}
