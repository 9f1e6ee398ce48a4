"""Fixed vs adaptive collection of one study: units collected and confirmatory verdicts.

Runs the study file as written (fixed design) and with ``collection:
adaptive`` added (defaults unless ``--min-orders`` / ``--max-sets`` /
``--check-every`` are given), each into its own run directory, and prints

    RESULT adaptive units_ratio=<fixed units / adaptive units> same_verdicts=<k>/<n> wall_ratio=<fixed / adaptive>

``same_verdicts`` compares the confirmatory verdict of every (model, task, N,
method, analysis) that both runs have.

``--replay N`` (with ``--fixed-run``) estimates the adaptive run from the fixed
one instead of collecting it: N times, each adaptive demo set of each slice is
one of the fixed run's sets drawn at random with ``k`` of its orders drawn
without replacement (the same draw for the reference and every method of the
slice, as the adaptive plan scores them), its statistic computed and the
family monitored by the production code
(:class:`hyptest.analysis.adaptive.SetObservations`,
:func:`hyptest.analysis.adaptive.monitor_sets`), and the units counted as the
adaptive rounds would collect them (every method gets the first round; the
reference runs while any comparison of its slice runs). Between-set variation
is understated (only the fixed run's sets are drawn), so the sets used are a
lower estimate when sets differ. It prints

    RESULT adaptive_replay units_ratio=<fixed units / mean adaptive units> same_verdicts=<mean k>/<n> all_same=<share of replays> reps=<N> ``--fixed-run DIR`` reuses a finished
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


def _replay(run: Path, adaptive_text: str, fixed: dict[str, Any], fixed_units: int, reps: int) -> None:
    """Estimate the adaptive run ``reps`` times by drawing its demo sets from the fixed run's (see the docstring)."""
    import numpy as np
    import pandas as pd

    from hyptest.analysis.adaptive import (_STATISTICS, SetObservations, family_keys, monitor_sets,
                                           orders_per_set, set_budget)
    from hyptest.analysis.cubes import order_cube
    from hyptest.records import final_step_rows
    from hyptest.stats.order_resampling import per_set_statistics
    from hyptest.study import parse_study
    from hyptest.workflows.adaptive import sets_needed

    study = parse_study(yaml.safe_load(adaptive_text))
    ref = study.analysis.reference
    records = final_step_rows(pd.concat([pd.read_parquet(f) for f in sorted((run / "units").glob("*.parquet"))],
                                        ignore_index=True))
    labels = {t: len(g["labels"].iloc[0]) for t, g in records.groupby("task")}
    keys = family_keys(study, labels)
    # per slice: the fixed sets' cubes of every method and statistic column, orders aligned by order_id
    cubes: dict[tuple[Any, ...], list[np.ndarray]] = {}
    for key in keys:
        column = _STATISTICS[key.analysis][1]
        rows = records[(records["model"] == key.model) & (records["task"] == key.task)
                       & (records["n_demos"] == key.n_demos)]
        for method in (ref, key.method):
            if (key.model, key.task, key.n_demos, method, column) not in cubes:
                cubes[(key.model, key.task, key.n_demos, method, column)] = [
                    order_cube(g, method, column)[0] for _, g in rows.groupby("demo_set")]
    fixed_verdicts = _confirmatory(fixed)
    totals, same, all_same = [], [], []
    mismatches: dict[tuple[Any, ...], int] = {}
    sets_used: dict[tuple[Any, ...], list[int]] = {}
    seeds = {name: len(getattr(study.method(name), "train_seeds", [0])) for name in study.method_names()}
    for rep in range(reps):
        rng = np.random.default_rng([20261205, rep])
        draws: dict[tuple[Any, ...], list[tuple[int, np.ndarray]]] = {}
        obs = SetObservations(study, keys)
        for key in keys:
            slice_key = (key.model, key.task, key.n_demos)
            k = orders_per_set(study, key.n_demos)
            column = _STATISTICS[key.analysis][1]
            sets_a = cubes[(*slice_key, ref, column)]
            sets_b = cubes[(*slice_key, key.method, column)]
            if slice_key not in draws:  # one draw of (fixed set, orders) per adaptive set, shared by the slice
                draws[slice_key] = []
                for _ in range(set_budget(study, key.n_demos)):
                    s = int(rng.integers(len(sets_a)))
                    draws[slice_key].append((s, rng.choice(sets_a[s].shape[1], size=k, replace=False)))
            values = {i: float(per_set_statistics(sets_a[s][:, idx], sets_b[s][:, idx], _STATISTICS[key.analysis][0])[0])
                      for i, (s, idx) in enumerate(draws[slice_key])}
            obs.values[key] = values
        state = monitor_sets(study, keys, obs)
        need = sets_needed(study, keys, state)  # the rounds' own rule: all comparisons stopped here
        totals.append(sum(sets * orders_per_set(study, slot[2]) * seeds[slot[3]] for slot, sets in need.items()))
        verdicts = {(k.model, k.task, k.n_demos, k.method, k.analysis): st.verdict
                    for k, st in zip(keys, state.comparisons)}
        common = [v for v in verdicts if v in fixed_verdicts]
        hits = sum(verdicts[v] == fixed_verdicts[v] for v in common)
        for k, st in zip(keys, state.comparisons):
            sets_used.setdefault((k.model, k.task, k.n_demos, k.method, k.analysis), []).append(int(st.n_used))
        for v in common:
            if verdicts[v] != fixed_verdicts[v]:
                mismatches[(*v, fixed_verdicts[v], verdicts[v])] = mismatches.get((*v, fixed_verdicts[v], verdicts[v]), 0) + 1
        same.append(hits)
        all_same.append(hits == len(common))
        if rep == 0:
            for key, st in zip(keys, state.comparisons):
                v = (key.model, key.task, key.n_demos, key.method, key.analysis)
                print(f"  replay 0: {'/'.join(map(str, v))}: fixed {fixed_verdicts.get(v)}, adaptive {st.verdict} "
                      f"after {st.n_used} sets ({st.status})", flush=True)
    for v, used in sets_used.items():
        print(f"  {'/'.join(map(str, v))}: sets used mean {np.mean(used):.1f} (range {min(used)}-{max(used)})")
    for v, count in sorted(mismatches.items(), key=str):
        print(f"  differs in {count}/{reps} replays: {'/'.join(map(str, v[:5]))}: fixed {v[5]}, adaptive {v[6]}")
    n_common = len([v for v in fixed_verdicts if v in {(k.model, k.task, k.n_demos, k.method, k.analysis) for k in keys}])
    print(f"adaptive units over {reps} replays: mean {np.mean(totals):.1f}, median {np.median(totals):.0f}, "
          f"range {min(totals)}-{max(totals)}; fixed {fixed_units}", flush=True)
    print(f"RESULT adaptive_replay units_ratio={fixed_units / np.mean(totals):.3g} same_verdicts={np.mean(same):.2f}/"
          f"{n_common} all_same={np.mean(all_same):.2f} reps={reps}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="studies/order_sensitivity.yaml")
    parser.add_argument("--fixed-run", default=None, help="reuse this finished fixed run of the same study file")
    parser.add_argument("--out", default=None, help="directory for the run directories (default: a temporary one)")
    parser.add_argument("--min-orders", type=int, default=None)
    parser.add_argument("--max-sets", type=int, default=None)
    parser.add_argument("--check-every", type=int, default=None)
    parser.add_argument("--replay", type=int, default=None, metavar="N",
                        help="with --fixed-run: estimate the adaptive run N times from the fixed run's units")
    args = parser.parse_args()
    if args.replay is not None and not args.fixed_run:
        raise SystemExit("--replay needs --fixed-run")
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
    if args.replay is not None:
        _replay(Path(args.fixed_run), adaptive_text, fixed, fixed_units, args.replay)
        return
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
