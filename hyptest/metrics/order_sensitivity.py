"""Order sensitivity: how much a method's outputs move when only the demo order changes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validation import validate_frame

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
    per_seed = pd.DataFrame(
        rows, columns=[*_GROUP, "seed", "sd_gold", "sd_labels", "spread", "n_orders", "n_labels"]
    )
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
