"""Argument checks shared by the numeric modules (stats, metrics, tasks): one home for each check.

Each raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for
a value of the right kind outside its range, naming the argument.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["validate_count", "validate_rng", "validate_sample"]


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


def validate_count(value: object, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum``; bools and floats are rejected.

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is below ``minimum``.
    """
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be {what}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be {what}, got {int(value)}")
    return int(value)


def validate_sample(value: ArrayLike, name: str, *, min_size: int = 1) -> np.ndarray:
    """``value`` as a finite 1-D float64 array of at least ``min_size`` observations.

    Missing values are never dropped silently: NaN or inf raises, with the
    index of the first one.

    Raises
    ------
    TypeError
        If ``value`` is a string or not numeric.
    ValueError
        If it is not 1-D, too short or not finite.
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be a 1-D array-like of real numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic array-likes
        raise TypeError(f"`{name}` must be a 1-D array-like of real numbers, got {type(value).__name__}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must contain real numbers (bool, int or float), got an array of dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got an array of shape {arr.shape}")
    if arr.size < min_size:
        raise ValueError(f"`{name}` must contain at least {min_size} "
                         f"{'observations' if min_size > 1 else 'observation(s)'}, got {arr.size}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"`{name}` must contain only finite values (NaN/inf are not dropped silently; remove or impute "
            f"them first), got {float(arr[idx[0]])!r} at index {int(idx[0])} ({idx.size} non-finite value(s) "
            "in total)")
    return arr
