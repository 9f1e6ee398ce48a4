"""hyptest: does in-context learning behave like gradient descent?

The public API is re-exported here and loaded lazily, so ``import hyptest``
stays fast (no torch, transformers or pandas until a name is used)::

    import hyptest
    study, text = hyptest.load_study("studies/order_sensitivity.yaml")
    summary = hyptest.run_study(study, text)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # study files and the pipeline
    "Study": "hyptest.study:Study",
    "StudyError": "hyptest.study:StudyError",
    "load_study": "hyptest.study:load_study",
    "parse_study": "hyptest.study:parse_study",
    "run_study": "hyptest.workflows.study:run_study",
    "analyse_run": "hyptest.workflows.study:analyse_run",
    "rebuild_report": "hyptest.workflows.study:rebuild_report",
    "reanalyse": "hyptest.workflows.reanalyse:reanalyse",
    "export_run": "hyptest.workflows.reanalyse:export_run",
    "read_long": "hyptest.importers:read_long",
    "detect_format": "hyptest.importers:detect_format",
    "ImportProblems": "hyptest.importers:ImportProblems",
    # data and models
    "Task": "hyptest.tasks:Task",
    "load_builtin_task": "hyptest.tasks:load_builtin_task",
    "load_task_file": "hyptest.tasks:load_task_file",
    "load_model": "hyptest.models:load_model",
    "RunDir": "hyptest.store:RunDir",
    # metrics and statistics (pure functions)
    "order_sensitivity": "hyptest.metrics:order_sensitivity",
    "accuracy_table": "hyptest.metrics:accuracy_table",
    "order_comparison": "hyptest.analysis.order:order_comparison",
    "run_analyses": "hyptest.analysis.order:run_analyses",
    "Comparison": "hyptest.results:Comparison",
    "power_table": "hyptest.workflows.power:power_table",
    "paired_permutation_test": "hyptest.stats.permutation:paired_permutation_test",
    "two_sample_permutation_test": "hyptest.stats.permutation:two_sample_permutation_test",
    "bootstrap_ci": "hyptest.stats.bootstrap:bootstrap_ci",
    "adjust_pvalues": "hyptest.stats.multiplicity:adjust_pvalues",
    "decide": "hyptest.results:decide",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name].split(":")
    except KeyError:
        raise AttributeError(f"module 'hyptest' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
