"""Time a study's collection on 1 Ray worker against 2 Ray workers, on one local Ray instance.

The study is a slightly larger version of the tests' tiny study (random 2-layer model, all 24
orders of N = 4 demos, 3 demo sets, 24 queries, ICL + 3 GD methods: 288 units in 12 work
groups), so compute outweighs starting the actors. Each worker reserves 1 CPU and runs torch on 1 thread; the local
executor (1 torch thread) is timed too, for reference. Every run starts from an empty run
directory and includes starting the actors and loading the model in them. The 1- and 2-worker runs
alternate ``--repeats`` times (default 2) and the best time of each is kept, which damps the noise
of a shared machine. Run from the
repository root (needs Ray: ``pip install "hyptest[ray]"``):

    python benchmarks/bench_ray.py

The last line printed is machine-readable:

    RESULT ray ratio=<t(1 worker)/t(2 workers)> max_abs_diff=<max |p_gold(1) - p_gold(2)|>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import hyptest  # noqa: F401
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyptest.collect.executors import LocalExecutor
from hyptest.collect.ray_executor import RayExecutor
from hyptest.workflows.study import run_study
from hyptest.store import RunDir
from hyptest.study import parse_study

STUDY = textwrap.dedent(
    """\
    name: bench_ray
    seed: 7
    models: [{name: tiny, source: tiny}]
    tasks: [sentiment]
    demos: {n_demos: 4, n_sets: 3, n_orders: all, n_queries: 24}
    methods:
      - kind: icl
      - {kind: gd, learning_rate: 0.01, steps: 2}
      - {kind: sgd, learning_rate: 0.01}
      - {kind: adam, learning_rate: 0.001}
    analysis: {n_resamples: 2000, bayes: false}
    """
)


def _collect(executor, out: Path) -> tuple[float, pd.DataFrame]:
    """Run the study; return the collection wall time and every (unit, query) row."""
    import yaml

    study = parse_study(yaml.safe_load(STUDY))
    arrivals: list[float] = []
    t0 = time.perf_counter()
    summary = run_study(study, STUDY, out_dir=out, threads=1, executor=executor,
                        progress=lambda done, total, _: arrivals.append(time.perf_counter()))
    collect = summary.results["provenance"]["wall_time_s"]["collect"]
    first, last = arrivals[1] - t0, arrivals[-1] - t0  # arrivals[0] is the "starting" call
    rate = (len(arrivals) - 2) / (last - first)
    run = RunDir(out)
    records = run.read_units(u["key"] for u in run.read_json("manifest.json")["units"])
    print(f"  {summary.n_units} units: collect {collect:.2f} s; first unit after {first:.2f} s "
          f"(start + model load, {getattr(executor, 'load_seconds', 0.0):.2f} s of loading in all), "
          f"then {rate:.1f} units/s", flush=True)
    return float(collect), records.set_index(["unit_key", "query_id"]).sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-local", action="store_true", help="skip the local-executor reference run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per worker count (best kept)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"Ray {ray.__version__}, cluster {ray.cluster_resources().get('CPU', 0):g} CPUs, "
          f"machine {os.cpu_count()} cores", flush=True)
    times: dict = {}
    frames: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        if not args.no_local:
            print("local executor (1 thread):", flush=True)
            times["local"], frames["local"] = _collect(LocalExecutor(), Path(folder) / "local")
        for repeat in range(args.repeats):
            for n in (1, 2):
                print(f"ray, {n} worker(s) x 1 CPU, run {repeat + 1}:", flush=True)
                elapsed, frame = _collect(RayExecutor(num_workers=n), Path(folder) / f"ray{n}-{repeat}")
                times[n] = min(times.get(n, float("inf")), elapsed)
                frames.setdefault(n, []).append(frame)
    ray.shutdown()

    diff = 0.0
    for a in frames[1]:
        for b in frames[2]:
            assert a.index.equals(b.index), "the runs must hold the same (unit, query) rows"
            diff = max(diff, float(np.max(np.abs(a["p_gold"].to_numpy() - b["p_gold"].to_numpy()))))
    a = frames[1][0]
    if "local" in frames:
        vs_local = float(np.max(np.abs(a["p_gold"].to_numpy() - frames["local"]["p_gold"].to_numpy())))
        print(f"local {times['local']:.2f} s; max |p_gold(ray) - p_gold(local)| = {vs_local:.3g}")
    print(f"best of {args.repeats}: 1 worker {times[1]:.2f} s, 2 workers {times[2]:.2f} s")
    print(f"RESULT ray ratio={times[1] / times[2]:.3f} max_abs_diff={diff:.3g}")


if __name__ == "__main__":
    main()
