"""The examples in hyptest's docstrings run and print what they say.

Every module of the package is imported by its dotted name (``hyptest.collect``
is a namespace package, which ``pytest --doctest-modules`` cannot import by
path) and its doctests run with :mod:`doctest`; a failing example fails the
module's case, with doctest's own report as the message.  The statistics and
metrics modules must hold examples (issue: their 191 doctest lines never ran).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import hyptest


def _docstring_tests(name: str) -> list[doctest.DocTest]:
    return [t for t in doctest.DocTestFinder().find(importlib.import_module(name)) if t.examples]


#: Every module but the ``python -m hyptest`` entry point (importing it runs the CLI).
MODULES = sorted(info.name for info in pkgutil.walk_packages(hyptest.__path__, prefix="hyptest.")
                 if not info.name.endswith("__main__"))
WITH_EXAMPLES = [name for name in MODULES if _docstring_tests(name)]


def test_statistics_and_metrics_modules_have_examples() -> None:
    for package in ("hyptest.stats.", "hyptest.metrics."):
        assert sum(name.startswith(package) for name in WITH_EXAMPLES) >= 4, package


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name: str) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in _docstring_tests(name):
        runner.run(test, out=report.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(report)
