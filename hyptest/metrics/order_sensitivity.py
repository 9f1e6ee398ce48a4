"""Order sensitivity: how much a method's outputs move when only the demo order changes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validation import validate_frame
from .rows import stack_rows

__all__ = ["accuracy_table", "order_sensitivity"]

_GROUP = ["model", "task", "n_demos", "method", "method_kind", "demo_set", "query_id"]


def _validate_records(records: pd.DataFrame, needed: list[str]) -> None:
    validate_frame(records, "records", needed, hint="; see the result schema in README.md")


def order_sensitivity(records: pd.DataFrame) -> pd.DataFrame:
    """Per-query order sensitivity of every method.

    For each (model, task, N, method, demo set, training seed, query), take the
    outputs under every order of that demo set and compute

    * ``sd_gold``: the sample standard deviation (ddof = 1) across orders of
      the renormalised probability of the gold label;
    * ``sd_labels``: the mean over labels of the per-label standard deviation;
    * ``spread``: the largest range (max - min) across orders over all labels.

    When a method was trained with several seeds, the per-seed values are
    averaged (``spread`` takes the maximum).

    Parameters
    ----------
    records : pandas.DataFrame
        Long-format records (see ``hyptest.store.RECORD_COLUMNS``).

    Returns
    -------
    pandas.DataFrame
        One row per (model, task, n_demos, method, method_kind, demo_set,
        query_id) with columns ``sd_gold``, ``sd_labels``, ``spread``,
        ``n_orders``, ``n_seeds`` and ``n_labels``. With two labels,
        ``sd_labels == sd_gold`` (the two probabilities move together).

    Notes
    -----
    This is the "order sensitivity" of Shen et al. [1]_ on the label words.
    Under Theorem 1 of [1]_, an algorithm equivalent to ICL has the same
    order sensitivity as ICL; full-batch GD's is zero by construction.

    References
    ----------
    .. [1] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
       in-context by gradient descent? arXiv:2310.08540.
    """
    _validate_records(records, [*_GROUP, "seed", "order_id", "p_gold", "label_probs"])
    per_seed = _per_seed_vectorised(records)
    if per_seed is None:  # duplicate orders, missing keys or ragged label lists: the plain loop (and its errors)
        per_seed = _per_seed_loop(records)
    out = (
        per_seed.groupby(_GROUP, sort=True)
        .agg(
            sd_gold=("sd_gold", "mean"),
            sd_labels=("sd_labels", "mean"),
            spread=("spread", "max"),
            n_orders=("n_orders", "min"),
            n_seeds=("seed", "nunique"),
            n_labels=("n_labels", "max"),
        )
        .reset_index()
    )
    return out


_PER_SEED = [*_GROUP, "seed", "sd_gold", "sd_labels", "spread", "n_orders", "n_labels"]


def _per_seed_loop(records: pd.DataFrame) -> pd.DataFrame:
    """Per (unit, seed) statistics, one group at a time (the reference the vectorised path must equal)."""
    rows = []
    for key, group in records.groupby([*_GROUP, "seed"], sort=True):
        if group["order_id"].nunique() != len(group):
            raise ValueError(f"duplicate orders for {dict(zip([*_GROUP, 'seed'], key))}")
        n_orders = len(group)
        probs = np.stack(group["label_probs"].map(np.asarray).to_list())
        p_gold = group["p_gold"].to_numpy(dtype=float)
        if n_orders < 2:
            sd_gold = sd_labels = np.nan
        else:
            sd_gold = float(np.std(p_gold, ddof=1))
            sd_labels = float(np.std(probs, axis=0, ddof=1).mean())
        spread = float((probs.max(axis=0) - probs.min(axis=0)).max())
        rows.append((*key, sd_gold, sd_labels, spread, n_orders, probs.shape[1]))
    return pd.DataFrame(rows, columns=_PER_SEED)


def _per_seed_vectorised(records: pd.DataFrame) -> pd.DataFrame | None:
    """What :func:`_per_seed_loop` returns, computed on whole blocks of groups at once.

    Groups are numbered as ``groupby(sort=True)`` numbers them; groups with
    the same number of orders and labels form one (groups, orders, labels)
    block, whose rows keep their order within each group, and numpy reduces
    each block along the order axis exactly as it reduces one group's array
    (same summation order, so the same floats). Returns None where the loop
    must decide: no rows, rows whose keys are missing (groupby drops them),
    duplicate orders (the loop raises), or label lists of different lengths
    within a group.
    """
    if records.empty:
        return None
    grouper = records.groupby([*_GROUP, "seed"], sort=True)
    codes = grouper.ngroup().to_numpy()
    if codes.dtype.kind != "i" or (codes < 0).any():
        return None
    n_groups = grouper.ngroups
    sizes = np.bincount(codes, minlength=n_groups)
    if (grouper["order_id"].nunique().to_numpy() != sizes).any():
        return None
    rows = np.argsort(codes, kind="stable")  # each group's rows, in their order in `records`
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    labels = records["label_probs"].to_numpy()[rows]
    widths = np.fromiter((len(v) for v in labels), dtype=np.int64, count=len(labels))
    first_width = widths[starts]
    if (widths != np.repeat(first_width, sizes)).any():
        return None
    p_gold = records["p_gold"].to_numpy(dtype=float)[rows]
    sd_gold = np.full(n_groups, np.nan)
    sd_labels = np.full(n_groups, np.nan)
    spread = np.empty(n_groups)
    for size, width in sorted(set(zip(sizes.tolist(), first_width.tolist()))):
        block = np.flatnonzero((sizes == size) & (first_width == width))
        take = (starts[block][:, None] + np.arange(size)).ravel()
        if width:
            probs = stack_rows(labels[take], dtype=float).reshape(len(block), size, width)
            spread[block] = (probs.max(axis=1) - probs.min(axis=1)).max(axis=1)
        else:  # the loop's max over no labels raises; let it
            return None
        if size >= 2:
            sd_gold[block] = np.std(p_gold[take].reshape(len(block), size), axis=1, ddof=1)
            sd_labels[block] = np.std(probs, axis=1, ddof=1).mean(axis=1)
    keys = records[[*_GROUP, "seed"]].iloc[rows[starts]].reset_index(drop=True)
    return keys.assign(sd_gold=sd_gold, sd_labels=sd_labels, spread=spread, n_orders=sizes,
                       n_labels=first_width)


def accuracy_table(records: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and mean P(gold) of every (model, task, N, method) over all its rows.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, task, n_demos, method, accuracy, mean_p_gold, n``.
    """
    _validate_records(records, ["model", "task", "n_demos", "method", "correct", "p_gold"])
    grouped = records.groupby(["model", "task", "n_demos", "method"], sort=True)
    return grouped.agg(
        accuracy=("correct", "mean"), mean_p_gold=("p_gold", "mean"), n=("correct", "size")
    ).reset_index()
