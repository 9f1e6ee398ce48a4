"""Argument checks shared by the numeric modules (stats, metrics)."""

from __future__ import annotations

from numbers import Integral

import numpy as np

__all__ = ["validate_rng"]


def validate_rng(rng: object, *, allow_none: bool = True) -> np.random.Generator:
    """A numpy Generator from ``rng``: a Generator (returned as is), a non-negative int seed, or None.

    Raises
    ------
    TypeError
        If ``rng`` is not one of the accepted kinds (bools are rejected; None
        only when ``allow_none`` is False).
    ValueError
        If the seed is negative.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None and allow_none:
        return np.random.default_rng()
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, Integral):
        accepted = "None, a non-negative integer seed or a numpy.random.Generator" if allow_none else (
            "a numpy.random.Generator or a non-negative integer seed")
        raise TypeError(f"`rng` must be {accepted}, got {rng!r}")
    if int(rng) < 0:
        raise ValueError(f"`rng` seed must be a non-negative integer, got {int(rng)}")
    return np.random.default_rng(int(rng))
