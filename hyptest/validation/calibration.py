"""Monte-Carlo calibration of the confirmatory decision, as the analysis runs it.

Simulated studies go through the real code path of the confirmatory family:
one :func:`hyptest.analysis.order.order_comparison` per (slice, method vs ICL) on
cubes of P(gold) of shape (sets, orders, queries), then one
:func:`hyptest.results.decide` over the family (Holm, TOST on ``±log 1.25``,
the family's Monte-Carlo budget). Nothing of the decision is re-implemented
here; this module only simulates outputs with known truth and counts verdicts.

Simulated outputs
-----------------
A *slice* is one (model, task, N): ``n_sets`` demo sets, each with
``n_queries`` queries and a finite **population of orders** (all ``N!``
orders, or ``POPULATION_CAP`` of them drawn at random when ``N!`` is larger).
ICL and every compared method are scored under the *same* ``n_orders`` orders,
drawn without replacement from each set's population (all of them when
``n_orders`` equals ``N!``, and then the analysis does not resample orders).
On the logit scale, for demo set ``s``, order ``o`` and query ``q``::

    logit p_k[s, o, q] = mu[s, q] + delta_k[s, q]
                         + c_k[s] * (u_k[s, o] * v[s, q] + noise_sd * e_k[s, o, q])

* ``mu ~ N(mu_mean, mu_sd)``: the query's baseline; ``delta_k ~ N(0,
  shift_sd)``: the method's own offset (0 for ICL);
* ``u_k[s, o] ~ N(0, 1)``: the **per-order factor**, one per (set, order),
  shared by every query of the set (rank-1 order effects: all queries of a set
  move together under an order); ``corr(u_icl, u_k) = rho`` order by order
  (``rho = 0``: independent order effects; ``rho > 0``: the methods react to
  the same orders alike); ``v[s, q] ~ N(loading_mean, loading_sd)``: how much
  query ``q`` follows its set's order factor;
* ``e_k ~ N(0, 1)``: small order x query noise (correlated ``rho`` across methods too);
* ``c_icl[s] = order_sd * exp(set_sd * g_s)``, ``g_s ~ N(0, 1)``: the order
  scale varies between demo sets; ``c_k[s]`` is solved (bisection) so that the
  **true ratio** in set ``s`` is the planted ``R``.

Estimand (``true_log_ratio``): conditional on the sampled demo sets, queries and
per-query parameters, ``log(sum_{s,q} SD_icl[s, q] / sum_{s,q} SD_k[s, q])``
where ``SD[s, q]`` is the SD of P(gold) over the set's whole population of
orders. ``c_k`` is tuned so that the within-set ratio equals ``R`` in every
set, hence the pooled ratio is ``R`` too (``population_log_ratio`` recomputes
it from the populations; the tests check it). The ratio does not depend on the
ddof convention of the SDs.

Scenarios: ``R = 1`` (null: "different" is a false verdict), ``R = 1.25``
(the equivalence boundary: "equivalent" is a false verdict), ``R = 1.5`` and
``R = 2`` (power), and the exact control with every method order-invariant
(all SDs 0: the analysis must say "equivalent").

A **family** of size ``m`` is ``m`` comparisons filling independent slices of
the design in turn (the default study: 3 methods per slice, each against the
slice's one ICL cube; shen_metrics: 6 methods per slice, slices cycling over
N = 4, 8, 2), all with the same planted ``R``. Rates are counted per family
(any false verdict) and per comparison, with Clopper-Pearson 95 % intervals.
``hyptest calibrate`` runs it; docs/calibration.md has the measured table.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from ..analysis.order import _complete_slots, order_comparison
from ..analysis.slices import comparison_keys
from ..results import CONFIRMATORY, decide, monte_carlo_budget
from ..study import MarginSpec

__all__ = [
    "DESIGNS",
    "POPULATION_CAP",
    "SCENARIOS",
    "CalibrationDesign",
    "OutputModel",
    "SimulatedSlice",
    "SliceDesign",
    "calibrate",
    "clopper_pearson",
    "markdown_table",
    "population_log_ratio",
    "run_family",
    "simulate_slice",
]

#: Orders per population when N! is larger (N = 8: 1024 of the 40320 orders, drawn at random).
POPULATION_CAP = 1024

#: Scenario name -> planted ratio ICL / method (None: every method order-invariant).
SCENARIOS: dict[str, float | None] = {
    "invariant": None, "null": 1.0, "boundary": 1.25, "power_1.5": 1.5, "power_2": 2.0,
}


@dataclass(frozen=True)
class SliceDesign:
    """One (model, task, N) of a study: its demo sets, orders, queries and compared methods."""

    n_demos: int
    n_sets: int
    n_orders: int
    n_queries: int
    n_methods: int

    @property
    def population(self) -> int:
        """Orders in each set's population: N!, capped at :data:`POPULATION_CAP`."""
        return min(math.factorial(self.n_demos), POPULATION_CAP)

    @property
    def resample_orders(self) -> bool:
        """As the analysis decides it: orders are resampled unless all N! were run."""
        return self.n_orders < math.factorial(self.n_demos)


