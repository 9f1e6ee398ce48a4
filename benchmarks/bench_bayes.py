"""Time hyptest's Bayesian fits: nutpie on the hand-written numba kernels vs nutpie on the PyMC-compiled model.

The data have the size of hyptest's default study for one (model, task, N)
slice: 2 demo sets x 8 orders x 32 queries x 4 methods (icl, gd, sgd, adam),
simulated on the logit scale with order standard deviations icl 1.0, gd 0
(full-batch GD: exactly order-invariant), sgd 0.3, adam 0.15 and residual
(order x query) standard deviations 0.3, 0, 0.1, 0.05 (per-query SDs across
orders sqrt(sigma_order^2 + sigma_resid^2), the compared quantity: 1.04, 0,
0.32, 0.16). Each path runs ``fit_order_variance`` with its defaults (4
chains x 1000 draws after 1000 warm-up steps) and then ``fit_pooled`` on two
slices' log ratios. The kernel path (``sampler="nutpie"``) runs first, so its
time is that of a fresh process: importing nutpie and numba and loading the
kernels from numba's on-disk cache (compiling them if the cache is cold);
PyMC is not imported until the PyMC-compiled path (``sampler="nutpie-pymc"``,
what ``"nutpie"`` meant before) runs, whose time includes importing PyMC and
``nutpie.compile_pymc_model`` for both models. ``--with-pymc`` adds PyMC's
own NUTS (``sampler="pymc"``, slow). Run from the repository root:

    python benchmarks/bench_bayes.py [--with-pymc]

The last line printed is machine-readable:

    RESULT bayes ratio=<nutpie-pymc time / nutpie-kernel time> max_abs_diff=<max |difference of posterior mean log ratios|>

where both times are of the first order fit plus the pooled fit in the
process (each path's first, cold, use). A second slice of the same design is
timed too (no compile on either path).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from hyptest.stats.bayes import fit_order_variance, fit_pooled
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hyptest.stats.bayes import fit_order_variance, fit_pooled

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


def _pool(fits, sampler: str) -> tuple[float, object]:
    rows = pd.concat([f.table.assign(model=f"slice{i}") for i, f in enumerate(fits)], ignore_index=True)
    effects = rows[rows["method_b"] == "sgd"][["model", "task", "method_a", "method_b", "estimate", "posterior_sd"]]
    t0 = time.perf_counter()
    res = fit_pooled(effects, sampler=sampler, seed=1)
    return time.perf_counter() - t0, res


def main() -> None:
    samplers = ["nutpie", "nutpie-pymc"] + (["pymc"] if "--with-pymc" in sys.argv[1:] else [])
    data, data2 = simulate(), simulate(seed=7)
    print(f"rows={len(data)} sets={N_SETS} orders={N_ORDERS} queries={N_QUERIES} methods={len(SIGMA_ORDER)}")
    first: dict[str, float] = {}
    tables = {}
    for sampler in samplers:
        t1, fit = _run(data, sampler)
        t2, fit2 = _run(data2, sampler)  # another slice, same design
        tp, pooled = _pool([fit, fit2], sampler)
        first[sampler] = t1 + tp
        tables[sampler] = fit.table.set_index("method_b")
        for name, t, res in ((f"{sampler} order", t1, fit), (f"{sampler} order, 2nd", t2, fit2),
                             (f"{sampler} pooled", tp, pooled)):
            print(f"{name:24s} total {t:7.2f} s  compile {res.compile_s:6.2f} s  sample {res.sample_s:6.2f} s  "
                  f"sampler={res.sampler} converged={res.converged} divergences={res.n_divergences}")
        print(f"{sampler:24s} pooled icl/sgd {pooled.table['estimate'].iloc[0]:7.3f} "
              f"[{pooled.table['ci_low'].iloc[0]:.3f}, {pooled.table['ci_high'].iloc[0]:.3f}]")
    a, b = tables["nutpie"], tables["nutpie-pymc"]
    for method in a.index:
        print(
            f"icl/{method:5s} kernels {a.loc[method, 'estimate']:7.3f} [{a.loc[method, 'ci_low']:.3f}, "
            f"{a.loc[method, 'ci_high']:.3f}] {a.loc[method, 'verdict']:12s} pymc-compiled "
            f"{b.loc[method, 'estimate']:7.3f} [{b.loc[method, 'ci_low']:.3f}, {b.loc[method, 'ci_high']:.3f}] "
            f"{b.loc[method, 'verdict']}"
        )
    finite = np.isfinite(a["estimate"].to_numpy(float))
    diff = np.abs(a["estimate"].to_numpy(float)[finite] - b.loc[a.index, "estimate"].to_numpy(float)[finite])
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"RESULT bayes ratio={first['nutpie-pymc'] / first['nutpie']:.2f} max_abs_diff={diff.max():.4f}")


if __name__ == "__main__":
    main()
