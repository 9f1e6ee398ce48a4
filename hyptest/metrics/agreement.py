"""Distribution agreement between ICL and each GD method, against ICL-vs-ICL.

For every (model, task, N, demo set, query) and every order o, the output of
ICL under o is compared with the output of a GD method trained on the demos in
the same order o (Token Overlap, Overlap Cosine, JS divergence of the label
distributions). The reference row compares ICL under o with ICL under the next
sampled order (o + 1, cyclically), as Shen et al. do: if a GD method were ICL,
its agreement with ICL would be as high as ICL's agreement with itself.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

import numpy as np
import pandas as pd

from ..names import AGREEMENT_METRICS  # metric name -> whether larger means more agreement
from .overlap import label_js, label_kl, overlap_cosine, token_overlap
from .rows import stack_rows

__all__ = ["AGREEMENT_METRICS", "agreement_table", "pair_metrics"]


_UNIT = ["model", "task", "n_demos", "demo_set", "query_id"]
#: the list cells the metrics read
_LIST_COLUMNS = ("topk_ids", "topk_probs", "label_probs")


def _stack(frame: pd.DataFrame, column: str) -> np.ndarray:
    return stack_rows(frame[column].to_numpy())


def pair_metrics(a: pd.DataFrame, b: pd.DataFrame, k: int) -> dict[str, np.ndarray]:
    """Row-wise agreement of two aligned frames of records (same length, row i with row i).

    Returns the arrays of :data:`AGREEMENT_METRICS`; the token metrics are NaN
    when either side holds fewer than ``k`` top-k tokens.
    """
    width = min(min((len(v) for v in a["topk_ids"]), default=0), min((len(v) for v in b["topk_ids"]), default=0))
    tokens = None if width < k else (_stack(a, "topk_ids"), _stack(a, "topk_probs"),
                                     _stack(b, "topk_ids"), _stack(b, "topk_probs"))
    return _metrics(_stack(a, "label_probs"), _stack(b, "label_probs"), tokens, k)


def _metrics(pa: np.ndarray, pb: np.ndarray, tokens: tuple[np.ndarray, ...] | None, k: int
             ) -> dict[str, np.ndarray]:
    """:func:`pair_metrics` of stacked rows (the same operations): label distributions, and the top-k
    ``(ids_a, probs_a, ids_b, probs_b)`` or None when either side has fewer than ``k`` tokens."""
    js = np.asarray(label_js(pa, pb), dtype=float)
    kl = np.asarray(label_kl(pa, pb), dtype=float)  # KL(a || b): a is the reference (ICL)
    if tokens is None:  # logs without (enough) top-k: the token metrics are not defined, JS still is
        missing = np.full(len(pa), np.nan)
        return {"token_overlap": missing, "overlap_cosine": missing.copy(), "label_js": js, "label_kl": kl}
    ids_a, probs_a, ids_b, probs_b = tokens
    return {
        "token_overlap": np.asarray(token_overlap(ids_a, ids_b, k=k), dtype=float),
        "overlap_cosine": np.asarray(overlap_cosine(ids_a, probs_a, ids_b, probs_b, k=k), dtype=float),
        "label_js": js,
        "label_kl": kl,
    }


class RowLists:
    """The list columns of some records, each stacked once into a 2-D array; rows picked by position.

    Merging frames that hold the list cells, then stacking each merged side
    again, is most of the cost of the agreement metrics; here the cells of
    ``topk_ids``, ``topk_probs`` and ``label_probs`` are stacked once and
    :meth:`metrics` gathers the rows of each side by position: the same
    arrays (values, dtype, shape) as stacking the merged sides'
    cells. :meth:`stack` gives None (the caller goes the frame way) unless
    every cell of each column is a 1-D array of one dtype and one length.
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    @classmethod
    def stack(cls, frame: pd.DataFrame, columns: tuple[str, ...] = _LIST_COLUMNS
              ) -> RowLists | None:
        """The stacked columns of ``frame``'s rows (in its order), or None when their cells are not uniform."""
        if not len(frame):
            return None
        arrays = {}
        for column in columns:
            cells = list(map(np.asarray, frame[column].to_numpy()))
            if set(map(attrgetter("ndim"), cells)) != {1} or len(set(map(attrgetter("dtype"), cells))) != 1:
                return None
            lengths = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
            if (lengths != lengths[0]).any():
                return None
            arrays[column] = np.concatenate(cells).reshape(len(cells), int(lengths[0]))
        return cls(arrays)

    def metrics(self, rows_a: np.ndarray, rows_b: np.ndarray, k: int) -> dict[str, np.ndarray]:
        """:func:`pair_metrics` of the rows at positions ``rows_a`` against those at ``rows_b`` (both non-empty)."""
        ids, probs, labels = self.arrays["topk_ids"], self.arrays["topk_probs"], self.arrays["label_probs"]
        tokens = None
        if ids.shape[1] >= k:  # every cell has this width
            tokens = (ids[rows_a], probs[rows_a], ids[rows_b], probs[rows_b])
        return _metrics(labels[rows_a], labels[rows_b], tokens, k)


