"""Power of a study design before running it (``hyptest power``).

Simulates the confirmatory decision of the study itself: for every simulated
study, P(gold) cubes (demo sets x orders x queries) of the reference and of
every compared method, for every (model, task, N) slice, from the model of
:mod:`hyptest.stats.power`; one :func:`hyptest.analysis.order.order_comparison` per
(slice, method, confirmatory analysis) with the study's margins, cluster
choice and order resampling; one :func:`hyptest.results.decide` over the
family with the study's alpha and adjustment. The verdicts are counted.

Reported: the probability of "different" at the assumed order SDs (pilot or
``--sd-*``), the probabilities of "equivalent" and of a false "different"
when every method has the reference's order SD (true ratio 1), and the
minimum detectable ratio (reference / method order SD, logit scale) with 80 %
power, each with a Monte-Carlo (Wilson) interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit

from ..analysis.order import order_comparison, uses_clusters
from ..analysis.slices import comparison_keys
from ..records import final_step_rows
from ..results import CONFIRMATORY, decide, monte_carlo_budget
from ..stats.power import (
    DEFAULT_RANK1_SHARE,
    estimate_order_effects,
    logits_from_draws,
    probability_scale_ratio,
    standard_draws,
    wilson_interval,
)
from ..study import MarginSpec, Study

__all__ = ["PowerDesign", "PowerReport", "design_of", "power_table", "simulate_verdicts"]

#: Confirmatory analyses that a P(gold) cube can feed (the others need label probabilities,
#: token agreement or vocabularies, which the generative model does not produce).
SIMULATED_ANALYSES: tuple[str, ...] = ("order_sensitivity", "log_variance_ratio")
#: Ratios (reference / method order SD, logit scale) searched for the minimum detectable ratio.
RATIO_GRID: tuple[float, ...] = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0)
#: Number of queries assumed for ``demos.n_queries: all`` unless given.
DEFAULT_ALL_QUERIES: int = 100


@dataclass(frozen=True)
class Slice:
    """One (model, task, N) of the design."""

    model: str
    task: str
    n_demos: int
    n_orders: int
    population: bool  # all N! orders run: orders are not resampled


@dataclass(frozen=True)
class PowerDesign:
    """What the simulated decision needs from the study."""

    slices: tuple[Slice, ...]
    n_sets: int
    n_queries: int
    reference: str
    methods: tuple[str, ...]
    analyses: tuple[str, ...]
    margins: dict[str, MarginSpec | None]
    alpha: float
    adjust: str
    cluster: bool
    n_resamples: int
    notes: tuple[str, ...] = ()

    @property
    def family_size(self) -> int:
        return len(self.slices) * len(self.methods) * len(self.analyses)

    @property
    def test(self) -> str:
        return ("exact sign-flip test over demo sets" if self.cluster
                else "two-stage bootstrap (orders, queries within demo sets)")


@dataclass
class PowerReport:
    """Result of :func:`power_table`."""

    table: pd.DataFrame  # one row per compared method, at the assumed order SDs
    null: dict[str, Any]  # every method at the reference's order SD (true ratio 1)
    mdr: dict[str, Any]  # minimum detectable ratio
    curve: pd.DataFrame  # power at each ratio searched
    design: PowerDesign
    parameters: dict[str, Any] = field(default_factory=dict)


def design_of(study: Study, *, n_queries_all: int | None = None, n_resamples: int | None = None) -> PowerDesign:
    """The design, family and decision settings of ``study``, as :func:`hyptest.analysis.order.run_analyses` sets them.

    Parameters
    ----------
    study : Study
    n_queries_all : int, optional
        Queries per demo set when the study says ``n_queries: all`` (default 100).
    n_resamples : int, optional
        Minimum Monte-Carlo resamples given to :func:`decide` (it still uses
        at least ``ceil(20 m / alpha)``); default ``max(1000, ceil(20 m / alpha))``,
        not the study's ``analysis.n_resamples`` (see :func:`power_table`).
    """
    a = study.analysis
    notes: list[str] = []
    unsupported = [x for x in a.confirmatory if x not in SIMULATED_ANALYSES]
    if unsupported:
        raise ValueError(f"power simulates the confirmatory order-SD analyses ({', '.join(SIMULATED_ANALYSES)}); "
                         f"analysis.confirmatory also lists {', '.join(unsupported)}, which it cannot simulate")
    analyses = tuple(x for x in SIMULATED_ANALYSES if x in a.confirmatory)
    names = study.method_names()
    if a.reference not in names:
        raise ValueError(f"the reference method {a.reference!r} is not among the study's methods")
    methods = tuple(n for n, m in zip(names, study.methods) if n != a.reference and m.kind != "zs")
    if not methods:
        raise ValueError("the study compares no method with the reference")
    models = [c.name for spec in study.models for c in spec.expand_checkpoints()]
    slices = []
    for model in models:
        for task in study.tasks:
            for n in study.demos.n_demos:
                total = math.factorial(n)
                n_orders = total if study.demos.n_orders == "all" else min(int(study.demos.n_orders), total)
                if n_orders < 2:
                    notes.append(f"N = {n}: a single order, no order analysis")
                    continue
                slices.append(Slice(model, task.name, int(n), int(n_orders), n_orders >= total))
    if not slices:
        raise ValueError("no (model, task, N) of the study has 2 or more orders")
    n_queries = study.demos.n_queries
    if n_queries == "all":
        n_queries = n_queries_all or DEFAULT_ALL_QUERIES
        notes.append(f"demos.n_queries is 'all': {n_queries} queries per demo set assumed")
    n_sets = study.demos.n_sets
    # the cluster choice of run_analyses (its m counts methods x slices)
    m_conf = len(slices) * len(methods)
    cluster = uses_clusters(a, n_sets, m_conf)
    m = len(slices) * len(methods) * len(analyses)
    return PowerDesign(
        slices=tuple(slices), n_sets=n_sets, n_queries=int(n_queries), reference=a.reference, methods=methods,
        analyses=analyses, margins=dict(a.margins), alpha=a.alpha, adjust=a.adjust, cluster=cluster,
        n_resamples=int(n_resamples) if n_resamples is not None else monte_carlo_budget(m, a.alpha, 1000),
        notes=tuple(notes),
    )


def simulate_verdicts(design: PowerDesign, sds: dict[str, float], *, sd_ref: float,
                      rank1_share: dict[str, float] | float = DEFAULT_RANK1_SHARE, between_query_sd: float = 1.0,
                      mean_logit: float = 0.0, n_simulations: int = 200, seed: int = 0) -> pd.DataFrame:
    """Decide ``n_simulations`` simulated studies of ``design``; one row per (simulation, comparison).

    Simulation ``i``, slice ``j`` draws its standard normals from
    ``default_rng([seed, i, j])`` whatever the SDs, so scenarios share random
    numbers. Columns: ``simulation``, ``model``, ``task``, ``n_demos``,
    ``method``, ``analysis``, ``estimate``, ``mean_a``, ``mean_b``,
    ``p_value``, ``p_adjusted``, ``p_equivalence_adjusted``, ``verdict``.
    """
    methods = design.methods
    shares = [rank1_share.get(m, DEFAULT_RANK1_SHARE) if isinstance(rank1_share, dict) else rank1_share
              for m in (design.reference, *methods)]
    scale = [sd_ref, *(sds[m] for m in methods)]
    rows = []
    for i in range(int(n_simulations)):
        comparisons = []
        for j, sl in enumerate(design.slices):
            draws = standard_draws(1 + len(methods), design.n_sets, sl.n_orders, design.n_queries,
                                   np.random.default_rng([seed, i, j]))
            cubes = expit(logits_from_draws(draws, scale, rank1_share=shares, between_query_sd=between_query_sd,
                                            mean_logit=mean_logit))
            for k, method in enumerate(methods, start=1):
                keys = comparison_keys(sl.model, sl.task, sl.n_demos, design.reference, method)
                for analysis in design.analyses:
                    comparisons.append(order_comparison(
                        cubes[0], cubes[k], keys=keys, analysis=analysis, family=CONFIRMATORY,
                        margin=design.margins.get(analysis), cluster=design.cluster,
                        resample_orders=not sl.population))
        table, _ = decide(comparisons, alpha=design.alpha, adjust=design.adjust, n_resamples=design.n_resamples,
                          seed=seed * 1_000_003 + i)
        table = table[["model", "task", "n_demos", "method_b", "analysis", "estimate", "mean_a", "mean_b",
                       "p_value", "p_adjusted", "p_equivalence_adjusted", "verdict"]].rename(
            columns={"method_b": "method"})
        table.insert(0, "simulation", i)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def _rate(verdicts: pd.DataFrame, verdict: str, n_simulations: int) -> tuple[float, float, float]:
    """Proportion of comparisons with ``verdict`` and its Wilson interval, counting each simulated study once.

    Pooling several comparisons of one simulated study makes the proportion
    more precise than one comparison per study; counting the study once keeps
    the interval conservative.
    """
    p = float((verdicts["verdict"] == verdict).mean())
    low, high = wilson_interval(p * n_simulations, n_simulations)
    return p, low, high


def power_table(
    study: Study,
    *,
    pilot_dir: str | Path | None = None,
    sd_icl: float | None = None,
    sd_gd: float | None = None,
    between_query_sd: float | None = None,
    n_simulations: int = 200,
    n_search_simulations: int | None = None,
    n_resamples: int | None = None,
    target_power: float = 0.8,
    ratios: Sequence[float] = RATIO_GRID,
    seed: int = 0,
) -> PowerReport:
    """Simulated operating characteristics of the study's confirmatory decision.

    Parameters
    ----------
    study : Study
        The design (sets, orders, queries, methods, N, models, tasks) and the
        decision settings (alpha, adjust, margins, bootstrap, confirmatory).
    pilot_dir : path, optional
        A run directory with ``per_order.parquet``: order SD and rank-1 share
        per method, between-query SD and mean logit (see
        :func:`hyptest.stats.power.estimate_order_effects`).
    sd_icl, sd_gd : float, optional
        Order SD (logit scale) of the reference and of every compared method,
        overriding the pilot's.
    between_query_sd : float, optional
        SD of query baselines (logit scale); default the pilot's, else 1.0.
    n_simulations : int
        Simulated studies at the assumed SDs and at ratio 1 (default 200:
        Monte-Carlo SE of a power near 0.8 about 0.03).
    n_search_simulations : int, optional
        Simulated studies per ratio of the search (default ``max(50, n_simulations // 2)``).
    n_resamples : int, optional
        See :func:`design_of`. The default ``max(1000, ceil(20 m / alpha))`` is
        below a study's usual 10 000 to keep the run time moderate; it changes
        only the Monte-Carlo error of each simulated p-value, not the test.
    target_power : float
        Power for the minimum detectable ratio.
    ratios : sequence of float
        Ratios (reference / method order SD, logit scale, > 1) searched by
        bisection, for the first ratio whose simulated power, and the
        Wilson upper and lower ends of it, reach ``target_power`` (the power
        rises with the ratio; common random numbers keep the simulated curve
        nearly monotone).
    seed : int
        Root seed (common random numbers across scenarios).
    """
    design = design_of(study, n_resamples=n_resamples)
    ref = design.reference
    shares: dict[str, float] = {}
    mean_logit = 0.0
    order_sd: dict[str, float] = {}
    if pilot_dir is not None:
        path = Path(pilot_dir) / "per_order.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; --pilot takes a run directory of `hyptest study`")
        effects = estimate_order_effects(final_step_rows(pd.read_parquet(path)), reference=ref)
        order_sd = dict(effects.order_sd)
        shares = {m: v for m, v in effects.rank1_share.items() if math.isfinite(v)}
        mean_logit = effects.mean_logit
        if between_query_sd is None and math.isfinite(effects.between_query_sd):
            between_query_sd = effects.between_query_sd
    if sd_icl is not None:
        order_sd[ref] = float(sd_icl)
    if sd_gd is not None:
        order_sd.update({m: float(sd_gd) for m in design.methods})
    missing = [m for m in (ref, *design.methods) if m not in order_sd]
    if missing:
        raise ValueError(f"power needs the order SD (logit scale) of {', '.join(missing)}: give --pilot RUN_DIR "
                         "or --sd-icl and --sd-gd")
    if any(not (math.isfinite(v) and v >= 0) for v in order_sd.values()) or order_sd[ref] <= 0:
        raise ValueError(f"order SDs must be finite and >= 0 (the reference's > 0), got {order_sd}")
    bq = 1.0 if between_query_sd is None else float(between_query_sd)
    sd_ref = order_sd[ref]
    common = dict(rank1_share=shares or DEFAULT_RANK1_SHARE, between_query_sd=bq, mean_logit=mean_logit, seed=seed)
    n_orders = design.slices[-1].n_orders
    share_of = (lambda m: shares.get(m, DEFAULT_RANK1_SHARE))

    assumed = simulate_verdicts(design, {m: order_sd[m] for m in design.methods}, sd_ref=sd_ref,
                                n_simulations=n_simulations, **common)
    rows = []
    for method in design.methods:
        sub = assumed[assumed["method"] == method]
        p, low, high = _rate(sub, "different", n_simulations)
        pe, pe_low, pe_high = _rate(sub, "equivalent", n_simulations)
        sd_m = order_sd[method]
        rows.append({
            "method": method, "sd_icl_logit": sd_ref, "sd_method_logit": sd_m,
            "ratio_logit": sd_ref / sd_m if sd_m > 0 else math.inf,
            "ratio_p_gold": probability_scale_ratio(sd_ref, sd_m, n_orders=n_orders, n_queries=design.n_queries,
                                                    rank1_share=[share_of(ref), share_of(method)],
                                                    between_query_sd=bq, mean_logit=mean_logit),
            "p_different": p, "p_different_low": low, "p_different_high": high,
            "p_equivalent": pe, "p_equivalent_low": pe_low, "p_equivalent_high": pe_high,
            "median_estimate": float(np.median(sub["estimate"])),
            "n_simulations": n_simulations,
        })
    table = pd.DataFrame(rows)

    null_sds = {m: sd_ref for m in design.methods}
    null = simulate_verdicts(design, null_sds, sd_ref=sd_ref, n_simulations=n_simulations, **common)
    pe, pe_low, pe_high = _rate(null, "equivalent", n_simulations)
    pd_, pd_low, pd_high = _rate(null, "different", n_simulations)
    fwer = float(null.groupby("simulation")["verdict"].apply(lambda v: (v == "different").any()).mean())
    null_summary = {"p_equivalent": pe, "p_equivalent_low": pe_low, "p_equivalent_high": pe_high,
                    "p_different": pd_, "p_different_low": pd_low, "p_different_high": pd_high,
                    "familywise_different": fwer, "n_simulations": n_simulations}

    n_search = n_search_simulations or max(50, n_simulations // 2)
    grid = [1.0, *sorted(float(r) for r in ratios)]
    points: dict[int, dict[str, Any]] = {0: {"ratio": 1.0, "power": pd_, "low": pd_low, "high": pd_high,
                                             "n_simulations": n_simulations}}

    def point(k: int) -> dict[str, Any]:
        if k not in points:
            verdicts = simulate_verdicts(design, {m: sd_ref / grid[k] for m in design.methods}, sd_ref=sd_ref,
                                         n_simulations=n_search, **common)
            p, low, high = _rate(verdicts, "different", n_search)
            points[k] = {"ratio": grid[k], "power": p, "low": low, "high": high, "n_simulations": n_search}
        return points[k]

    for column in ("power", "high", "low"):  # binary searches over the grid (power rises with the ratio)
        _first_reaching(lambda k, c=column: point(k)[c] >= target_power, len(grid))
    curve = pd.DataFrame([points[k] for k in sorted(points)])
    curve["ratio_p_gold"] = [probability_scale_ratio(sd_ref, sd_ref / r, n_orders=n_orders,
                                                     n_queries=design.n_queries, rank1_share=share_of(ref),
                                                     between_query_sd=bq, mean_logit=mean_logit)
                             for r in curve["ratio"]]
    mdr = _minimum_detectable(curve, target_power)
    parameters = {"sd_icl": sd_ref, "order_sd": order_sd, "rank1_share": shares or DEFAULT_RANK1_SHARE,
                  "between_query_sd": bq, "mean_logit": mean_logit, "pilot": str(pilot_dir) if pilot_dir else None,
                  "target_power": target_power, "seed": seed}
    return PowerReport(table=table, null=null_summary, mdr=mdr, curve=curve, design=design, parameters=parameters)


def _first_reaching(reaches: Any, n: int) -> int | None:
    """Smallest index ``k < n`` with ``reaches(k)``, by bisection (``reaches`` monotone); None if none."""
    if not reaches(n - 1):
        return None
    lo, hi = -1, n - 1  # reaches(hi) is true; reaches(lo) false (or lo = -1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _minimum_detectable(curve: pd.DataFrame, target: float) -> dict[str, Any]:
    """Ratio where the power curve crosses ``target`` (log-linear interpolation between grid points).

    The interval runs from the first ratio whose Wilson upper end reaches the
    target to the first whose lower end does (``inf`` if none did): the
    Monte-Carlo interval at the grid's resolution.
    """
    r = curve["ratio"].to_numpy(float)
    p = curve["power"].to_numpy(float)
    above = np.flatnonzero(p >= target)
    rp = curve["ratio_p_gold"].to_numpy(float)
    if len(above) == 0:
        estimate = estimate_p = math.inf
    else:
        k = int(above[0])
        if k == 0:
            estimate, estimate_p = float(r[0]), float(rp[0])
        else:
            t = (target - p[k - 1]) / (p[k] - p[k - 1])
            estimate = float(math.exp(math.log(r[k - 1]) + t * (math.log(r[k]) - math.log(r[k - 1]))))
            estimate_p = float(math.exp(math.log(rp[k - 1]) + t * (math.log(rp[k]) - math.log(rp[k - 1]))))
    reach_high = np.flatnonzero(curve["high"].to_numpy(float) >= target)
    reach_low = np.flatnonzero(curve["low"].to_numpy(float) >= target)
    return {"ratio": estimate, "ratio_p_gold": estimate_p,
            "low": float(r[reach_high[0]]) if len(reach_high) else math.inf,
            "high": float(r[reach_low[0]]) if len(reach_low) else math.inf,
            "target_power": target}
