"""hyptest's p-value adjustment against statsmodels' ``multipletests``, call by call.

``decide`` adjusts every family of a study, and the calibration and ``hyptest
power`` call it once per simulated study, so the cost per call matters, not
the cost per p-value. statsmodels 0.15 runs ``gc.collect()`` inside each call.
Prints, per method and family size, the mean time per call of both and the
largest difference of the adjusted p-values, then

    RESULT multiplicity ratio=<statsmodels s / hyptest s, all calls> max_abs_diff=<largest difference>

Usage: ``python benchmarks/bench_multiplicity.py [--calls N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from statsmodels.stats.multitest import multipletests

from hyptest.stats.multiplicity import adjust_pvalues

_STATSMODELS = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per (method, family size)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ours_total = theirs_total = 0.0
    worst = 0.0
    for method, name in _STATSMODELS.items():
        for m in (3, 20, 150):
            families = [rng.uniform(size=m) ** 2 for _ in range(args.calls)]
            t0 = time.perf_counter()
            ours = [adjust_pvalues(p, method=method) for p in families]
            t1 = time.perf_counter()
            theirs = [multipletests(p, method=name)[1] for p in families]
            t2 = time.perf_counter()
            worst = max(worst, max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs)))
            ours_total += t1 - t0
            theirs_total += t2 - t1
            print(f"{method:10s} m={m:4d}  hyptest {1e6 * (t1 - t0) / args.calls:9.1f} us/call  "
                  f"statsmodels {1e6 * (t2 - t1) / args.calls:9.1f} us/call")
    print(f"RESULT multiplicity ratio={theirs_total / ours_total:.1f} max_abs_diff={worst:.2e}")


if __name__ == "__main__":
    main()
