"""Calibration of the statistical layer with the linear-attention control.

Simulated studies are pushed through hyptest's real analysis code
(:func:`hyptest.stats.theorem.theorem1_check`, which calls
:func:`hyptest.stats.verdict.decide`) to measure

* the **type-I error** of the "different" verdict when ICL and GD are the same
  algorithm (positive control: the linear self-attention layer of von Oswald
  et al. [2]_, which performs one GD step),
* how often **equivalence** is declared for a given margin, and the size of the
  equivalence side when the true difference sits on the margin,
* the **power** against a planted order effect of known size (negative
  control), and
* the **coverage** of the confidence interval of the mean difference in order
  sensitivity.

Design of one simulated study
-----------------------------
``n_sets`` demonstration sets are drawn, each an independent linear-regression
task (:func:`hyptest.tasks.regression.sample_regression_task`: ``w, x ~ N(0,
I_d)``, ``y = w.x + noise_sd * N(0, 1)``) with ``n_demos`` demos and
``n_queries`` queries. Each set is shown in ``n_orders`` random orders. Under
order ``o`` both methods see the demos in that order, and each gets its own
fresh, independent *label jitter* ``y_i + jitter_sd * N(0, 1)`` (drawn
separately for "icl" and for "gd", for every order and every demo):

* "icl" is the forward pass of the constructed LSA layer
  (:func:`hyptest.models.linear_attention.lsa_predict`),
* "gd" is one explicit full-batch GD step
  (:func:`hyptest.models.linear_attention.one_step_gd_predict`).

Both are order-invariant functions, and they are the same function (the unit
tests check equality to 1e-6), so without jitter every order SD would be 0 and
the control would be degenerate. The jitter makes the outputs vary across
orders through a mechanism that is identical in law for the two methods. Why
this is a fair null: given the demo set and the queries, the ICL outputs and
the GD outputs are two independent draws of *the same* random algorithm, so
``(sd_icl, sd_gd)`` of a unit is an exchangeable pair, and the difference
``d = sd_icl - sd_gd`` is symmetric about 0. Independent demo sets give
independent units. This is exactly the null hypothesis of the paired sign-flip
test ("equivalent algorithms have equal order sensitivity", Shen et al. [1]_,
Theorem 1), with the noise that any real study has.

Negative control: the "icl" outputs get an added recency term
``tau * (y_last - mean(y)) / sd(y)`` on the logit scale, where ``y_last`` is
the clean label of the demo placed last in that order and ``mean``, ``sd``
(``ddof = 0``) are over the set's clean labels. Because the last demo is
uniform over the set across random orders, this term has mean 0 and standard
deviation exactly ``tau`` across orders: a planted order effect of known size,
mimicking the recency bias of real ICL.

Outputs: the prediction ``y_hat`` is squashed with ``p = sigmoid(y_hat)`` and
read as the probability of the positive class of a binary task
(``link="sigmoid"``, the default; ``link="identity"`` uses ``y_hat`` itself).
The gold label is ``y_query > 0``; ``p_gold`` and ``label_probs = [1 - p, p]``
are built as a collector would, so ``sd_labels == sd_gold`` and
``theorem1_check`` runs one comparison per study. The per-query table has the
columns of :func:`hyptest.metrics.order_sensitivity` (checked in the tests).

Dependence between queries: outputs of different queries of one demo set
share the same jitter draws, so their ``d`` values are correlated, while
``theorem1_check`` treats every (demo set, query) pair as an independent unit.
With ``n_queries = 1`` (the default) the units are independent and the null is
exact; ``n_queries > 1`` with ``unit="query"`` measures what that dependence
costs (with ``cluster=True`` the bootstrap resamples demo sets, but the
sign-flip test still flips single pairs), and ``unit="demo_set"`` (average
over a set's queries before testing) is the cluster-level analysis. The
measured numbers are in docs/calibration.md; ``python -m hyptest.calibration``
reproduces them.

References
----------
.. [1] Shen, Mishra, Khashabi (2023), Do pretrained Transformers learn
   in-context by gradient descent? arXiv:2310.08540.
.. [2] von Oswald et al. (2023), Transformers learn in-context by gradient
   descent. ICML.
.. [3] Wilson (1927), Probable inference, the law of succession, and
   statistical inference. JASA 22(158), 209-212.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from statistics import NormalDist
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from hyptest.models.linear_attention import lsa_predict, one_step_gd_predict
from hyptest.stats.theorem import theorem1_check
from hyptest.tasks.regression import sample_regression_task

__all__ = [
    "CalibrationResult",
    "ControlDesign",
    "PopulationValues",
    "ci_coverage",
    "control_records",
    "equivalence_rate",
    "main",
    "negative_control_study",
    "population_values",
    "positive_control_study",
    "power_curve",
    "simulate_studies",
    "type_one_error",
    "wilson_interval",
]

Link = Literal["sigmoid", "identity"]
Unit = Literal["query", "demo_set"]

_METHODS: tuple[str, str] = ("icl", "gd")
_MODEL = "lsa-1step"
_TASK = "linear-regression"
_UNITS: tuple[str, ...] = ("query", "demo_set")
_LINKS: tuple[str, ...] = ("sigmoid", "identity")
#: demo sets simulated per block in :func:`population_values` (bounds memory)
_POPULATION_BLOCK = 2000


# ---------------------------------------------------------------------------
# result types
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlDesign:
    """Design of one simulated control study.

    Fields are checked (types and minimums: ``n_sets``, ``n_orders`` and
    ``n_demos`` >= 2, the rest >= 1 or >= 0) by every function that takes a
    design.

    Attributes
    ----------
    n_sets : int, default 40
        Demonstration sets (independent tasks) per study.
    n_queries : int, default 1
        Queries per demonstration set.
    n_orders : int, default 10
        Random demo orders per set (Shen et al. use 10).
    n_demos : int, default 8
        Demonstrations per set (Shen et al. use 8).
    d : int, default 4
        Input dimension of the regression task.
    eta : float, default 1.0
        Learning rate of the one GD step (and of the LSA layer).
    noise_sd : float, default 0.5
        Target noise of the regression task (fixed per set).
    jitter_sd : float, default 0.5
        Fresh per-order, per-method label noise (the stochastic mechanism).
    link : {"sigmoid", "identity"}, default "sigmoid"
        How the prediction becomes the "probability" column.
    """

    n_sets: int = 40
    n_queries: int = 1
    n_orders: int = 10
    n_demos: int = 8
    d: int = 4
    eta: float = 1.0
    noise_sd: float = 0.5
    jitter_sd: float = 0.5
    link: Link = "sigmoid"


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """A Monte-Carlo rate with its Wilson interval.

    Attributes
    ----------
    quantity : str
        What was counted: ``"type I error"``, ``"equivalence declared"`` or
        ``"coverage"``.
    rate : float
        ``count / n_studies``.
    count : int
        Studies in which the event occurred.
    n_studies : int
        Simulated studies.
    ci_low, ci_high : float
        Wilson score interval of the rate at ``ci_level``.
    ci_level : float
        Level of the Wilson interval (0.95).
    nominal : float
        The rate a calibrated procedure should show: ``alpha`` for errors,
        ``confidence`` for coverage; NaN when there is none.
    truth : float
        True mean difference of order SD (ICL - GD) in the simulated
        population: 0 by symmetry for the positive control, a large
        Monte-Carlo value otherwise.
    studies : pandas.DataFrame
        One row per study (see :func:`simulate_studies`).
    """

    quantity: str
    rate: float
    count: int
    n_studies: int
    ci_low: float
    ci_high: float
    ci_level: float
    nominal: float
    truth: float
    studies: pd.DataFrame


@dataclass(frozen=True, slots=True)
class PopulationValues:
    """Population means of the order sensitivities, by large Monte Carlo.

    Attributes
    ----------
    difference : float
        ``E[sd_icl - sd_gd]`` per unit (the estimand of ``theorem1_check``).
    standard_error : float
        Monte-Carlo standard error of `difference` (from demo-set means).
    mean_icl, mean_gd : float
        ``E[sd_icl]`` and ``E[sd_gd]``.
    n_sets : int
        Demo sets simulated.
    """

    difference: float
    standard_error: float
    mean_icl: float
    mean_gd: float
    n_sets: int


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {int(value)}")
    return int(value)


def _real(value: object, name: str, *, minimum: float | None = None, open_unit: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, got {value!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {v}")
    if open_unit and not 0 < v < 1:
        raise ValueError(f"`{name}` must lie in (0, 1), got {v}")
    return v


def _validate_design(design: object) -> ControlDesign:
    """Check every field of a :class:`ControlDesign` and return a clean copy."""
    if design is None:
        return ControlDesign()
    if not isinstance(design, ControlDesign):
        raise TypeError(f"`design` must be a ControlDesign or None, got {type(design).__name__}")
    f = asdict(design)
    if f["link"] not in _LINKS:
        raise ValueError(f"`link` must be one of {_LINKS}, got {f['link']!r}")
    return ControlDesign(
        n_sets=_int(f["n_sets"], "n_sets", 2),
        n_queries=_int(f["n_queries"], "n_queries", 1),
        n_orders=_int(f["n_orders"], "n_orders", 2),
        n_demos=_int(f["n_demos"], "n_demos", 2),
        d=_int(f["d"], "d", 1),
        eta=_real(f["eta"], "eta"),
        noise_sd=_real(f["noise_sd"], "noise_sd", minimum=0.0),
        jitter_sd=_real(f["jitter_sd"], "jitter_sd", minimum=0.0),
        link=f["link"],
    )


@dataclass(frozen=True, slots=True)
class _Analysis:
    alpha: float
    confidence: float
    n_resamples: int
    margin: float | None
    unit: str


def _validate_analysis(alpha: object, confidence: object, n_resamples: object,
                       margin: object, unit: object) -> _Analysis:
    if unit not in _UNITS:
        raise ValueError(f"`unit` must be one of {_UNITS}, got {unit!r}")
    m = None if margin is None else _real(margin, "margin")
    if m is not None and not m > 0:
        raise ValueError(f"`margin` must be positive or None, got {m}")
    return _Analysis(
        alpha=_real(alpha, "alpha", open_unit=True),
        confidence=_real(confidence, "confidence", open_unit=True),
        n_resamples=_int(n_resamples, "n_resamples", 1),
        margin=m,
        unit=str(unit),
    )


# ---------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outputs:
    p: np.ndarray        # (2, S, O, M) output "probabilities", methods in _METHODS order
    y_query: np.ndarray  # (S, M)
    orders: np.ndarray   # (S, O, N) demo indices in presentation order


def _simulate(design: ControlDesign, tau: float, gen: np.random.Generator) -> _Outputs:
    """Per-order outputs of ICL (the LSA layer) and GD on ``design.n_sets`` tasks."""
    S, M, O, N, d = design.n_sets, design.n_queries, design.n_orders, design.n_demos, design.d
    tasks = [sample_regression_task(d, N, M, noise_sd=design.noise_sd, rng=gen) for _ in range(S)]
    X = np.stack([t.X for t in tasks])              # (S, N, d)
    y = np.stack([t.y for t in tasks])              # (S, N)
    X_query = np.stack([t.X_query for t in tasks])  # (S, M, d)
    y_query = np.stack([t.y_query for t in tasks])  # (S, M)
    orders = np.argsort(gen.random((S, O, N)), axis=-1)  # uniform random permutations
    jitter = design.jitter_sd * gen.standard_normal((2, S, O, N))  # fresh per method/order/demo
    X_ord = np.take_along_axis(X[:, None], orders[..., None], axis=2)  # (S, O, N, d)
    y_ord = np.take_along_axis(np.broadcast_to(y[:, None], (S, O, N)), orders, axis=2)
    queries = np.broadcast_to(X_query[:, None], (S, O, M, d))
    icl = np.asarray(lsa_predict(X_ord, y_ord + jitter[0], queries, eta=design.eta))
    gd = np.asarray(one_step_gd_predict(X_ord, y_ord + jitter[1], queries, eta=design.eta))
    if tau != 0.0:
        scale = y.std(axis=-1)
        scale = np.where(scale > 0, scale, 1.0)
        recency = (y_ord[..., -1] - y.mean(axis=-1)[:, None]) / scale[:, None]  # (S, O), SD 1
        icl = icl + tau * recency[..., None]
    out = np.stack([icl, gd])
    if design.link == "sigmoid":
        out = 0.5 * (1.0 + np.tanh(0.5 * out))  # numerically stable logistic
    return _Outputs(p=out, y_query=y_query, orders=orders)


def _per_query(outputs: _Outputs, design: ControlDesign) -> pd.DataFrame:
    """The per-query table of :func:`hyptest.metrics.order_sensitivity`, vectorised."""
    p = outputs.p
    sd = p.std(axis=2, ddof=1)                  # (2, S, M); P(gold) = p or 1 - p: same SD
    spread = p.max(axis=2) - p.min(axis=2)      # range of both label probabilities
    _, S, M = sd.shape
    frames = []
    for k, method in sorted(enumerate(_METHODS), key=lambda km: km[1]):
        frames.append(pd.DataFrame({
            "model": _MODEL,
            "task": _TASK,
            "n_demos": design.n_demos,
            "method": method,
            "method_kind": method,
            "demo_set": np.repeat(np.arange(S), M),
            "query_id": np.tile(np.arange(M), S),
            "sd_gold": sd[k].ravel(),
            "sd_labels": sd[k].ravel(),
            "spread": spread[k].ravel(),
            "n_orders": design.n_orders,
            "n_seeds": 1,
            "n_labels": 2,
        }))
    return pd.concat(frames, ignore_index=True)


def _generator(rng: object) -> np.random.Generator:
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError(f"`rng` must be None, an int seed or a numpy.random.Generator, got {rng!r}")
    if rng is None or isinstance(rng, (np.random.Generator, Integral)):
        return np.random.default_rng(rng)
    raise TypeError(f"`rng` must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def positive_control_study(
    *,
    n_sets: int = 40,
    n_queries: int = 1,
    n_orders: int = 10,
    n_demos: int = 8,
    d: int = 4,
    eta: float = 1.0,
    noise_sd: float = 0.5,
    jitter_sd: float = 0.5,
    link: Link = "sigmoid",
    rng: np.random.Generator | int | None = None,
) -> pd.DataFrame:
    """Simulate one positive-control study (ICL = the LSA layer = one GD step).

    Parameters
    ----------
    n_sets, n_queries, n_orders, n_demos, d, eta, noise_sd, jitter_sd, link
        The fields of :class:`ControlDesign`.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    pandas.DataFrame
        Per-query order sensitivity in the format of
        :func:`hyptest.metrics.order_sensitivity`: columns ``model, task,
        n_demos, method, method_kind, demo_set, query_id, sd_gold, sd_labels,
        spread, n_orders, n_seeds, n_labels``; methods ``"icl"`` and ``"gd"``.

    Examples
    --------
    >>> pq = positive_control_study(n_sets=3, n_queries=2, rng=0)
    >>> pq.shape, sorted(pq.method.unique())
    ((12, 13), ['gd', 'icl'])
    """
    return negative_control_study(
        0.0, n_sets=n_sets, n_queries=n_queries, n_orders=n_orders, n_demos=n_demos, d=d,
        eta=eta, noise_sd=noise_sd, jitter_sd=jitter_sd, link=link, rng=rng,
    )


def negative_control_study(
    tau: float,
    *,
    n_sets: int = 40,
    n_queries: int = 1,
    n_orders: int = 10,
    n_demos: int = 8,
    d: int = 4,
    eta: float = 1.0,
    noise_sd: float = 0.5,
    jitter_sd: float = 0.5,
    link: Link = "sigmoid",
    rng: np.random.Generator | int | None = None,
) -> pd.DataFrame:
    """Simulate one study in which ICL carries a planted recency effect of SD `tau`.

    Parameters
    ----------
    tau : float
        Standard deviation across orders of the planted term (logit scale);
        ``0`` gives the positive control.
    n_sets, n_queries, n_orders, n_demos, d, eta, noise_sd, jitter_sd, link
        The fields of :class:`ControlDesign`.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    pandas.DataFrame
        As :func:`positive_control_study`.
    """
    design = _validate_design(ControlDesign(n_sets, n_queries, n_orders, n_demos, d, eta,
                                            noise_sd, jitter_sd, link))
    tau = _real(tau, "tau", minimum=0.0)
    return _per_query(_simulate(design, tau, _generator(rng)), design)


def control_records(
    tau: float = 0.0,
    *,
    design: ControlDesign | None = None,
    rng: np.random.Generator | int | None = None,
) -> pd.DataFrame:
    """Simulate one control study as long-format records (one row per order and query).

    The same random stream as :func:`negative_control_study`: with the same
    `rng`, ``order_sensitivity(control_records(...))`` equals its table.

    Parameters
    ----------
    tau : float, default 0.0
        Planted order effect (see :func:`negative_control_study`).
    design : ControlDesign, optional
        The study design (default ``ControlDesign()``).
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, task, n_demos, method, method_kind, demo_set,
        query_id, seed, order_id, order, gold, p_gold, label_probs``
        (``order`` the list of demo ids, ``label_probs = [1 - p, p]``).
    """
    design = _validate_design(design)
    tau = _real(tau, "tau", minimum=0.0)
    out = _simulate(design, tau, _generator(rng))
    _, S, O, M = out.p.shape
    rows: list[dict[str, Any]] = []
    for k, method in enumerate(_METHODS):
        for s in range(S):
            for o in range(O):
                for q in range(M):
                    p = float(out.p[k, s, o, q])
                    gold = int(out.y_query[s, q] > 0)
                    rows.append({
                        "model": _MODEL, "task": _TASK, "n_demos": design.n_demos,
                        "method": method, "method_kind": method, "demo_set": s, "query_id": q,
                        "seed": 0, "order_id": o, "order": out.orders[s, o].tolist(),
                        "gold": gold, "p_gold": p if gold else 1.0 - p, "label_probs": [1.0 - p, p],
                    })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# many studies
# ---------------------------------------------------------------------------


def _by_demo_set(per_query: pd.DataFrame) -> pd.DataFrame:
    """Average a per-query table over each demo set's queries (cluster-level units)."""
    keys = ["model", "task", "n_demos", "method", "method_kind", "demo_set"]
    out = per_query.groupby(keys, sort=True).agg(
        sd_gold=("sd_gold", "mean"), sd_labels=("sd_labels", "mean"), spread=("spread", "max"),
        n_orders=("n_orders", "min"), n_seeds=("n_seeds", "max"), n_labels=("n_labels", "max"),
    ).reset_index()
    out.insert(6, "query_id", -1)
    return out


