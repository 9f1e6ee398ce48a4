"""Time hyptest and a naive loop on the same orders, one subtree of the order trie at a time.

Orders that share their first demo form a subtree; hyptest shares nothing across subtrees (the
prompt head is only BOS), so the sum over subtrees is the whole job. Each subtree runs hyptest
and the naive loop back to back, so a change of load on a shared machine hits both alike; the
best of the repeats is kept per subtree.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


@dataclass
class SubtreeTiming:
    """Summed best times over the timed subtrees and the outputs of both loops."""

    ours: np.ndarray
    naive: np.ndarray
    timed: list[int]
    n_subtrees: int
    n_chosen: int
    wall_ours: float = 0.0
    wall_naive: float = 0.0
    cpu_ours: float = 0.0
    cpu_naive: float = 0.0


def time_by_subtree(orders: Sequence[Sequence[Any]], shape: tuple[int, ...],
                    run_ours: Callable[[list[Any]], np.ndarray], run_naive: Callable[[list[Any]], np.ndarray], *,
                    repeats: int, naive_repeats: int, subtrees: int | None = None) -> SubtreeTiming:
    """Run both loops per subtree of ``orders`` (grouped by the id of their first demo)."""
    groups: dict[str, list[int]] = {}
    for i, order in enumerate(orders):
        groups.setdefault(order[0].id, []).append(i)
    chosen = list(groups.values())[:subtrees]
    out = SubtreeTiming(np.zeros((len(orders), *shape)), np.zeros((len(orders), *shape)),
                        sorted(i for members in chosen for i in members), len(groups), len(chosen))
    for members in chosen:
        part = [orders[i] for i in members]
        best_o = best_n = (float("inf"), float("inf"))
        for r in range(max(repeats, naive_repeats)):
            if r < repeats:
                w, c, res = timed(lambda: run_ours(part))
                best_o = min(best_o, (w, c))
                out.ours[members] = res
            if r < naive_repeats:
                w, c, res = timed(lambda: run_naive(part))
                best_n = min(best_n, (w, c))
                out.naive[members] = res
        out.wall_ours += best_o[0]
        out.cpu_ours += best_o[1]
        out.wall_naive += best_n[0]
        out.cpu_naive += best_n[1]
        print(f"  subtree of {len(part)} orders: hyptest {best_o[0]:7.2f} s (cpu {best_o[1]:7.2f}), naive "
              f"{best_n[0]:8.2f} s (cpu {best_n[1]:8.2f}), load {os.getloadavg()[0]:.1f}", flush=True)
    return out