@dataclass(frozen=True)
class CalibrationDesign:
    """A study shape: its slices, used in turn to fill a family."""

    name: str
    slices: tuple[SliceDesign, ...]
    description: str = ""


#: The default study (studies/order_sensitivity.yaml) and shen_metrics (studies/shen_metrics.yaml; N = 1
#: has one order and no order analysis, zero-shot is not compared; gd, 2 x sgd, adam, 2 x gd_hat = 6 methods).
DESIGNS: dict[str, CalibrationDesign] = {
    "default": CalibrationDesign(
        "default", (SliceDesign(n_demos=4, n_sets=2, n_orders=8, n_queries=32, n_methods=3),),
        "2 demo sets x 8 of the 4! = 24 orders x 32 queries, 3 methods vs ICL per slice"),
    "shen": CalibrationDesign(
        "shen", (SliceDesign(4, 2, 4, 16, 6), SliceDesign(8, 2, 4, 16, 6), SliceDesign(2, 2, 2, 16, 6)),
        "2 demo sets x 16 queries; N = 4 (4 of 24 orders), N = 8 (4 of 8!), N = 2 (both orders: not "
        "resampled), 6 methods vs ICL per slice; a family of 18 is the whole study"),
}


@dataclass(frozen=True)
class OutputModel:
    """Parameters of the logit-scale output model (see the module docstring)."""

    mu_mean: float = 0.5
    mu_sd: float = 1.5
    shift_sd: float = 0.3
    loading_mean: float = 1.0
    loading_sd: float = 0.5
    order_sd: float = 0.6
    set_sd: float = 0.4
    noise_sd: float = 0.3
    rho: float = 0.0


@dataclass
class SimulatedSlice:
    """One simulated slice: ICL's cube, each method's cube and the truths."""

    design: SliceDesign
    icl: np.ndarray                   # (sets, orders, queries) P(gold) under the sampled orders
    methods: list[np.ndarray]         # one cube per method, same orders
    true_log_ratio: list[float]       # per method, log(ICL / method) over the order populations
    orders: np.ndarray                # (sets, orders) indices of the sampled orders in each set's population
    populations: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # "icl", "m0", ... (S, P, Q)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _set_mean_sd(base: np.ndarray, order_part: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Mean over queries of the population SD over orders of sigmoid(base + scale * order_part), per set.

    ``base`` (S, 1, Q), ``order_part`` (S, P, Q), ``scale`` (..., S) -> (..., S).
    """
    p = _sigmoid(base + scale[..., None, None] * order_part)
    return p.std(axis=-2).mean(axis=-1)


def _solve_scale(base: np.ndarray, order_part: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Per-set scale c >= 0 whose mean population SD equals ``target``; None when no c up to 64 reaches it.

    The SD is 0 at c = 0 and continuous in c: the first point of a geometric grid
    at or above the target brackets a solution, found by bisection.
    """
    grid = 2.0 ** np.arange(-6, 6.25, 0.25)
    lo = np.zeros_like(target)
    hi = np.full_like(target, np.nan)
    for c in grid:
        missing = np.isnan(hi)
        if not missing.any():
            break
        reached = _set_mean_sd(base, order_part, np.full_like(target, c)) >= target
        hi = np.where(missing & reached, c, hi)
        lo = np.where(missing & ~reached, c, lo)
    if np.isnan(hi).any():
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        below = _set_mean_sd(base, order_part, mid) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def population_log_ratio(pop_icl: np.ndarray, pop_method: np.ndarray) -> float:
    """log(sum of per-query SDs of ICL / same of the method), SDs over the whole order populations (S, P, Q)."""
    return float(np.log(pop_icl.std(axis=1).sum() / pop_method.std(axis=1).sum()))


