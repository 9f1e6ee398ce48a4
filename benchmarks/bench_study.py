"""Time the default study end to end: hyptest's pipeline against the same pipeline with naive collectors.

``studies/order_sensitivity.yaml`` (SmolLM2-135M, sentiment, N = 4, 2 demo sets
x 8 orders, 32 queries, ICL + full-batch GD + SGD + Adam) runs through
``hyptest.workflows.study.run_study`` into a temporary directory. The naive pipeline
is the same ``run_study`` with an executor whose collectors are the naive ones
(one full forward per prompt and label word for ICL and for scoring after
training; ``copy.deepcopy`` of the model per GD unit and a full-logit training
loop). Analysis and report are identical in both, so the end-to-end ratio
includes them.

The full naive run takes tens of minutes on a 2-core machine, so by default
both pipelines are compared on a *reduced* study (1 demo set x 4 orders x 16
queries, same methods); ``--full`` compares them on the full default study.
hyptest alone also runs the full default study (timed) unless ``--skip-full``.
Run from the repository root:

    python benchmarks/bench_study.py [--full] [--skip-full]

The last line printed is machine-readable:

    RESULT study ratio=<naive/hyptest end to end> max_abs_diff=<max |p_hyptest - p_naive| over all rows>
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from _naive_collect import max_prob_diff, naive_prompt_scores, naive_train

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.executors import Executor
from hyptest.collect.scoring import QueryScores, reuse_freed_memory
from hyptest.collect.units import scores_to_frame
from hyptest.workflows.study import run_study
from hyptest.store import RunDir
from hyptest.study import load_study, parse_study

STUDY = Path(__file__).resolve().parents[1] / "studies" / "order_sensitivity.yaml"


class NaiveExecutor(Executor):
    """Runs every unit alone with the naive collectors (the published-code baseline)."""

    def __init__(self) -> None:
        self.load_seconds = 0.0

    def run(self, groups, *, study, tasks, on_unit) -> None:
        from hyptest.models import load_model

        for spec in study.models:
            mine = [g for g in groups if g.model == spec.name]
            if not mine:
                continue
            t0 = time.perf_counter()
            lm = load_model(spec)
            self.load_seconds += time.perf_counter() - t0
            for group in mine:
                for unit in group.units:
                    on_unit(unit, self._unit(lm, tasks[unit.task], study, unit))

    @staticmethod
    def _unit(lm, task, study, unit) -> pd.DataFrame:
        enc = PromptEncoder(lm.tokenizer, task)
        method = study.method(unit.method)
        queries = [task.example(q) for q in unit.query_ids]
        k = study.analysis.top_k
        if method.kind == "icl":
            demos = [task.example(i) for i in unit.order]
            logp, ids, probs = naive_prompt_scores(lm.model, lm.tokenizer, task, demos, queries, k)
            return scores_to_frame(unit, task, QueryScores(logp, ids, probs), step=0)
        examples = [enc.training_example(task.example(i)) for i in unit.order]
        model = naive_train(lm.model, examples, method, seed=unit.seed)
        logp, ids, probs = naive_prompt_scores(model, lm.tokenizer, task, [], queries, k)  # zero-shot prompts
        steps = method.steps if method.kind == "gd" else method.epochs * len(examples)
        return scores_to_frame(unit, task, QueryScores(logp, ids, probs), step=steps)


def _reduced(study_text: str) -> tuple[object, str]:
    data = yaml.safe_load(study_text)
    data["name"] = data["name"] + "_reduced"
    data["demos"].update({"n_sets": 1, "n_orders": 4, "n_queries": 16})
    text = yaml.safe_dump(data, sort_keys=False)
    return parse_study(data, source="reduced"), text


def _run(study, text, out: Path, executor=None) -> tuple[float, float, Path]:
    t0 = time.perf_counter()
    summary = run_study(study, text, out_dir=out, executor=executor)
    wall = time.perf_counter() - t0
    collect = summary.results["provenance"]["wall_time_s"]["collect"]
    return wall, collect, summary.run_dir


def _rows(run_dir: Path) -> pd.DataFrame:
    run = RunDir(run_dir)
    manifest = run.read_json("manifest.json")
    return run.read_units(u["key"] for u in manifest["units"]).set_index("unit_key")


def _max_diff(a_dir: Path, b_dir: Path) -> float:
    a, b = _rows(a_dir), _rows(b_dir)
    worst = 0.0
    for key in a.index.unique():
        ra, rb = a.loc[[key]].sort_values("query_id"), b.loc[[key]].sort_values("query_id")
        worst = max(worst, max_prob_diff(np.array(ra["label_logprobs"].tolist()),
                                         np.array(rb["label_logprobs"].tolist())))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="compare on the full default study (slow)")
    parser.add_argument("--skip-full", action="store_true", help="do not time hyptest on the full study")
    parser.add_argument("--repeats", type=int, default=2, help="hyptest runs of the compared study (best kept)")
    args = parser.parse_args()
    tuned = reuse_freed_memory()  # as UnitRunner does on CPU; process-wide, so the naive pipeline gets it too
    study, text = load_study(STUDY)
    compared, compared_text = (study, text) if args.full else _reduced(text)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start, glibc keeps freed memory: {tuned} (both pipelines)")
    d = compared.demos
    print(f"compared study: {compared.name}: {d.n_sets} set(s) x {d.n_orders} orders x {d.n_queries} queries, "
          f"methods {', '.join(compared.method_names())}" + ("" if args.full else
          "  [REDUCED: the full naive run is too long here; --full runs it]"))
    with tempfile.TemporaryDirectory(prefix="hyptest-bench-") as tmp:
        tmp_path = Path(tmp)
        ours, naive = [], None
        for i in range(args.repeats):
            ours.append(_run(compared, compared_text, tmp_path / f"ours{i}"))
            print(f"  hyptest wall {ours[-1][0]:8.2f} s (collect {ours[-1][1]:8.2f} s, load "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
            if naive is None:
                naive = _run(compared, compared_text, tmp_path / "naive", executor=NaiveExecutor())
                print(f"  naive   wall {naive[0]:8.2f} s (collect {naive[1]:8.2f} s, load "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
        best = min(ours)
        diff = _max_diff(best[2], naive[2])
        print(f"hyptest: {best[0]:.2f} s end to end, {min(o[1] for o in ours):.2f} s collecting (best of {len(ours)})")
        print(f"naive:   {naive[0]:.2f} s end to end, {naive[1]:.2f} s collecting")
        print(f"ratio end to end {naive[0] / best[0]:.2f}, collect only {naive[1] / min(o[1] for o in ours):.2f}")
        if not args.full and not args.skip_full:
            full = _run(study, text, tmp_path / "full")
            print(f"hyptest on the full default study ({study.demos.n_sets} sets x {study.demos.n_orders} orders x "
                  f"{study.demos.n_queries} queries, {len(study.method_names())} methods): {full[0]:.2f} s end to "
                  f"end, {full[1]:.2f} s collecting")
    print(f"RESULT study ratio={naive[0] / best[0]:.2f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
