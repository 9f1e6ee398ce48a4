"""The (model, task, N) slices of a record table, each compared method against the reference.

Every analysis that compares methods does so within one slice: one model, one
task, one number of demonstrations. :func:`iter_slices` is the one loop over
them; a :class:`Slice` names its methods other than the reference and the keys
a comparison row of it carries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["SLICE_COLUMNS", "Slice", "comparison_keys", "iter_slices"]

#: The columns that name a slice.
SLICE_COLUMNS: list[str] = ["model", "task", "n_demos"]


def comparison_keys(model: Any, task: Any, n_demos: Any, reference: str, method: str) -> dict[str, Any]:
    """The fields that identify a comparison of ``method`` with ``reference`` in one (model, task, N).

    Parameters
    ----------
    model, task : Any
        The slice's model and task.
    n_demos : int-like
        Its number of demonstrations (stored as ``int``).
    reference, method : str
        The compared methods: ``method_a`` and ``method_b``.

    Returns
    -------
    dict
        ``model``, ``task``, ``n_demos``, ``method_a``, ``method_b``, the keyword
        arguments :class:`hyptest.results.Comparison` takes first.
    """
    return {"model": model, "task": task, "n_demos": int(n_demos), "method_a": reference, "method_b": method}


@dataclass(frozen=True)
class Slice:
    """The rows of one (model, task, N) and the reference method they are compared with.

    Attributes
    ----------
    model, task : Any
        The slice's model and task (as in the records).
    n_demos : Any
        Its number of demonstrations, as in the records (``int(n_demos)`` in keys).
    rows : pandas.DataFrame
        Its rows, every method's.
    reference : str
        The method the others are compared with.
    """

    model: Any
    task: Any
    n_demos: Any
    rows: pd.DataFrame
    reference: str

    @property
    def label(self) -> str:
        """``model/task/N=n``, as the analysis notes name a slice."""
        return f"{self.model}/{self.task}/N={self.n_demos}"

    @property
    def has_reference(self) -> bool:
        """Whether the reference method has rows in this slice."""
        return bool((self.rows["method"] == self.reference).any())

    @property
    def methods(self) -> list[str]:
        """The methods other than the reference with rows in this slice, sorted."""
        return sorted(set(self.rows["method"].unique()) - {self.reference})

    def keys(self, method: str) -> dict[str, Any]:
        """The identifying fields of the comparison of ``method`` with the reference in this slice."""
        return comparison_keys(self.model, self.task, self.n_demos, self.reference, method)


def iter_slices(records: pd.DataFrame, reference: str) -> Iterator[Slice]:
    """Each (model, task, N) slice of ``records``, in sorted order.

    Parameters
    ----------
    records : pandas.DataFrame
        Rows with ``model``, ``task``, ``n_demos`` and ``method`` columns.
    reference : str
        The method the others are compared with.

    Yields
    ------
    Slice
    """
    for (model, task, n_demos), rows in records.groupby(SLICE_COLUMNS, sort=True):
        yield Slice(model, task, n_demos, rows, reference)