def simulate_studies(
    tau: float = 0.0,
    *,
    n_studies: int = 200,
    design: ControlDesign | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    margin: float | None = None,
    unit: Unit = "query",
    cluster: bool = False,
    rng: np.random.Generator | int | None = None,
) -> pd.DataFrame:
    """Simulate control studies and analyse each with :func:`theorem1_check`.

    Parameters
    ----------
    tau : float, default 0.0
        Planted order effect on ICL (``0``: positive control).
    n_studies : int, default 200
        Simulated studies; study ``i`` uses the ``i``-th stream spawned from
        `rng` (``Generator.spawn``), for both the data and the analysis.
    design : ControlDesign, optional
        Design of each study (default ``ControlDesign()``).
    alpha, confidence : float
        Passed to ``theorem1_check``.
    n_resamples : int, default 1000
        Permutation and bootstrap resamples of ``theorem1_check``.
    margin : float or None
        Equivalence margin passed to ``theorem1_check``.
    unit : {"query", "demo_set"}, default "query"
        ``"query"``: the per-query table goes to ``theorem1_check`` as is;
        ``"demo_set"``: it is first averaged over each set's queries.
    cluster : bool, default False
        Passed to ``theorem1_check`` as ``cluster=True`` (bootstrap over demo
        sets, then queries) when set; not passed otherwise.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    pandas.DataFrame
        One row per study: ``study, tau, estimate, ci_low, ci_high,
        p_value, p_adjusted, verdict, min_equivalence_margin, mean_icl,
        mean_gd, n, margin, unit, cluster``.
    """
    design = _validate_design(design)
    tau = _real(tau, "tau", minimum=0.0)
    n_studies = _int(n_studies, "n_studies", 1)
    an = _validate_analysis(alpha, confidence, n_resamples, margin, unit)
    if not isinstance(cluster, (bool, np.bool_)):
        raise TypeError(f"`cluster` must be a bool, got {cluster!r}")
    extra: dict[str, Any] = {"cluster": True} if cluster else {}
    rows = []
    for i, gen in enumerate(_generator(rng).spawn(n_studies)):
        per_query = _per_query(_simulate(design, tau, gen), design)
        if an.unit == "demo_set":
            per_query = _by_demo_set(per_query)
        table, _ = theorem1_check(
            per_query, reference="icl", alpha=an.alpha, confidence=an.confidence,
            n_resamples=an.n_resamples, margin=an.margin, rng=gen, **extra,
        )
        row = table.iloc[0]
        rows.append({
            "study": i, "tau": tau, "estimate": row["estimate"], "ci_low": row["ci_low"],
            "ci_high": row["ci_high"], "p_value": row["p_value"], "p_adjusted": row["p_adjusted"],
            "verdict": row["verdict"], "min_equivalence_margin": row["min_equivalence_margin"],
            "mean_icl": row["mean_a"], "mean_gd": row["mean_b"], "n": int(row["n"]),
            "margin": an.margin, "unit": an.unit, "cluster": bool(cluster),
        })
    return pd.DataFrame(rows)


