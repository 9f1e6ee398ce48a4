"""Shared fixtures: tiny random models, built-in tasks, small study files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_lm():
    from hyptest.models.tiny import load_tiny

    return load_tiny("tiny", seed=0)


@pytest.fixture(scope="session")
def sentiment():
    from hyptest.tasks import load_builtin_task

    return load_builtin_task("sentiment")


@pytest.fixture(scope="session")
def topic():
    from hyptest.tasks import load_builtin_task

    return load_builtin_task("topic")


TINY_STUDY = textwrap.dedent(
    """\
    name: tiny_study
    seed: 3
    models: [{name: tiny, source: tiny}]
    tasks: [sentiment]
    demos: {n_demos: 3, n_sets: 2, n_orders: all, n_queries: 6}
    methods:
      - kind: icl
      - {kind: gd, learning_rate: 0.01, steps: 2}
      - {kind: sgd, learning_rate: 0.01}
      - {kind: adam, learning_rate: 0.001}
    analysis: {n_resamples: 2000, bayes: false}
    """
)


#: The smallest study that runs end to end (ICL vs SGD, all 2! orders), for store and lock tests.
MINI_STUDY = textwrap.dedent(
    """\
    name: mini
    seed: 3
    models: [{name: tiny, source: tiny}]
    tasks: [sentiment]
    demos: {n_demos: 2, n_sets: 2, n_orders: all, n_queries: 4}
    methods:
      - kind: icl
      - {kind: sgd, learning_rate: 0.01}
    analysis: {n_resamples: 1000, bayes: false}
    """
)


@pytest.fixture
def tiny_study_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One clear line when the browser tests were skipped (no Debian chromium), so nobody misses it."""
    reasons = set()
    for report in terminalreporter.stats.get("skipped", []):
        if "test_report_browser" in str(getattr(report, "fspath", "")) or "test_report_browser" in report.nodeid:
            longrepr = report.longrepr
            reasons.add(str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr))
    if reasons:
        terminalreporter.write_line(
            "browser tests SKIPPED: " + "; ".join(sorted(reasons))
            + " — install Debian's chromium to run them: apt-get install chromium chromium-driver",
            yellow=True, bold=True)
