"""Dai et al.'s Kendall over demonstration tokens, from the logs hyptest's Dai collector writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from ..importers.dai import RECORD_FILE, find_dai_tasks
from ..metrics.dai import kendall_attention, kendall_random_baseline

__all__ = ["kendall_demo_values"]

def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _demo_rows(path: Path) -> Iterator[tuple[int, np.ndarray, list[int]]]:
    with open(path, encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "demo_attn" not in obj or "demo_lengths" not in obj:
                raise ValueError(f"{path}, line {index + 1}: no 'demo_attn' / 'demo_lengths' (written by "
                                 "hyptest.collect.dai.collect_dai_records)")
            yield index, np.asarray(obj["demo_attn"], dtype=np.float64), [int(n) for n in obj["demo_lengths"]]


def kendall_demo_values(path: str | Path, *, rng: np.random.Generator | int | Sequence[np.random.Generator] = 0
                        ) -> pd.DataFrame:
    """Dai et al.'s Kendall of attention to demonstration tokens, ICL vs FT, per example and layer.

    Parameters
    ----------
    path : str or Path
        Logs written by :func:`hyptest.collect.dai.collect_dai_records` (``ana_rlt``, a folder
        holding it, a model folder or a task folder; see
        :func:`hyptest.importers.dai.find_dai_tasks`).
    rng : numpy.random.Generator, int or sequence of Generator, default 0
        Source of the random baselines; task ``t`` (sorted (model, task)
        order) uses child ``t`` of ``rng.spawn(n_tasks)`` (or, given one
        Generator per task, the ``t``-th), which spawns one stream per
        analysis, drawn one example at a time in file order.

    Returns
    -------
    pandas.DataFrame
        Columns ``model``, ``task``, ``analysis``, ``example``, ``layer``,
        ``value``, ``baseline`` (the layout of
        ``hyptest.workflows.reanalyse.DaiValues.values``), with ``analysis``:

        ``kendall_demo_token``
            Kendall tau-b between the ``icl`` and ``ftzs`` ``demo_attn`` rows
            of each layer (one entry per demo token; a rank statistic, so the
            softmax Dai applies first changes nothing); baseline: the ICL row
            against i.i.d. uniform weights.  Dai's ``level='token'``.
        ``kendall_demo_example``
            Each row soft-maxed over all demo tokens, summed over each demo's
            tokens, then tau-b over the demos (needs at least 2 demos);
            baseline as above.  Dai's ``level='example'``.

    Raises
    ------
    ValueError
        If no task folder is found, a record lacks the demo keys, or the
        ``icl`` and ``ftzs`` files disagree (lines, demo lengths, shapes).
    """
    tasks = find_dai_tasks(path)
    if not tasks:
        raise ValueError(f"{path}: no Dai et al. log found (zs, icl, ftzs folders)")
    if isinstance(rng, (list, tuple)):
        if len(rng) != len(tasks):
            raise ValueError(f"{len(rng)} generators given for {len(tasks)} task folders")
        children = list(rng)
    else:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(int(rng))
        children = gen.spawn(len(tasks))
    frames = []
    for task, child in zip(tasks, children):
        g_token, g_example = child.spawn(2)
        files = {s: task.path / s / RECORD_FILE for s in ("icl", "ftzs")}
        rows: list[dict[str, Any]] = []
        icl_rows, ft_rows = list(_demo_rows(files["icl"])), list(_demo_rows(files["ftzs"]))
        if len(icl_rows) != len(ft_rows):
            raise ValueError(f"{task.path}: icl has {len(icl_rows)} records, ftzs {len(ft_rows)}")
        for (index, icl, lengths), (_, ft, ft_lengths) in zip(icl_rows, ft_rows):
            if lengths != ft_lengths or icl.shape != ft.shape or icl.ndim != 2 or icl.shape[1] != sum(lengths):
                raise ValueError(f"{task.path}, example {index}: icl and ftzs demo_attn / demo_lengths disagree "
                                 f"({icl.shape}, {ft.shape}, {lengths}, {ft_lengths})")
            values = {"kendall_demo_token": (kendall_attention(icl, ft), kendall_random_baseline(icl, rng=g_token))}
            if len(lengths) >= 2:
                cuts = np.cumsum(lengths)[:-1]
                icl_ex = np.stack([s.sum(axis=-1) for s in np.split(_softmax(icl), cuts, axis=-1)], axis=-1)
                ft_ex = np.stack([s.sum(axis=-1) for s in np.split(_softmax(ft), cuts, axis=-1)], axis=-1)
                values["kendall_demo_example"] = (kendall_attention(icl_ex, ft_ex),
                                                  kendall_random_baseline(icl_ex, rng=g_example))
            for analysis, (value, base) in values.items():
                for layer in range(len(value)):
                    rows.append({"model": task.model, "task": task.task, "analysis": analysis, "example": index,
                                 "layer": layer, "value": float(value[layer]), "baseline": float(base[layer])})
        frames.append(pd.DataFrame(rows, columns=["model", "task", "analysis", "example", "layer", "value",
                                                  "baseline"]))
    return pd.concat(frames, ignore_index=True)
