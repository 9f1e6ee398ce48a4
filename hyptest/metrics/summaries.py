"""Thin summaries of per-example metric values: mean with a bootstrap CI, and metric vs baseline.

These wrap ``hyptest.stats`` (bootstrap and sign-flip permutation test) so that
every metric of this package (Token Overlap, SimAOU, SimAM, Kendall, ...) is
reported the same way: a one-row DataFrame with the house column names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from hyptest.stats.bootstrap import bootstrap_ci
from hyptest.stats.permutation import paired_permutation_test

from .._validation import validate_real_array, validate_rng

__all__ = ["WEAK_FLOOR_RATIO", "WEAK_SPREAD_RATIO", "baseline_strength", "metric_vs_baseline",
           "metric_with_ci"]


def _validate_vector(x: ArrayLike, name: str) -> np.ndarray:
    return validate_real_array(x, name, ndim=1, finite=False,
                               shape_hint="one value per example; average layers first")


def metric_with_ci(
    values: ArrayLike,
    *,
    clusters: ArrayLike | None = None,
    confidence: float = 0.95,
    n_resamples: int = 4999,
    rng: np.random.Generator | int,
) -> pd.DataFrame:
    """Mean of a per-example metric with a percentile bootstrap confidence interval.

    Parameters
    ----------
    values : array_like, shape (n,)
        One finite value per example (e.g. SimAOU of one layer, or averaged
        over layers).  NaN raises; drop undefined values explicitly first.
    clusters : array_like, shape (n,), optional
        Cluster labels (e.g. demo set); the bootstrap then resamples clusters
        and examples within them (two-stage).
    confidence : float, default 0.95
        Two-sided confidence level.
    n_resamples : int, default 4999
        Bootstrap resamples.
    rng : numpy.random.Generator or int
        Source of randomness.

    Returns
    -------
    pandas.DataFrame
        One row with columns ``statistic`` (the mean), ``ci_low``,
        ``ci_high``, ``confidence``, ``n`` and ``n_clusters`` (None when
        unclustered).

    Raises
    ------
    ValueError, TypeError
        As :func:`hyptest.stats.bootstrap.bootstrap_ci` (at least 2 finite
        values, valid clusters), or if `values` is not 1-D.

    See Also
    --------
    hyptest.stats.bootstrap.bootstrap_ci

    Notes
    -----
    The percentile interval :math:`[Q(\\alpha/2), Q(1 - \\alpha/2)]` of the
    bootstrap means, :math:`\\alpha = 1 - \\text{confidence}` [1]_.  Dai et
    al. [2]_ report means only; this adds the uncertainty.

    References
    ----------
    .. [1] Efron, B. and Tibshirani, R. J. (1993). *An Introduction to the
       Bootstrap*. New York: Chapman & Hall.
    .. [2] Dai, D. et al. (2023). Why Can GPT Learn In-Context? Language
       Models Secretly Perform Gradient Descent as Meta-Optimizers.
       Findings of ACL 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.metrics.summaries import metric_with_ci
    >>> x = np.random.default_rng(0).normal(0.3, 0.1, size=50)
    >>> row = metric_with_ci(x, n_resamples=999, rng=1)
    >>> list(row.columns)
    ['statistic', 'ci_low', 'ci_high', 'confidence', 'n', 'n_clusters']
    >>> bool(row.ci_low[0] < row.statistic[0] < row.ci_high[0]), int(row.n[0])
    (True, 50)
    """
    gen = validate_rng(rng, allow_none=False)
    x = _validate_vector(values, "values")
    res = bootstrap_ci(
        x, statistic="mean", confidence=confidence, n_resamples=n_resamples,
        method="percentile", clusters=clusters, rng=gen,
    )
    return pd.DataFrame(
        [{
            "statistic": res.statistic, "ci_low": res.ci_low, "ci_high": res.ci_high,
            "confidence": res.confidence, "n": res.n, "n_clusters": res.n_clusters,
        }]
    )


def metric_vs_baseline(
    metric: ArrayLike,
    baseline: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 4999,
    alternative: str = "two-sided",
    rng: np.random.Generator | int,
) -> pd.DataFrame:
    """Compare a per-example metric with its paired baseline (sign-flip test + bootstrap CI).

    Parameters
    ----------
    metric, baseline : array_like, shape (n,)
        Paired finite values, e.g. SimAOU and its random-update baseline on
        the same examples.
    confidence : float, default 0.95
        Level of the bootstrap CI of the mean difference.
    n_resamples : int, default 4999
        Resamples for both the bootstrap and the permutation test (the test
        enumerates all ``2**n`` sign vectors when ``2**n <= n_resamples``).
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        Alternative of the test on the mean of ``metric - baseline``.
    rng : numpy.random.Generator or int
        Source of randomness; two independent child streams are spawned,
        one for the bootstrap and one for the test.

    Returns
    -------
    pandas.DataFrame
        One row with columns ``statistic`` (mean of ``metric - baseline``),
        ``ci_low``, ``ci_high``, ``pvalue``, ``n``, ``exact``,
        ``alternative`` and ``method``.

    Raises
    ------
    ValueError, TypeError
        As :func:`hyptest.stats.permutation.paired_permutation_test` and
        :func:`hyptest.stats.bootstrap.bootstrap_ci` (equal lengths, at
        least 2 finite pairs), or if an input is not 1-D.

    See Also
    --------
    hyptest.stats.permutation.paired_permutation_test

    Notes
    -----
    :math:`d_i = m_i - b_i`; the statistic is :math:`\\bar d`, the p-value
    that of the paired sign-flip test [1]_ (``(k + 1) / (B + 1)`` by Monte
    Carlo, exact when enumerable), and the CI the percentile bootstrap of
    :math:`\\bar d`.  Pairs are treated as independent: with clustered
    examples (several per demo set), average within clusters first.

    References
    ----------
    .. [1] Phipson, B. and Smyth, G. K. (2010). Permutation p-values should
       never be zero. *Statistical Applications in Genetics and Molecular
       Biology*, 9(1), Article 39.

    Examples
    --------
    >>> import numpy as np
    >>> from hyptest.metrics.summaries import metric_vs_baseline
    >>> gen = np.random.default_rng(0)
    >>> sim, base = gen.normal(0.4, 0.1, 30), gen.normal(0.0, 0.1, 30)
    >>> row = metric_vs_baseline(sim, base, n_resamples=999, rng=1)
    >>> float(row.pvalue[0]), bool(row.ci_low[0] > 0)
    (0.001, True)
    """
    gen = validate_rng(rng, allow_none=False)
    m = _validate_vector(metric, "metric")
    b = _validate_vector(baseline, "baseline")
    if m.shape != b.shape:
        raise ValueError(
            f"`metric` and `baseline` must be paired (same length), got {m.size} and {b.size}"
        )
    boot_rng, perm_rng = gen.spawn(2)
    test = paired_permutation_test(
        m, b, n_resamples=n_resamples, alternative=alternative, rng=perm_rng
    )
    ci = bootstrap_ci(
        m - b, statistic="mean", confidence=confidence, n_resamples=n_resamples,
        method="percentile", rng=boot_rng,
    )
    return pd.DataFrame(
        [{
            "statistic": test.statistic, "ci_low": ci.ci_low, "ci_high": ci.ci_high,
            "pvalue": test.pvalue, "n": test.n, "exact": test.exact,
            "alternative": test.alternative, "method": test.method,
        }]
    )


#: A baseline whose SD across units is below this share of the metric's is "nearly constant".
WEAK_SPREAD_RATIO: float = 0.1
#: A baseline whose |mean| is below this share of the metric's |mean| sits at the floor (0) of the metric.
WEAK_FLOOR_RATIO: float = 0.05


def baseline_strength(metric: ArrayLike, baseline: ArrayLike, *, floor: float = 0.0) -> dict[str, object]:
    """Is a baseline informative? Its spread across units and its distance from the metric's floor.

    Parameters
    ----------
    metric, baseline : array_like, shape (k,)
        One value per independent unit (e.g. each cluster's mean over runs
        and layers) of the metric and of its baseline.
    floor : float, default 0.0
        The value of the metric under no relation at all (0 for a cosine
        similarity or a correlation).

    Returns
    -------
    dict
        ``metric_mean``, ``metric_sd``, ``baseline_mean``, ``baseline_sd``
        (SDs with ddof=1 across units), ``spread_ratio`` (baseline SD /
        metric SD), ``floor_ratio`` (|baseline mean − floor| / |metric mean −
        floor|), ``weak`` (bool) and ``reasons`` (list of str, empty when the
        baseline is not weak).

    Notes
    -----
    A baseline is weak when it is nearly constant across units
    (``spread_ratio`` < :data:`WEAK_SPREAD_RATIO`): a test against it is a
    test against a fixed number, and says nothing that a comparison with that
    number would not; or when it sits at the metric's floor (``floor_ratio`` <
    :data:`WEAK_FLOOR_RATIO`): a test against it is a test against "no
    relation at all", which almost any structured signal passes.

    Examples
    --------
    >>> from hyptest.metrics.summaries import baseline_strength
    >>> out = baseline_strength([0.3, 0.5, 0.4, 0.6], [0.002, 0.0021, 0.0019, 0.002])
    >>> out["weak"], len(out["reasons"])
    (True, 2)
    """
    m = _validate_vector(metric, "metric")
    b = _validate_vector(baseline, "baseline")
    if m.shape != b.shape or m.size < 2:
        raise ValueError(f"`metric` and `baseline` must be paired with at least 2 units, got {m.size} and {b.size}")
    m_mean, b_mean = float(m.mean()), float(b.mean())
    m_sd, b_sd = float(m.std(ddof=1)), float(b.std(ddof=1))
    spread = b_sd / m_sd if m_sd > 0 else float("inf")
    floor_ratio = abs(b_mean - floor) / abs(m_mean - floor) if m_mean != floor else float("inf")
    reasons = []
    if spread < WEAK_SPREAD_RATIO:
        reasons.append(f"nearly constant across units: its SD {b_sd:.2g} is {100 * spread:.2g}% of the metric's "
                       f"{m_sd:.2g}, so testing against it is testing against a fixed number")
    if floor_ratio < WEAK_FLOOR_RATIO:
        reasons.append(f"its mean {b_mean:.2g} sits at the metric's floor ({floor:g}, no relation at all): "
                       f"{100 * floor_ratio:.2g}% of the metric's distance from it ({m_mean:.2g}), so testing "
                       f"against it is testing against {floor:g}")
    return {"metric_mean": m_mean, "metric_sd": m_sd, "baseline_mean": b_mean, "baseline_sd": b_sd,
            "spread_ratio": spread, "floor_ratio": floor_ratio, "weak": bool(reasons), "reasons": reasons}
