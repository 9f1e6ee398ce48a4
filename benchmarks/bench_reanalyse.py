"""Reanalyse a large long-format CSV end to end: throughput and peak memory, against a naive load.

The file is synthesised here: one model, two binary tasks (``sst2``,
``rotten_tomatoes``), ICL, SGD (2 seeds) and full-batch GD on 8 demo sets x 16
orders of N = 4 demos, one row per (task, method, seed, demo set, order, query)
with the columns a researcher logs (model, task, method, n_demos, demo_set,
order_id, seed, step, query_id, gold, prob_negative, prob_positive and the
top-10 next-token ids and probabilities as JSON lists). The number of queries
is chosen so that the file has ``--mb`` megabytes (default 200: 507 904 rows,
496 queries per task). ICL has order effects per demo set and per (order, query), SGD smaller
ones, GD none.

Three child processes run on the same file, one after the other, each pinned to
``--cores`` CPUs (default 2) and timed from its start to its end; the peak
resident memory of each is its own ``ru_maxrss`` (``os.wait4``):

* ``hyptest``: ``hyptest.workflows.reanalyse.reanalyse(file, out_dir)`` with the default
  analysis settings: import, every analysis of the synthetic study (the
  hierarchical Bayes model included, unless ``--no-bayes``), results.json and
  report.html;
* ``import``: ``hyptest.importers.read_long(file)`` alone;
* ``naive``: what a researcher would write to load it: ``pandas.read_csv`` of
  the whole file, then ``json.loads`` of each list cell, then p_gold per row.

Run from the repository root:

    python benchmarks/bench_reanalyse.py [--mb 200] [--cores 2] [--data FILE] [--keep] [--no-bayes]

The last line printed is machine-readable:

    RESULT reanalyse_throughput mb_per_s=<file MB / hyptest wall s> peak_gb=<hyptest peak RSS, GB>
        ratio=<naive load s / hyptest import s> max_abs_diff=<max |p_gold hyptest - p_gold naive|>

(one line). MB and GB are 10^6 and 10^9 bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("negative", "positive")
TASKS = ("sst2", "rotten_tomatoes")
#: (method, seeds, step, order-effect scale on the logit)
METHODS = (("icl", (0,), 0, 1.0), ("sgd", (0, 1), 8, 0.25), ("gd", (0,), 8, 0.0))
N_DEMOS, N_SETS, N_ORDERS, TOP_K, VOCAB = 4, 8, 16, 10, 151_936
HEADER = ["model", "task", "method", "n_demos", "demo_set", "order_id", "seed", "step", "query_id", "gold",
          *(f"prob_{label}" for label in LABELS), "topk_ids", "topk_probs"]
ROWS_PER_QUERY = len(TASKS) * sum(len(seeds) for _, seeds, _, _ in METHODS) * N_SETS * N_ORDERS


def synthesise(path: Path, mb: float, seed: int = 0) -> int:
    """Write the long-format CSV of about ``mb`` megabytes; return its number of data rows."""
    rng = np.random.default_rng(seed)
    probe = _rows(rng, 2)
    per_query = len("".join(probe).encode()) / 2
    n_queries = max(2, math.ceil(mb * 1e6 / per_query))
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(HEADER) + "\n")
        for start in range(0, n_queries, 25):
            lines = _rows(rng, min(25, n_queries - start), first=start)
            fh.writelines(lines)
            n += len(lines)
    return n


def _rows(rng: np.random.Generator, n_queries: int, first: int = 0) -> list[str]:
    """The rows of ``n_queries`` queries (every task, method, seed, demo set and order)."""
    out = []
    for task in TASKS:
        difficulty = rng.normal(0.8, 1.5, n_queries)
        gold = rng.integers(0, 2, n_queries)
        base_ids = np.stack([rng.choice(VOCAB, TOP_K, replace=False) for _ in range(n_queries)])
        set_effect = rng.normal(0, 0.3, N_SETS)
        for method, seeds, step, scale in METHODS:
            order_effect = rng.normal(0, 0.4 * scale, (N_SETS, N_ORDERS))
            for s in seeds:
                for d in range(N_SETS):
                    for o in range(N_ORDERS):
                        if o == 0 or scale:  # an order-invariant method gives every order the same outputs
                            interaction = rng.normal(0, 0.3 * scale, n_queries)
                            noise = rng.normal(0, 0.05, n_queries) if method == "sgd" else 0.0
                            logit = difficulty + set_effect[d] + order_effect[d, o] + interaction + noise
                            p_gold = 1 / (1 + np.exp(-logit))
                            mass = rng.uniform(0.6, 0.95, n_queries)
                            probs = np.sort(rng.dirichlet(np.ones(TOP_K + 2), n_queries)[:, :TOP_K], axis=1)[:, ::-1]
                            probs = probs / probs.sum(axis=1, keepdims=True) * mass[:, None]
                            ids = base_ids.copy()
                            swap = rng.random((n_queries, TOP_K)) < 0.2 * scale
                            ids[swap] = rng.integers(0, VOCAB, int(swap.sum()))
                        for q in range(n_queries):
                            g = int(gold[q])
                            p_pos = float(p_gold[q] if g == 1 else 1 - p_gold[q])
                            row_ids = list(dict.fromkeys(ids[q].tolist()))
                            row_ids += [i for i in range(VOCAB, VOCAB + TOP_K)][: TOP_K - len(row_ids)]
                            out.append(
                                f"Qwen2.5-0.5B,{task},{method},{N_DEMOS},{d},{o},{s},{step},{task}-{first + q:05d},"
                                f"{LABELS[g]},{1 - p_pos!r},{p_pos!r},\"{json.dumps(row_ids)}\","
                                f"\"{json.dumps(probs[q].tolist())}\"\n")
    return out


# ---------------------------------------------------------------------------
# the three jobs, each run in its own child process
# ---------------------------------------------------------------------------


def _job_hyptest(data: str, out: str) -> dict:
    from hyptest.workflows.reanalyse import reanalyse

    bayes = os.environ.get("BENCH_REANALYSE_BAYES", "1") == "1"
    reanalyse(data, out_dir=out, study_overrides=None if bayes else {"analysis": {"bayes": False}})
    results = json.loads((Path(out) / "results.json").read_text())
    order = [r for r in results["comparisons"] if r["analysis"] == "order_sensitivity"]
    return {"n_comparisons": len(results["comparisons"]), "wall_time_s": results["provenance"]["wall_time_s"],
            "order_sensitivity": [(r["task"], r["method_b"], r["estimate"], r["verdict"]) for r in order]}


def _job_import(data: str, out: str) -> dict:
    from hyptest.importers import read_long

    res = read_long(data)
    np.save(Path(out) / "p_gold_hyptest.npy", res.records["p_gold"].to_numpy(float))
    return {"rows": len(res.records), "skipped": res.n_rows_skipped}


def _job_naive(data: str, out: str) -> dict:
    import pandas as pd

    frame = pd.read_csv(data)
    for column in ("topk_ids", "topk_probs"):
        frame[column] = frame[column].map(json.loads)
    probs = frame[[f"prob_{label}" for label in LABELS]].to_numpy(float)
    probs = probs / probs.sum(axis=1, keepdims=True)
    gold = frame["gold"].map({label: i for i, label in enumerate(LABELS)}).to_numpy()
    p_gold = probs[np.arange(len(frame)), gold]
    np.save(Path(out) / "p_gold_naive.npy", p_gold)
    return {"rows": len(frame)}


JOBS = {"hyptest": _job_hyptest, "import": _job_import, "naive": _job_naive}


def _child(job: str, data: str, out: str, result: str) -> None:
    cpus = os.environ.get("BENCH_REANALYSE_CPUS")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])
    t0 = time.perf_counter()
    info = JOBS[job](data, out)
    info["wall_s"] = time.perf_counter() - t0
    Path(result).write_text(json.dumps(info))


def run_child(job: str, data: Path, out: Path, cores: int, *, bayes: bool = True) -> dict:
    """Run one job in a child process pinned to ``cores`` CPUs; its wall time and peak RSS (bytes)."""
    result = out / f"{job}.json"
    cpus = sorted(os.sched_getaffinity(0))[:cores] if hasattr(os, "sched_getaffinity") else []
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "OPENBLAS_NUM_THREADS": str(cores),
           "MKL_NUM_THREADS": str(cores), "NUMBA_NUM_THREADS": str(cores),
           "BENCH_REANALYSE_CPUS": ",".join(map(str, cpus)), "BENCH_REANALYSE_BAYES": "1" if bayes else "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", job, str(data), str(out / job), str(result)],
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the {job} child failed with exit status {proc.returncode}")
    info = json.loads(result.read_text())
    info["process_wall_s"] = wall  # interpreter start and imports included
    info["peak_rss"] = usage.ru_maxrss * 1024  # kilobytes on Linux
    info["cpu_s"] = usage.ru_utime + usage.ru_stime
    return info


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=200.0, help="size of the synthesised CSV in MB (default 200)")
    parser.add_argument("--cores", type=int, default=2, help="CPUs each child is pinned to (default 2)")
    parser.add_argument("--data", type=Path, default=None,
                        help="use (or create, if missing) this CSV instead of a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data and run directory)")
    parser.add_argument("--skip-naive", action="store_true", help="do not run the naive load")
    parser.add_argument("--no-bayes", action="store_true",
                        help="reanalyse with analysis.bayes off (the hierarchical model's compile and sampling)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_reanalyse_"))
    data = args.data or work / "long.csv"
    if not data.exists():
        t0 = time.perf_counter()
        n_rows = synthesise(data, args.mb)
        print(f"synthesised {data} ({n_rows} rows) in {time.perf_counter() - t0:.1f} s")
    size_mb = data.stat().st_size / 1e6
    for job in JOBS:
        (work / job).mkdir(exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (children pinned to "
          f"{args.cores}), load average {os.getloadavg()[0]:.1f} at start; file {size_mb:.1f} MB")
    ours = run_child("hyptest", data, work, args.cores, bayes=not args.no_bayes)
    load_after = os.getloadavg()[0]
    imported = run_child("import", data, work, args.cores)
    print(f"hyptest reanalyse (import + analysis + report{', bayes off' if args.no_bayes else ''}): "
          f"{ours['wall_s']:.1f} s wall "
          f"({ours['process_wall_s']:.1f} s with interpreter start), cpu {ours['cpu_s']:.1f} s, "
          f"peak RSS {ours['peak_rss'] / 1e9:.2f} GB; stages {ours['wall_time_s']}")
    print(f"hyptest read_long alone: {imported['wall_s']:.1f} s, peak RSS {imported['peak_rss'] / 1e9:.2f} GB, "
          f"{imported['rows']} rows")
    for task, method, estimate, verdict in ours["order_sensitivity"]:
        shown = "inf (order-invariant)" if estimate is None else f"{estimate:.3f}"
        print(f"  {task} icl vs {method}: log SD ratio {shown}, {verdict}")
    ratio, diff = float("nan"), float("nan")
    if not args.skip_naive:
        naive = run_child("naive", data, work, args.cores)
        ratio = naive["wall_s"] / imported["wall_s"]
        diff = float(np.max(np.abs(np.load(work / "naive" / "p_gold_naive.npy")
                                   - np.load(work / "import" / "p_gold_hyptest.npy"))))
        print(f"naive pandas.read_csv + json.loads: {naive['wall_s']:.1f} s, peak RSS {naive['peak_rss'] / 1e9:.2f} GB"
              f" (ratio naive / hyptest import {ratio:.2f})")
    print(f"load average {load_after:.1f} after the hyptest run")
    if not args.keep and args.data is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    elif args.keep:
        print(f"kept {work}")
    print(f"RESULT reanalyse_throughput mb_per_s={size_mb / ours['wall_s']:.2f} peak_gb={ours['peak_rss'] / 1e9:.2f} "
          f"ratio={ratio:.2f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