def simulate_slice(design: SliceDesign, ratio: float | Sequence[float] | None, model: OutputModel,
                   rng: np.random.Generator, *, keep_populations: bool = False) -> SimulatedSlice:
    """Simulate ICL and ``design.n_methods`` methods on one slice with planted ratio ``ratio``.

    ``ratio`` is one ratio for every method or one per method (a mixed slice);
    ``ratio=None``: every method, ICL included, is order-invariant (the exact control).
    """
    S, P, Q, K = design.n_sets, design.population, design.n_queries, design.n_methods
    mu = rng.normal(model.mu_mean, model.mu_sd, size=(S, 1, Q))
    v = rng.normal(model.loading_mean, model.loading_sd, size=(S, 1, Q))
    u = rng.standard_normal((K + 1, S, P, 1))
    e = rng.standard_normal((K + 1, S, P, Q))
    r = model.rho
    u[1:] = r * u[0] + math.sqrt(1 - r * r) * u[1:]
    e[1:] = r * e[0] + math.sqrt(1 - r * r) * e[1:]
    order_part = u * v + model.noise_sd * e                      # (K+1, S, P, Q)
    base = np.concatenate([np.zeros((1, S, 1, Q)), rng.normal(0.0, model.shift_sd, size=(K, S, 1, Q))]) + mu
    if design.resample_orders:
        idx = np.stack([rng.choice(P, size=design.n_orders, replace=False) for _ in range(S)])
    else:
        idx = np.tile(np.arange(design.n_orders), (S, 1))
    take = idx[:, :, None]
    if ratio is None:
        flat = [np.broadcast_to(_sigmoid(base[k]), (S, design.n_orders, Q)).copy() for k in range(K + 1)]
        return SimulatedSlice(design, flat[0], flat[1:], [0.0] * K, idx)
    ratios = [float(ratio)] * K if np.ndim(ratio) == 0 else [float(x) for x in ratio]  # type: ignore[arg-type, union-attr]
    if len(ratios) != K:
        raise ValueError(f"give one ratio or one per method ({K}), got {len(ratios)}")
    c_icl = model.order_sd * np.exp(model.set_sd * rng.standard_normal(S))
    icl_sd = _set_mean_sd(base[0], order_part[0], c_icl)
    pops, cubes, truths = {}, [], []
    pop_icl = _sigmoid(base[0] + c_icl[:, None, None] * order_part[0])
    for k in range(1, K + 1):
        target = icl_sd / ratios[k - 1]
        c_k = _solve_scale(base[k], order_part[k], target)
        for _ in range(100):  # a population whose orders barely differ (e.g. 2 orders) cannot reach it: redraw
            if c_k is not None:
                break
            u_k = r * u[0] + math.sqrt(1 - r * r) * rng.standard_normal((S, P, 1))
            e_k = r * e[0] + math.sqrt(1 - r * r) * rng.standard_normal((S, P, Q))
            order_part[k] = u_k * v + model.noise_sd * e_k
            c_k = _solve_scale(base[k], order_part[k], target)
        if c_k is None:
            raise ValueError("the planted ratio cannot be reached: the method's outputs saturate")
        pop = _sigmoid(base[k] + c_k[:, None, None] * order_part[k])
        cubes.append(np.take_along_axis(pop, take, axis=1))
        truths.append(population_log_ratio(pop_icl, pop))
        if keep_populations:
            pops[f"m{k - 1}"] = pop
    if keep_populations:
        pops["icl"] = pop_icl
    return SimulatedSlice(design, np.take_along_axis(pop_icl, take, axis=1), cubes, truths, idx, pops)