def agreement_table(records: pd.DataFrame, *, reference: str = "icl", k: int = 10) -> pd.DataFrame:
    """Per-(demo set, query) agreement of each method with the reference.

    Parameters
    ----------
    records : pandas.DataFrame
        Long-format records with ``topk_ids``, ``topk_probs`` and ``label_probs``.
    reference : str, default "icl"
        The method the others are compared with.
    k : int, default 10
        Top-k size for Token Overlap and Overlap Cosine (Shen et al. report K = 10).

    Returns
    -------
    pandas.DataFrame
        Token metrics are NaN where the records hold fewer than ``k`` top-k
        tokens (e.g. imported logs without them). One row per (model, task,
        n_demos, method, demo_set, query_id): the
        mean over orders (and training seeds) of each metric in
        :data:`AGREEMENT_METRICS`. ``method == reference`` holds the
        reference-vs-reference row (order o vs order o + 1).

    References
    ----------
    .. [1] Shen, Mishra, Khashabi (2023), arXiv:2310.08540, Figure 5.
    """
    needed = [*_UNIT, "method", "order_id", "seed", "topk_ids", "topk_probs", "label_probs"]
    missing = [c for c in needed if c not in records.columns]
    if missing:
        raise ValueError(f"`records` lacks the column(s) {missing}")
    if not (records["method"] == reference).any():
        raise ValueError(f"`reference` method {reference!r} has no rows in `records`")
    # the pairing works on the keys and each row's position (no list cell is copied by the merges); the
    # metrics gather the pairs' rows from the slice's list columns, stacked once (RowLists)
    light = records[[*_UNIT, "method", "order_id", "seed"]].assign(_row=np.arange(len(records)))
    cells = records[list(_LIST_COLUMNS)]
    slices = []
    # label sets (and so label_probs widths) differ between tasks: one slice at a time
    for _, group in light.groupby(["model", "task", "n_demos"], sort=True):
        if not (group["method"] == reference).any():
            continue
        rows = group["_row"].to_numpy()
        lists = RowLists.stack(cells.iloc[rows])
        if lists is None:  # cells of different lengths or dtypes: the frames' way (stack_rows decides)
            slices.append(_agreement_slice(records[needed].iloc[rows], reference, _LIST_COLUMNS,
                                           lambda a, b: pair_metrics(a, b, k)))
        else:
            slices.append(_agreement_slice(
                group.drop(columns="_row").assign(_row=np.arange(len(group))), reference, ("_row",),
                lambda a, b, lists=lists: lists.metrics(a["_row"].to_numpy(), b["_row"].to_numpy(), k)))
    return pd.concat(slices, ignore_index=True)


def _next_order_pairs(ref: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference's rows (left) and the same demo set's rows under its next order (right), row by row.

    Orders are ranked within each (unit of) demo set and the last is paired with the first.
    """
    shifted = ref.copy()
    n_orders = shifted.groupby(_UNIT)["order_id"].transform("nunique")
    rank = shifted.groupby(_UNIT)["order_id"].rank(method="first").astype(int) - 1
    shifted["_next"] = (rank + 1) % n_orders
    shifted["_rank"] = rank
    left = shifted.sort_values([*_UNIT, "_rank"])
    right = left.set_index([*_UNIT, "_rank"]).loc[
        pd.MultiIndex.from_frame(left[[*_UNIT, "_next"]].rename(columns={"_next": "_rank"}))
    ].reset_index()
    return left, right


def _agreement_slice(records: pd.DataFrame, reference: str, columns: tuple[str, ...],
                     pair: Callable[[pd.DataFrame, pd.DataFrame], dict[str, np.ndarray]]) -> pd.DataFrame:
    """One (model, task, N) slice of :func:`agreement_table`.

    ``pair(a, b)`` gives :func:`pair_metrics` of two aligned frames that hold
    ``columns`` (the list cells, or ``_row``: each row's position in a
    :class:`RowLists`).
    """
    keys = [*_UNIT, "order_id"]
    ref = records[records["method"] == reference].sort_values(keys)
    # reference vs itself under the next order of the same demo set
    left, right = _next_order_pairs(ref)
    frames = [left[_UNIT].assign(method=reference, seed=0, **pair(left, right))]
    for method in sorted(set(records["method"]) - {reference}):
        other = records[records["method"] == method]
        joined = ref.merge(other, on=keys, suffixes=("_a", "_b"))
        if joined.empty:
            continue
        a = joined[[f"{c}_a" for c in columns]]
        b = joined[[f"{c}_b" for c in columns]]
        a.columns = b.columns = list(columns)
        frames.append(joined[_UNIT].assign(method=method, seed=joined["seed_b"].to_numpy(), **pair(a, b)))
    long = pd.concat(frames, ignore_index=True)
    per_seed = long.groupby([*_UNIT, "method", "seed"], sort=True)[list(AGREEMENT_METRICS)].mean()
    return per_seed.groupby([*_UNIT, "method"], sort=True).mean().reset_index()
