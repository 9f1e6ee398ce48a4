"""Per-model stages after collection: weight sparsity and Dai et al.'s internals (ZS / ICL / FT).

Both need the model itself rather than its outputs, so they run once per model
after the units are collected: :func:`run_model_stages` loads each model once,
writes ``sparsity.parquet`` (Shen et al.'s attention-weight sparsity) and, when
the study has a ``dai`` block, Dai et al.'s logs under ``dai/ana_rlt/`` in
the run directory (:func:`hyptest.collect.dai.collect_dai_records`). Finished
work is recognised by a content key, so a rerun resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .._util import stable_hash
from .plan import demo_sets_for, method_settings, sample_queries
from ..metrics.sparsity import attention_sparsity_by_layer
from ..store import RunDir
from ..study import Study
from ..tasks import Task

__all__ = ["dai_ft_method", "dai_jobs", "run_model_stages", "sparsity_table"]

_DAI_KEY = "hyptest_key.json"


def sparsity_table(model: Any, *, model_name: str, threshold: float, relative: bool) -> pd.DataFrame:
    """Share of near-zero entries of every attention projection of ``model``, per layer.

    See :func:`hyptest.metrics.sparsity.attention_sparsity_by_layer`; adds the
    ``model`` column.
    """
    weights = {name: p.detach().float().cpu().numpy() for name, p in model.named_parameters()
               if name.endswith(".weight") and "attn" in name}
    table = attention_sparsity_by_layer(weights, threshold=threshold, relative=relative)
    table.insert(0, "model", model_name)
    return table


def dai_ft_method(dai: Any) -> Any:
    """Dai et al.'s fine-tuning: SGD, batch 1, demos in prompt order, K/V projections only, loss on all tokens."""
    from ..study import SGDMethod

    return SGDMethod(kind="sgd", learning_rate=dai.learning_rate, epochs=dai.epochs, params="attention_kv",
                     loss="all_tokens")


def dai_jobs(study: Study, tasks: dict[str, Task], identities: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (model, task, demo set, FT setting) the study's ``dai`` block asks for, with its content key.

    The FT setting is Dai et al.'s own (``ft`` None; folder
    ``<task>__N<n>_set<i>``) or one of ``dai.ft_methods`` (``ft`` its name;
    folder ``<task>__N<n>_set<i>__<name>``), which the Dai analysis then reads
    as a task of its own.
    """
    dai = study.dai
    if dai is None:
        return []
    jobs = []
    n_demos = dai.n_demos or study.demos.n_demos[0]
    for model in study.models:
        for spec in study.tasks:
            task = tasks[spec.name]
            queries = sample_queries(task, study.demos.n_queries, seed=study.seed)
            if dai.n_queries is not None:
                queries = queries[: dai.n_queries]
            for demo_set in demo_sets_for(task, n_demos, study)[: dai.n_sets]:
                order = demo_set.orders[0]
                for ft in [None, *dai.ft_methods]:
                    folder = f"{spec.name}__N{n_demos}_set{demo_set.index}" + (f"__{ft}" if ft else "")
                    # Dai's own FT keeps the key it had before `ft_methods` existed; analysis settings of the
                    # block do not change the records
                    setting = (dai.model_dump(mode="json", exclude={"ft_methods", "margins_vs_untrained"})
                               if ft is None else {"method": ft, **method_settings(study.method(ft))})
                    key = stable_hash({"model": identities[model.name], "task": task.content_hash(), "order": order,
                                       "queries": [q.id for q in queries], "ft": setting,
                                       "seed": study.seed}, length=24)
                    jobs.append({"model": model.name, "task": spec.name, "folder": folder, "order": order,
                                 "query_ids": [q.id for q in queries], "demo_set": demo_set.index,
                                 "n_demos": n_demos, "ft": ft, "key": key})
    return jobs


def _dai_done(folder: Path, key: str) -> bool:
    marker = folder / _DAI_KEY
    try:
        return json.loads(marker.read_text())["key"] == key and all(
            (folder / s / "record_info.jsonl").is_file() for s in ("zs", "icl", "ftzs"))
    except (OSError, ValueError, KeyError):
        return False


def run_model_stages(study: Study, tasks: dict[str, Task], run: RunDir, identities: dict[str, Any], *,
                     progress: Callable[[str], None] | None = None) -> list[str]:
    """Compute weight sparsity and (if asked) Dai et al.'s records for every model not yet done.

    Parameters
    ----------
    study : Study
    tasks : dict
        Loaded tasks by name.
    run : RunDir
        The run directory; ``sparsity.parquet`` and ``dai/`` are written there.
    identities : dict
        Model name -> identity (as in the manifest), part of the Dai content keys.
    progress : callable, optional
        Called with a line of text as each stage starts.

    Returns
    -------
    list of str
        Notes for the report (stages skipped and why).
    """
    from .dai import collect_dai_records
    from ..models import load_model

    a = study.analysis
    threshold, relative = a.sparsity_threshold, a.sparsity_relative
    notes: list[str] = []
    done_sparsity: set[str] = set()
    if run.exists("sparsity.parquet"):
        old = run.read_parquet("sparsity.parquet")
        same = old[(old["threshold"] == threshold) & (old["relative"] == relative)]
        done_sparsity = set(same["model"])
    jobs = dai_jobs(study, tasks, identities)
    if jobs and not run.is_local:
        notes.append("Dai et al.'s internals need a local run directory; skipped for this fsspec URL")
        jobs = []
    root = Path(str(run.path)) / "dai" if run.is_local else None
    todo = [j for j in jobs if not _dai_done(root / "ana_rlt" / j["model"] / j["folder"], j["key"])]
    frames = []
    for spec in study.models:
        mine = [j for j in todo if j["model"] == spec.name]
        if spec.name in done_sparsity and not mine:
            continue
        lm = load_model(spec)
        if spec.name not in done_sparsity:
            try:
                frames.append(sparsity_table(lm.model, model_name=spec.name, threshold=threshold,
                                             relative=relative))
            except ValueError as error:
                notes.append(f"{spec.name}: weight sparsity not computed: {error}")
        for job in mine:
            task = tasks[job["task"]]
            if progress:
                progress(f"Dai internals: {spec.name} / {job['folder']} (ZS, ICL, FT)")
            ft_method = dai_ft_method(study.dai) if job["ft"] is None else study.method(job["ft"])
            folder = collect_dai_records(
                lm, task, [task.example(i) for i in job["order"]], [task.example(q) for q in job["query_ids"]],
                ft_method=ft_method, out_dir=root, model_name=spec.name, task_name=job["folder"],
                seed=study.seed)
            (folder / _DAI_KEY).write_text(json.dumps({"key": job["key"], **{k: job[k] for k in (
                "model", "task", "demo_set", "n_demos", "order", "ft")}}, indent=1))
        del lm
    if frames:
        old = run.read_parquet("sparsity.parquet") if run.exists("sparsity.parquet") else None
        keep = [old[~old["model"].isin([f["model"].iloc[0] for f in frames])]] if old is not None else []
        run.write_parquet("sparsity.parquet", pd.concat([*keep, *frames], ignore_index=True))
    return notes
