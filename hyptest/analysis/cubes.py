"""Long-format records to (demo set, order, query[, label]) cubes: what every order analysis works on.

Its own module, below :mod:`hyptest.analysis.order` and :mod:`hyptest.workflows.adaptive`
(which analysis imports), so that both build cubes the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..metrics.rows import stack_rows

__all__ = ["order_cube"]


def order_cube(records: pd.DataFrame, method: str, column: str = "p_gold"
               ) -> tuple[np.ndarray, np.ndarray, list[Any], list[Any]]:
    """Outputs of one method as a (demo set, order, query[, label]) cube, seeds averaged.

    Queries are aligned by position within each demo set, so demo sets may have
    different queries (and different numbers of them): ``mask`` (sets,
    queries) says which slots hold data. Orders, too, are positions within
    each demo set (an order of one set has nothing to do with the same
    ``order_id`` in another set), so order ids may be numbered per set or
    across sets alike.

    Returns
    -------
    cube, mask, sets, orders
        ``orders`` lists each set's order ids in position order, as
        ``(demo_set, order_id)`` pairs.
    """
    rows = records[records["method"] == method]
    if column == "label_probs" and not rows.duplicated(["demo_set", "order_id", "query_id"]).any():
        # one row per cell (one seed): nothing to average, so no per-cell Python call
        table = rows.set_index(["demo_set", "order_id", "query_id"])["label_probs"].sort_index()
    elif column == "label_probs":
        values = rows.assign(_v=rows["label_probs"].map(lambda v: np.asarray(v, dtype=float)))
        table = values.groupby(["demo_set", "order_id", "query_id"])["_v"].apply(
            lambda s: np.mean(np.stack(s.to_list()), axis=0))
    else:
        table = rows.groupby(["demo_set", "order_id", "query_id"])[column].mean()
    keys = table.index.to_frame(index=False)
    sets = sorted(keys["demo_set"].unique())
    orders, order_pos = _positions_in_set(keys, "order_id")
    _, slot = _positions_in_set(keys, "query_id")
    values = (stack_rows(table.to_numpy(), dtype=float) if column == "label_probs"
              else table.to_numpy(dtype=float)[:, None])
    cube = np.full((len(sets), int(order_pos.max()) + 1, int(slot.max()) + 1, values.shape[1]), np.nan)
    set_pos = pd.Index(sets).get_indexer(keys["demo_set"])
    cube[set_pos, order_pos, slot] = values
    mask = np.zeros((cube.shape[0], cube.shape[2]), dtype=bool)
    mask[set_pos, slot] = True
    cube[~np.broadcast_to(mask[:, None, :, None], cube.shape)] = 0.0
    return cube, mask, sets, orders


def _positions_in_set(keys: pd.DataFrame, column: str) -> tuple[list[tuple[Any, Any]], np.ndarray]:
    """Each row's position among its demo set's distinct ``column`` values, sorted.

    Returns the ``(demo_set, value)`` pairs in position order and, per row of
    ``keys``, the position of its value within its set (0, 1, ...).
    """
    distinct = keys[["demo_set", column]].drop_duplicates()  # few pairs: sort and number those, not every row
    pairs = sorted(set(zip(distinct["demo_set"], distinct[column])))
    position: dict[tuple[Any, Any], int] = {}
    counts: dict[Any, int] = {}
    for pair in pairs:
        position[pair] = counts.get(pair[0], 0)
        counts[pair[0]] = position[pair] + 1
    rows = (pd.MultiIndex.from_tuples(pairs, names=["demo_set", column])
            .get_indexer(pd.MultiIndex.from_frame(keys[["demo_set", column]]))) if pairs else np.zeros(0, np.int64)
    if (rows < 0).any():  # a value pandas matches differently from Python's == : one dictionary look-up per row
        return pairs, np.fromiter((position[p] for p in zip(keys["demo_set"], keys[column])), dtype=np.int64,
                                  count=len(keys))
    return pairs, np.fromiter((position[p] for p in pairs), dtype=np.int64, count=len(pairs))[rows]
