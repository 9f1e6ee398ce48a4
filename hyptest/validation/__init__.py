"""Validation experiments: hypotheses about ICL tested on models trained from scratch.

A study file with a top-level ``experiment:`` key is one of these instead of
an ICL-vs-GD study; ``hyptest study`` and ``hyptest validate`` dispatch on it
(:func:`experiment_of`). Registered experiments:

``momentum_attention``
    Does Dai et al.'s momentum attention improve in-context learning? Small
    transformers with and without it, trained from scratch on in-context linear
    regression (:mod:`hyptest.validation.momentum_study`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["EXPERIMENTS", "experiment_of"]

#: Experiment name -> module that runs it.
EXPERIMENTS: dict[str, str] = {"momentum_attention": "hyptest.validation.momentum_study"}


def experiment_of(data: Any) -> str | None:
    """The ``experiment`` a parsed study file names, or None for an ICL-vs-GD study.

    Raises
    ------
    hyptest.study.StudyError
        When ``experiment`` is given but names no registered experiment.

    Examples
    --------
    >>> experiment_of({"experiment": "momentum_attention"}), experiment_of({"name": "x"})
    ('momentum_attention', None)
    """
    if not isinstance(data, dict) or "experiment" not in data:
        return None
    name = data["experiment"]
    if not isinstance(name, str) or name not in EXPERIMENTS:
        from ..study import StudyError

        raise StudyError(f"experiment: {name!r} is not a known experiment; known: {', '.join(EXPERIMENTS)}")
    return name
