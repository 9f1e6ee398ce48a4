"""Synthetic in-context linear regression (the task of the linear-attention control)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import validate_count, validate_real

__all__ = ["RegressionTask", "sample_regression_task"]


@dataclass(frozen=True, slots=True)
class RegressionTask:
    """One in-context linear regression task.

    Attributes
    ----------
    X : numpy.ndarray, shape (n_demos, d)
        Demonstration inputs, ``x ~ N(0, I_d)``.
    y : numpy.ndarray, shape (n_demos,)
        Demonstration targets ``w . x + noise``.
    X_query : numpy.ndarray, shape (n_queries, d)
        Query inputs, ``x ~ N(0, I_d)``.
    y_query : numpy.ndarray, shape (n_queries,)
        Query targets ``w . x + noise``.
    w : numpy.ndarray, shape (d,)
        The task's weight vector, ``w ~ N(0, I_d)``.
    noise_sd : float
        Standard deviation of the Gaussian target noise.
    """

    X: np.ndarray
    y: np.ndarray
    X_query: np.ndarray
    y_query: np.ndarray
    w: np.ndarray
    noise_sd: float


def sample_regression_task(
    d: int,
    n_demos: int,
    n_queries: int,
    *,
    noise_sd: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> RegressionTask:
    """Draw a linear regression task as in von Oswald et al. (2023).

    Parameters
    ----------
    d : int
        Input dimension (>= 1).
    n_demos : int
        Number of demonstrations (>= 1).
    n_queries : int
        Number of queries (>= 0).
    noise_sd : float, default 0.0
        Standard deviation of the Gaussian noise added to every target.
    rng : numpy.random.Generator or int, optional
        Source of randomness.

    Returns
    -------
    RegressionTask
        ``w ~ N(0, I_d)``; inputs ``x ~ N(0, I_d)``; targets
        ``y = w . x + noise_sd * N(0, 1)``. Draw order: ``w``, ``X``, ``y``
        noise, ``X_query``, ``y_query`` noise.

    Raises
    ------
    TypeError, ValueError
        If a count is not an integer in range or `noise_sd` is negative.

    Examples
    --------
    >>> task = sample_regression_task(3, 8, 2, noise_sd=0.1, rng=0)
    >>> task.X.shape, task.y.shape, task.X_query.shape, task.w.shape
    ((8, 3), (8,), (2, 3), (3,))
    """
    d = validate_count(d, "d", minimum=1)
    n_demos = validate_count(n_demos, "n_demos", minimum=1)
    n_queries = validate_count(n_queries, "n_queries", minimum=0)
    validate_real(noise_sd, "noise_sd", finite=True, minimum=0.0)
    gen = np.random.default_rng(rng)
    w = gen.standard_normal(d)
    X = gen.standard_normal((n_demos, d))
    y = X @ w + float(noise_sd) * gen.standard_normal(n_demos)
    X_query = gen.standard_normal((n_queries, d))
    y_query = X_query @ w + float(noise_sd) * gen.standard_normal(n_queries)
    return RegressionTask(X=X, y=y, X_query=X_query, y_query=y_query, w=w, noise_sd=float(noise_sd))