def _drop_cells(icl: np.ndarray, cube: np.ndarray, missing: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Lose each (set, query) slot of either method, under every order, with probability ``missing``
    (a model that lacks some documents), then keep what the analysis keeps: the slots complete in both
    (``analysis._complete_slots``)."""
    a, b = icl.copy(), cube.copy()
    for c in (a, b):
        lost = rng.random((c.shape[0], c.shape[2])) < missing
        c[np.broadcast_to(lost[:, None, :], c.shape)] = np.nan
    mask = np.ones((a.shape[0], a.shape[2]), dtype=bool)
    kept = _complete_slots(a[..., None], b[..., None], a[..., None], mask)
    if kept is None:
        return None
    return kept[0][..., 0], kept[1][..., 0], kept[3]


def run_family(design: CalibrationDesign, family_size: int, ratio: float | None, model: OutputModel,
               seed: int | Sequence[int], *, n_resamples: int = 10000, alpha: float = 0.05,
               cluster: bool = False, missing: float = 0.0) -> pd.DataFrame:
    """One simulated family through order_comparison + decide; one row per comparison.

    ``missing`` > 0 loses each (set, query) slot of ICL and of each method
    independently with that probability, under every order (missing
    completely at random, as in imported logs where a model lacks some
    documents) and compares on the slots complete in both, as the analysis
    does.

    Columns: ``slice``, ``verdict``, ``estimate``, ``truth`` (true log ratio),
    ``ci_low``, ``ci_high``, ``ci_level``, ``p_value``, ``p_equivalence``.
    """
    rng = np.random.default_rng(seed)
    comparisons, truths, slices = [], [], []
    slice_no = 0
    while len(comparisons) < family_size:
        sd = design.slices[slice_no % len(design.slices)]
        sim = simulate_slice(sd, ratio, model, rng)
        for j, (cube, truth) in enumerate(zip(sim.methods, sim.true_log_ratio)):
            if len(comparisons) == family_size:
                break
            keys = comparison_keys(f"sim{slice_no}", "sim", sd.n_demos, "icl", f"method{j}")
            icl, mask = sim.icl, None
            if missing > 0:
                kept = _drop_cells(sim.icl, cube, missing, rng)
                if kept is None:
                    continue
                icl, cube, mask = kept
            comparisons.append(order_comparison(
                icl, cube, mask=mask, keys=keys, analysis="order_sensitivity", family=CONFIRMATORY,
                margin=MarginSpec(ratio=1.25), cluster=cluster, resample_orders=sd.resample_orders))
            truths.append(truth)
            slices.append(slice_no)
        slice_no += 1
    table, _ = decide(comparisons, alpha=alpha, adjust="holm", n_resamples=n_resamples,
                      seed=int(rng.integers(2**31)))
    out = table[["n_demos", "verdict", "estimate", "ci_low", "ci_high", "ci_level", "p_value", "p_equivalence"]].copy()
    out.insert(0, "slice", slices)
    out["truth"] = truths
    return out


def clopper_pearson(count: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial rate: statsmodels' ``proportion_confint(method="beta")``."""
    low, high = proportion_confint(count, n, alpha=1.0 - level, method="beta")
    return float(low), float(high)


def _one(args: tuple) -> pd.DataFrame:
    design, m, ratio, model, seed, n_resamples, alpha, cluster, missing = args
    return run_family(design, m, ratio, model, seed, n_resamples=n_resamples, alpha=alpha, cluster=cluster,
                      missing=missing)


def _rows(design: str, rho: float, m: int, scenario: str, ratio: float | None, families: list[pd.DataFrame],
          alpha: float, seconds: float) -> list[dict[str, Any]]:
    n = len(families)
    every = pd.concat(families, ignore_index=True)
    rejects_diff = every["verdict"].isin(["different", "negligible"])
    rejects_eq = every["verdict"].isin(["equivalent", "negligible"])
    fam = np.array([len(f) for f in families])
    cuts = np.cumsum(fam)[:-1]

    def per_family(flags: pd.Series) -> int:
        return int(sum(part.any() for part in np.split(flags.to_numpy(), cuts)))

    common = {"design": design, "rho": rho, "family_size": m, "scenario": scenario,
              "true_ratio": ratio, "n_sims": n, "seconds": seconds}
    out: list[dict[str, Any]] = []

    def add(quantity: str, unit: str, count: int, total: int, nominal: float | None, **extra: Any) -> None:
        low, high = clopper_pearson(count, total)
        out.append(common | {"quantity": quantity, "unit": unit, "count": count, "n": total,
                             "rate": count / total, "mc_low": low, "mc_high": high, "nominal": nominal} | extra)

    if ratio is None:
        add("equivalent (all SDs 0)", "family", sum(bool((f["verdict"] == "equivalent").all()) for f in families),
            n, 1.0)
        return out
    if ratio == 1.0:
        add("different", "family", per_family(rejects_diff), n, alpha)
        add("different", "comparison", int(rejects_diff.sum()), len(every), alpha)
    elif ratio == 1.25:
        add("equivalent", "family", per_family(rejects_eq), n, alpha)
        add("equivalent", "comparison", int(rejects_eq.sum()), len(every), alpha)
    else:
        add("different (power)", "comparison", int(rejects_diff.sum()), len(every), None)
    covered = (every["ci_low"] <= every["truth"]) & (every["truth"] <= every["ci_high"])
    add("CI covers true log ratio", "comparison", int(covered.sum()), len(every),
        float(every["ci_level"].mean()))
    return out


def calibrate(design: str | CalibrationDesign = "default", *, family_sizes: Sequence[int] = (1, 20, 150),
              n_sims: int | dict[int, int] = 200, scenarios: Sequence[str] = tuple(SCENARIOS),
              rhos: Sequence[float] = (0.0, 0.8), model: OutputModel | None = None, seed: int = 0,
              n_resamples: int = 10000, alpha: float = 0.05, cluster: bool = False,
              missing: float = 0.0, n_jobs: int | None = None, progress: Any = None) -> pd.DataFrame:
    """Calibrate the confirmatory decision on a design; one row per (rho, family size, scenario, quantity).

    Parameters
    ----------
    design : str or CalibrationDesign
        ``"default"`` or ``"shen"`` (see :data:`DESIGNS`).
    family_sizes : sequence of int
        Comparisons per family.
    n_sims : int or dict
        Simulated families per (rho, family size, scenario); a dict maps family size -> count.
        The order-invariant control runs at most 5 families (it is deterministic).
    scenarios : sequence of str
        Keys of :data:`SCENARIOS`.
    rhos : sequence of float
        Correlations of ICL's and the methods' per-order factors.
    n_resamples : int
        ``n_resamples`` passed to ``decide`` (the budget is ``max(n_resamples, ceil(20 m / alpha))``).
    missing : float
        Probability that a (set, query) slot of a method is missing under
        every order (completely at random); comparisons use the slots
        complete in both methods, as the analysis of imported logs does. 0: a
        full study.
    n_jobs : int, optional
        Worker processes (default: the CPU count).
    progress : callable, optional
        ``progress(done, total, label)`` after each cell.

    Returns
    -------
    pandas.DataFrame
        Columns ``design, rho, family_size, scenario, true_ratio, quantity, unit, count, n, rate,
        mc_low, mc_high, nominal, n_sims, seconds, budget, missing``.
    """
    spec = DESIGNS[design] if isinstance(design, str) else design
    if not 0 <= missing < 1:
        raise ValueError(f"`missing` must lie in [0, 1), got {missing!r}")
    base = model or OutputModel()
    jobs = n_jobs or os.cpu_count() or 1
    cells = [(rho, m, s) for rho in rhos for m in family_sizes for s in scenarios]
    if any(s not in SCENARIOS for s in scenarios):
        raise ValueError(f"scenarios must be among {tuple(SCENARIOS)}, got {tuple(scenarios)}")
    rows: list[dict[str, Any]] = []
    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    try:
        for i, (rho, m, scenario) in enumerate(cells):
            ratio = SCENARIOS[scenario]
            count = n_sims.get(m, 0) if isinstance(n_sims, dict) else int(n_sims)
            if ratio is None:
                if rho != rhos[0]:
                    continue
                count = min(count, 5)
            if count <= 0:
                continue
            key = [seed, round(rho * 1000), m, list(SCENARIOS).index(scenario)]
            args = [(spec, m, ratio, replace(base, rho=rho), key + [k], n_resamples, alpha, cluster, missing)
                    for k in range(count)]
            t0 = time.perf_counter()
            families = list(pool.map(_one, args)) if pool else [_one(a) for a in args]
            seconds = time.perf_counter() - t0
            for row in _rows(spec.name, rho, m, scenario, ratio, families, alpha, seconds):
                rows.append(row | {"budget": monte_carlo_budget(m, alpha, n_resamples), "missing": missing})
            if progress is not None:
                progress(i + 1, len(cells), f"{spec.name} rho={rho} m={m} {scenario}")
    finally:
        if pool is not None:
            pool.shutdown()
    return pd.DataFrame(rows)


def _fmt_rate(row: Any) -> str:
    return f"{row.rate:.3f} [{row.mc_low:.3f}, {row.mc_high:.3f}]"


def markdown_table(table: pd.DataFrame) -> str:
    """The calibration table in markdown (rates with Clopper-Pearson 95 % Monte-Carlo intervals)."""
    lines = ["| design | ρ | m | true ratio | quantity | per | rate [MC 95 %] | count / n | nominal | sims | B | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ratio = "— (all SD 0)" if r.true_ratio is None or pd.isna(r.true_ratio) else f"{r.true_ratio:g}"
        nominal = "—" if r.nominal is None or pd.isna(r.nominal) else (
            f"≤ {r.nominal:g}" if r.quantity in ("different", "equivalent") else f"{r.nominal:.3g}")
        lines.append(f"| {r.design} | {r.rho:g} | {r.family_size} | {ratio} | {r.quantity} | {r.unit} | "
                     f"{_fmt_rate(r)} | {r.count} / {r.n} | {nominal} | {r.n_sims} | {r.budget} | "
                     f"{r.seconds:.0f} |")
    return "\n".join(lines) + "\n"