def wilson_interval(count: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    count : int
        Successes, ``0 <= count <= n``.
    n : int
        Trials, ``n >= 1``.
    confidence : float, default 0.95
        Two-sided level.

    Returns
    -------
    tuple of float
        ``(ci_low, ci_high)``.

    Notes
    -----
    With ``p = count / n`` and ``z`` the ``1 - (1 - confidence) / 2`` normal
    quantile [3]_:

    .. math:: \\frac{p + z^2/(2n) \\pm z\\sqrt{p(1-p)/n + z^2/(4n^2)}}{1 + z^2/n}.

    Examples
    --------
    >>> lo, hi = wilson_interval(10, 200)
    >>> round(lo, 4), round(hi, 4)
    (0.0274, 0.0896)
    """
    n = _int(n, "n", 1)
    count = _int(count, "count", 0)
    if count > n:
        raise ValueError(f"`count` must be <= n={n}, got {count}")
    conf = _real(confidence, "confidence", open_unit=True)
    z = NormalDist().inv_cdf(0.5 + conf / 2)
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(quantity: str, hits: np.ndarray, studies: pd.DataFrame, nominal: float,
          truth: float) -> CalibrationResult:
    count, n = int(np.sum(hits)), int(len(hits))
    lo, hi = wilson_interval(count, n)
    return CalibrationResult(quantity=quantity, rate=count / n, count=count, n_studies=n,
                             ci_low=lo, ci_high=hi, ci_level=0.95, nominal=nominal,
                             truth=truth, studies=studies)


def type_one_error(
    *,
    n_studies: int = 200,
    alpha: float = 0.05,
    design: ControlDesign | None = None,
    n_resamples: int = 1000,
    unit: Unit = "query",
    cluster: bool = False,
    rng: np.random.Generator | int | None = None,
) -> CalibrationResult:
    """Rate of the verdict "different" on positive-control studies.

    Parameters
    ----------
    n_studies : int, default 200
        Simulated studies.
    alpha : float, default 0.05
        Significance level of ``theorem1_check`` (the nominal rate).
    design : ControlDesign, optional
        Study design (default ``ControlDesign()``).
    n_resamples : int, default 1000
        Resamples inside ``theorem1_check``.
    unit : {"query", "demo_set"}, default "query"
        See :func:`simulate_studies`.
    cluster : bool, default False
        See :func:`simulate_studies`.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    CalibrationResult
        ``quantity="type I error"``, ``nominal=alpha``, ``truth=0``. Without a
        margin, "different" is the same event as ``p_adjusted < alpha``.
    """
    studies = simulate_studies(0.0, n_studies=n_studies, design=design, alpha=alpha,
                               n_resamples=n_resamples, unit=unit, cluster=cluster, rng=rng)
    return _rate("type I error", (studies["verdict"] == "different").to_numpy(), studies,
                 nominal=float(alpha), truth=0.0)


def equivalence_rate(
    margin: float,
    *,
    tau: float = 0.0,
    n_studies: int = 200,
    alpha: float = 0.05,
    design: ControlDesign | None = None,
    n_resamples: int = 1000,
    unit: Unit = "query",
    truth_sets: int = 20000,
    rng: np.random.Generator | int | None = None,
) -> CalibrationResult:
    """Rate at which the difference is declared to lie inside ``(-margin, margin)``.

    Counts the verdicts "equivalent" and "negligible" (both mean that the
    ``1 - 2 alpha`` interval lies inside the margin, i.e. TOST rejects).
    With ``tau = 0`` this is the chance of confirming a true equivalence (the
    power of the equivalence side); with `tau` chosen so that the true
    difference equals `margin` it is the size of the equivalence test and
    should not exceed `alpha`.

    Parameters
    ----------
    margin : float
        Equivalence margin (absolute, in units of order SD).
    tau : float, default 0.0
        Planted order effect.
    n_studies, alpha, design, n_resamples, unit, rng
        As in :func:`type_one_error`.
    truth_sets : int, default 20000
        Demo sets of the Monte-Carlo computation of the true difference
        (skipped when ``tau == 0``, where it is 0 by symmetry); ``0`` skips
        it and reports ``truth`` as NaN (when the caller already knows it).

    Returns
    -------
    CalibrationResult
        ``quantity="equivalence declared"``; ``nominal`` is NaN (a power) for
        ``tau = 0`` and `alpha` otherwise.
    """
    margin = _real(margin, "margin")
    tau = _real(tau, "tau", minimum=0.0)
    truth_sets = _int(truth_sets, "truth_sets", 0)
    gen = _generator(rng)
    truth_rng, study_rng = gen.spawn(2)
    if tau == 0:
        truth = 0.0
    elif truth_sets == 0:
        truth = float("nan")
    else:
        truth = population_values(tau, design=design, n_sets=truth_sets, rng=truth_rng).difference
    studies = simulate_studies(tau, n_studies=n_studies, design=design, alpha=alpha,
                               n_resamples=n_resamples, margin=margin, unit=unit, rng=study_rng)
    hits = studies["verdict"].isin(["equivalent", "negligible"]).to_numpy()
    return _rate("equivalence declared", hits, studies,
                 nominal=float("nan") if tau == 0 else float(alpha), truth=truth)


def population_values(
    tau: float = 0.0,
    *,
    design: ControlDesign | None = None,
    n_sets: int = 20000,
    rng: np.random.Generator | int | None = None,
) -> PopulationValues:
    """Population mean order sensitivities and their difference, by Monte Carlo.

    Parameters
    ----------
    tau : float, default 0.0
        Planted order effect.
    design : ControlDesign, optional
        Study design; its ``n_sets`` is ignored in favour of `n_sets`.
    n_sets : int, default 20000
        Demo sets simulated (in blocks of 2000).
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    PopulationValues
        The estimand ``E[sd_icl - sd_gd]`` of ``theorem1_check`` (mean over
        units), with its Monte-Carlo standard error from demo-set means.
    """
    design = _validate_design(design)
    tau = _real(tau, "tau", minimum=0.0)
    n_sets = _int(n_sets, "n_sets", 2)
    gen = _generator(rng)
    set_means = []
    done = 0
    while done < n_sets:
        block = min(_POPULATION_BLOCK, n_sets - done)
        block_design = ControlDesign(**{**asdict(design), "n_sets": block})
        p = _simulate(block_design, tau, gen).p
        set_means.append(p.std(axis=2, ddof=1).mean(axis=-1))  # (2, block)
        done += block
    means = np.concatenate(set_means, axis=1)
    diff = means[0] - means[1]
    return PopulationValues(difference=float(diff.mean()),
                            standard_error=float(diff.std(ddof=1) / math.sqrt(diff.size)),
                            mean_icl=float(means[0].mean()), mean_gd=float(means[1].mean()),
                            n_sets=int(n_sets))


def power_curve(
    taus: Sequence[float],
    *,
    n_studies: int = 100,
    alpha: float = 0.05,
    design: ControlDesign | None = None,
    n_resamples: int = 1000,
    unit: Unit = "query",
    truth_sets: int = 5000,
    rng: np.random.Generator | int | None = None,
) -> pd.DataFrame:
    """Rate of the verdict "different" as a function of the planted effect.

    Parameters
    ----------
    taus : sequence of float
        Planted order effects (SD across orders, logit scale).
    n_studies : int, default 100
        Studies per `tau`.
    alpha, design, n_resamples, unit, rng
        As in :func:`type_one_error`.
    truth_sets : int, default 5000
        Demo sets for the Monte-Carlo true difference at each `tau`.

    Returns
    -------
    pandas.DataFrame
        One row per `tau`: ``tau, true_difference, true_mean_icl,
        true_mean_gd, power, ci_low, ci_high, count, n_studies,
        mean_estimate`` (Wilson 95% interval of the power).
    """
    taus_arr = [_real(t, "taus", minimum=0.0) for t in taus]
    if not taus_arr:
        raise ValueError("`taus` must contain at least one value, got an empty sequence")
    gen = _generator(rng)
    rows = []
    for tau, (truth_rng, study_rng) in zip(taus_arr, (g.spawn(2) for g in gen.spawn(len(taus_arr)))):
        truth = population_values(tau, design=design, n_sets=truth_sets, rng=truth_rng)
        studies = simulate_studies(tau, n_studies=n_studies, design=design, alpha=alpha,
                                   n_resamples=n_resamples, unit=unit, rng=study_rng)
        hits = (studies["verdict"] == "different").to_numpy()
        lo, hi = wilson_interval(int(hits.sum()), len(hits))
        rows.append({"tau": tau, "true_difference": truth.difference,
                     "true_mean_icl": truth.mean_icl, "true_mean_gd": truth.mean_gd,
                     "power": float(hits.mean()), "ci_low": lo, "ci_high": hi,
                     "count": int(hits.sum()), "n_studies": len(hits),
                     "mean_estimate": float(studies["estimate"].mean())})
    return pd.DataFrame(rows)


def ci_coverage(
    *,
    tau: float = 0.0,
    n_studies: int = 200,
    confidence: float = 0.95,
    design: ControlDesign | None = None,
    n_resamples: int = 1000,
    unit: Unit = "query",
    cluster: bool = False,
    truth_sets: int = 20000,
    rng: np.random.Generator | int | None = None,
) -> CalibrationResult:
    """Share of studies whose ``theorem1_check`` CI covers the true mean difference.

    Parameters
    ----------
    tau : float, default 0.0
        Planted order effect; the truth is 0 by symmetry for ``tau = 0`` and
        a Monte-Carlo value (:func:`population_values`) otherwise.
    n_studies : int, default 200
        Simulated studies.
    confidence : float, default 0.95
        CI level (the nominal coverage).
    design, n_resamples, unit, cluster, rng
        As in :func:`type_one_error`.
    truth_sets : int, default 20000
        Demo sets of the Monte-Carlo truth.

    Returns
    -------
    CalibrationResult
        ``quantity="coverage"``, ``nominal=confidence``, ``truth`` the true
        difference.
    """
    tau = _real(tau, "tau", minimum=0.0)
    gen = _generator(rng)
    truth_rng, study_rng = gen.spawn(2)
    truth = 0.0 if tau == 0 else population_values(tau, design=design, n_sets=truth_sets,
                                                   rng=truth_rng).difference
    studies = simulate_studies(tau, n_studies=n_studies, design=design, confidence=confidence,
                               n_resamples=n_resamples, unit=unit, cluster=cluster, rng=study_rng)
    hits = ((studies["ci_low"] <= truth) & (truth <= studies["ci_high"])).to_numpy()
    return _rate("coverage", hits, studies, nominal=_real(confidence, "confidence", open_unit=True),
                 truth=truth)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _fmt(r: CalibrationResult) -> str:
    return f"{r.rate:.3f} ({r.count}/{r.n_studies}; Wilson 95% CI {r.ci_low:.3f}-{r.ci_high:.3f})"


def main(argv: Sequence[str] | None = None) -> None:
    """Print the calibration numbers of docs/calibration.md.

    ``python -m hyptest.calibration [--n-studies 1000] [--seed 20240601]``.
    Line ``[k]`` draws from the ``k``-th child of ``SeedSequence(seed).spawn(16)``
    (lines [6] and [7] also from child ``k + 2``, their studies), so each line
    is reproducible alone.
    """
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m hyptest.calibration",
                                     description="Calibrate hyptest's statistical layer.")
    parser.add_argument("--n-studies", type=int, default=1000, help="studies per rate (default 1000)")
    parser.add_argument("--seed", type=int, default=20240601, help="root seed (default 20240601)")
    parser.add_argument("--n-resamples", type=int, default=1000, help="resamples in theorem1_check")
    args = parser.parse_args(argv)
    n, B = args.n_studies, args.n_resamples
    seeds = [np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(16)]
    base = ControlDesign()
    five = ControlDesign(n_queries=5)
    wide = ControlDesign(n_sets=160)
    start = time.perf_counter()
    print(f"hyptest calibration: seed={args.seed}, n_studies={n}, n_resamples={B}, alpha=0.05, "
          "confidence=0.95")
    print(f"design: {base}\n")

    pop = population_values(0.0, design=base, n_sets=20000, rng=seeds[0])
    print(f"[0] positive control, population (20000 sets): E[sd_icl]={pop.mean_icl:.5f}  "
          f"E[sd_gd]={pop.mean_gd:.5f}  E[d]={pop.difference:+.5f} (MC SE {pop.standard_error:.5f})")
    t1 = type_one_error(n_studies=n, design=base, n_resamples=B, rng=seeds[1])
    print(f"[1] type-I error, 40 sets x 1 query: {_fmt(t1)}")
    mem = t1.studies["min_equivalence_margin"]
    print(f"    smallest margin that would have declared equivalence: median {mem.median():.5f} "
          f"({mem.median() / pop.mean_gd:.3f} x E[sd_gd]), 90th percentile {mem.quantile(0.9):.5f}")
    for k, (unit, cluster) in enumerate((("query", False), ("query", True), ("demo_set", False)), start=2):
        res = type_one_error(n_studies=n, design=five, n_resamples=B, unit=unit, cluster=cluster,
                             rng=seeds[k])
        cover = res.studies
        covered = ((cover["ci_low"] <= 0) & (0 <= cover["ci_high"])).to_numpy()
        lo, hi = wilson_interval(int(covered.sum()), len(covered))
        print(f"[{k}] 40 sets x 5 queries, unit={unit}, cluster={cluster}: type-I error {_fmt(res)}; "
              f"95% CI coverage of 0: {covered.mean():.3f} (Wilson {lo:.3f}-{hi:.3f})")

    margin = round(0.2 * pop.mean_gd, 4)
    eq = equivalence_rate(margin, n_studies=n, design=base, n_resamples=B, rng=seeds[5])
    print(f"[5] equivalence declared, positive control, margin={margin} (0.2 x E[sd_gd]): {_fmt(eq)}")
    for k, (tau, design, label) in enumerate(((0.3, base, "40 sets"), (0.2, wide, "160 sets")), start=6):
        edge = population_values(tau, design=design, n_sets=50000, rng=seeds[k])
        res = equivalence_rate(edge.difference, tau=tau, design=design, n_studies=n, n_resamples=B,
                               truth_sets=0, rng=seeds[k + 2])
        print(f"[{k}] equivalence declared with the true difference on the margin, {label} "
              f"(tau={tau}, margin={edge.difference:.5f}): {_fmt(res)}")

    for k, tau in ((10, 0.0), (11, 0.5)):
        cov = ci_coverage(tau=tau, n_studies=n, design=base, n_resamples=B, rng=seeds[k])
        print(f"[{k}] 95% CI coverage, 40 sets x 1 query, tau={tau} (truth {cov.truth:.5f}): {_fmt(cov)}")

    taus = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4]
    curve = power_curve(taus, n_studies=max(n // 2, 1), design=base, n_resamples=B,
                        truth_sets=20000, rng=seeds[12])
    print("[12] power of the verdict 'different', 40 sets x 1 query (alpha 0.05):")
    print(curve.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nelapsed {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
