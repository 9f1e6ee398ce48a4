"""Power of the order-sensitivity comparison, before running a study.

Simulates studies from a small generative model of per-order P(gold) (the
variance components are the inputs), runs the paired sign-flip permutation
test of :mod:`hyptest.stats.permutation` on each, and reports the rejection
rate.  :func:`variance_components_from_pilot` estimates the inputs from a
pilot.  Pure numpy/scipy/pandas; randomness only from the keyword-only
``rng``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np
from scipy.special import expit, ndtri

from hyptest.stats.permutation import (
    Alternative,
    _validate_alternative,
    _validate_positive_int,
    _validate_rng,
    paired_permutation_test,
)

if TYPE_CHECKING:  # pandas is imported lazily, by the pilot functions only
    import pandas as pd

__all__ = [
    "MinimumDetectableEffect",
    "PowerResult",
    "VarianceComponents",
    "minimum_detectable_effect",
    "simulate_power",
    "variance_components_from_pilot",
]

EffectScale = Literal["ratio", "difference"]

_SCALES: tuple[str, ...] = ("ratio", "difference")
_PILOT_COLUMNS: tuple[str, ...] = ("method", "demo_set", "order_id", "query_id", "p_gold")
#: Target number of simulated P(gold) values per method per vectorised block.
_BLOCK_ELEMENTS: int = 2**20


@dataclass(frozen=True, slots=True)
class PowerResult:
    """Simulated power of the paired order-sensitivity test.

    Attributes
    ----------
    power : float
        Fraction of simulated studies with ``pvalue < alpha``.
    ci_low : float
        Lower end of the Wilson score interval of `power`.
    ci_high : float
        Upper end of the Wilson score interval.
    confidence : float
        Level of the Wilson interval.
    n_rejections : int
        Number of simulated studies that rejected.
    n_simulations : int
        Number of simulated studies.
    mean_difference : float
        Average over studies of the mean per-unit difference
        ``sd_gold(ICL) - sd_gold(GD)`` (probability scale): the effect the
        test sees, comparable with an equivalence margin.
    alpha : float
        Significance level.
    alternative : str
        Alternative of the permutation test.
    n_resamples : int
        Permutation resamples per simulated study.
    n_sets : int
        Demo sets per study.
    n_queries : int
        Queries per demo set.
    n_orders : int
        Orders per (demo set, query).
    sd_icl : float
        Order-effect SD of ICL on the logit scale.
    sd_gd : float
        Order-effect SD of the GD method on the logit scale.
    between_query_sd : float
        SD of the (set, query) baseline logit within a set.
    between_set_sd : float
        SD of the demo-set baseline logit.
    mean_logit : float
        Mean baseline logit of P(gold).
    method : str
        Description of the simulated test.
    """

    power: float
    ci_low: float
    ci_high: float
    confidence: float
    n_rejections: int
    n_simulations: int
    mean_difference: float
    alpha: float
    alternative: str
    n_resamples: int
    n_sets: int
    n_queries: int
    n_orders: int
    sd_icl: float
    sd_gd: float
    between_query_sd: float
    between_set_sd: float
    mean_logit: float
    method: str


@dataclass(frozen=True, slots=True)
class MinimumDetectableEffect:
    """Smallest effect reaching a target power (see :func:`minimum_detectable_effect`).

    Attributes
    ----------
    effect : float
        Smallest ratio ``sd_icl / sd_gd`` (``scale="ratio"``) or difference
        ``sd_icl - sd_gd`` (``scale="difference"``) found with simulated power
        ``>= target_power``, to within `tol`; ``inf`` when even `upper` does
        not reach it.
    scale : str
        ``"ratio"`` or ``"difference"`` (logit-scale order SDs).
    sd_icl : float
        The ICL order SD at `effect` (``inf`` if not reached).
    sd_gd : float
        The GD order SD held fixed.
    power : float
        Simulated power at `effect` (at `upper` when not reached).
    target_power : float
        The power asked for.
    reached : bool
        Whether `target_power` was reached within ``[null, upper]``.
    tol : float
        Width of the final bisection bracket.
    n_evaluations : int
        Number of :func:`simulate_power` calls.
    n_simulations : int
        Simulated studies per evaluation.
    alpha : float
        Significance level.
    n_sets : int
        Demo sets per study.
    n_queries : int
        Queries per demo set.
    n_orders : int
        Orders per (demo set, query).
    """

    effect: float
    scale: str
    sd_icl: float
    sd_gd: float
    power: float
    target_power: float
    reached: bool
    tol: float
    n_evaluations: int
    n_simulations: int
    alpha: float
    n_sets: int
    n_queries: int
    n_orders: int


@dataclass(frozen=True, slots=True)
class VarianceComponents:
    """Variance components of per-order P(gold) on the logit scale (pilot estimates).

    Attributes
    ----------
    between_query_sd : float
        SD of the (set, query) baseline logits within a set, pooled over
        methods (input ``between_query_sd`` of :func:`simulate_power`).
    between_set_sd : float
        SD of the demo-set baseline logits (NaN with a single demo set).
    mean_logit : float
        Grand mean of the logits.
    order_sd : Mapping[str, float]
        Read-only mapping method -> order-effect SD on the logit scale
        (inputs ``sd_icl`` / ``sd_gd``).
    n_sets : int
        Distinct demo sets in the pilot.
    n_queries : int
        Distinct queries in the pilot.
    n_orders : int
        Largest number of orders of a (method, set, query) unit.
    clip : float
        P(gold) was clipped to ``[clip, 1 - clip]`` before the logit.
    method : str
        ``"method of moments on the logit scale"``.
    """

    between_query_sd: float
    between_set_sd: float
    mean_logit: float
    order_sd: Mapping[str, float]
    n_sets: int
    n_queries: int
    n_orders: int
    clip: float
    method: str


@dataclass(frozen=True, slots=True)
class _PowerInput:
    n_sets: int
    n_queries: int
    n_orders: int
    sd_icl: float
    sd_gd: float
    between_query_sd: float
    between_set_sd: float
    mean_logit: float
    n_simulations: int
    alpha: float
    n_resamples: int
    alternative: str
    confidence: float
    rng: np.random.Generator


@dataclass(frozen=True, slots=True)
class _MdeInput:
    target_power: float
    scale: str
    upper: float
    tol: float
    seed: int


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _validate_real(value: object, name: str, *, low: float | None = None,
                   low_open: bool = False, high: float | None = None,
                   high_open: bool = False) -> float:
    """Return ``value`` as a finite float within the given bounds or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, got {v!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"`{name}` must be {'>' if low_open else '>='} {low}, got {v!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"`{name}` must be {'<' if high_open else '<='} {high}, got {v!r}")
    return v


def _validate_min_int(value: object, name: str, minimum: int) -> int:
    v = _validate_positive_int(value, name)
    if v < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {v}")
    return v


def _validate_power(n_sets: object, n_queries: object, n_orders: object, sd_icl: object,
                    sd_gd: object, between_query_sd: object, between_set_sd: object,
                    mean_logit: object, n_simulations: object, alpha: object,
                    n_resamples: object, alternative: object, confidence: object,
                    rng: object) -> _PowerInput:
    """Validate the arguments of :func:`simulate_power`."""
    n_s = _validate_positive_int(n_sets, "n_sets")
    n_q = _validate_positive_int(n_queries, "n_queries")
    if n_s * n_q < 2:
        raise ValueError(
            f"`n_sets` * `n_queries` must be >= 2 paired units, got {n_s} * {n_q}"
        )
    return _PowerInput(
        n_sets=n_s,
        n_queries=n_q,
        n_orders=_validate_min_int(n_orders, "n_orders", 2),
        sd_icl=_validate_real(sd_icl, "sd_icl", low=0.0),
        sd_gd=_validate_real(sd_gd, "sd_gd", low=0.0),
        between_query_sd=_validate_real(between_query_sd, "between_query_sd", low=0.0),
        between_set_sd=_validate_real(between_set_sd, "between_set_sd", low=0.0),
        mean_logit=_validate_real(mean_logit, "mean_logit"),
        n_simulations=_validate_positive_int(n_simulations, "n_simulations"),
        alpha=_validate_real(alpha, "alpha", low=0.0, low_open=True, high=1.0, high_open=True),
        n_resamples=_validate_positive_int(n_resamples, "n_resamples"),
        alternative=_validate_alternative(alternative),
        confidence=_validate_real(confidence, "confidence", low=0.0, low_open=True,
                                  high=1.0, high_open=True),
        rng=_validate_rng(rng),
    )


def _validate_mde(target_power: object, scale: object, upper: object, tol: object,
                  alpha: float, sd_gd: float, gen: np.random.Generator) -> _MdeInput:
    """Validate the arguments specific to :func:`minimum_detectable_effect`."""
    target = _validate_real(target_power, "target_power", low=alpha, low_open=True,
                            high=1.0, high_open=True)
    if not isinstance(scale, str) or scale not in _SCALES:
        raise ValueError(
            f"`scale` must be one of {', '.join(map(repr, _SCALES))}, got {scale!r}"
        )
    if scale == "ratio" and sd_gd == 0.0:
        raise ValueError(
            "`scale`='ratio' needs `sd_gd` > 0 (a ratio to a zero SD is undefined), "
            "got sd_gd=0.0; use scale='difference'"
        )
    lower = 1.0 if scale == "ratio" else 0.0
    if upper is None:
        up = 10.0 if scale == "ratio" else 5.0
    else:
        up = _validate_real(upper, "upper", low=lower, low_open=True)
    if tol is None:
        width = 0.01
    else:
        width = _validate_real(tol, "tol", low=0.0, low_open=True)
    seed = int(gen.integers(0, 2**63 - 1))
    return _MdeInput(target, scale, up, width, seed)


def _validate_pilot(per_order: object, clip: object) -> tuple[pd.DataFrame, float]:
    """Validate the arguments of :func:`variance_components_from_pilot`."""
    import pandas as pd

    if not isinstance(per_order, pd.DataFrame):
        raise TypeError(f"`per_order` must be a pandas DataFrame, got {type(per_order).__name__}")
    missing = [c for c in _PILOT_COLUMNS if c not in per_order.columns]
    if missing:
        raise ValueError(
            f"`per_order` lacks the column(s) {missing}; needs {list(_PILOT_COLUMNS)}"
        )
    c = _validate_real(clip, "clip", low=0.0, low_open=True, high=0.5, high_open=True)
    table = per_order[list(_PILOT_COLUMNS)].copy()
    if table.empty:
        raise ValueError("`per_order` has no rows")
    for col in _PILOT_COLUMNS[:-1]:
        if table[col].isna().any():
            raise ValueError(f"`per_order` column {col!r} has missing values")
    p = pd.to_numeric(table["p_gold"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"`per_order` column 'p_gold' must hold finite probabilities in [0, 1], "
            f"got {table['p_gold'].iloc[i]!r} at row {i} ({int(bad.sum())} bad value(s))"
        )
    table["p_gold"] = p
    keys = ["method", "demo_set", "query_id", "order_id"]
    dup = table.duplicated(keys)
    if dup.any():
        first = table.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(
            "`per_order` must have one row per (method, demo_set, query_id, order_id); "
            f"duplicate {first} (filter to one model, task, N and seed, or average seeds first)"
        )
    counts = table.groupby(["method", "demo_set", "query_id"], sort=False)["order_id"].size()
    if (counts < 2).any():
        first = counts[counts < 2].index[0]
        raise ValueError(
            "`per_order` needs at least 2 orders per (method, demo_set, query_id) unit, "
            f"got 1 for {first}"
        )
    return table, c


# ---------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``."""
    z = float(ndtri(0.5 + confidence / 2.0))
    z2 = z * z
    centre = (k + z2 / 2.0) / (n + z2)
    half = z / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4.0)
    return max(0.0, centre - half), min(1.0, centre + half)


def _simulate_differences(inp: _PowerInput, gen: np.random.Generator) -> np.ndarray:
    """Per-unit ``sd_gold(ICL) - sd_gold(GD)`` for every simulated study.

    Returns an array of shape ``(n_simulations, n_sets * n_queries)``.  The
    standard-normal draws do not depend on the SD inputs, so two calls with
    the same seed and design use common random numbers.
    """
    s, q, o = inp.n_sets, inp.n_queries, inp.n_orders
    per_sim = s * q * o
    chunk = max(1, _BLOCK_ELEMENTS // per_sim)
    out = np.empty((inp.n_simulations, s * q), dtype=np.float64)
    for start in range(0, inp.n_simulations, chunk):
        m = min(chunk, inp.n_simulations - start)
        z_set = gen.standard_normal((m, s, 1, 1))
        z_query = gen.standard_normal((m, s, q, 1))
        e_icl = gen.standard_normal((m, s, q, o))
        e_gd = gen.standard_normal((m, s, q, o))
        base = inp.mean_logit + inp.between_set_sd * z_set + inp.between_query_sd * z_query
        sd_icl = np.std(expit(base + inp.sd_icl * e_icl), axis=-1, ddof=1)
        sd_gd = np.std(expit(base + inp.sd_gd * e_gd), axis=-1, ddof=1)
        out[start:start + m] = (sd_icl - sd_gd).reshape(m, s * q)
    return out


def simulate_power(
    *,
    n_sets: int,
    n_queries: int,
    n_orders: int,
    sd_icl: float,
    sd_gd: float,
    between_query_sd: float,
    between_set_sd: float = 0.0,
    mean_logit: float = 0.0,
    n_simulations: int = 500,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    alternative: Alternative = "two-sided",
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> PowerResult:
    """Simulate the power of the paired test of order sensitivity (ICL vs a GD method).

    Parameters
    ----------
    n_sets : int
        Demo sets per study.
    n_queries : int
        Queries per demo set; the test has ``n_sets * n_queries`` paired
        units (at least 2).
    n_orders : int
        Orders per (demo set, query), at least 2.
    sd_icl : float
        SD of ICL's order effects on the logit scale of P(gold), ``>= 0``.
    sd_gd : float
        SD of the GD method's order effects on the logit scale, ``>= 0``
        (0 for full-batch GD, which is order-invariant).
    between_query_sd : float
        SD of the baseline logit of a (set, query) unit around its set's
        baseline, ``>= 0``.  Larger values push more units towards P(gold)
        near 0 or 1, where order effects shrink on the probability scale.
    between_set_sd : float, default 0.0
        SD of the demo-set baseline logits, ``>= 0``.
    mean_logit : float, default 0.0
        Mean baseline logit (0 means P(gold) = 0.5).
    n_simulations : int, default 500
        Simulated studies.
    alpha : float, default 0.05
        Significance level; a study rejects when ``pvalue < alpha`` (as in
        :func:`hyptest.stats.verdict.decide`).
    n_resamples : int, default 2000
        Permutation resamples per study.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        Alternative of the permutation test (``"greater"``: ICL more
        order-sensitive).
    confidence : float, default 0.95
        Level of the Wilson interval of the power.
    rng : numpy.random.Generator or int, optional
        Source of randomness.  The data and the permutation test draw from
        two independent streams spawned from it, so a fixed seed gives common
        random numbers across calls that differ only in the SD inputs.

    Returns
    -------
    PowerResult
        Power, its Wilson interval, the rejection count, the average effect
        on the probability scale and every input.

    Raises
    ------
    ValueError
        If a count is not positive (or ``n_orders < 2``, or fewer than two
        units), an SD is negative or non-finite, or `alpha`, `confidence` or
        `alternative` is not accepted.
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    *Generative model.*  For demo set ``s``, query ``q``, order ``o`` and
    method ``m`` in {ICL, GD},

    .. math:: \\operatorname{logit} p_{m,s,q,o} = \\mu + u_s + v_{s,q}
              + \\sigma_m \\varepsilon_{m,s,q,o},

    with ``u_s ~ N(0, between_set_sd^2)``, ``v_{s,q} ~ N(0,
    between_query_sd^2)`` (a (set, query) baseline shared by both methods;
    it includes any set-by-query interaction) and i.i.d. ``eps ~ N(0, 1)``,
    independent between methods.  ``sigma_ICL = sd_icl``, ``sigma_GD =
    sd_gd``, ``mu = mean_logit``.  Each unit's order sensitivity is the
    sample SD (ddof = 1) of ``p`` over its orders, exactly the ``sd_gold`` of
    :func:`hyptest.metrics.order_sensitivity`; the study's test is
    :func:`hyptest.stats.permutation.paired_permutation_test` on the
    per-unit differences ``sd_ICL - sd_GD``, as in
    :func:`hyptest.stats.theorem.theorem1_check` (before multiplicity
    adjustment: for a family of ``m`` comparisons with Holm or Bonferroni,
    pass ``alpha / m`` for a conservative power).

    When ``sd_icl == sd_gd`` the per-unit differences are symmetric about
    zero and the rejection rate is at most about `alpha` (the null is true).

    The power estimate is ``k / n_simulations``; its Wilson score interval
    [2]_ accounts for the Monte Carlo error of the simulation.

    References
    ----------
    .. [1] Shen, L., Mishra, A. and Khashabi, D. (2023). Do pretrained
       Transformers learn in-context by gradient descent? arXiv:2310.08540.
    .. [2] Wilson, E. B. (1927). Probable inference, the law of succession,
       and statistical inference. *Journal of the American Statistical
       Association*, 22(158), 209-212.
    .. [3] Arnold, B. F., Hogan, D. R., Colford, J. M. and Hubbard, A. E.
       (2011). Simulation methods to estimate design power: an overview for
       applied research. *BMC Medical Research Methodology*, 11, 94.

    Examples
    --------
    >>> from hyptest.stats.power import simulate_power
    >>> res = simulate_power(n_sets=2, n_queries=16, n_orders=6, sd_icl=0.4,
    ...                      sd_gd=0.3, between_query_sd=1.0,
    ...                      n_simulations=200, n_resamples=500, rng=0)
    >>> res.power, round(res.ci_low, 3), round(res.ci_high, 3)
    (0.92, 0.874, 0.95)
    """
    inp = _validate_power(n_sets, n_queries, n_orders, sd_icl, sd_gd, between_query_sd,
                          between_set_sd, mean_logit, n_simulations, alpha, n_resamples,
                          alternative, confidence, rng)
    data_rng, test_rng = inp.rng.spawn(2)
    diffs = _simulate_differences(inp, data_rng)
    rejections = 0
    for d in diffs:
        res = paired_permutation_test(d, n_resamples=inp.n_resamples,
                                      alternative=inp.alternative, rng=test_rng)
        rejections += res.pvalue < inp.alpha
    low, high = _wilson(rejections, inp.n_simulations, inp.confidence)
    return PowerResult(
        power=rejections / inp.n_simulations,
        ci_low=low,
        ci_high=high,
        confidence=inp.confidence,
        n_rejections=int(rejections),
        n_simulations=inp.n_simulations,
        mean_difference=float(diffs.mean()),
        alpha=inp.alpha,
        alternative=inp.alternative,
        n_resamples=inp.n_resamples,
        n_sets=inp.n_sets,
        n_queries=inp.n_queries,
        n_orders=inp.n_orders,
        sd_icl=inp.sd_icl,
        sd_gd=inp.sd_gd,
        between_query_sd=inp.between_query_sd,
        between_set_sd=inp.between_set_sd,
        mean_logit=inp.mean_logit,
        method="paired sign-flip permutation test on per-unit sd_gold differences",
    )


def minimum_detectable_effect(
    *,
    target_power: float = 0.8,
    n_sets: int,
    n_queries: int,
    n_orders: int,
    sd_gd: float,
    between_query_sd: float,
    between_set_sd: float = 0.0,
    mean_logit: float = 0.0,
    scale: EffectScale = "ratio",
    upper: float | None = None,
    tol: float | None = None,
    n_simulations: int = 200,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    alternative: Alternative = "two-sided",
    rng: np.random.Generator | int | None = None,
) -> MinimumDetectableEffect:
    """Find the smallest ICL order-effect SD that the study detects with a target power.

    Bisection over ``sd_icl`` (with `sd_gd` and the design fixed) on the
    simulated power of :func:`simulate_power`.

    Parameters
    ----------
    target_power : float, default 0.8
        Power to reach, in ``(alpha, 1)``.
    n_sets, n_queries, n_orders, sd_gd, between_query_sd, between_set_sd, mean_logit
        Design and variance components, as in :func:`simulate_power`.
    scale : {"ratio", "difference"}, default "ratio"
        Effect parameterisation: ``sd_icl = sd_gd * effect`` (``effect >= 1``;
        needs ``sd_gd > 0``) or ``sd_icl = sd_gd + effect`` (``effect >= 0``;
        use it when ``sd_gd == 0``, e.g. full-batch GD).
    upper : float, optional
        Upper end of the search; default 10 (ratio) or 5 (difference, logit
        units).
    tol : float, optional
        Stop when the bracket is narrower than this (default 0.01).
    n_simulations : int, default 200
        Simulated studies per power evaluation.
    alpha, n_resamples, alternative
        As in :func:`simulate_power`.
    rng : numpy.random.Generator or int, optional
        One seed is drawn from it and reused for every evaluation (common
        random numbers), which makes the simulated power a nearly monotone
        function of the effect and the bisection stable.

    Returns
    -------
    MinimumDetectableEffect
        The effect, the implied ``sd_icl``, the power there and the search
        settings; ``effect = inf`` and ``reached = False`` when the power at
        `upper` is below the target.

    Raises
    ------
    ValueError
        As :func:`simulate_power`, or if `target_power` is not in
        ``(alpha, 1)``, `scale` is not accepted, ``scale="ratio"`` with
        ``sd_gd == 0``, or `upper` / `tol` is not positive.
    TypeError
        If an argument has the wrong type.

    Notes
    -----
    Only effects with ICL *more* order-sensitive than the GD method
    (``sd_icl >= sd_gd``) are searched: that is the direction Theorem 1's
    test is expected to find [1]_.  The bracket starts at the null
    (``effect = 1`` or ``0``, power about `alpha`) and `upper`; each step
    halves it, keeping the lower end below and the upper end at or above
    the target.  The answer carries Monte Carlo error: with
    ``n_simulations = 200`` the power at the returned effect has a standard
    error of about 0.03, so treat the effect as approximate (increase
    `n_simulations` for a final design).  The effect is on the logit scale;
    :attr:`PowerResult.mean_difference` translates it to the probability
    scale of ``sd_gold``.

    References
    ----------
    .. [1] Shen, L., Mishra, A. and Khashabi, D. (2023). Do pretrained
       Transformers learn in-context by gradient descent? arXiv:2310.08540.
    .. [2] Arnold, B. F., Hogan, D. R., Colford, J. M. and Hubbard, A. E.
       (2011). Simulation methods to estimate design power: an overview for
       applied research. *BMC Medical Research Methodology*, 11, 94.

    Examples
    --------
    >>> from hyptest.stats.power import minimum_detectable_effect
    >>> mde = minimum_detectable_effect(n_sets=2, n_queries=16, n_orders=6, sd_gd=0.3,
    ...                                 between_query_sd=1.0, n_simulations=100,
    ...                                 n_resamples=200, tol=0.05, rng=0)
    >>> mde.reached, round(mde.effect, 2), mde.power >= 0.8
    (True, 1.32, True)
    """
    base = _validate_power(n_sets, n_queries, n_orders, sd_gd, sd_gd, between_query_sd,
                           between_set_sd, mean_logit, n_simulations, alpha, n_resamples,
                           alternative, 0.95, rng)
    opts = _validate_mde(target_power, scale, upper, tol, base.alpha, base.sd_gd, base.rng)

    def implied_sd(effect: float) -> float:
        return base.sd_gd * effect if opts.scale == "ratio" else base.sd_gd + effect

    def power_at(effect: float) -> float:
        return simulate_power(
            n_sets=base.n_sets, n_queries=base.n_queries, n_orders=base.n_orders,
            sd_icl=implied_sd(effect), sd_gd=base.sd_gd,
            between_query_sd=base.between_query_sd, between_set_sd=base.between_set_sd,
            mean_logit=base.mean_logit, n_simulations=base.n_simulations, alpha=base.alpha,
            n_resamples=base.n_resamples, alternative=base.alternative, rng=opts.seed,
        ).power

    lo = 1.0 if opts.scale == "ratio" else 0.0
    hi = opts.upper
    p_hi = power_at(hi)
    evaluations = 1
    if p_hi < opts.target_power:
        return MinimumDetectableEffect(
            effect=math.inf, scale=opts.scale, sd_icl=math.inf, sd_gd=base.sd_gd,
            power=p_hi, target_power=opts.target_power, reached=False, tol=hi - lo,
            n_evaluations=evaluations, n_simulations=base.n_simulations, alpha=base.alpha,
            n_sets=base.n_sets, n_queries=base.n_queries, n_orders=base.n_orders,
        )
    while hi - lo > opts.tol:
        mid = 0.5 * (lo + hi)
        p_mid = power_at(mid)
        evaluations += 1
        if p_mid >= opts.target_power:
            hi, p_hi = mid, p_mid
        else:
            lo = mid
    return MinimumDetectableEffect(
        effect=hi, scale=opts.scale, sd_icl=implied_sd(hi), sd_gd=base.sd_gd, power=p_hi,
        target_power=opts.target_power, reached=True, tol=hi - lo,
        n_evaluations=evaluations, n_simulations=base.n_simulations, alpha=base.alpha,
        n_sets=base.n_sets, n_queries=base.n_queries, n_orders=base.n_orders,
    )


# ---------------------------------------------------------------------------
# pilot estimates
# ---------------------------------------------------------------------------


def variance_components_from_pilot(
    per_order: pd.DataFrame,
    *,
    clip: float = 1e-6,
) -> VarianceComponents:
    """Estimate the inputs of :func:`simulate_power` from a pilot's per-order table.

    Parameters
    ----------
    per_order : pandas.DataFrame
        One row per (method, demo_set, query_id, order_id) with columns
        ``method``, ``demo_set``, ``order_id``, ``query_id`` and ``p_gold``
        (the records of one model, task and N; other columns are ignored).
        Every (method, demo_set, query_id) unit needs at least 2 orders.
    clip : float, default 1e-6
        P(gold) is clipped to ``[clip, 1 - clip]`` before the logit so that
        probabilities of exactly 0 or 1 stay finite.

    Returns
    -------
    VarianceComponents
        ``order_sd`` per method, ``between_query_sd``, ``between_set_sd`` and
        ``mean_logit``.

    Raises
    ------
    ValueError
        If a column is missing, `per_order` is empty, a key is missing or
        duplicated, ``p_gold`` is outside ``[0, 1]`` or non-finite, a unit
        has fewer than 2 orders, or `clip` is not in ``(0, 0.5)``.
    TypeError
        If `per_order` is not a DataFrame.

    Notes
    -----
    Method of moments for the model of :func:`simulate_power`, on
    ``y = logit(p_gold)``.  For method ``m``, unit ``u = (s, q)`` with
    ``n_u`` orders, unit mean ``ybar_u`` and unit variance ``v_u`` (ddof = 1):

    * order SD: ``sigma_m^2 = sum_u (n_u - 1) v_u / sum_u (n_u - 1)``
      (pooled within-unit variance, unbiased for ``sigma_m^2``);
    * between-query variance: within each set, the variance over queries of
      ``ybar_u`` estimates ``tau_q^2 + sigma_m^2 / n``, with ``n`` the
      harmonic mean of ``n_u``.  Average over sets, subtract
      ``sigma_m^2 / n``, average over methods and truncate at 0;
    * between-set variance: the variance over sets of the set means of
      ``ybar_u`` estimates ``tau_s^2 + (tau_q^2 + sigma_m^2 / n) / Q_s``
      (``Q_s`` the harmonic mean of queries per set); subtract, average over
      methods, truncate at 0.  NaN when the pilot has a single demo set
      (not estimable; pass ``between_set_sd=0`` or a guess explicitly);
    * ``mean_logit``: the mean of ``ybar_u`` over units and methods.

    ``between_query_sd`` is NaN when every set has a single query.

    The between-query and between-set components are pooled over methods
    because the simulation gives both methods the same baselines; the
    methods' own order SDs are kept apart.  The estimates are noisy for a
    small pilot; use them as plausible inputs, and consider a range.

    References
    ----------
    .. [1] Searle, S. R., Casella, G. and McCulloch, C. E. (1992). *Variance
       Components*, ch. 3 (ANOVA estimation). New York: Wiley.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from hyptest.stats.power import variance_components_from_pilot
    >>> rng = np.random.default_rng(0)
    >>> rows = [(m, s, o, q, 1 / (1 + np.exp(-(0.3 + b + sd * rng.normal()))))
    ...         for m, sd in (("icl", 0.8), ("sgd", 0.3))
    ...         for s in range(3) for q, b in enumerate(np.linspace(-1, 1, 20))
    ...         for o in range(6)]
    >>> pilot = pd.DataFrame(rows, columns=["method", "demo_set", "order_id",
    ...                                     "query_id", "p_gold"])
    >>> vc = variance_components_from_pilot(pilot)
    >>> {k: round(v, 2) for k, v in vc.order_sd.items()}
    {'icl': 0.8, 'sgd': 0.3}
    >>> round(vc.between_query_sd, 2), vc.n_sets, vc.n_queries, vc.n_orders
    (0.62, 3, 20, 6)
    """
    table, c = _validate_pilot(per_order, clip)
    p = np.clip(table["p_gold"].to_numpy(dtype=np.float64), c, 1.0 - c)
    table["y"] = np.log(p) - np.log1p(-p)
    units = (
        table.groupby(["method", "demo_set", "query_id"], sort=True)["y"]
        .agg(mean="mean", var="var", n="size")  # pandas var: ddof=1
        .reset_index()
    )
    order_sd: dict[str, float] = {}
    query_vars: list[float] = []
    set_vars: list[float] = []
    for method, grp in units.groupby("method", sort=True):
        dof = grp["n"].to_numpy(dtype=np.float64) - 1.0
        sigma2 = float(np.sum(dof * grp["var"].to_numpy()) / np.sum(dof))
        order_sd[str(method)] = math.sqrt(sigma2)
        n_harm = float(grp["n"].size / np.sum(1.0 / grp["n"].to_numpy(dtype=np.float64)))
        per_set = grp.groupby("demo_set", sort=True)["mean"]
        within = per_set.var(ddof=1).dropna()
        tau_q2 = float(within.mean()) - sigma2 / n_harm if len(within) else math.nan
        query_vars.append(tau_q2)
        set_means = per_set.mean()
        if len(set_means) >= 2:
            sizes = per_set.size().to_numpy(dtype=np.float64)
            q_harm = float(sizes.size / np.sum(1.0 / sizes))
            expected = (max(tau_q2, 0.0) if math.isfinite(tau_q2) else 0.0) + sigma2 / n_harm
            set_vars.append(float(set_means.var(ddof=1)) - expected / q_harm)
    finite_q = [v for v in query_vars if math.isfinite(v)]
    between_query = math.sqrt(max(float(np.mean(finite_q)), 0.0)) if finite_q else math.nan
    between_set = math.sqrt(max(float(np.mean(set_vars)), 0.0)) if set_vars else math.nan
    return VarianceComponents(
        between_query_sd=between_query,
        between_set_sd=between_set,
        mean_logit=float(units["mean"].mean()),
        order_sd=MappingProxyType(order_sd),
        n_sets=int(table["demo_set"].nunique()),
        n_queries=int(table["query_id"].nunique()),
        n_orders=int(units["n"].max()),
        clip=c,
        method="method of moments on the logit scale",
    )
