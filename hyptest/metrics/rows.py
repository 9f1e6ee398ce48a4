"""Rows of list cells (top-k ids, label probabilities) as one 2-D array, without a view per row."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["stack_rows"]


def stack_rows(cells: Sequence[Any], dtype: Any = None) -> np.ndarray:
    """``np.stack([np.asarray(c, dtype) for c in cells])``, the same array, built in one copy.

    :func:`numpy.stack` makes a view of every row before concatenating them;
    for hundreds of thousands of short rows that is most of its time. Rows
    of equal length are concatenated once and reshaped instead (the same
    values, dtype and shape). Anything else (no rows, rows that are not 1-D
    or differ in length) goes to :func:`numpy.stack`, with its result or its
    error.

    Parameters
    ----------
    cells : sequence
        One array-like per row (numpy arrays, lists).
    dtype : data-type, optional
        Passed to :func:`numpy.asarray` for each row.

    Returns
    -------
    numpy.ndarray, shape (len(cells), width)
    """
    arrays = [np.asarray(c, dtype=dtype) for c in cells]
    if not arrays:
        return np.stack(arrays)  # raises, as np.stack does
    try:
        lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        flat = np.concatenate(arrays)
    except (TypeError, ValueError):  # 0-d cells, or cells of different ranks
        return np.stack(arrays)
    if flat.ndim != 1 or (lengths != lengths[0]).any():
        return np.stack(arrays)  # cells that are not 1-D, or raises: rows of different lengths
    return flat.reshape(len(arrays), int(lengths[0]))
