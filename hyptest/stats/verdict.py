"""The four verdicts shared by every analysis."""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["VERDICTS", "Verdict", "decide"]

Verdict = Literal["different", "equivalent", "negligible", "inconclusive"]

#: The verdict vocabulary, in the order the report lists it.
VERDICTS: tuple[str, ...] = ("different", "equivalent", "negligible", "inconclusive")


def decide(
    pvalue: float,
    equivalence_low: float,
    equivalence_high: float,
    *,
    alpha: float = 0.05,
    margin: float | None = None,
) -> Verdict:
    """Map a difference test and an equivalence interval to one of four verdicts.

    Parameters
    ----------
    pvalue : float
        (Adjusted) p-value of the test of no difference.
    equivalence_low, equivalence_high : float
        The ``1 - 2 alpha`` confidence interval of the difference; equivalence
        at level ``alpha`` (TOST) holds when it lies inside ``(-margin, margin)``.
    alpha : float, default 0.05
        Significance level.
    margin : float or None
        Equivalence margin; without one, equivalence cannot be declared.

    Returns
    -------
    {"different", "equivalent", "negligible", "inconclusive"}
        ``different``: significant and not inside the margin; ``equivalent``:
        inside the margin and not significant; ``negligible``: significant but
        inside the margin; ``inconclusive``: neither.

    Notes
    -----
    This is the four-outcome reading of a difference test beside an
    equivalence test (Lakens 2017 [1]_, Fig. 1), with TOST expressed through
    its equivalent ``1 - 2 alpha`` confidence interval (Schuirmann 1987 [2]_).

    References
    ----------
    .. [1] Lakens (2017), Equivalence tests: a practical primer for t tests,
       correlations, and meta-analyses. SPPS 8(4), 355-362.
    .. [2] Schuirmann (1987), A comparison of the two one-sided tests procedure
       and the power approach for assessing the equivalence of average
       bioavailability. J. Pharmacokinet. Biopharm. 15(6), 657-680.

    Examples
    --------
    >>> decide(0.001, 0.02, 0.04, margin=0.01)
    'different'
    >>> decide(0.40, -0.004, 0.006, margin=0.01)
    'equivalent'
    """
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must lie in (0, 1), got {alpha!r}")
    if margin is not None and not margin > 0:
        raise ValueError(f"`margin` must be positive or None, got {margin!r}")
    if math.isnan(pvalue):
        return "inconclusive"
    significant = pvalue < alpha
    inside = margin is not None and -margin < equivalence_low and equivalence_high < margin
    if significant and not inside:
        return "different"
    if significant and inside:
        return "negligible"
    if inside:
        return "equivalent"
    return "inconclusive"
