"""Tests for the self-contained HTML report (hyptest.report)."""

from __future__ import annotations

import html as html_lib
import math
import pathlib
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from hyptest.report import render_report, write_report
from hyptest.report import figures
from hyptest.report.figures.canvas import pixel_box
from hyptest.report.html import (
    banner_text,
    effect_text,
    fmt_num,
    fmt_p,
    fmt_ratio,
    headline_text,
    verdict_phrase,
)
from hyptest.report.views.format import _pct

EVIL_TASK = '<script>alert("x")</script>'
EVIL_MODEL = "m'o\"del<b>&"
SVG_NS = "http://www.w3.org/2000/svg"

GROUPS = [
    ("smollm2-135m", "sentiment", 4),
    (EVIL_MODEL, EVIL_TASK, 8),
]
METHODS = ["icl", "gd", "sgd", "adam"]
KINDS = {"icl": "icl", "gd": "gd", "sgd": "sgd", "adam": "adam"}
#: Comparisons 0-3 are the original order-sensitivity ones; 4-6 are extra analyses
#: other parts of hyptest may add (the report must render them without knowing them).
N_ORDER_SENSITIVITY_COMPARISONS = 4


def _per_query(groups=GROUPS) -> pd.DataFrame:
    rng = np.random.default_rng(123)
    rows = []
    for gi, (model, task, n) in enumerate(groups):
        n_sets, n_queries = 3, 5 + gi  # 15 and 18 units per method
        for method in METHODS:
            for d in range(n_sets):
                for q in range(n_queries):
                    if method == "gd":
                        sd = abs(rng.normal(0, 1e-9))
                    else:
                        sd = abs(rng.normal(0.03 if method == "icl" else 0.01, 0.01))
                    rows.append(
                        {
                            "model": model,
                            "task": task,
                            "n_demos": n,
                            "method": method,
                            "demo_set": d,
                            "query_id": f"q{q}",
                            "sd_gold": sd,
                            "sd_labels": sd * 0.9,
                        }
                    )
    return pd.DataFrame(rows)


def _per_order(groups=GROUPS) -> pd.DataFrame:
    """Synthetic per_order frame with holes, so that pairing is not trivial.

    - sgd lacks (demo set 1, order 2) entirely and stores two steps (1 and 3)
      per unit: only the last step may be drawn;
    - adam lacks query q0 everywhere;
    - ICL lacks (demo set 0, order 5, q1).
    """
    rng = np.random.default_rng(77)
    rows = []
    for model, task, n in groups:
        for method in METHODS:
            for d in range(2):
                for o in range(6):
                    if method == "sgd" and (d, o) == (1, 2):
                        continue
                    steps = {"icl": [0], "gd": [5], "sgd": [1, 3], "adam": [3]}[method]
                    for q in range(5):
                        if method == "adam" and q == 0:
                            continue
                        if method == "icl" and (d, o, q) == (0, 5, 1):
                            continue
                        for step in steps:
                            rows.append(
                                {
                                    "model": model, "task": task, "n_demos": n, "method": method,
                                    "method_kind": KINDS[method], "demo_set": d, "order_id": o,
                                    "seed": 0, "step": step, "query_id": f"q{q}",
                                    "p_gold": float(rng.uniform(0.05, 0.95)),
                                }
                            )
    return pd.DataFrame(rows)


def _expected_pairs(po: pd.DataFrame, model, task, n, method) -> int:
    """Number of (demo set, order, query) present for both ICL and ``method`` (plain sets)."""
    g = po[(po.model == model) & (po.task == task) & (po.n_demos == n)]

    def keys(m):
        sub = g[g.method == m]
        return set(zip(sub.demo_set, sub.order_id, sub.query_id, strict=True))

    return len(keys("icl") & keys(method))


LOG125 = math.log(1.25)
#: What the results contract (hyptest.contract.Results) requires of every results.json; tests add their sections.
PROVENANCE = {"hyptest_version": "0.0.test", "python": "3.11", "libraries": {}}


def contract_results(**sections) -> dict:
    """The smallest results.json the contract accepts, with ``sections`` added."""
    return {"study": {}, "comparisons": [], "provenance": dict(PROVENANCE), **sections}


def contract_row(verdict: str, analysis: str = "order_sensitivity", role: str = "confirmatory", **kw) -> dict:
    """A comparison row with only the fields the contract requires."""
    return {"model": "m", "task": "t", "analysis": analysis, "family": analysis, "role": role, "rule": "two_sided",
            "verdict": verdict, **kw}

RESAMPLING = ("bootstrap: orders resampled within demo sets (a sample of the N! orders), the same for both methods; "
              "queries resampled within demo sets; the 3 demo set(s) fixed (inference conditional on the sampled "
              "demo sets)")


def _comparison(model, task, n, b, verdict, **kw):
    """A row of the results.json contract (hyptest.results.decide): a confirmatory order-sensitivity row."""
    base = {
        "model": model, "task": task, "n_demos": n, "method_a": "icl", "method_b": b,
        "analysis": "order_sensitivity", "family": "confirmatory", "role": "confirmatory", "rule": "two_sided",
        "estimate": 2.5, "statistic": 2.5, "scale": f"log ratio of mean per-query order SD (icl / {b})",
        "null_value": 0.0, "mean_a": 0.031, "mean_b": 0.00254, "ratio": 12.2, "n": 15,
        "margin": LOG125, "margin_ratio": 1.25,
        "margin_source": "declared: analysis.margins.order_sensitivity = ratio 1.25",
        "resolution": None, "resampling": RESAMPLING, "test": "two-stage bootstrap (orders, queries) + TOST",
        "ci_low": 2.2, "ci_high": 2.8, "ci_level": 1 - 0.05 / 3,
        "ci_method": "percentile bootstrap at the level the verdict used",
        "eq_low": 2.25, "eq_high": 2.75, "eq_level": 0.9,
        "p_value": 0.0001, "p_adjusted": 0.0004, "p_equivalence": 1.0, "p_equivalence_adjusted": 1.0,
        "level_difference": 0.05 / 3, "level_equivalence": 0.05, "family_size": 4, "n_resamples": 10000,
        "min_equivalence_margin": 2.75, "min_equivalence_ratio": math.exp(2.75),
        "verdict": verdict, "note": None, "adjust_method": "holm",
    }
    base.update(kw)
    return base


def _agreement(b, verdict, metric, estimate, lo, hi, mean_a, mean_b, **kw):
    """An exploratory agreement row: a difference of means, no margin."""
    return _comparison("smollm2-135m", "sentiment", 4, b, verdict, analysis=metric, family=metric,
                       role="exploratory", estimate=estimate, statistic=estimate,
                       scale="difference of means (icl vs itself − icl vs " + b + ")",
                       ci_low=lo, ci_high=hi, eq_low=lo + 0.1 * (hi - lo), eq_high=hi - 0.1 * (hi - lo),
                       margin=None, margin_ratio=None, margin_source=None, mean_a=mean_a, mean_b=mean_b,
                       ratio=mean_a / mean_b, family_size=3, test="paired bootstrap",
                       p_equivalence=None, p_equivalence_adjusted=None,
                       min_equivalence_margin=max(abs(lo), abs(hi)), min_equivalence_ratio=None,
                       resampling="bootstrap: queries within demo sets; orders fixed (each value averages the "
                                  "sampled orders), 3 demo set(s) fixed", **kw)


ROPE = 0.223
#: Edges of the synthetic posterior histograms (40 bins over [-2, 2]).
EDGES = np.linspace(-2.0, 2.0, 41)


def _bayes_row(model, task, n, b, verdict, est, lo, hi, p_rope, note=""):
    return {"model": model, "task": task, "n_demos": n, "method_a": "icl", "method_b": b,
            "analysis": "bayes_order_variance", "family": "bayes_order_variance", "role": "bayesian",
            "rule": "given", "estimate": est, "statistic": est,
            "scale": "log ratio of the per-query SD across orders (sqrt(sigma_order^2 + sigma_resid^2)) "
                     "(posterior mean)",
            "null_value": 0.0, "ci_low": lo, "ci_high": hi,
            "ci_level": 0.94, "ci_method": "94% HDI of the log ratio of per-query SD across orders",
            "p_value": None, "p_adjusted": None, "adjust_method": "holm", "p_rope": p_rope,
            "rope": ROPE, "margin": ROPE, "margin_source": "ROPE on the log SD ratio (analysis.rope)",
            "resampling": "posterior (hierarchical model: queries, demo sets and orders as random effects)",
            "n": 96, "verdict": verdict, "note": note,
            "test": "hierarchical Bayes (PyMC, nutpie): HDI + ROPE ±0.223"}


def _posterior(mean: float, sd: float) -> dict:
    draws = np.random.default_rng(int(1000 * (mean + 5))).normal(mean, sd, 4000)
    counts, _ = np.histogram(np.clip(draws, -1.999, 1.999), bins=EDGES)
    return {"counts": counts.tolist(), "edges": EDGES.tolist()}


def _diag(parameter, r_hat=1.001, ess_bulk=3000.0, ess_tail=2500.0):
    return {"parameter": parameter, "mean": 0.1, "sd": 0.05, "hdi_low": 0.01, "hdi_high": 0.2,
            "hdi_prob": 0.94, "r_hat": r_hat, "ess_bulk": ess_bulk, "ess_tail": ess_tail}


