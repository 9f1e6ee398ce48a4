"""A moderate calibration of the confirmatory decision (order_comparison + decide).

Default study shape (2 demo sets x 8 of the 24 orders x 32 queries), family
size 1, independent order factors (rho = 0), ``n_sims`` simulated studies per
scenario (default 200; first argument), decide's n_resamples 1000. Run from
the repository root:

    python benchmarks/bench_calibration.py [n_sims]

The last line printed is machine-readable:

    RESULT calibration false_equivalent=<P(equivalent | ratio 1.25)> false_different=<P(different | ratio 1)>
        power_1.5=<P(different | ratio 1.5)> coverage=<95 % CI coverage at ratio 1> n_sims=<n>

(one line). "different" counts every rejection of the difference test
(verdicts different and negligible), "equivalent" every rejection of the
equivalence test (equivalent and negligible).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

try:
    from hyptest.validation.calibration import calibrate, markdown_table
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hyptest.validation.calibration import calibrate, markdown_table


def main() -> None:
    n_sims = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    t0 = time.perf_counter()
    table = calibrate("default", family_sizes=(1,), n_sims=n_sims, rhos=(0.0,),
                      scenarios=("null", "boundary", "power_1.5"), n_resamples=1000, seed=0)
    seconds = time.perf_counter() - t0
    print(markdown_table(table), end="")
    print(f"{3 * n_sims} simulated studies in {seconds:.1f} s")

    def rate(scenario: str, quantity: str) -> float:
        row = table[(table["scenario"] == scenario) & (table["quantity"] == quantity)]
        return float(row["rate"].iloc[0])

    print(f"RESULT calibration false_equivalent={rate('boundary', 'equivalent'):.4f} "
          f"false_different={rate('null', 'different'):.4f} power_1.5={rate('power_1.5', 'different (power)'):.4f} "
          f"coverage={rate('null', 'CI covers true log ratio'):.4f} n_sims={n_sims}")


if __name__ == "__main__":
    main()
