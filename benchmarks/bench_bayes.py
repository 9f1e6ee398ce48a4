"""Time hyptest's Bayesian order-variance fit with nutpie and with PyMC's sampler.

The data have the size of hyptest's default study for one (model, task, N)
slice: 2 demo sets x 8 orders x 32 queries x 4 methods (icl, gd, sgd, adam),
simulated on the logit scale with order standard deviations icl 1.0, gd 0
(full-batch GD: exactly order-invariant), sgd 0.3, adam 0.15 and residual
(order x query) standard deviations 0.3, 0, 0.1, 0.05 (per-query SDs across
orders sqrt(sigma_order^2 + sigma_resid^2), the compared quantity: 1.04, 0,
0.32, 0.16). Each sampler runs
``fit_order_variance`` with its defaults (4 chains x 1000 draws after 1000
warm-up steps); nutpie runs first in a fresh process, so its time includes
compiling the model (PyTensor's and numba's on-disk caches may be warm from
earlier runs). Run from the repository root:

    python benchmarks/bench_bayes.py

The last line printed is machine-readable:

    RESULT bayes ratio=<pymc_time/nutpie_time> max_abs_diff=<max |difference of posterior mean log ratios|>

where both times are of the first (cold) fit. A second slice of the same
design is timed too: nutpie then reuses its compiled model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from hyptest.stats.bayes import fit_order_variance
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hyptest.stats.bayes import fit_order_variance

N_SETS, N_ORDERS, N_QUERIES = 2, 8, 32
SIGMA_ORDER = {"icl": 1.0, "gd": 0.0, "sgd": 0.3, "adam": 0.15}
SIGMA_RESID = {"icl": 0.3, "gd": 0.0, "sgd": 0.1, "adam": 0.05}


def simulate(seed: int = 20240601) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    s, o, q = np.meshgrid(np.arange(N_SETS), np.arange(N_ORDERS), np.arange(N_QUERIES), indexing="ij")
    frames = []
    for method, so in SIGMA_ORDER.items():
        y = (
            0.5
            + rng.normal(0.0, 0.3, (N_SETS, 1, 1))
            + rng.normal(0.0, 1.0, (N_SETS, 1, N_QUERIES))
            + so * rng.standard_normal((N_SETS, N_ORDERS, 1))
            + SIGMA_RESID[method] * rng.standard_normal((N_SETS, N_ORDERS, N_QUERIES))
        )
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "demo_set": s.ravel(),
                    "order_id": o.ravel(),
                    "query_id": q.ravel(),
                    "p_gold": 1.0 / (1.0 + np.exp(-y.ravel())),
                }
            )
        )
    data = pd.concat(frames, ignore_index=True)
    data.insert(0, "n_demos", 8)
    data.insert(0, "task", "sst2")
    data.insert(0, "model", "bench")
    return data


def _run(data: pd.DataFrame, sampler: str):
    t0 = time.perf_counter()
    res = fit_order_variance(data, sampler=sampler, seed=1)
    return time.perf_counter() - t0, res


def main() -> None:
    data = simulate()
    t_nut, nut = _run(data, "nutpie")
    t_nut2, nut2 = _run(simulate(seed=7), "nutpie")  # another slice, same design: cached compile
    t_pym, pym = _run(data, "pymc")
    t_pym2, pym2 = _run(simulate(seed=7), "pymc")  # PyTensor's compile cache now warm
    print(f"rows={len(data)} sets={N_SETS} orders={N_ORDERS} queries={N_QUERIES} methods={len(SIGMA_ORDER)}")
    runs = (("nutpie", t_nut, nut), ("nutpie (cached)", t_nut2, nut2), ("pymc", t_pym, pym),
            ("pymc (2nd slice)", t_pym2, pym2))
    for name, t, res in runs:
        print(
            f"{name:16s} total {t:7.2f} s  compile {res.compile_s:6.2f} s  sample {res.sample_s:6.2f} s  "
            f"converged={res.converged} divergences={res.n_divergences}"
        )
    a = nut.table.set_index("method_b")
    b = pym.table.set_index("method_b")
    for method in a.index:
        print(
            f"icl/{method:5s} nutpie {a.loc[method, 'estimate']:7.3f} [{a.loc[method, 'ci_low']:.3f}, "
            f"{a.loc[method, 'ci_high']:.3f}] {a.loc[method, 'verdict']:12s} pymc {b.loc[method, 'estimate']:7.3f} "
            f"[{b.loc[method, 'ci_low']:.3f}, {b.loc[method, 'ci_high']:.3f}] {b.loc[method, 'verdict']}"
        )
    finite = np.isfinite(a["estimate"].to_numpy(float))
    diff = np.abs(a["estimate"].to_numpy(float)[finite] - b.loc[a.index, "estimate"].to_numpy(float)[finite])
    print("(pymc's compile column is model construction; PyTensor compiles inside its sample time)")
    print(f"per further slice of the same design: nutpie {t_nut2:.2f} s, pymc {t_pym2:.2f} s")
    print(f"RESULT bayes ratio={t_pym / t_nut:.2f} max_abs_diff={diff.max():.4f}")


if __name__ == "__main__":
    main()
