"""Fixed vs adaptive collection of one study: units collected and confirmatory verdicts.

Runs the study file as written (fixed design) and with ``collection:
adaptive`` added (defaults unless ``--min-orders`` / ``--max-sets`` /
``--check-every`` are given), each into its own run directory, and prints

    RESULT adaptive units_ratio=<fixed units / adaptive units> same_verdicts=<k>/<n> wall_ratio=<fixed / adaptive>

``same_verdicts`` compares the confirmatory verdict of every (model, task, N,
method, analysis) that both runs have. ``--fixed-run DIR`` reuses a finished
fixed run of the same study file (its manifest's study must equal the file's)
instead of collecting it again; its wall time is then read from its
results.json. Wall times mean little on a loaded machine; the units ratio
does not depend on the load.

Usage::

    python benchmarks/bench_adaptive.py                                   # the default study
    python benchmarks/bench_adaptive.py --study studies/shen_metrics.yaml
    python benchmarks/bench_adaptive.py --fixed-run reports/order_sensitivity
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def _confirmatory(results: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    return {(r["model"], r["task"], r["n_demos"], r["method_b"], r["analysis"]): r["verdict"]
            for r in results["comparisons"] if r["family"] == "confirmatory"}


def _run(study_text: str, out: Path) -> tuple[dict[str, Any], int, float]:
    from hyptest.workflows.study import run_study
    from hyptest.study import parse_study

    study = parse_study(yaml.safe_load(study_text))
    t0 = time.perf_counter()
    summary = run_study(study, study_text, out_dir=out, force=True)
    return summary.results, summary.n_units, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="studies/order_sensitivity.yaml")
    parser.add_argument("--fixed-run", default=None, help="reuse this finished fixed run of the same study file")
    parser.add_argument("--out", default=None, help="directory for the run directories (default: a temporary one)")
    parser.add_argument("--min-orders", type=int, default=None)
    parser.add_argument("--max-sets", type=int, default=None)
    parser.add_argument("--check-every", type=int, default=None)
    args = parser.parse_args()
    text = Path(args.study).read_text(encoding="utf-8")
    base = Path(args.out or tempfile.mkdtemp(prefix="bench_adaptive_"))
    print(f"study {args.study}; runs under {base}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    if args.fixed_run:
        from hyptest.study import parse_study

        run = Path(args.fixed_run)
        manifest = json.loads((run / "manifest.json").read_text())
        from hyptest.study import Study

        then = Study.model_validate(manifest["study"]).model_dump(mode="json")  # today's defaults filled in
        now = parse_study(yaml.safe_load(text)).model_dump(mode="json")
        if {k: v for k, v in then.items() if k != "executor"} != {k: v for k, v in now.items() if k != "executor"}:
            raise SystemExit(f"{run} holds another study than {args.study}; run without --fixed-run")
        fixed = json.loads((run / "results.json").read_text())
        fixed_units = len(manifest["units"])
        fixed_wall = float(fixed["provenance"]["wall_time_s"].get("total", float("nan")))
        print(f"fixed: reused {run}: {fixed_units} units, wall {fixed_wall:.0f} s as recorded", flush=True)
    else:
        fixed, fixed_units, fixed_wall = _run(text, base / "fixed")
        print(f"fixed: {fixed_units} units, wall {fixed_wall:.0f} s", flush=True)

    collection = {"mode": "adaptive"}
    for key in ("min_orders", "max_sets", "check_every"):
        if getattr(args, key) is not None:
            collection[key] = getattr(args, key)
    data = yaml.safe_load(text)
    data["collection"] = collection
    adaptive_text = text.rstrip("\n") + "\n" + yaml.safe_dump({"collection": collection}, sort_keys=False)
    assert yaml.safe_load(adaptive_text) == data
    adaptive, adaptive_units, adaptive_wall = _run(adaptive_text, base / "adaptive")
    print(f"adaptive: {adaptive_units} units, wall {adaptive_wall:.0f} s", flush=True)

    a, f = _confirmatory(adaptive), _confirmatory(fixed)
    common = sorted(set(a) & set(f), key=str)
    same = sum(a[k] == f[k] for k in common)
    for k in common:
        traj = next((t for t in adaptive.get("adaptive", []) if (t["model"], t["task"], t["n_demos"], t["method_b"],
                                                                  t["analysis"]) == k), None)
        stop = f"{traj['stop_sets']} sets ({traj['status']})" if traj else ""
        print(f"  {'/'.join(map(str, k))}: fixed {f[k]}, adaptive {a[k]} {stop}")
    print(f"RESULT adaptive units_ratio={fixed_units / adaptive_units:.3g} same_verdicts={same}/{len(common)} "
          f"wall_ratio={fixed_wall / adaptive_wall:.3g}", flush=True)


if __name__ == "__main__":
    main()
