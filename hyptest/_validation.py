"""Argument checks shared by every layer (stats, metrics, tasks, collect, analysis): one home for each check.

Each raises :class:`ArgumentTypeError` (a ``TypeError`` that is also a
``ValueError``) for a value of the wrong kind and ``ValueError`` for a value of
the right kind outside its range, naming the argument in backticks. The kind
error is both because some callers documented ``ValueError`` for every bad
argument and others ``TypeError`` for a wrong kind: either ``except`` catches it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

__all__ = ["ArgumentTypeError", "validate_choice", "validate_count", "validate_flag", "validate_frame",
           "validate_paired", "validate_probability", "validate_real", "validate_real_array", "validate_rng",
           "validate_sample"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong kind (a string for a count, a bool for a number, ...)."""


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def validate_flag(value: object, name: str) -> bool:
    """``value`` as a ``bool``: only ``True`` / ``False`` (numpy's too) are accepted, not 0/1 or strings.

    Parameters
    ----------
    value : object
        The flag to check.
    name : str
        Its name in the message (``strict``, ``normalise``).

    Returns
    -------
    bool

    Raises
    ------
    ArgumentTypeError
        If ``value`` is not a boolean.
    """
    if not _is_bool(value):
        raise ArgumentTypeError(f"`{name}` must be True or False, got {value!r}")
    return bool(value)


def validate_choice(value: object, name: str, options: Iterable[str]) -> str:
    """``value`` if it is one of the strings ``options``.

    Parameters
    ----------
    value : object
        The option to check.
    name : str
        Its name in the message (``adjust``, ``method``).
    options : iterable of str
        The accepted values, listed in the message in this order.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``value`` is not one of ``options`` (a non-string never is).
    """
    choices = tuple(options)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def validate_real(value: object, name: str, *, finite: bool = False, minimum: float | None = None,
                  strict: bool = False) -> float:
    """``value`` as a ``float``: any real number but a bool, optionally finite and bounded below.

    Parameters
    ----------
    value : object
        The number to check.
    name : str
        Its name in the message (``eta``, ``threshold``).
    finite : bool, default False
        Reject NaN and infinities.
    minimum : float, optional
        The smallest accepted value (``None``: no bound).
    strict : bool, default False
        With ``minimum``: the bound itself is excluded (``> minimum``).

    Returns
    -------
    float

    Raises
    ------
    ArgumentTypeError
        If ``value`` is not a real number.
    ValueError
        If it is not finite (with ``finite``) or below the bound.
    """
    if _is_bool(value) or not isinstance(value, Real):
        raise ArgumentTypeError(f"`{name}` must be a real number, got {value!r}")
    out = float(value)
    if finite and not math.isfinite(out):
        raise ValueError(f"`{name}` must be finite, got {out!r}")
    if minimum is not None and not (out > minimum if strict else out >= minimum):
        raise ValueError(f"`{name}` must be a number {'>' if strict else '>='} {minimum:g}, got {out!r}")
    return out


def validate_probability(value: object, name: str) -> float:
    """``value`` as a ``float`` strictly inside (0, 1): a level such as ``alpha`` or ``confidence``.

    Parameters
    ----------
    value : object
        The level to check.
    name : str
        Its name in the message (``alpha``, ``confidence``, ``hdi_prob``).

    Returns
    -------
    float

    Raises
    ------
    ArgumentTypeError
        If ``value`` is not a real number (bools are rejected).
    ValueError
        If it is not in the open interval (0, 1) (NaN is not).
    """
    if _is_bool(value) or not isinstance(value, Real):
        raise ArgumentTypeError(f"`{name}` must be a float in (0, 1), got {value!r}")
    out = float(value)
    if not 0.0 < out < 1.0:
        raise ValueError(f"`{name}` must be a float in (0, 1), got {out!r}")
    return out


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
        raise ArgumentTypeError(f"`rng` must be {accepted}, got {rng!r}")
    if int(rng) < 0:
        raise ValueError(f"`rng` seed must be a non-negative integer, got {int(rng)}")
    return np.random.default_rng(int(rng))


