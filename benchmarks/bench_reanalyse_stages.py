"""Where `reanalyse` spends its time and memory: wall, CPU and peak RSS of each stage of one run.

Each stage is a function of hyptest wrapped (at the name its caller looks up) with a timer; stages
nest, so a stage's numbers include those of the stages it calls. A thread samples the resident
memory every 20 ms and charges it to every stage running at that moment. Used for the per-stage
table of docs/performance.md ("The analysis stage at speed").

    python benchmarks/bench_reanalyse_stages.py FILE OUT_DIR [--no-bayes]

Prints one JSON object: ``total`` (wall, cpu, peak bytes, load average) and ``stages`` (per stage:
wall, cpu, peak bytes, calls). FILE is a long-format file, e.g. one written by bench_reanalyse.py
(``--data FILE --keep``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import threading
import time
from typing import Any

#: (module, attribute, label): the stages timed
STAGES = [
    ("hyptest.workflows.reanalyse", "read_long", "read_long"),
    ("hyptest.workflows.reanalyse", "_write_units", "unit files"),  # in the background since the records stay in memory:
    ("hyptest.workflows.reanalyse", "_UnitWrites.wait", "unit files (waits for the background writes)"),
    ("hyptest.workflows.reanalyse", "_analysed_rows", "analysed rows (from memory)"),
    ("hyptest.store.run_dir", "RunDir.read_units", "read_units"),
    ("hyptest.workflows.study", "final_step_rows", "final_step_rows"),
    ("hyptest.workflows.study", "run_analyses", "run_analyses"),
    ("hyptest.analysis.order", "order_sensitivity", "order_sensitivity"),
    ("hyptest.analysis.order", "order_cube", "order_cube"),
    ("hyptest.analysis.order", "_alignment_comparison", "alignment comparison (excl. draws)"),
    ("hyptest.analysis.order", "agreement_table", "agreement_table"),
    ("hyptest.analysis.order", "vocab_order_per_query", "vocab per query"),
    ("hyptest.analysis.descriptive", "vocab_order_per_query", "vocab per query (descriptive)"),
    ("hyptest.analysis.order", "_bayes", "bayes fits"),
    ("hyptest.analysis.order", "decide", "decide"),
    ("hyptest.workflows.study", "accuracy_table", "accuracy_table"),
    ("hyptest.workflows.study", "_device_text", "device text (imports torch)"),
    ("hyptest.workflows.study", "_write_bayes", "bayes netcdf"),
    ("hyptest.workflows.study", "_descriptive_tables", "descriptive tables"),
    ("hyptest.workflows.study", "_summary_rows", "summary rows (bootstrap)"),
    ("hyptest.workflows.study", "_write_report", "report"),
]


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    import importlib

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--no-bayes", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    stats: dict[str, dict[str, Any]] = {}
    active: list[dict[str, Any]] = []

    def wrap(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*a: Any, **k: Any) -> Any:
            s = stats.setdefault(label, {"wall": 0.0, "cpu": 0.0, "peak": 0, "calls": 0})
            active.append(s)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return inner(*a, **k)
            finally:
                s["wall"] += time.perf_counter() - wall
                s["cpu"] += time.process_time() - cpu
                s["calls"] += 1
                s["peak"] = max(s["peak"], _rss())
                active.remove(s)

        setattr(owner, name, timed)

    for module, attribute, label in STAGES:
        owner: Any = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        if hasattr(owner, name):  # an older tree may lack a stage
            wrap(owner, name, label)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = _rss()
            for s in list(active):
                s["peak"] = max(s["peak"], rss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    from hyptest.workflows.reanalyse import reanalyse

    wall, cpu = time.perf_counter(), time.process_time()
    reanalyse(args.data, out_dir=args.out, study_overrides={"analysis": {"bayes": False}} if args.no_bayes else None)
    stop.set()
    total = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
             "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "load": os.getloadavg()}
    print(json.dumps({"total": total, "stages": stats}))


if __name__ == "__main__":
    main()
