"""Rules about unit records that every stage shares (collect writes them, analysis and workflows read them)."""

from __future__ import annotations

import pandas as pd

__all__ = ["final_step_rows"]

#: Columns that identify one unit's scoring of one query, apart from ``step``.
_UNIT_COLUMNS = ("unit_key", "model", "task", "method", "n_demos", "demo_set", "order_id", "seed")


def final_step_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of every unit at its largest ``step``: the unit's final answer.

    Units collected with ``record_steps`` hold rows for steps 0..K; every
    analysis of a unit's *result* should use only step K. Units are told apart
    by whichever of ``unit_key, model, task, method, n_demos, demo_set,
    order_id, seed`` the frame has (so imported logs without ``unit_key``
    work too).

    Parameters
    ----------
    frame : pandas.DataFrame
        Long-format records.

    Returns
    -------
    pandas.DataFrame
        The selected rows, in their original order and with their original
        index; ``frame`` itself when it has no ``step`` column.
    """
    if "step" not in frame.columns or frame.empty:
        return frame
    keys = [c for c in _UNIT_COLUMNS if c in frame.columns]
    if not keys:
        return frame[frame["step"] == frame["step"].max()]
    last = frame.groupby(keys, dropna=False, sort=False)["step"].transform("max")
    return frame[frame["step"] == last]