def _bayes_slices(evil_task: str = EVIL_TASK) -> list[dict]:
    """A slice that did not converge (smollm2) and one that did (the hostile names)."""
    return [
        {"model": "smollm2-135m", "task": "sentiment", "n_demos": 4,
         "file": "bayes_smollm2-135m_sentiment_N4.nc", "converged": False,
         "reason": "r_hat(sigma_order[adam])=1.310 > 1.01; ess_bulk(sigma_order[adam])=12 < 400 <i>",
         "order_invariant": ["gd"], "sampler": "nutpie", "wall_time_s": 12.5,
         "posteriors": {"sgd": _posterior(-0.4, 0.3), "adam": _posterior(0.2, 0.6)},
         "diagnostics": [_diag("sigma_order[icl]"), _diag("sigma_order[sgd]", ess_tail=350.0),
                         _diag("sigma_order[adam]", r_hat=1.31, ess_bulk=12.0, ess_tail=30.0),
                         _diag("log_ratio[sgd]")]},
        {"model": EVIL_MODEL, "task": evil_task, "n_demos": 8,
         "file": f"bayes_{evil_task}.nc", "converged": True, "reason": "",
         "order_invariant": ["gd"], "sampler": "nutpie", "wall_time_s": 30.2,
         "posteriors": {"sgd": _posterior(0.05, 0.09), "adam": _posterior(0.3, 0.2)},
         "diagnostics": [_diag("sigma_order[icl]"), _diag("log_ratio[sgd]"), _diag("log_ratio[adam]")]},
    ]


def AGREEMENT_ROWS(evil_task: str = EVIL_TASK) -> list[dict]:  # noqa: N802
    rows = []
    for method, vals in {"icl": (0.9, 0.99, 0.01), "gd": (0.6, 0.98, 0.12), "sgd": (0.7, 0.985, 0.05),
                         "adam": (0.65, 0.97, 0.08)}.items():
        rows.append({"model": "smollm2-135m", "task": "sentiment", "n_demos": 4, "method": method,
                     "token_overlap": vals[0], "overlap_cosine": vals[1], "label_js": vals[2]})
    for method, vals in {"icl": (0.8, 0.95, 0.02), "gd": (0.5, 0.9, 0.2)}.items():
        rows.append({"model": EVIL_MODEL, "task": evil_task, "n_demos": 8, "method": method,
                     "token_overlap": vals[0], "overlap_cosine": vals[1], "label_js": vals[2]})
    return rows


def _results(per_query: pd.DataFrame, evil_task: str = EVIL_TASK) -> dict:
    comps = [
        # 0-3: the confirmatory family (order sensitivity vs ICL)
        _comparison("smollm2-135m", "sentiment", 4, "gd", "different",
                    summary="ICL is far more order-sensitive than full-batch GD."),
        _comparison("smollm2-135m", "sentiment", 4, "sgd", "equivalent",
                    estimate=0.02, ci_low=-0.15, ci_high=0.19, ci_level=0.95, eq_low=-0.1, eq_high=0.14,
                    ratio=1.02, p_value=0.6, p_adjusted=1.0, p_equivalence=0.003, p_equivalence_adjusted=0.009,
                    level_difference=0.05, level_equivalence=0.05 / 3, eq_level=1 - 0.1 / 3,
                    min_equivalence_margin=0.14, min_equivalence_ratio=math.exp(0.14)),
        _comparison("smollm2-135m", "sentiment", 4, "adam", "negligible",
                    estimate=0.1, ci_low=0.03, ci_high=0.17, eq_low=0.05, eq_high=0.15, ratio=1.1,
                    p_value=1.23e-05, p_adjusted=1.23e-05, p_equivalence=0.01, p_equivalence_adjusted=0.02,
                    min_equivalence_margin=0.15, min_equivalence_ratio=math.exp(0.15)),
        _comparison(EVIL_MODEL, evil_task, 8, "gd", "inconclusive",
                    estimate=0.3, ci_low=-0.1, ci_high=0.7, ci_level=0.95, eq_low=-0.05, eq_high=0.65,
                    ratio=1.35, p_value=0.2, p_adjusted=0.4, p_equivalence=0.8, p_equivalence_adjusted=0.8,
                    level_difference=0.05, min_equivalence_margin=0.65, min_equivalence_ratio=math.exp(0.65)),
        # 4: a secondary order analysis, with fields the report does not know about
        _comparison("smollm2-135m", "sentiment", 4, "sgd", "equivalent", analysis="order_sensitivity_labels",
                    family="order_sensitivity_labels", role="exploratory", family_size=3,
                    estimate=0.01, ci_low=-0.2, ci_high=0.22, ci_level=0.95, eq_low=-0.12, eq_high=0.15,
                    p_value=0.8, p_adjusted=1.0, p_equivalence=0.004, p_equivalence_adjusted=0.012,
                    min_equivalence_margin=0.15, p_lower=0.003, p_upper=0.001),
        {"model": "smollm2-135m", "task": "sentiment", "n_demos": 4, "method_a": "icl",
         "method_b": "adam", "analysis": "bayes_order_variance", "family": "bayes_order_variance", "role": "bayesian",
         "rule": "given",
         "verdict": "did_not_converge", "estimate": None, "ci_low": None, "ci_high": None, "rhat": 1.31,
         "ess_bulk": 12.0, "summary": "R-hat 1.31 > 1.01: the sampler did not converge."},
        # 6: order alignment against rho0 (one-sided bounds)
        _comparison("smollm2-135m", "sentiment", 4, "sgd", "different", analysis="order_alignment",
                    family="order_alignment", role="exploratory", rule="threshold", null_value=0.9,
                    estimate=0.42, statistic=0.42, scale="correlation of per-order effects (icl, sgd)",
                    ci_low=0.3, ci_high=0.48, ci_level=None, eq_low=0.3, eq_high=None, eq_level=0.95,
                    level_difference=0.025, level_equivalence=0.05, margin=None, margin_ratio=None,
                    margin_source="declared: analysis.alignment_rho0 (equivalence predicts r = 1)",
                    p_value=0.001, p_adjusted=0.002, p_equivalence=1.0, p_equivalence_adjusted=1.0,
                    ratio=None, family_size=2, min_equivalence_margin=None, min_equivalence_ratio=None,
                    note="descriptive: r > 0 by permutation of order labels, p = 0.002",
                    test="bootstrap bounds against rho0"),
        # 7-11: Bayesian rows; the smollm2 slice did not converge, the other one did
        _bayes_row("smollm2-135m", "sentiment", 4, "sgd", "did_not_converge", -0.4, -0.9, 0.1, 0.3),
        _bayes_row("smollm2-135m", "sentiment", 4, "gd", "did_not_converge", None, None, None, 0.0,
                   note="'gd' is order-invariant: sigma_order fixed at 0, log ratio = inf"),
        _bayes_row(EVIL_MODEL, evil_task, 8, "gd", "different", None, None, None, 0.0,
                   note="'gd' is order-invariant: sigma_order fixed at 0, log ratio = inf"),
        _bayes_row(EVIL_MODEL, evil_task, 8, "sgd", "equivalent", 0.05, -0.15, 0.2, 0.97),
        _bayes_row(EVIL_MODEL, evil_task, 8, "adam", "inconclusive", 0.3, -0.1, 0.7, 0.4),
        # 12: variance analysis (log variances: the SD-ratio margin doubled); 13-16: distribution agreement
        _comparison("smollm2-135m", "sentiment", 4, "sgd", "different", analysis="log_variance_ratio",
                    family="log_variance_ratio", role="exploratory", family_size=3,
                    scale="mean per-(set, query) log variance ratio (icl / sgd)", margin=2 * LOG125,
                    estimate=3.9, ci_low=3.7, ci_high=4.2, eq_low=3.75, eq_high=4.1, ratio=7.03,
                    p_value=0.0005, p_adjusted=0.003, min_equivalence_margin=4.1),
        _agreement("gd", "different", "token_overlap", 0.3, 0.25, 0.35, 0.9, 0.6,
                   p_value=0.0005, p_adjusted=0.003),
        _agreement("gd", "inconclusive", "overlap_cosine", 0.01, -0.01, 0.03, 0.99, 0.98,
                   p_value=0.3, p_adjusted=0.6),
        _agreement("gd", "different", "label_js", -0.11, -0.12, -0.1, 0.01, 0.12,
                   p_value=0.0005, p_adjusted=0.003),
        _agreement("sgd", "different", "token_overlap", 0.2, 0.15, 0.25, 0.9, 0.7,
                   p_value=0.0005, p_adjusted=0.003),
        # 17: an alignment the design cannot estimate
        _comparison(EVIL_MODEL, evil_task, 8, "sgd", "not_estimable", analysis="order_alignment",
                    family="order_alignment", role="exploratory", rule="threshold", null_value=0.9,
                    estimate=0.1, statistic=0.1, scale="correlation of per-order effects (icl, sgd)",
                    ci_low=None, ci_high=None, ci_level=None, eq_low=None, eq_high=None, eq_level=None,
                    level_difference=None, level_equivalence=None, margin=None, margin_ratio=None,
                    p_value=None, p_adjusted=None, p_equivalence=None, p_equivalence_adjusted=None,
                    ratio=None, family_size=2, min_equivalence_margin=None, min_equivalence_ratio=None,
                    note="1 demo set(s) × (2 − 1) orders = 1 < 10 independent order contrasts: the correlation "
                         "cannot be estimated"),
    ]
    os_rows, acc_rows = [], []
    for (model, task, n), sub in per_query.groupby(["model", "task", "n_demos"], sort=False):
        for method, m in sub.groupby("method", sort=False):
            v = m["sd_gold"].to_numpy()
            se = v.std(ddof=1) / np.sqrt(v.size)
            os_rows.append(
                {
                    "model": model, "task": task, "n_demos": int(n), "method": method,
                    "mean_sd_gold": float(v.mean()), "ci_low": float(v.mean() - 1.96 * se),
                    "ci_high": float(v.mean() + 1.96 * se),
                    "mean_sd_labels": float(m["sd_labels"].mean()),
                    "max_spread": 1e-9 if method == "gd" else 0.12, "n_queries": int(v.size),
                }
            )
            acc_rows.append(
                {"model": model, "task": task, "n_demos": int(n), "method": method,
                 "accuracy": 0.71, "n": 512}
            )
    rng = np.random.default_rng(5)
    return {
        "study": {"name": "order_sensitivity", "alpha": 0.05, "methods": METHODS,
                  "description": "", "output_dir": None,
                  "analysis": {"alignment_rho0": 0.9, "rope": ROPE, "hdi_prob": 0.94,
                               "overlap_k": 10, "reference": "icl", "adjust": "holm"}},
        "comparisons": comps,
        "order_sensitivity": os_rows,
        "accuracy": acc_rows,
        "agreement": AGREEMENT_ROWS(evil_task),
        "margins": [
            {"analysis": "log_variance_ratio", "kind": "ratio", "value": 1.25, "margin": 2 * LOG125,
             "source": "declared: analysis.margins.log_variance_ratio"},
            {"analysis": "order_sensitivity", "kind": "ratio", "value": 1.25, "margin": LOG125,
             "source": "declared: analysis.margins.order_sensitivity <b>bold</b>"},
            {"analysis": "order_alignment", "kind": "rho0", "value": 0.9, "margin": 0.9,
             "source": "declared: analysis.alignment_rho0"},
            {"analysis": "bayes_order_variance", "kind": "rope", "value": 1.25, "margin": LOG125,
             "source": "declared: analysis.rope (log scale)"},
        ],
        "families": [
            {"family": "confirmatory", "role": "confirmatory", "size": 4, "adjust": "holm", "alpha": 0.05,
             "analyses": ["order_sensitivity"], "n_resamples": 10000},
            {"family": "log_variance_ratio", "role": "exploratory", "size": 1, "adjust": "holm", "alpha": 0.05,
             "analyses": ["log_variance_ratio"], "n_resamples": 2000},
            {"family": "order_alignment", "role": "exploratory", "size": 1, "adjust": "holm", "alpha": 0.05,
             "analyses": ["order_alignment"], "n_resamples": 2000},
        ],
        "bayes": _bayes_slices(evil_task),
        "null_distributions": {"0": rng.normal(2.5, 0.15, 2000).tolist(),
                               "3": rng.normal(0.3, 0.2, 500).tolist(),
                               "6": rng.normal(0.42, 0.05, 1000).tolist()},
        "provenance": {
            "hyptest_version": "0.1.0", "python": "3.11.7", "platform": "Linux-x86_64",
            "machine": "x86_64", "cpu_count": 2, "device": "cpu", "torch_threads": 2,
            "libraries": {"torch": "2.13.0", "transformers": "4.46.0", "numpy": "2.1"},
            "models": [
                {"name": "smollm2-135m", "source": "https://huggingface.co/HuggingFaceTB/SmolLM2-135M",
                 "sha256": "ab" * 32},
                {"name": "hf-model", "source": "hf", "sha256": {"model.safetensors": "cd" * 32,
                                                              "extra.safetensors": "ef" * 32},
                 "dtype": "float32"},
            ],
            "seeds": {"root": 0}, "started": "2025-01-01T00:00:00Z",
            "finished": "2025-01-01T00:02:05Z",
            "wall_time_s": {"total": 125.5, "analyse": 2.1, "collect": 123.4, "load_models": 3.27,
                            "render": 0.4},
            "n_units": 96, "n_units_reused": 0,
            "warnings": [f"task {evil_task} has few queries"], "run_dir": "/tmp/run",
        },
        "data_files": ["per_query.parquet", "units/u0.parquet", "https://evil.example/x",
                       "javascript:alert(1)"],
        # unknown top-level keys are ignored
        "schema_version": 2,
        "mystery": {"draws": [1, 2, 3], "note": "<script>never shown</script>"},
    }


