"""Monte-Carlo calibration of the adaptive (anytime-valid) confirmatory decision.

Simulates the adaptive design of ``collection: adaptive`` with the output
model of :mod:`hyptest.validation.calibration` (logit-scale outputs, rank-1 order effects
shared by every query of a demo set, demo-set variation of the order scale,
ICL and every method scored under the same orders, per-set ratio planted
exactly over each set's population of orders) and pushes it through the real
decision code: :func:`hyptest.analysis.adaptive.SetObservations`' statistic
(:func:`hyptest.stats.order_resampling.per_set_statistics`, clipped) and
:func:`hyptest.stats.anytime_family.monitor_family`, with a look after every
demo set (``check_every = 1``: continuous monitoring), until every
comparison is decided or its budget of ``max_sets`` sets is spent.

A family of ``m`` comparisons fills slices in turn (``n_methods`` methods per
slice share the slice's ICL outputs, as in a study); every demo set is a new,
independent draw (as the adaptive plan draws them), with ``orders`` distinct
orders drawn from its population of ``N!`` orders.

Counted per scenario: "different" at planted ratio 1 (a false difference)
and "equivalent" at the margin 1.25 (a false equivalence), per family (any)
and per comparison, with Clopper-Pearson 95 % intervals; power at larger
ratios; the mean number of sets each comparison used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .calibration import OutputModel, SliceDesign, clopper_pearson, simulate_slice
from ..stats.anytime import clipped_statistics
from ..stats.anytime_family import monitor_family
from ..stats.order_resampling import per_set_statistics

__all__ = ["AdaptiveDesign", "calibrate_adaptive", "markdown_table", "run_adaptive_family"]


@dataclass(frozen=True)
class AdaptiveDesign:
    """The adaptive design of one slice: N, orders per set, queries, methods, budget and bound."""

    n_demos: int = 4
    orders: int = 2
    n_queries: int = 32
    n_methods: int = 3
    max_sets: int = 32
    bound_ratio: float = 4.0
    margin_ratio: float = 1.25
    check_every: int = 1


def run_adaptive_family(design: AdaptiveDesign, family_size: int, ratio: float | Sequence[float],
                        model: OutputModel, seed: int | Sequence[int], *, alpha: float = 0.05,
                        adjust: str = "holm") -> pd.DataFrame:
    """One simulated adaptive family: one row per comparison (verdict, sets used, stopping status).

    ``ratio``: the planted ratio of every comparison, or one per method of a
    slice (a mixed family: e.g. ``(4, 4, 1)`` puts one null among strong effects
    in every slice).
    """
    rng = np.random.default_rng(seed)
    per_method = [float(ratio)] * design.n_methods if np.ndim(ratio) == 0 else [float(x) for x in ratio]  # type: ignore[arg-type, union-attr]
    truths: list[float] = []
    bound = math.log(design.bound_ratio)
    xs: list[np.ndarray] = []
    slices: list[int] = []
    slice_no = 0
    while len(xs) < family_size:
        sd = SliceDesign(n_demos=design.n_demos, n_sets=design.max_sets, n_orders=design.orders,
                         n_queries=design.n_queries, n_methods=design.n_methods)
        sim = simulate_slice(sd, per_method, model, rng)
        for cube, true in zip(sim.methods, per_method):
            if len(xs) == family_size:
                break
            xs.append(clipped_statistics(per_set_statistics(sim.icl, cube), bound))
            slices.append(slice_no)
            truths.append(true)
        slice_no += 1
    state = monitor_family(xs, bound=bound, margins=[math.log(design.margin_ratio)] * len(xs),
                           max_n=[design.max_sets] * len(xs), alpha=alpha, adjust=adjust,
                           check_every=design.check_every)
    return pd.DataFrame({
        "slice": slices,
        "true_ratio": truths,
        "verdict": [s.verdict for s in state.comparisons],
        "status": [s.status for s in state.comparisons],
        "n_sets": [s.n_used for s in state.comparisons],
        "estimate": [s.test.estimate(s.n_used) for s in state.comparisons],
    })


def _rows(label: str, rho: float, m: int, ratio: float | tuple[float, ...], families: list[pd.DataFrame], seconds: float,
          design: AdaptiveDesign) -> list[dict[str, Any]]:
    every = pd.concat(families, ignore_index=True)
    common = {"design": label, "rho": rho, "family_size": m,
              "true_ratio": ratio if np.ndim(ratio) == 0 else "/".join(f"{x:g}" for x in ratio), "n_sims": len(families),
              "orders": design.orders, "max_sets": design.max_sets, "mean_sets": float(every["n_sets"].mean()),
              "seconds": seconds}
    out = []

    def add(quantity: str, unit: str, flags: list[bool], nominal: float | None) -> None:
        count, total = int(sum(flags)), len(flags)
        low, high = clopper_pearson(count, total)
        out.append(common | {"quantity": quantity, "unit": unit, "count": count, "n": total, "rate": count / total,
                             "mc_low": low, "mc_high": high, "nominal": nominal})

    diff = lambda f: f["verdict"].isin(["different", "negligible"])  # noqa: E731
    eq = lambda f: f["verdict"].isin(["equivalent", "negligible"])  # noqa: E731
    if np.ndim(ratio) != 0:  # mixed: nulls (ratio 1) among effects
        null = lambda f: f["true_ratio"] == 1.0  # noqa: E731
        add("different (nulls)", "family", [bool((diff(f) & null(f)).any()) for f in families], 0.05)
        add("different (nulls)", "comparison", list(diff(every)[null(every)]), 0.05)
        add("different (power)", "comparison", list(diff(every)[~null(every)]), None)
    elif ratio == 1.0:
        add("different", "family", [bool(diff(f).any()) for f in families], 0.05)
        add("different", "comparison", list(diff(every)), 0.05)
    elif ratio == 1.25:
        add("equivalent", "family", [bool(eq(f).any()) for f in families], 0.05)
        add("equivalent", "comparison", list(eq(every)), 0.05)
    else:
        add("different (power)", "comparison", list(diff(every)), None)
    return out


def calibrate_adaptive(design: AdaptiveDesign | None = None, *, family_sizes: Sequence[int] = (3,),
                       ratios: Sequence[float | tuple[float, ...]] = (1.0, 1.25), rhos: Sequence[float] = (0.0, 0.8), n_sims: int = 200,
                       seed: int = 0, alpha: float = 0.05, adjust: str = "holm", label: str = "default") -> pd.DataFrame:
    """Error rates of the adaptive decision under continuous monitoring, with Monte-Carlo intervals.

    Returns
    -------
    pandas.DataFrame
        Columns ``design, rho, family_size, true_ratio, quantity, unit, count, n, rate, mc_low, mc_high,
        nominal, n_sims, orders, max_sets, mean_sets, seconds``.
    """
    design = design or AdaptiveDesign()
    rows: list[dict[str, Any]] = []
    for rho in rhos:
        for m in family_sizes:
            for ratio in ratios:
                t0 = time.perf_counter()
                key = [seed, round(rho * 1000), m, *[round(x * 1000) for x in np.atleast_1d(ratio)]]
                families = [run_adaptive_family(design, m, ratio, replace(OutputModel(), rho=rho), key + [k],
                                                alpha=alpha, adjust=adjust) for k in range(n_sims)]
                rows += _rows(label, rho, m, ratio, families, time.perf_counter() - t0, design)
    return pd.DataFrame(rows)


def _ratio_text(ratio: float | str) -> str:
    return ratio if isinstance(ratio, str) else f"{ratio:g}"


def markdown_table(table: pd.DataFrame) -> str:
    """The adaptive calibration table in markdown."""
    lines = ["| design | ρ | m | true ratio | quantity | per | rate [MC 95 %] | count / n | nominal | "
             "orders/set | max sets | mean sets used | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        nominal = "—" if r.nominal is None or pd.isna(r.nominal) else f"≤ {r.nominal:g}"
        lines.append(f"| {r.design} | {r.rho:g} | {r.family_size} | {_ratio_text(r.true_ratio)} | {r.quantity} | {r.unit} | "
                     f"{r.rate:.3f} [{r.mc_low:.3f}, {r.mc_high:.3f}] | {r.count} / {r.n} | {nominal} | "
                     f"{r.orders} | {r.max_sets} | {r.mean_sets:.1f} | {r.seconds:.0f} |")
    return "\n".join(lines) + "\n"
