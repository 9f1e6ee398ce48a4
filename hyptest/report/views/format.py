"""Numbers, intervals and group keys as the report prints them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .. import figures

_DASH = "—"
_P_FLOOR = 1e-4


def _as_float(x: Any) -> float | None:
    """Convert to float; ``None`` for missing, non-numeric or NaN values."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if math.isnan(v):
        return None
    return v


def fmt_num(x: Any, sig: int = 3) -> str:
    """Format a number with ``sig`` significant digits.

    Parameters
    ----------
    x : object
        Number (or ``None``/NaN/non-numeric).
    sig : int, optional
        Significant digits (default 3).

    Returns
    -------
    str
        ``"—"`` for missing values, ``"∞"``/``"-∞"`` for infinities, integers
        as integers, otherwise ``format(x, f".{sig}g")`` (e.g. ``"0.031"``,
        ``"12.3"``, ``"1.23e-05"``).
    """
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    v = _as_float(x)
    if v is None:
        return _DASH if not isinstance(x, str) or not x else str(x)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    return f"{v:.{sig}g}"


def fmt_p(p: Any) -> str:
    """Format a p-value.

    Parameters
    ----------
    p : object
        p-value or ``None``.

    Returns
    -------
    str
        ``"—"`` when missing, ``"< 1e-4"`` below ``1e-4``, otherwise three
        significant digits (``"0.0004"``, ``"0.0312"``, ``"1"``).
    """
    v = _as_float(p)
    if v is None:
        return _DASH
    if v < _P_FLOOR:
        return "< 1e-4"
    return f"{v:.3g}"


def fmt_ci(lo: Any, hi: Any) -> str:
    """Format a confidence interval as ``"[lo, hi]"`` (``"—"`` if both missing)."""
    if _as_float(lo) is None and _as_float(hi) is None:
        return _DASH
    return f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def fmt_ratio(r: Any) -> str:
    """Format a ratio of means as ``"12.3×"``; ``"∞"`` or ``"—"`` when undefined."""
    v = _as_float(r)
    if v is None:
        return _DASH
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{fmt_num(v)}×"


def _pct(level: Any) -> str:
    """0.9833 -> ``"98.3%"``; ``""`` when missing."""
    v = _as_float(level)
    return f"{fmt_num(100 * v)}%" if v is not None else ""


def _context_label(model: Any, task: Any, n_demos: Any) -> str:
    bits = []
    if task is not None:
        bits.append(str(task))
    if n_demos is not None:
        bits.append(f"N={fmt_num(n_demos)}")
    if model is not None:
        bits.append(str(model))
    return " · ".join(bits) if bits else "(unlabelled)"



def _n_demos_key(x: Any) -> Any:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None if x is None else str(x)
    if math.isnan(f):
        return None
    return int(f) if f.is_integer() else f


def _group_key(model: Any, task: Any, n_demos: Any) -> tuple[str, str, Any]:
    return (
        "" if model is None else str(model),
        "" if task is None else str(task),
        _n_demos_key(n_demos),
    )


def _sort_key(key: tuple[str, str, Any]) -> tuple:
    n = key[2]
    return (key[0], key[1], (0, n) if isinstance(n, (int, float)) else (1, str(n)))


def analysis_spec(study: Mapping[str, Any]) -> Mapping[str, Any]:
    """The study's ``analysis`` settings (``{}`` when the study has none: a reanalysis of summaries)."""
    spec = study.get("analysis")
    return spec if isinstance(spec, Mapping) else {}


def _est_ci(r: Mapping[str, Any], est: str = "estimate") -> str:
    """``"0.81 [0.78, 0.84]"``, or only the estimate when there is no interval."""
    ci = fmt_ci(r.get("ci_low"), r.get("ci_high"))
    return fmt_num(r.get(est)) + ("" if ci == _DASH else f" {ci}")


def _point(x: Any, r: Mapping[str, Any], est: str = "estimate", *, marked: bool = False) -> figures.SeriesPoint:
    return figures.SeriesPoint(x=x, y=_as_float(r.get(est)), lo=_as_float(r.get("ci_low")),
                           hi=_as_float(r.get("ci_high")), marked=marked)


def _num_sort(values: Iterable[Any]) -> list[Any]:
    """Distinct values, numbers first in increasing order, then the rest as text."""
    vals = list(dict.fromkeys(_n_demos_key(v) for v in values))
    return sorted(vals, key=lambda v: (0, v) if isinstance(v, (int, float)) else (1, str(v)))


def _scalar(v: Any) -> str:
    if v is None:
        return _DASH
    if isinstance(v, float):
        return fmt_num(v, sig=6)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_scalar(x)}" for k, x in v.items()) or _DASH
    if isinstance(v, (list, tuple)):
        return ", ".join(_scalar(x) for x in v) or _DASH
    return str(v)


def _seconds(v: Any) -> str:
    f = _as_float(v)
    if f is None:
        return _scalar(v)
    if f >= 600:
        return f"{f / 60:.1f} min"
    return f"{f:.2f} s" if f < 10 else f"{f:.1f} s"


def _common(values: Iterable[str]) -> str | None:
    """The single value shared by all items, or None when they differ (or there are none)."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None