STUDY_TEXT = f"name: order_sensitivity\nalpha: 0.05\ntasks: ['{EVIL_TASK}']\n"


def synthetic(evil_task: str = EVIL_TASK):
    """(per_query, results, per_order, study_text) of a synthetic two-group run."""
    groups = [GROUPS[0], (EVIL_MODEL, evil_task, 8)]
    pq = _per_query(groups)
    study_text = f"name: order_sensitivity\nalpha: 0.05\ntasks: ['{evil_task}']\n"
    return pq, _results(pq, evil_task), _per_order(groups), study_text


@pytest.fixture(scope="module")
def data():
    pq, res, po, _ = synthetic()
    out = render_report(res, pq, study_text=STUDY_TEXT, per_order=po)
    return pq, res, out, po


def _svgs(doc: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", doc, flags=re.S)


def _figs(doc: str, cls: str) -> list[str]:
    return [s for s in _svgs(doc) if re.match(rf'<svg [^>]*class="hyptest-fig {cls}"', s)]


def _all(root: ET.Element, cls: str) -> list[ET.Element]:
    """Elements of any tag whose class list contains ``cls`` (document order)."""
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def _fill(el: ET.Element) -> str:
    """Fill colour of an element or of its nearest styled group, from matplotlib's ``style`` attribute."""
    m = re.search(r"fill: (#[0-9a-fA-F]{6})", el.get("style") or "")
    return m.group(1).lower() if m else ""


def _box(el: ET.Element) -> tuple[float, float, float, float]:
    """Pixel bounding box (x0, y0, x1, y1) of the first path drawn by an element (itself or inside it)."""
    path = el if el.tag.endswith("path") else next(p for p in el.iter(f"{{{SVG_NS}}}path") if p.get("d"))
    return pixel_box(path.get("d"))


def _text(fragment: str) -> str:
    return html_lib.unescape(re.sub(r"<[^>]+>", "", fragment))


# --------------------------------------------------------------------------- #
def test_self_contained(data):
    _, _, out, _ = data
    assert out.lstrip().startswith("<!DOCTYPE html>")
    urls = re.findall(r"https?://[^\s\"'<>)]*", out)
    assert urls, "expected the SVG namespace"
    assert set(urls) == {SVG_NS}
    # the namespace only ever appears as an xmlns attribute
    assert out.count(SVG_NS) == out.count(f'xmlns="{SVG_NS}"')
    low = out.lower()
    assert "<script" not in low
    assert "src=" not in low
    assert "@import" not in low
    assert "url(" not in low
    assert "javascript:" not in re.sub(r"<code>javascript:alert\(1\)</code>", "", low)
    assert "@media print" in out
    # only relative or in-page links
    for href in re.findall(r'href="([^"]*)"', out):
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", href, flags=re.I), href
        assert not href.startswith("//")
    assert '<a href="per_query.parquet">' in out
    # a non-relative "data file" is shown as defanged text, never as a link
    assert "<code>https&#58;//evil.example/x</code>" in out
    assert 'href="https' not in out
    assert '<a href="units/u0.parquet">' in out
    # unknown top-level keys are ignored
    assert "never shown" not in out


def test_html_is_balanced(data):
    _, _, out, _ = data

    class P(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack: list[str] = []
            self.void = {"meta", "br", "hr", "img", "input", "link", "wbr"}

        def handle_starttag(self, tag, attrs):
            if tag not in self.void:
                self.stack.append(tag)

        def handle_startendtag(self, tag, attrs):
            pass

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()

    p = P()
    p.feed(out)
    p.close()
    assert p.stack == []


def test_escaping(data):
    _, _, out, _ = data
    assert EVIL_TASK not in out
    assert "<script>" not in out
    assert "&lt;script&gt;alert(" in out
    assert EVIL_MODEL not in out
    assert "<b>" not in out
    # raw double quote from the payload never appears unescaped inside the payload
    assert 'alert("x")' not in out
    assert "alert(&#34;x&#34;)" in out or "alert(&quot;x&quot;)" in out
    # study text shown escaped in a <pre>
    assert re.search(r'<pre class="study">[^<]*&lt;script&gt;', out)
    # the new sections escape too: Bayes reason, margin source, file names, agreement labels
    assert "<i>" not in out and "400 &lt;i&gt;" in out
    assert "order_sensitivity &lt;b&gt;bold&lt;/b&gt;" in out
    assert "<code>bayes_&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;.nc</code>" in out
    for sec in ("agreement", "bayes"):
        part = out[out.index(f'<section id="{sec}">'):]
        part = part[: part.index("</section>")]
        assert "&lt;script&gt;alert(" in part and "<script" not in part
    for fig in _svgs(out):
        assert "<script" not in fig


def _banners(out: str) -> list[tuple[str, str]]:
    return re.findall(r'<div class="banner verdict-([a-z_]+)"[^>]*>(.*?)</div>', out, re.S)


#: Banners: the confirmatory rows only, by (model, task, N) then method order;
#: the hostile model name sorts before "smollm2-135m".
BANNER_ORDER = [3, 0, 1, 2]
#: Rows of each verdict table per method group (gd, sgd, adam): by (model, task, N), then analysis order.
GLANCE_ORDER = {
    "confirmatory": {"gd": [3, 0], "sgd": [1], "adam": [2]},
    "exploratory": {"gd": [13, 14, 15], "sgd": [17, 4, 12, 6, 16]},
    "bayesian": {"gd": [9, 8], "sgd": [10, 7], "adam": [11, 5]},
}


def test_banners_come_from_the_confirmatory_family(data):
    _, res, out, _ = data
    banners = _banners(out)
    comps = res["comparisons"]
    assert [comps[i]["role"] for i in BANNER_ORDER] == ["confirmatory"] * 4
    ids = re.findall(r'<div class="banner [^"]*" id="banner-(\d+)"', out)
    assert [int(i) for i in ids] == BANNER_ORDER
    for (cls, body), i in zip(banners, BANNER_ORDER, strict=True):
        comp = comps[i]
        assert cls == comp["verdict"]
        text = _text(body)
        assert headline_text(comp) in text
        assert text.startswith(comp["verdict"].replace("_", " "))
    first = _text(banners[1][1])
    assert first == (
        "differentICL vs full-batch GD · order sensitivity · sentiment · N=4 · smollm2-135m: "
        "different: the interval excludes the null value, equivalence not shown · "
        "ratio 12.2 [9.03, 16.4] (log 2.5 [2.2, 2.8], 98.3% CI); p_adj = 0.0004 (holm, family of 4); "
        "90% equivalence interval as ratios [9.49, 15.6] vs margin [1/1.25, 1.25]; "
        "equivalence would be declared at a margin of [1/15.6, 15.6] "
        "— ICL is far more order-sensitive than full-batch GD."
        "+4 exploratory and bayesian rows: 2 different · 1 inconclusive · 1 did not converge (verdict table)"
    )
    second = _text(banners[2][1])
    assert "ICL vs SGD (batch 1, in order)" in second
    assert "equivalent within the margin [1/1.25, 1.25]" in second
    assert "96.7% equivalence interval as ratios [0.905, 1.15] vs margin [1/1.25, 1.25]" in second
    assert "would be declared" not in second  # it was declared
    third = _text(banners[3][1])
    assert "different but negligible (inside the margin)" in third
    assert "+1 bayesian row: 1 did not converge" in third
    fourth = banners[0][1]
    assert "inconclusive: neither a difference nor equivalence shown" in _text(fourth)
    assert "equivalence would be declared at a margin of [1/1.92, 1.92]" in _text(fourth)
    assert "&lt;script&gt;" in fourth
    # no banner for the secondary or Bayesian analyses
    for word in ("order alignment", "order variance, Bayesian", "token overlap", "log variance ratio"):
        assert word not in _text("".join(b for _, b in banners))
    assert re.search(r'<span class="others"><a href="#pair-confirmatory-0">', banners[1][1])


def test_banner_text_function():
    comp = _comparison("smollm2-135m", "sentiment", 4, "gd", "different")
    assert banner_text(comp).startswith(
        "sentiment · N=4 · smollm2-135m — ICL vs full-batch GD in order sensitivity: "
        "different: the interval excludes the null value, equivalence not shown (different). "
        "ratio 12.2 [9.03, 16.4] (log 2.5 [2.2, 2.8], 98.3% CI); p_adj = 0.0004 (holm, family of 4)"
    )
    comp = _comparison("m", "t", 2, "adam", "negligible", p_adjusted=1.23e-05)
    assert "p_adj < 1e-4 (holm, family of 4)" in banner_text(comp)
    # an absolute margin: a difference of mean SDs, shown as ±margin
    comp = _comparison("m", "t", 2, "gd", "equivalent", scale="difference of mean per-query order SD (icl − gd)",
                       margin=0.02, margin_ratio=None, estimate=0.001, ci_low=-0.01, ci_high=0.012,
                       eq_low=-0.008, eq_high=0.01)
    text = banner_text(comp)
    assert "equivalent within the margin ±0.02" in text
    assert "Δ = 0.001 [-0.01, 0.012] (98.3% CI)" in text and "ratio 12.2" not in text
    assert "90% equivalence interval [-0.008, 0.01] vs margin ±0.02" in text
    # no margin: can be different, never equivalent
    comp = _agreement("gd", "different", "token_overlap", 0.3, 0.25, 0.35, 0.9, 0.6)
    assert "no margin declared; equivalence would be declared at a margin of ±0.35" in banner_text(comp)
    # an older results file (no rule, no scale): the difference and the ratio of means, no crash
    old = {"model": "m", "task": "t", "n_demos": 2, "method_a": "icl", "method_b": "gd",
           "analysis": "order_sensitivity", "estimate": 0.031, "ci_low": 0.02, "ci_high": 0.04, "ratio": 12.3,
           "p_value": 0.0001, "verdict": "inconclusive"}
    assert banner_text(old).endswith("Δ = 0.031 [0.02, 0.04]; ratio 12.3×; p = 0.0001")


def test_effect_text_per_analysis(data):
    _, res, _, _ = data
    comps = res["comparisons"]
    assert effect_text(comps[6]) == "r = 0.42, bounds [0.3, 0.48] (one-sided 95% / 97.5%)"
    text = banner_text(comps[6])
    assert "Δ" not in text and "upper bound of r below ρ₀ = 0.9 (different)" in text
    assert verdict_phrase("equivalent", 0.9, "order_alignment") == "lower bound of r above ρ₀ = 0.9"
    assert verdict_phrase("inconclusive", None, "order_alignment") == "bounds of r straddle ρ₀"
    # log variances: the ratio is the SD ratio, exp(estimate / 2), against the same [1/1.25, 1.25]
    assert effect_text(comps[12]) == "ratio 7.03 [6.36, 8.17] (log 3.9 [3.7, 4.2], 98.3% CI)"
    assert "90% equivalence interval as ratios [6.52, 7.77] vs margin [1/1.25, 1.25]" in banner_text(comps[12])
    assert effect_text(comps[10]) == "log SD ratio posterior mean 0.05, 94% HDI [-0.15, 0.2], P(in ROPE) = 0.97"
    inf = {**comps[10], "estimate": None, "ci_low": None, "ci_high": None, "method_b": "gd"}
    assert effect_text(inf, order_invariant=["gd"]) == "log SD ratio = +∞ (order SD fixed at 0)"
    assert effect_text({**inf, "note": "sigma_order fixed at 0, log ratio = inf"}).endswith("+∞ (order SD fixed at 0)")
    assert effect_text({**inf, "note": "reference invariant: log ratio = -inf"}).startswith("log SD ratio = -∞")
    assert verdict_phrase("different", ROPE, "bayes_order_variance") == "HDI outside the ROPE: the order SDs differ"
    assert verdict_phrase("equivalent", "[1/1.25, 1.25]", "bayes_order_variance_pooled") == (
        "HDI inside the ROPE [1/1.25, 1.25]: practically equivalent"
    )
    assert effect_text(comps[13]) == "Δ = 0.3 [0.25, 0.35] (98.3% CI)"
    assert effect_text({"analysis": "brand_new", "estimate": 1.5}) == "estimate 1.5"
    assert verdict_phrase("not_estimable") == "not estimable in this design: no decision"
    assert "not estimable in this design" in banner_text(comps[17])


def _tables(out: str) -> dict[str, str]:
    return dict(re.findall(r'<table class="comparisons" data-role="([a-z]+)">(.*?)</table>', out, re.S))


def _glance_rows(out: str) -> list[tuple[str, str, str]]:
    """(verdict class, comparison index, row html) of every data row of the verdict tables."""
    return [r for table in _tables(out).values()
            for r in re.findall(r'<tr class="verdict-([a-z_]+)" id="comparison-(\d+)"[^>]*>(.*?)</tr>', table, re.S)]


def _cells(row_html: str) -> list[str]:
    return [_text(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.S)]


def test_did_not_converge_and_not_estimable(data):
    _, res, out, _ = data
    rows = {int(i): (cls, body) for cls, i, body in _glance_rows(out)}
    cls, body = rows[5]
    assert cls == "did_not_converge"
    cells = _cells(body)
    assert cells[2] == "did not converge"
    assert cells[3] == "— —"  # estimate and HDI
    assert 'title="did not converge: no decision"' in body
    rule = re.search(r"\.banner\.verdict-did_not_converge \{([^}]*)\}", out).group(1)
    assert "--dnc-bg" in rule and "--diff" not in rule and "--eq" not in rule
    assert verdict_phrase("did_not_converge", ROPE, "bayes_order_variance") == "did not converge: no decision"
    cls, body = rows[17]
    assert cls == "not_estimable"
    cells = _cells(body)
    assert cells[3] == "not estimable †" and cells[9] == "—"  # no p-value
    assert ".banner.verdict-not_estimable" in out
    notes = re.search(r'<li id="note-17">(.*?)</li>', out, re.S).group(1)
    assert "independent order contrasts: the correlation cannot be estimated" in _text(notes)


def test_verdicts_at_a_glance(data):
    _, res, out, _ = data
    comps = res["comparisons"]
    tables = _tables(out)
    assert list(tables) == ["confirmatory", "exploratory", "bayesian"]
    heads = [_text(h) for h in re.findall(r'<h3 class="glance" id="verdicts-[a-z]+">(.*?)</h3>', out)]
    assert heads == ["Confirmatory family", "Exploratory (secondary families, adjusted within each family)",
                     "Bayesian (HDI + ROPE, outside the p-value families)"]
    first = re.search(r'<table class="comparisons"', out).start()
    assert out.index('<div class="banner') < first < out.index('id="order-sensitivity"')
    for role, table in tables.items():
        groups = re.findall(r'<tbody class="pair-group" id="pair-[a-z]+-\d+" data-method="([a-z]+)">(.*?)</tbody>',
                            table, re.S)
        got = {m: [int(i) for i in re.findall(r'id="comparison-(\d+)"', body)] for m, body in groups}
        assert got == GLANCE_ORDER[role], role
    rows = _glance_rows(out)
    assert sorted(int(i) for _, i, _ in rows) == list(range(len(comps)))
    assert all(cls == comps[int(i)]["verdict"] for cls, i, _ in rows)
    by_index = {int(i): _cells(body) for _, i, body in rows}
    # confirmatory: one analysis, so no analysis column; the interval with the level it used, ratios beside
    assert by_index[0] == ["0", "sentiment · N=4 · smollm2-135m", "different", "2.5 [2.2, 2.8] 98.3%",
                           "12.2 [9.03, 16.4]", "[2.25, 2.75] 90%", "[1/1.25, 1.25]", "0.0004", "1", "15"]
    assert by_index[1][3:7] == ["0.02 [-0.15, 0.19] 95%", "1.02 [0.861, 1.21]", "[-0.1, 0.14] 96.7%",
                                "[1/1.25, 1.25]"]
    assert by_index[6][4:8] == ["0.42 [0.3, 0.48] one-sided 95% / 97.5%", "—", "—", "ρ₀ = 0.9"]
    assert by_index[12][4:8] == ["3.9 [3.7, 4.2] 98.3%", "7.03 [6.36, 8.17]", "[3.75, 4.1] 90%", "[1/1.25, 1.25]"]
    assert by_index[13][4:10] == ["0.3 [0.25, 0.35] 98.3%", "1.5×", "—", "—", "0.003", "—"]
    assert by_index[10][2:] == ["equivalent", "0.05 [-0.15, 0.2] 94%", "1.05 [0.861, 1.22]", "0.97", "96",
                                "[1/1.25, 1.25]"]
    assert by_index[9][3] == "+∞" and by_index[9][4] == "—"  # order-invariant GD
    links = dict(re.findall(r'<tr class="verdict-[a-z_]+" id="comparison-(\d+)"[^>]*>\s*<td class="num">'
                            r'<a href="#([^"]+)"', out))
    assert links["0"] == "resampling-0" and links["6"] == "resampling-6"
    assert links["9"] == "bayes-0" and links["7"] == "bayes-1"  # hostile slice sorts first
    assert links["13"] == "agreement-1"
    assert links["1"] == "os-1"
    counts = _text(re.search(r'<p class="counts">(.*?)</p>', out, re.S).group(1))
    assert counts.startswith("18 comparisons: 7 different · 3 equivalent · 1 negligible · 3 inconclusive · "
                             "1 not estimable · 3 did not converge.")
    callout = re.search(r'<div class="warn-callout"[^>]*>(.*?)</div>', out, re.S).group(1)
    assert "1 warning" in _text(callout) and "has few queries" in _text(callout)


def test_family_and_margins_are_stated(data):
    _, res, out, _ = data
    glance = out[out.index('id="comparisons"'): out.index('id="order-sensitivity"')]
    method = out[out.index('<section id="method">'): out.index("<h3>References</h3>")]
    for part in (glance, method):
        family = " ".join(_text(re.search(r'<p class="decision family">(.*?)</p>', part, re.S).group(1)).split())
        assert family == (
            "Families, each adjusted on its own at α = 0.05 (difference and equivalence p-values alike): "
            "confirmatory — order sensitivity: 4 comparisons, Holm, 10000 resamples; exploratory — log variance "
            "ratio: 1 comparison, Holm, 2000 resamples; exploratory — order alignment: 1 comparison, Holm, "
            "2000 resamples. The Bayesian rows are decided by HDI + ROPE and are in no family."
        )
        margins = " ".join(_text(re.search(r'<p class="decision margins">(.*?)</p>', part, re.S).group(1)).split())
        assert margins.startswith("Margins, declared in the study file before the data: log variance ratio: SD "
                                  "ratio within [1/1.25, 1.25] (±0.446 on the estimate's log scale)")
        assert "order alignment: ρ₀ = 0.9" in margins
        assert "ROPE ±0.223 on the log SD ratio, i.e. ratio within [1/1.25, 1.25]" in margins
        assert "The Bayesian ROPE is the same ratio as the SD-ratio margin." in margins
        assert "No margin for token overlap, overlap cosine, label JS divergence" in margins
    text = " ".join(_text(method).split())
    assert "Both are adjusted alike, Holm, within the comparison's family" in text
    assert "the interval printed beside a verdict is at the level that verdict used" in text
    assert (f"order sensitivity, order sensitivity of the label distribution, order alignment, log variance ratio: "
            f"{RESAMPLING}.") in text
    assert "declared ρ₀ = 0.9" in text
    assert "log ratio of the per-query SD across orders" in text
    for gone in ("noise floor", "auto", "alignment margin", "Brown", "permutation test"):
        assert gone not in text, gone
    # without the families (older results files), the rows tell: each row with a p-value counted in its family
    bare = {k: v for k, v in res.items() if k not in ("margins", "families")}
    text = " ".join(_text(render_report(bare, pd.DataFrame(), study_text="")).split())
    sizes: dict[str, int] = {}
    for c in res["comparisons"]:
        if c.get("p_value") is not None:
            sizes[c["family"]] = sizes.get(c["family"], 0) + 1
    assert sizes["confirmatory"] == 4
    assert ("Families, each adjusted on its own (difference and equivalence p-values alike): confirmatory — "
            f"order sensitivity: {sizes['confirmatory']} comparisons, Holm;") in text


def test_bayes_section(data):
    _, res, out, _ = data
    sec = out[out.index('<section id="bayes">'): out.index('<section id="accuracy">')]
    assert ">Hierarchical Bayes: order variance</h2>" in sec
    note = " ".join(_text(re.search(r'<div class="note method-note">(.*?)</div>', sec, re.S).group(1)).split())
    for phrase in ("logit P(gold) = μm + set + query-within-set + order-within-set + order × query residual",
                   "weakly informative", "HDI + ROPE (Kruschke, 2018)", "R-hat ≤ 1.01",
                   "bulk and tail ESS ≥ 400", "no divergent transitions", "order SD fixed at 0",
                   "not part of any p-value family"):
        assert phrase in note, phrase
    assert "Kruschke, J. K. (2018)" in out
    slices = re.split(r'<h3 id="bayes-(\d)">', sec)[1:]
    assert [slices[0], slices[2]] == ["0", "1"]
    evil, smol = slices[1], slices[3]
    assert _text(evil).startswith(f"{EVIL_TASK} · N=8 · {EVIL_MODEL}")
    # converged slice: no box; one posterior per fitted method, none for order-invariant GD
    assert "dnc-box" not in evil
    figs = _figs(evil, "posterior")
    assert len(figs) == 2
    assert re.findall(r'<figure class="posterior" data-method="([a-z]+)">', evil) == ["sgd", "adam"]
    for fig, method, colour in zip(figs, ("SGD", "Adam"), (figures.PALETTE["sgd"], figures.PALETTE["adam"]), strict=True):
        root = ET.fromstring(fig)
        assert len(_all(root, "bar")) == 40
        assert len(_all(root, "rope")) == 1
        assert len(_all(root, "zero")) == 1
        assert len(_all(root, "hdi")) == 1
        texts = [t.text or "" for t in root.iter(f"{{{SVG_NS}}}text")]
        assert f"log(SD ICL / SD {method}), per-query SD across orders" in texts
        assert "94% HDI" in texts
        assert f"fill: {colour.lower()}" in fig
    items = {m: _text(li) for m, li in re.findall(
        r'<li class="verdict-[a-z_]+" data-method="([a-z]+)">(.*?)</li>', evil, re.S)}
    assert list(items) == ["gd", "sgd", "adam"]
    assert ("order SD fixed at 0: order-invariant by construction; log ratio = +∞; "
            "P(in ROPE ±0.223) = 0 → different (HDI outside the ROPE: the order SDs differ).") in items["gd"]
    assert ("P(in ROPE ±0.223) = 0.97; posterior mean 0.05; 94% HDI [-0.15, 0.2] → equivalent "
            "(HDI inside the ROPE ±0.223: practically equivalent).") in items["sgd"]
    assert "→ inconclusive (HDI overlaps the ROPE: no decision)." in items["adam"]
    # the file is a relative link, escaped
    href = re.search(r'posterior draws:\s*<a href="([^"]+)"><code>(.*?)</code></a>', evil, re.S)
    assert href.group(1) == "bayes_%3Cscript%3Ealert%28%22x%22%29%3C/script%3E.nc"
    assert html_lib.unescape(href.group(2)) == f"bayes_{EVIL_TASK}.nc"
    # did-not-converge slice: a clear box with the reason, escaped
    box = re.search(r'<div class="dnc-box" role="note">(.*?)</div>', smol, re.S).group(1)
    assert _text(box) == ("did not converge: no decision — r_hat(sigma_order[adam])=1.310 > 1.01; "
                          "ess_bulk(sigma_order[adam])=12 < 400 <i>")
    assert "&lt;i&gt;" in box
    items = {m: _text(li) for m, li in re.findall(
        r'<li class="verdict-([a-z_]+)" data-method="[a-z]+">(.*?)</li>', smol, re.S)}
    assert set(items) == {"did_not_converge"}
    assert "The sampler did not converge, so these draws support no decision." in _text(smol)
    # diagnostics: the gate's failures highlighted, cell by cell
    table = re.search(r'<table class="diagnostics">(.*?)</table>', smol, re.S).group(1)
    rows = re.findall(r"<tr( class=\"flagged\")?><td><code>(.*?)</code></td>(.*?)</tr>", table, re.S)
    flagged = {p: bool(f) for f, p, _ in rows}
    assert flagged == {"sigma_order[icl]": False, "sigma_order[sgd]": True, "sigma_order[adam]": True,
                       "log_ratio[sgd]": False}
    bad = {p: re.findall(r'<td class="num bad">(.*?)</td>', body) for _, p, body in rows}
    assert bad["sigma_order[adam]"] == ["1.310", "12", "30"]
    assert bad["sigma_order[sgd]"] == ["350"]
    assert bad["sigma_order[icl]"] == []
    assert "2 of 4 parameters flagged" in _text(smol)
    # without a results["bayes"] list there is no section (and no link to it)
    bare = render_report({k: v for k, v in res.items() if k != "bayes"}, pd.DataFrame(), study_text="")
    assert 'id="bayes"' not in bare and 'href="#bayes' not in bare


def test_posterior_plot_direct():
    counts = [0] * 10 + [5, 10, 20, 40, 20, 10, 5] + [0] * 3
    edges = np.linspace(-5, 5, 21).tolist()
    fig = figures.posterior_plot(counts, edges, title="t <x>", hdi=(-0.5, 2.0), hdi_prob=0.9, rope=1.0,
                             mean=0.5, color="#009E73")
    root = ET.fromstring(fig)
    bars = _all(root, "bar")
    assert [int(b.get("data-count")) for b in bars] == counts
    # bin centres -4.75, -4.25, ..., 4.75: inside [-0.5, 2] are -0.25 ... 1.75
    assert [i for i, b in enumerate(bars) if b.get("data-in-hdi") == "1"] == [9, 10, 11, 12, 13]
    # the ROPE band spans [-1, 1], the HDI [-0.5, 2], and the zero line sits half way along the ROPE
    rope_el, hdi_el = _all(root, "rope")[0], _all(root, "hdi")[0]
    assert (float(rope_el.get("data-low")), float(rope_el.get("data-high"))) == (-1.0, 1.0)
    assert (float(hdi_el.get("data-low")), float(hdi_el.get("data-high"))) == (-0.5, 2.0)
    rope, zero, hdi = _box(rope_el), _box(_all(root, "zero")[0]), _box(hdi_el)
    np.testing.assert_allclose(zero[0], (rope[0] + rope[2]) / 2, atol=0.02)
    per_unit = (_box(bars[-1])[0] - _box(bars[0])[0]) / (edges[-2] - edges[0])  # pixels per unit of x
    np.testing.assert_allclose(rope[2] - rope[0], 2.0 * per_unit, rtol=0.01)
    np.testing.assert_allclose(hdi[2] - hdi[0], 2.5 * per_unit, rtol=0.01)
    # taller bars for larger counts, with a common base
    heights = [_box(b)[3] - _box(b)[1] for b in bars]
    np.testing.assert_allclose([h / max(heights) for h in heights], [c / max(counts) for c in counts], atol=0.01)
    assert "t &lt;x&gt;" in fig
    texts = [t.text or "" for t in root.iter(f"{{{SVG_NS}}}text")]
    assert "90% HDI" in texts and "log(SD_query ICL / SD_query method), per-query SD across orders" in texts
    # bad input: a message, still valid SVG
    for bad in (([1, 2], [0.0, 1.0]), ([], []), ([1.0, float("nan")], [0.0, 1.0, 2.0])):
        s = figures.posterior_plot(*bad, title="x")
        ET.fromstring(s)
        assert "no posterior draws available" in s


def test_agreement_section(data):
    _, res, out, _ = data
    sec = out[out.index('<section id="agreement">'): out.index('<section id="bayes">')]
    assert ">Distribution agreement</h2>" in sec
    tables = re.findall(r'<h3 id="agreement-(\d)">(.*?)</h3>.*?<table class="agreement">(.*?)</table>', sec, re.S)
    assert [(i, _text(lbl)) for i, lbl, _ in tables] == [
        ("0", f"{EVIL_TASK} · N=8 · {EVIL_MODEL}"), ("1", "sentiment · N=4 · smollm2-135m")]
    heads = [_text(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", tables[1][2])]
    assert heads == ["outputs compared", "token overlap (top-10) ↑", "overlap cosine (top-10) ↑",
                     "label JS divergence (nats) ↓"]
    rows = re.findall(r'<tr data-method="([a-z]+)"( class="reference")?>(.*?)</tr>', tables[1][2], re.S)
    assert [(m, bool(ref)) for m, ref, _ in rows] == [("icl", True), ("gd", False), ("sgd", False),
                                                     ("adam", False)]
    cells = {m: _cells(body) for m, _, body in rows}
    assert cells["icl"] == ["● ICL vs ICL (another order) (reference)", "0.9", "0.99", "0.01"]
    assert cells["gd"][0] == "● ICL vs GD (same order)"
    assert cells["gd"][1] == "0.6Δ = 0.3 [0.25, 0.35], padj 0.003 · different"
    assert cells["gd"][2] == "0.98Δ = 0.01 [-0.01, 0.03], padj 0.6 · inconclusive"
    assert cells["sgd"][1].startswith("0.7Δ = 0.2 [0.15, 0.25]")
    assert cells["adam"] == ["● ICL vs Adam (same order)", "0.65", "0.97", "0.08"]  # no test row
    assert '<a class="verdict-different" href="#comparison-13">different</a>' in tables[1][2]
    # one grouped bar chart per metric; ICL-vs-ICL is the reference bar
    figs = _figs(sec, "grouped-bars")
    assert len(figs) == 3
    root = ET.fromstring(figs[0])
    bars = _all(root, "bar")
    got = {(html_lib.unescape(b.get("data-group")), b.get("data-series")): float(b.get("data-value"))
           for b in bars}
    evil_label = f"{EVIL_TASK} · N=8 · {EVIL_MODEL}"
    assert got == {(evil_label, "icl"): 0.8, (evil_label, "gd"): 0.5,
                   ("sentiment · N=4 · smollm2-135m", "icl"): 0.9,
                   ("sentiment · N=4 · smollm2-135m", "gd"): 0.6,
                   ("sentiment · N=4 · smollm2-135m", "sgd"): 0.7,
                   ("sentiment · N=4 · smollm2-135m", "adam"): 0.65}
    refs = [b for b in bars if "reference-bar" in b.get("class")]
    assert {b.get("data-series") for b in refs} == {"icl"} and len(refs) == 2
    assert len(_all(root, "reference")) == 2
    for b in bars:  # consistent method colours
        assert _fill(b) == figures.PALETTE[b.get("data-series")].lower()
    texts = [t.text or "" for t in root.iter(f"{{{SVG_NS}}}text")]
    assert "ICL vs ICL (another order)" in texts and "ICL vs GD" in texts


def test_grouped_bar_chart_direct():
    fig = figures.grouped_bar_chart(["a <1>", "b"], ["ref", "x"], {("a <1>", "ref"): 2.0, ("a <1>", "x"): 1.0,
                                                              ("b", "x"): float("nan")},
                                title="T", y_label="y", reference="ref")
    root = ET.fromstring(fig)
    bars = _all(root, "bar")
    assert [(b.get("data-group"), b.get("data-series")) for b in bars] == [("a <1>", "ref"), ("a <1>", "x")]
    assert [b.find(f"{{{SVG_NS}}}title").text for b in bars] == ["ref: 2", "x: 1"]
    ref, x = (_box(b) for b in bars)
    np.testing.assert_allclose(x[3], ref[3], atol=0.01)  # common zero
    np.testing.assert_allclose(ref[3] - ref[1], 2 * (x[3] - x[1]), rtol=1e-3)  # heights in proportion 2:1
    line = _box(_all(root, "reference")[0])
    np.testing.assert_allclose(line[1], ref[1], atol=0.01)  # the reference line at the reference bar's top
    assert "a &lt;1&gt;" in fig
    assert "no values" in figures.grouped_bar_chart([], [], {}, title="T", y_label="y")


def test_svg_parses_and_counts_points(data):
    pq, _, out, _ = data
    figs = _figs(out, "order-sensitivity")
    assert len(figs) == len(GROUPS)
    for fig, (model, task, n) in zip(figs, sorted(GROUPS, key=lambda g: (g[0], g[1], g[2])), strict=True):
        root = ET.fromstring(fig)
        assert root.tag == f"{{{SVG_NS}}}svg"
        assert root.get("viewBox")
        n_rows = int(((pq["model"] == model) & (pq["task"] == task) & (pq["n_demos"] == n)).sum())
        pts = _all(root, "pt")
        assert len(pts) == n_rows
        assert fig.count('class="pt"') == n_rows
        texts = " ".join(t.text or "" for t in root.iter(f"{{{SVG_NS}}}text"))
        assert "std of P(gold) across orders" in texts
        for m in METHODS:
            assert m in texts
    for fig in _svgs(out):
        ET.fromstring(fig)  # every figure (incl. null and scatter plots) is well-formed XML


def test_scatter_one_point_per_pair(data):
    _, _, out, po = data
    figs = _figs(out, "order-scatter")
    assert len(figs) == len(GROUPS)
    for fig, (model, task, n) in zip(figs, sorted(GROUPS, key=lambda g: (g[0], g[1], g[2])), strict=True):
        root = ET.fromstring(fig)
        panels = _all(root, "panel")
        assert [p.get("data-method") for p in panels] == ["gd", "sgd", "adam"]
        for panel in panels:
            method = panel.get("data-method")
            expected = _expected_pairs(po, model, task, n, method)
            pts = _all(panel, "pt")
            assert len(pts) == expected, method
            assert len(_all(panel, "diagonal")) == 1
            texts = [t.text or "" for t in panel.iter(f"{{{SVG_NS}}}text")]
            assert "ICL P(gold)" in texts and f"{method} P(gold)" in texts
            assert any(t.startswith(f"n = {expected}") for t in texts)
        # the holes are real: sgd lost one (set, order), adam one query, ICL one point
        assert _expected_pairs(po, model, task, n, "gd") == 2 * 6 * 5 - 1
        assert _expected_pairs(po, model, task, n, "sgd") == 2 * 6 * 5 - 1 - 5
        assert _expected_pairs(po, model, task, n, "adam") == 2 * 6 * 4 - 1
    assert "ICL vs GD probability scatter per order" in out
    assert re.search(r"<figcaption>ICL vs GD probability scatter per order\..*P\(gold\)", out, re.S)


def test_scatter_uses_the_last_step_and_right_coordinates():
    from hyptest.report.html import order_pairs

    po = _per_order([GROUPS[0]])
    pairs = order_pairs(po, "icl", ["sgd"])
    one = pairs[(pairs.demo_set == 0) & (pairs.order_id == 0) & (pairs.query_id == "q2")]
    assert len(one) == 1
    raw = po[(po.demo_set == 0) & (po.order_id == 0) & (po.query_id == "q2")]
    assert one.x.iloc[0] == raw[raw.method == "icl"].p_gold.iloc[0]
    assert one.y.iloc[0] == raw[(raw.method == "sgd") & (raw.step == 3)].p_gold.iloc[0]
    # drawn where the panel's axis limits put (x, y) inside its frame
    fig = figures.order_scatter_plot(one.assign(method="sgd"), methods=["sgd"], title="t")
    root = ET.fromstring(fig)
    (panel,) = _all(root, "panel")
    x0, y0, x1, y1 = _box(_all(panel, "frame")[0])
    (lo, hi), (ylo, yhi) = ((float(v) for v in panel.get(k).split()) for k in ("data-xlim", "data-ylim"))
    px, py = one.x.iloc[0], one.y.iloc[0]
    assert lo <= min(px, py) and max(px, py) <= hi and 0.0 <= lo and hi <= 1.0  # limits fit the data within [0, 1]
    pt = _all(root, "pt")[0]
    np.testing.assert_allclose(float(pt.get("x")), x0 + (px - lo) / (hi - lo) * (x1 - x0), atol=0.01)
    np.testing.assert_allclose(float(pt.get("y")), y1 - (py - ylo) / (yhi - ylo) * (y1 - y0), atol=0.01)


def test_scatter_subsamples_deterministically():
    rng = np.random.default_rng(1)
    pairs = pd.DataFrame({"method": "gd", "x": rng.uniform(size=5000), "y": rng.uniform(size=5000)})
    a = figures.order_scatter_plot(pairs, methods=["gd", "sgd"], title="big <&>", max_points=3000)
    b = figures.order_scatter_plot(pairs, methods=["gd", "sgd"], title="big <&>", max_points=3000)
    assert a == b
    root = ET.fromstring(a)
    gd, sgd = _all(root, "panel")
    assert len(_all(gd, "pt")) == 3000
    assert len(_all(sgd, "pt")) == 0
    texts = " ".join(t.text or "" for t in root.iter(f"{{{SVG_NS}}}text"))
    assert "3000 of 5000 pairs (subsample)" in texts and "no paired data" in texts
    assert "big &lt;&amp;&gt;" in a
    np.testing.assert_array_equal(figures.subsample_index(10, 20), np.arange(10))
    idx = figures.subsample_index(100, 7)
    assert len(idx) == 7 and len(set(idx.tolist())) == 7 and np.all(np.diff(idx) > 0)


def test_colours_are_shared_between_figures():
    pq = _per_query([GROUPS[0]])
    po = _per_order([GROUPS[0]])
    pq.loc[pq.method == "adam", "method"] = "mystery"
    po.loc[po.method == "adam", "method"] = "mystery"
    pq.loc[pq.method == "sgd", "method"] = "other"
    po.loc[po.method == "sgd", "method"] = "other"
    res = contract_results(study={"methods": ["icl", "gd", "other", "mystery"]})
    out = render_report(res, pq, study_text="", per_order=po)
    strip = _figs(out, "order-sensitivity")[0]
    scatter = _figs(out, "order-scatter")[0]
    for m, colour in (("other", figures.EXTRA_COLORS[0]), ("mystery", figures.EXTRA_COLORS[1]),
                      ("gd", figures.PALETTE["gd"])):
        strip_group = next(g for g in _all(ET.fromstring(strip), "method") if g.get("data-method") == m)
        assert _fill(_all(strip_group, "pts")[0]) == colour.lower() and _all(strip_group, "pt")
        panel = next(g for g in _all(ET.fromstring(scatter), "panel") if g.get("data-method") == m)
        assert _fill(_all(panel, "pts")[0]) == colour.lower() and _all(panel, "pt")


def test_no_scatter_without_per_order(data):
    pq, res, _, _ = data
    out = render_report(res, pq, study_text="")
    assert not _figs(out, "order-scatter")
    assert "probability scatter" not in out
    # a per_order frame missing a needed column is ignored, not an error
    bad = _per_order().drop(columns="order_id")
    assert not _figs(render_report(res, pq, study_text="", per_order=bad), "order-scatter")


def test_svg_plot_direct():
    pq = _per_query()
    sub = pq[pq["task"] == "sentiment"].copy()
    sub.loc[sub["method"] == "adam", "method"] = "mystery"
    a = figures.order_sensitivity_plot(sub, methods_order=["icl", "gd", "sgd"], title='T <&> "q"')
    b = figures.order_sensitivity_plot(sub, methods_order=["icl", "gd", "sgd"], title='T <&> "q"')
    assert a == b  # deterministic jitter
    root = ET.fromstring(a)
    assert len(_all(root, "pt")) == len(sub)
    assert "T &lt;&amp;&gt; &quot;q&quot;" in a
    # palette: fixed colours for known methods, next colour for unknown ones
    cols = figures.method_colors(["icl", "gd", "sgd", "adam", "mystery", "other"])
    assert len(set(cols.values())) == 6
    assert cols["icl"] == figures.PALETTE["icl"] and cols["mystery"] == figures.EXTRA_COLORS[0]
    assert figures.method_colors(["gd"])["gd"] == cols["gd"]
    # mean + CI computed when no summary given: one mean marker per method
    assert len(_all(root, "mean")) == 4
    assert len(_all(root, "ci")) == 4
    # an explicit colour map wins
    c = figures.order_sensitivity_plot(sub, methods_order=["icl"], title="x", colors={"mystery": "#123456"})
    assert "fill: #123456" in c
    # empty input still gives valid SVG
    ET.fromstring(figures.order_sensitivity_plot(pd.DataFrame(), methods_order=["icl"], title="x"))
    ET.fromstring(figures.order_scatter_plot(pd.DataFrame(), methods=[], title="x"))


def test_resampling_plot():
    draws = np.random.default_rng(0).normal(0.1, 0.05, size=1000)
    s = figures.resampling_distribution_plot(draws, 0.1, title="boot <x>", null_value=0.0, margin=LOG125,
                                         interval=(0.02, 0.18))
    root = ET.fromstring(s)
    assert len(_all(root, "bar")) == 40
    for cls, n in (("estimate", 1), ("null", 1), ("margin", 2), ("interval", 1)):
        assert len(_all(root, cls)) == n, cls
    # the margin lines sit symmetrically around the null line
    lo, hi = (_box(el)[0] for el in _all(root, "margin"))
    np.testing.assert_allclose((lo + hi) / 2, _box(_all(root, "null")[0])[0], atol=0.02)
    assert [float(el.get("data-value")) for el in _all(root, "margin")] == pytest.approx([-LOG125, LOG125], rel=1e-5)
    # one bar per bin, and the counts are the histogram of the draws
    want, _ = np.histogram(draws, bins=40)
    assert [int(b.get("data-count")) for b in _all(root, "bar")] == want.tolist()
    texts = " ".join(t.text or "" for t in root.iter(f"{{{SVG_NS}}}text"))
    assert "count" in texts and "estimate = 0.1" in texts and "resampling draws" in texts
    assert "boot &lt;x&gt;" in s
    ET.fromstring(figures.resampling_distribution_plot(np.zeros(10), 0.0, title="degenerate"))
    assert "no resampling draws" in figures.resampling_distribution_plot(np.array([]), 1.0, title="empty")
    # a one-sided bound (infinite end) is clipped to the axis, not an error
    ET.fromstring(figures.resampling_distribution_plot(draws, 0.1, title="x", interval=(0.0, float("inf"))))


def test_resampling_section(data):
    _, res, out, _ = data
    assert 'id="resampling-distributions"' in out and "null-distribution" not in out
    sec = out[out.index('<section id="resampling-distributions">'):]
    assert "not a permutation null" in _text(sec[: sec.index("</section>")])
    figs = re.findall(r'<figure id="resampling-(\d+)" data-analysis="([^"]*)">(.*?)</figure>', out, re.S)
    assert [(k, a) for k, a, _ in figs] == [("0", "order sensitivity"), ("3", "order sensitivity"),
                                           ("6", "order alignment")]
    assert len(_figs(out, "resampling-distribution")) == 3
    first = " ".join(_text(figs[0][2]).split())
    assert ("#0 order sensitivity — estimate 2.5, null value 0, margin [1/1.25, 1.25] (±0.223 on this scale), "
            "interval [2.2, 2.8] (98.3%): different; 2000 draws.") in first
    root = ET.fromstring(_svgs(figs[0][2])[0])
    texts = [t.text or "" for t in root.iter(f"{{{SVG_NS}}}text")]
    assert "log ratio of mean per-query order SD (icl / gd)" in texts
    assert len(_all(root, "margin")) == 2
    align = figs[2][2]
    root = ET.fromstring(_svgs(align)[0])
    assert root.find(f"{{{SVG_NS}}}title").text == "#6 ICL vs SGD · order alignment · sentiment · N=4 · smollm2-135m"
    assert not _all(root, "margin")  # a threshold, no margin
    assert "ρ₀ 0.9, bounds [0.3, 0.48] (one-sided 95% / 97.5%)" in _text(align)
    extra = render_report({**res, "null_distributions": {"99": [0.0, 1.0, 2.0]}}, pd.DataFrame(), study_text="")
    assert "Resampling distribution — comparison 99" in extra


def test_number_formatting(data):
    _, _, out, _ = data
    assert fmt_p(1.23e-05) == "< 1e-4"
    assert fmt_p(0.0004) == "0.0004"
    assert fmt_p(0.031234) == "0.0312"
    assert fmt_p(None) == "—"
    assert fmt_p(float("nan")) == "—"
    assert fmt_num(0.031) == "0.031"
    assert fmt_num(12.345) == "12.3"
    assert fmt_num(1234.5) == "1.23e+03"
    assert fmt_num(None) == "—"
    assert fmt_num(64) == "64"
    assert fmt_num(np.int64(4)) == "4"
    assert fmt_ratio(12.3) == "12.3×"
    assert fmt_ratio(float("inf")) == "∞"
    assert fmt_ratio(None) == "—"
    assert verdict_phrase("equivalent", 0.01) == "equivalent within the margin ±0.01"
    # in the rendered table
    table = "".join(_tables(out).values())
    assert "&lt; 1e-4" in table
    assert "1.23e-05" not in out
    assert "—" in table  # None margin / p_adjusted


def test_sections_and_provenance(data):
    _, _, out, _ = data
    for sec in ("Verdicts at a glance", "Order sensitivity", "Distribution agreement",
                "Hierarchical Bayes: order variance", "Accuracy", "Method", "Resampling distributions",
                "Provenance", "Study file"):
        assert f">{sec}</h2>" in out
    assert "hyptest 0.1.0 · generated 2025-01-01T00:02:05Z" in out
    # empty study fields are not shown
    assert "description =" not in out and "output_dir =" not in out
    assert "order-invariant by construction" in out
    assert "Phipson" in out and "2310.08540" in out and "Lakens" in out
    assert "ab" * 32 in out
    assert "model.safetensors: " + "cd" * 32 in _text(out)
    assert "extra.safetensors: " + "ef" * 32 in _text(out)
    assert '<ul class="warnings nonempty">' in out
    assert "transformers" in out
    prov = re.search(r'<table class="provenance">(.*?)</table>', out, re.S).group(1)
    rows = dict(
        (_text(k).strip(), _text(v).strip())
        for k, v in re.findall(r"<tr><th>(.*?)</th><td[^>]*>(.*?)</td></tr>", prov, re.S)
    )
    assert rows["machine"] == "x86_64"
    assert rows["seeds"] == "root=0"
    assert rows["CPU cores"] == "2"


def test_wall_time_table(data):
    _, _, out, _ = data
    table = re.search(r'<table class="wall-time">(.*?)</table>', out, re.S).group(1)
    rows = [
        [_text(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("</thead>")[1], re.S)
    ]
    # canonical stage order whatever the dict order, unknown stages after
    assert [r[:2] for r in rows] == [
        ["load_models", "3.27 s"], ["collect", "123.4 s"], ["analyse", "2.10 s"],
        ["total", "125.5 s"], ["render", "0.40 s"],
    ]
    assert '<tr class="total"><td>total</td>' in table


def test_missing_optional_keys():
    out = render_report(contract_results(comparisons=[contract_row("different")]), pd.DataFrame(), study_text="")
    assert 'class="banner verdict-different"' in out
    assert "No accuracy results." in out
    out2 = render_report(contract_results(), pd.DataFrame(), study_text="")
    assert "No comparisons" in out2
    # odd verdicts are tolerated: a neutral style, escaped
    out3 = render_report(
        contract_results(comparisons=[contract_row("weird<x>", "new_thing", "exploratory"), contract_row("inconclusive")],
                         provenance={**PROVENANCE, "wall_time_s": {"collect": None}, "models": [{"sha256": "00"}]}),
        pd.DataFrame(), study_text="",
    )
    # the confirmatory row is the only banner
    assert [b[0] for b in _banners(out3)] == ["inconclusive"]
    assert 'id="banner-1"' in out3
    rows = _glance_rows(out3)
    assert [(cls, i) for cls, i, _ in rows] == [("inconclusive", "1"), ("unknown", "0")]
    assert "weird&lt;x&gt;" in rows[1][2] and "All: new thing" in _text(out3)
    # with no confirmatory row at all, every row gets a banner
    out4 = render_report(contract_results(comparisons=[contract_row("weird<x>", "new_thing", "exploratory")]),
                         pd.DataFrame(), study_text="")
    assert 'class="banner verdict-unknown" id="banner-0" data-verdict="weird&lt;x&gt;"' in out4


def test_results_off_the_contract_are_refused():
    """The report validates what it is given once, at its entry: a dict off the contract names the field."""
    row = {k: v for k, v in contract_row("different").items() if k != "family"}
    with pytest.raises(ValueError, match=r"comparisons\.0\.family: Field required"):
        render_report(contract_results(comparisons=[row]), pd.DataFrame(), study_text="")
    with pytest.raises(ValueError, match="study: Field required"):
        render_report({"comparisons": []}, pd.DataFrame(), study_text="")
    from hyptest.contract import ResultsVersionError, read_results

    with pytest.raises(ResultsVersionError, match="newer hyptest"):
        render_report({**contract_results(), "schema_version": 99}, pd.DataFrame(), study_text="")
    # a validated Results is drawn as given, the same as its dict
    res = contract_results(comparisons=[contract_row("different", estimate=0.5)])
    assert render_report(read_results(res), pd.DataFrame(), study_text="") == \
        render_report(res, pd.DataFrame(), study_text="")


def test_write_report(tmp_path: pathlib.Path, data):
    pq, res, out, _ = data
    (tmp_path / "report.html").write_text("old")
    path = write_report(tmp_path, res, pq, STUDY_TEXT)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "&lt;script&gt;" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    # data files that are not in the run directory are listed, not linked
    assert '<a href="per_query.parquet">' not in text
    assert "<code>per_query.parquet</code> <span class=\"missing\">(missing)</span>" in text


def test_write_report_reads_per_order_from_run_dir(tmp_path: pathlib.Path, data):
    pq, res, _, po = data
    po.to_parquet(tmp_path / "per_order.parquet")
    pq.to_parquet(tmp_path / "per_query.parquet")
    text = write_report(tmp_path, res, pq, STUDY_TEXT).read_text(encoding="utf-8")
    assert len(_figs(text, "order-scatter")) == len(GROUPS)
    assert '<a href="per_query.parquet">' in text
    # an explicit frame wins over the file
    one = po[po.task == "sentiment"]
    text = write_report(tmp_path, res, pq, STUDY_TEXT, per_order=one).read_text(encoding="utf-8")
    assert len(_figs(text, "order-scatter")) == 1


def test_write_report_failure_leaves_no_temp(tmp_path: pathlib.Path, monkeypatch):
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_report(tmp_path, contract_results(), pd.DataFrame(), "")
    assert list(tmp_path.iterdir()) == []


def test_write_report_respects_the_umask(tmp_path: pathlib.Path):
    import os

    old = os.umask(0o022)
    try:
        path = write_report(tmp_path, contract_results(), pd.DataFrame(), "")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def _shown_interval(text: str) -> tuple[float, float]:
    """The first ``[lo, hi]`` the report printed, as floats (``∞`` read as infinity)."""
    lo, hi = re.search(r"\[([^,\]]+), ([^\]]+)\]", text).groups()
    return tuple(float(v.replace("−", "-").replace("∞", "inf")) for v in (lo, hi))


def test_no_printed_row_contradicts_its_own_interval():
    """Rows decided by hyptest.results.decide: a "different" row's printed CI excludes its null value, an
    "equivalent" row's printed equivalence interval lies inside ±margin, at the levels the verdicts used."""
    from hyptest.results import Comparison, decide
    from hyptest.stats.order_resampling import BootstrapDistribution

    def sampler(mu, sd):
        return lambda n, rng: BootstrapDistribution(rng.normal(mu, sd, n))

    keys = {"model": "m", "task": "t", "n_demos": 4, "method_a": "icl"}
    ratio = {"scale": "log ratio of mean per-query order SD (icl / b)", "margin": LOG125, "margin_ratio": 1.25}
    comps = [  # the confirmatory family: different, equivalent, negligible, inconclusive, near the edges
        Comparison(**keys, method_b=b, analysis="order_sensitivity", family="confirmatory", estimate=mu,
                   sampler=sampler(mu, sd), **ratio)
        for b, mu, sd in (("gd", 1.0, 0.2), ("sgd", 0.0, 0.05), ("adam", 0.1, 0.02), ("x", 0.1, 0.3),
                          ("y", 0.15, 0.045), ("z", -0.2, 0.08))
    ] + [
        Comparison(**keys, method_b="gd", analysis="token_overlap", family="token_overlap", estimate=0.05,
                   scale="difference of means", sampler=sampler(0.05, 0.01)),
        Comparison(**keys, method_b="sgd", analysis="token_overlap", family="token_overlap", estimate=0.0,
                   scale="difference of means", margin=0.02, sampler=sampler(0.0, 0.005)),
        Comparison(**keys, method_b="sgd", analysis="order_alignment", family="order_alignment", estimate=0.5,
                   scale="correlation of per-order effects", rule="threshold", null_value=0.9,
                   sampler=sampler(0.5, 0.05)),
    ]
    table, draws = decide(comps, alpha=0.05, n_resamples=4000, seed=1)
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in table.to_dict("records")]
    verdicts = {r["verdict"] for r in rows}
    assert {"different", "equivalent", "negligible", "inconclusive"} <= verdicts
    out = render_report(contract_results(comparisons=rows,
                                         null_distributions={str(k): v.tolist() for k, v in draws.items()}),
                        pd.DataFrame(), study_text="")
    checked = {"different": 0, "equivalent": 0}
    for _, i, body in _glance_rows(out):
        r = rows[int(i)]
        if r["rule"] != "two_sided" or r["verdict"] not in checked:
            continue
        ci_cell = re.search(r'<td class="num estimate"[^>]*>(.*?)</td>', body, re.S).group(1)
        eq_cell = re.search(r'<td class="num eq"[^>]*>(.*?)</td>', body, re.S).group(1)
        if r["verdict"] == "different":
            lo, hi = _shown_interval(_text(ci_cell))
            assert lo > r["null_value"] or hi < r["null_value"], (i, _text(ci_cell))
            assert _pct(r["ci_level"]) in _text(ci_cell)
        else:
            lo, hi = _shown_interval(_text(eq_cell))
            assert r["null_value"] - r["margin"] <= lo and hi <= r["null_value"] + r["margin"], (i, _text(eq_cell))
            assert _pct(r["eq_level"]) in _text(eq_cell)
            # the banner (confirmatory) or the stats text says the same with ratios
            if r["scale"].startswith("log ratio"):
                rlo, rhi = _shown_interval(banner_text(r).split("equivalence interval as ratios")[1])
                assert 1 / 1.25 <= rlo and rhi <= 1.25
        checked[r["verdict"]] += 1
    assert checked["different"] >= 2 and checked["equivalent"] >= 2


def test_the_reports_display_tables_name_exactly_the_known_metrics():
    """The report's display tables (names and directions) cover hyptest.names' lists, no more, no less."""
    from hyptest import names
    from hyptest.report.views import dai, descriptive
    from hyptest.report.views import names as shown

    assert {k: larger for k, (_, larger) in shown.AGREEMENT_METRICS.items()} == names.AGREEMENT_METRICS
    assert set(dai.DAI_METRICS) == set(names.DAI_NAMES)
    assert {k: dai.DAI_METRICS[k][0] for k in names.DAI_NAMES} == names.DAI_NAMES
    assert tuple(descriptive.N_SWEEP_METRICS) == names.SWEEP_METRICS
    assert tuple(descriptive.TRAJECTORY_METRICS) == names.TRAJECTORY_METRICS
    assert set(names.ANALYSES) <= set(shown.ANALYSIS_NAMES)