def validate_count(value: object, name: str, *, minimum: int = 1, allow_none: bool = False,
                   none_means: str = "") -> Any:
    """``value`` as an ``int`` of at least ``minimum``; bools and floats are rejected.

    Parameters
    ----------
    value : object
        The count to check.
    name : str
        Its name in the message (``n_resamples``, ``batch_size``).
    minimum : int, default 1
        The smallest accepted value.
    allow_none : bool, default False
        Accept ``None`` (returned as is), e.g. for "automatic".
    none_means : str, optional
        What ``None`` stands for, named in the message (``"automatic"``).

    Returns
    -------
    int or None
        ``None`` only when ``allow_none`` and ``value`` is None.

    Raises
    ------
    ArgumentTypeError
        If ``value`` is not an integer (nor an allowed None).
    ValueError
        If it is below ``minimum``.
    """
    if value is None and allow_none:
        return None
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if allow_none:
        what += " or None" + (f" ({none_means})" if none_means else "")
    if _is_bool(value) or not isinstance(value, Integral):
        raise ArgumentTypeError(f"`{name}` must be {what}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be {what}, got {int(value)}")
    return int(value)


def validate_real_array(value: ArrayLike, name: str, *, ndim: int | None = None, min_ndim: int = 0,
                        finite: bool = True, shape_hint: str = "", finite_hint: str = "") -> np.ndarray:
    """``value`` as a float64 array of real numbers (bool, int or float), of a given rank, finite.

    Parameters
    ----------
    value : array_like
        The array to check.
    name : str
        Its name in the message (``icl``, ``values``).
    ndim : int, optional
        The exact number of dimensions required (``None``: any).
    min_ndim : int, default 0
        The least number of dimensions.
    finite : bool, default True
        Reject NaN and infinities.
    shape_hint, finite_hint : str, optional
        Words added in parentheses to the shape / finiteness message.

    Returns
    -------
    numpy.ndarray
        A float64 view or copy of ``value``.

    Raises
    ------
    ArgumentTypeError
        If ``value`` is a string or does not hold real numbers.
    ValueError
        If its rank is wrong or (with ``finite``) it holds NaN or inf.
    """
    if isinstance(value, (str, bytes)):
        raise ArgumentTypeError(f"`{name}` must hold real numbers, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"`{name}` must hold real numbers, got an array of dtype {arr.dtype}")
    hint = f" ({shape_hint})" if shape_hint else ""
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-D{hint}, got shape {arr.shape}")
    if arr.ndim < min_ndim:
        raise ValueError(f"`{name}` must have at least {min_ndim} dimension(s){hint}, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if finite and not np.isfinite(arr).all():
        extra = f" ({finite_hint})" if finite_hint else ""
        raise ValueError(f"`{name}` must be finite{extra}, got NaN or inf")
    return arr


def validate_frame(value: object, name: str, columns: Sequence[str], *, hint: str = "") -> pd.DataFrame:
    """``value`` if it is a pandas DataFrame holding every column in ``columns``.

    Parameters
    ----------
    value : object
        The table to check.
    name : str
        Its name in the message (``records``, ``per_order``).
    columns : sequence of str
        The columns it needs.
    hint : str, optional
        Words appended to the missing-columns message (``"; see README.md"``).

    Returns
    -------
    pandas.DataFrame
        ``value`` itself.

    Raises
    ------
    ArgumentTypeError
        If ``value`` is not a DataFrame.
    ValueError
        If columns are missing; the message lists them.
    """
    if not isinstance(value, pd.DataFrame):
        raise ArgumentTypeError(f"`{name}` must be a pandas DataFrame, got {type(value).__name__}")
    missing = [c for c in columns if c not in value.columns]
    if missing:
        raise ValueError(f"`{name}` lacks the column(s) {missing}{hint}")
    return value


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
        raise ArgumentTypeError(f"`{name}` must be a 1-D array-like of real numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic array-likes
        raise ArgumentTypeError(f"`{name}` must be a 1-D array-like of real numbers, got {type(value).__name__}") from exc
    if arr.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"`{name}` must contain real numbers (bool, int or float), got an array of dtype {arr.dtype}")
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


def validate_paired(x: ArrayLike, y: ArrayLike, *, min_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as paired samples: each checked by :func:`validate_sample`, and of the same length.

    Parameters
    ----------
    x, y : array_like
        The paired observations.
    min_size : int, default 1
        The least number of pairs.

    Returns
    -------
    tuple of numpy.ndarray
        ``x`` and ``y`` as finite 1-D float64 arrays.

    Raises
    ------
    ArgumentTypeError, ValueError
        As :func:`validate_sample`, or when the lengths differ.
    """
    xa = validate_sample(x, "x", min_size=min_size)
    ya = validate_sample(y, "y", min_size=min_size)
    if xa.shape != ya.shape:
        raise ValueError(
            "`y` must have the same length as `x` (paired observations), "
            f"got len(x)={xa.size} and len(y)={ya.size}"
        )
    return xa, ya
