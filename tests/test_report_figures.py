"""Tests of the report sections for the further analyses.

N sweep, training trajectories (and the closest-to-ICL table), checkpoints,
vocabulary-level order sensitivity, Dai et al. metrics by layer (from
``results["dai"]`` and from the comparison rows of ``hyptest reanalyse``),
weight sparsity, and the Bayes rank plots, drawn from the histograms the analysis wrote (``hyptest
report`` computes them from the NetCDF file of an older run directory).
Every input is synthetic; :func:`new_sections` is shared with the browser test.
"""

from __future__ import annotations

import html as html_lib
import json
import pathlib
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from hyptest.contract import ComparisonRow, DaiSection
from hyptest.report import figures, render_report
from hyptest.report.views.dai import _dai_rows

from .test_report import _fill, contract_results, contract_row, synthetic

SVG_NS = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert('m')</script>"
NS = [1, 2, 4, 8]
N_SWEEP_METHODS = ["icl", "gd", "sgd"]
N_SWEEP_METRICS = ["accuracy", "order_sd", "token_overlap", "overlap_cosine", "label_js"]
TRAJ_METHODS = ["gd", "sgd@lr=0.0001", "sgd@lr=0.0003", "sgd@lr=0.001", "adam@lr=0.001"]
TRAJ_METRICS = ["label_js_to_icl", "token_overlap_to_icl", "p_gold", "accuracy"]
STEPS = [0, 1, 2, 4, 8]
LAYERS = list(range(6))
DIFFERENT_LAYERS = {"simaou": {1, 4}, "simam": {0}, "kendall": set()}
MATRICES = ["q_proj", "k_proj", "v_proj", "o_proj"]
CHECKPOINTS = ["step-1k", "step-10k", "final", "instruct"]


def n_sweep_rows(model: str = "smollm2-135m", task: str = "sentiment") -> list[dict]:
    rows = []
    for method in N_SWEEP_METHODS:
        for metric in N_SWEEP_METRICS:
            for i, n in enumerate(NS):
                est = 0.5 + 0.05 * i + (0.1 if method == "icl" else 0.0)
                rows.append({"model": model, "task": task, "method": method, "n_demos": n, "metric": metric,
                             "estimate": est, "ci_low": est - 0.03, "ci_high": est + 0.03})
    return rows


def trajectory_rows(model: str = "smollm2-135m", task: str = "sentiment", n: int = 4) -> list[dict]:
    rows = []
    for method in TRAJ_METHODS:
        for metric in TRAJ_METRICS:
            for s in STEPS:
                est = 0.3 + 0.02 * s
                rows.append({"model": model, "task": task, "n_demos": n, "method": method, "step": s,
                             "metric": metric, "estimate": est, "ci_low": est - 0.05, "ci_high": est + 0.05})
    # ICL has one value (no training): it becomes the dashed line of p_gold and accuracy
    for metric, v in (("p_gold", 0.77), ("accuracy", 0.81)):
        rows.append({"model": model, "task": task, "n_demos": n, "method": "icl", "step": 0, "metric": metric,
                     "estimate": v, "ci_low": v - 0.02, "ci_high": v + 0.02})
    return rows


def closest_rows(model: str = "smollm2-135m", task: str = "sentiment", n: int = 4) -> list[dict]:
    return [{"model": model, "task": task, "n_demos": n, "family": "sgd", "method": "sgd@lr=0.0003", "step": 4,
             "label_js_to_icl": 0.031, "ci_low": 0.02, "ci_high": 0.04},
            {"model": model, "task": task, "n_demos": n, "family": "adam", "method": "adam@lr=0.001", "step": 2,
             "label_js_to_icl": 0.05, "ci_low": 0.04, "ci_high": 0.06}]


def dai_comparison_rows(model: str = "gpt2", task: str = "sst2") -> list[dict]:
    rows = []
    for analysis, base_name in (("simaou", "random-update SimAOU"), ("simam", "ICL vs ZS map (ZSL SimAM)"),
                                ("kendall", "random attention weights")):
        for layer in [*LAYERS, None]:
            est = 0.2 + 0.03 * (layer or 0)
            differs = layer in DIFFERENT_LAYERS[analysis] if layer is not None else analysis == "simaou"
            rows.append({"model": model, "task": task, "analysis": analysis, "layer": layer, "estimate": est,
                         "ci_low": est - 0.02, "ci_high": est + 0.02, "baseline": 0.1 + 0.01 * (layer or 0),
                         "baseline_name": base_name, "p_value": 0.001 if differs else 0.4,
                         "p_adj": 0.004 if differs else 0.9,
                         "verdict": "different" if differs else "inconclusive"})
    rows.append({"model": model, "task": task, "analysis": "rec2ftp", "layer": None, "estimate": 0.6,
                 "ci_low": 0.5, "ci_high": 0.7, "baseline": 0.3, "baseline_name": "P(ICL right | ZS wrong, FT wrong)",
                 "p_value": 0.01, "p_adj": 0.04, "verdict": "different"})
    return rows


def sparsity_rows(model: str = "smollm2-135m") -> list[dict]:
    rows = []
    for matrix in MATRICES:
        for layer in LAYERS:
            for threshold, relative in ((0.01, True), (1e-3, False)):
                rows.append({"model": model, "layer": layer, "matrix": matrix, "threshold": threshold,
                             "relative": relative, "sparsity": 0.1 + 0.02 * layer + 0.01 * MATRICES.index(matrix)})
    return rows


def checkpoint_rows(group: str = "pythia-160m") -> list[dict]:
    rows = []
    for ci, ck in enumerate(CHECKPOINTS):
        for method in ("icl", "sgd"):
            for metric in ("accuracy", "order_sd"):
                est = 0.4 + 0.1 * ci if metric == "accuracy" else 0.05 + 0.01 * ci
                rows.append({"group": group, "checkpoint": ck, "model": f"{group}@{ck}", "task": "sentiment",
                             "n_demos": 4, "method": method, "metric": metric, "estimate": est,
                             "ci_low": est * 0.9, "ci_high": est * 1.1})
    return rows


def vocab_rows(model: str = "smollm2-135m") -> list[dict]:
    return [{"model": model, "task": "sentiment", "n_demos": n, "method": m, "estimate": v, "ci_low": v * 0.9,
             "ci_high": v * 1.1, "bound": 0.002}
            for n in (4, 8) for m, v in (("icl", 0.3), ("gd", 1e-6), ("sgd", 0.1))]


def new_sections(evil: str | None = None) -> dict:
    """Every new results key; ``evil`` replaces every model / group name when given."""
    m = evil
    return {
        "n_sweep": n_sweep_rows(*([m] if m else [])),
        "trajectories": trajectory_rows(*([m] if m else [])),
        "closest_to_icl": closest_rows(*([m] if m else [])),
        "dai": {"comparisons": dai_comparison_rows(*([m] if m else [])),
                "correctness": [{"model": m or "gpt2", "task": "sst2", "zs_correct": 0.5, "ft_correct": 0.7,
                                 "icl_correct": 0.8}]},
        "sparsity": sparsity_rows(*([m] if m else [])),
        "checkpoints": checkpoint_rows(*([m] if m else [])),
        "vocab_order_sensitivity": vocab_rows(*([m] if m else [])),
    }


def _render(extra: dict, **kw) -> str:
    pq, res, po, text = synthetic()
    return render_report({**res, **extra}, pq, study_text=text, per_order=po, **kw)


def _section(doc: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}"[^>]*>(.*?)</section>', doc, flags=re.S)
    assert m, sid
    return m.group(1)


def _svg_in(fragment: str) -> ET.Element:
    svgs = re.findall(r"<svg\b.*?</svg>", fragment, flags=re.S)
    assert svgs
    return ET.fromstring(svgs[0])


def _cls(el: ET.Element, cls: str) -> list[ET.Element]:
    """Elements of any tag whose class list contains ``cls``: matplotlib draws a point as a <use>, a bar as a <path>."""
    return [e for e in el.iter() if cls in (e.get("class") or "").split()]


def _axis_labels(root: ET.Element) -> tuple[list[str], list[str]]:
    # a long label is wrapped into lines (one <text> each): join them with spaces
    xs = [" ".join(t for t in e.itertext() if t.strip()) for e in _cls(root, "x-label")]
    ys = [" ".join(t for t in e.itertext() if t.strip()) for e in _cls(root, "y-label")]
    return xs, ys


# --------------------------------------------------------------------------- #
SECTION_IDS = ["n-sweep", "trajectories", "checkpoints", "vocab-order", "dai", "sparsity"]


@pytest.fixture(scope="module")
def full() -> str:
    return _render(new_sections())


def test_sections_absent_without_keys():
    out = _render({})
    for sid in SECTION_IDS:
        assert f'id="{sid}"' not in out, sid
        assert f'href="#{sid}"' not in out, sid
    assert "rank-plot" not in out
    # a results file without any of these keys still renders
    out2 = render_report(contract_results(comparisons=[contract_row("different")]), pd.DataFrame(), study_text="")
    assert all(f'id="{sid}"' not in out2 for sid in SECTION_IDS)


def test_each_section_alone():
    for key, sid in (("n_sweep", "n-sweep"), ("trajectories", "trajectories"), ("closest_to_icl", "trajectories"),
                     ("checkpoints", "checkpoints"), ("vocab_order_sensitivity", "vocab-order"),
                     ("dai", "dai"), ("sparsity", "sparsity")):
        out = _render({key: new_sections()[key]})
        assert f'<section id="{sid}">' in out, key
        assert f'href="#{sid}"' in out, key
        others = [s for s in SECTION_IDS if s != sid]
        assert not any(f'<section id="{s}">' in out for s in others), key


def test_sections_present_with_a_method_note(full):
    for sid in SECTION_IDS:
        body = _section(full, sid)
        assert 'class="note method-note"' in body, sid
        assert "<figure" in body and "<table" in body, sid


def test_n_sweep_figure(full):
    body = _section(full, "n-sweep")
    root = _svg_in(body)
    panels = _cls(root, "panel")
    assert len(panels) == len(N_SWEEP_METRICS)
    for p in panels:
        series = _cls(p, "series")
        assert [s.get("data-series") for s in series] == N_SWEEP_METHODS
        for s in series:
            assert len(_cls(s, "pt")) == len(NS)
            assert len(_cls(s, "ci")) == len(NS)
            assert len(_cls(s, "line")) == 1
        # categorical x: one tick label per N
        assert [t.get("data-category") for t in _cls(p, "x-tick")] == ["1", "2", "4", "8"]
    xs, ys = _axis_labels(root)
    assert xs == ["N (demonstrations per prompt)"] * len(N_SWEEP_METRICS)
    assert "accuracy (share correct, 0–1)" in ys and "mean std of P(gold) across orders" in ys
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", body))
    assert "ICL vs ICL under another order" in text and "vs ICL, same order" in text
    # numbers: one row per (metric, method), one cell per N
    assert body.count("<tr data-method=") == len(N_SWEEP_METRICS) * len(N_SWEEP_METHODS)
    assert "ICL vs ICL (another order)" in body and "SGD vs ICL (same order)" in body


def test_trajectory_figure(full):
    body = _section(full, "trajectories")
    root = _svg_in(body)
    panels = _cls(root, "panel")
    assert [p.get("data-panel") for p in panels] == [
        "label JS divergence to ICL", "token overlap with ICL", "P(gold)", "accuracy"]
    for p in panels:
        series = _cls(p, "series")
        assert [s.get("data-series") for s in series] == TRAJ_METHODS  # ICL is a line, not a series
        for s in series:
            assert len(_cls(s, "pt")) == len(STEPS)
            assert len(_cls(s, "band")) == 1
    # the ICL value as a dashed line where the metric is P(gold) or accuracy only
    assert [len(_cls(p, "hline")) for p in panels] == [0, 0, 1, 1]
    xs, _ = _axis_labels(root)
    assert set(xs) == {"optimisation step (0 = before training)"}
    # one family, one hue: the three SGD grid members get three shades of SGD's colour, Adam keeps its own
    colours = {s.get("data-series"): _fill(_cls(s, "pts")[0]) for s in _cls(panels[0], "series")}
    sgd = [colours[m] for m in TRAJ_METHODS if m.startswith("sgd@")]
    assert len(set(sgd)) == 3
    assert figures.shade(figures.PALETTE["sgd"], -0.35) == sgd[0]
    assert colours["adam@lr=0.001"] == figures.PALETTE["adam"].lower() and colours["gd"] == figures.PALETTE["gd"].lower()
    # the closest-to-ICL table
    table = re.search(r'<table class="closest">(.*?)</table>', body, flags=re.S).group(1)
    assert table.count("<tr>") == 1 + 2 and "sgd@lr=0.0003" in table and "0.031 [0.02, 0.04]" in table


def test_trajectory_icl_line_falls_back_to_the_accuracy_table():
    rows = [r for r in trajectory_rows() if r["method"] != "icl"]
    pq, res, po, text = synthetic()
    acc = [{"model": "smollm2-135m", "task": "sentiment", "n_demos": 4, "method": "icl", "accuracy": 0.66,
            "mean_p_gold": 0.55, "n": 10}]
    out = render_report({**res, "accuracy": acc, "trajectories": rows}, pq, study_text=text)
    root = _svg_in(_section(out, "trajectories"))
    hl = {p.get("data-panel"): [h.get("y1") for h in _cls(p, "hline")] for p in _cls(root, "panel")}
    assert len(hl["P(gold)"]) == 1 and len(hl["accuracy"]) == 1
    titles = ["".join(t.itertext()) for t in root.iter(f"{SVG_NS}title")]
    assert any(t.endswith(": 0.55") for t in titles) and any(t.endswith(": 0.66") for t in titles)


def test_dai_figure_and_table(full):
    body = _section(full, "dai")
    root = _svg_in(body)
    panels = _cls(root, "panel")
    assert [p.get("data-panel") for p in panels] == ["SimAOU", "SimAM", "Kendall"]
    for p, key in zip(panels, ("simaou", "simam", "kendall"), strict=True):
        (series,) = _cls(p, "series")
        assert len(_cls(series, "pt")) == len(LAYERS)
        assert len(_cls(series, "band")) == 1
        assert len(_cls(series, "marked")) == len(DIFFERENT_LAYERS[key])
        assert len(_cls(p, "ref-line")) == 1  # the baseline, dashed
        assert "stroke-dasharray" in _cls(p, "ref-line")[0].get("style")
    xs, ys = _axis_labels(root)
    assert set(xs) == {"layer (0-based)"} and "Kendall's τ of attention weights" in ys
    table = re.search(r'<table class="dai">(.*?)</table>', body, flags=re.S).group(1)
    # the three layer-averaged rows and Rec2FTP
    assert table.count("<tr") == 1 + 4
    assert "Rec2FTP" in table and "examples ZS got wrong" in table and table.count("averaged over layers") == 3
    assert table.count('class="differs"') == 2
    assert "SimAOU: 2 of 6 layers differ (1, 4)" in html_lib.unescape(re.sub(r"<[^>]+>", "", body))
    assert '<table class="dai-correctness">' in body and "0.8" in body


def test_dai_from_reanalyse_comparisons():
    """The ``hyptest reanalyse`` Dai report: rows reworded, estimate = difference, raw kept in ``difference``."""
    raw = dai_comparison_rows()
    names = {"simaou": "SimAOU", "simam": "SimAM", "kendall": "Kendall", "rec2ftp": "Rec2FTP"}
    view = []
    for r in raw:
        diff = r["estimate"] - r["baseline"]
        where = "averaged over layers" if r["layer"] is None else f"layer {r['layer']}"
        view.append({**r, "method_a": "icl", "method_b": "ft", "family": "dai", "role": "exploratory",
                     "rule": "two_sided",
                     "analysis": f"{names[r['analysis']]} minus its baseline ({r['baseline_name']}), {where}",
                     "estimate": diff, "ci_low": diff - 0.01, "ci_high": diff + 0.01, "difference": diff,
                     "difference_ci_low": diff - 0.01, "difference_ci_high": diff + 0.01,
                     "p_adjusted": r.pop("p_adj"),
                     "verdict": ("differs from its baseline" if r["verdict"] == "different"
                                 else "not distinguished from its baseline")})
    rows, shifted = _dai_rows(DaiSection(), [ComparisonRow.model_validate(v) for v in view])
    assert shifted and len(rows) == len(view)
    assert rows[0]["estimate"] == pytest.approx(raw[0]["estimate"])
    assert rows[0]["ci_low"] == pytest.approx(raw[0]["estimate"] - 0.01)
    out = render_report(contract_results(comparisons=view, correctness=[
        {"model": "gpt2", "task": "sst2", "zs_correct": 0.5, "ft_correct": 0.6, "icl_correct": 0.7}]),
        pd.DataFrame(), study_text="")
    body = _section(out, "dai")
    root = _svg_in(body)
    panels = _cls(root, "panel")
    assert [p.get("data-panel") for p in panels] == ["SimAOU", "SimAM", "Kendall"]
    for p, key in zip(panels, ("simaou", "simam", "kendall"), strict=True):
        assert len(_cls(p, "pt")) == len(LAYERS)
        assert len(_cls(p, "marked")) == len(DIFFERENT_LAYERS[key])
    assert "the CI of its difference from the baseline" in body
    assert "differs from its baseline" in body and '<table class="dai-correctness">' in body


def test_sparsity_figure(full):
    body = _section(full, "sparsity")
    root = _svg_in(body)
    panels = _cls(root, "panel")
    assert len(panels) == 2  # one per (threshold, relative)
    for p in panels:
        series = _cls(p, "series")
        assert [s.get("data-series") for s in series] == MATRICES
        for s in series:
            assert len(_cls(s, "pt")) == len(LAYERS)
    xs, ys = _axis_labels(root)
    assert set(xs) == {"layer (0-based)"} and set(ys) == {"share of entries below threshold"}
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", body))
    assert "|w| < 0.01 × max |w| of the matrix (relative to the matrix's largest |w|)" in text
    assert "|w| < 0.001 (absolute)" in text
    assert body.count("<tr>") == 1 + 2 * len(MATRICES)


def test_checkpoint_figure(full):
    body = _section(full, "checkpoints")
    root = _svg_in(body)
    panels = _cls(root, "panel")
    assert len(panels) == 2  # accuracy and order_sd for the one (task, N)
    for p in panels:
        series = _cls(p, "series")
        assert [s.get("data-series") for s in series] == ["icl", "sgd"]
        for s in series:
            assert len(_cls(s, "pt")) == len(CHECKPOINTS)
            assert len(_cls(s, "ci")) == len(CHECKPOINTS)
        # x is the checkpoints in listed order (not sorted)
        ticks = _cls(p, "x-tick")
        assert [t.get("data-category") for t in ticks] == CHECKPOINTS
        xs = [float(t.get("x")) for t in ticks]
        assert xs == sorted(xs)
    xs, _ = _axis_labels(root)
    assert set(xs) == {"checkpoint (in listed order)"}


def test_vocab_section(full):
    body = _section(full, "vocab-order")
    root = _svg_in(body)
    assert len(_cls(root, "bar")) == 6
    assert _axis_labels(root)[1] == ["Σ over tokens of std across orders"]
    table = re.search(r'<table class="vocab-order">(.*?)</table>', body, flags=re.S).group(1)
    assert table.count("<tr>") == 1 + 6 and table.count(">0.002<") == 6


@pytest.mark.parametrize("sid", SECTION_IDS)
def test_escaping_in_each_section(sid):
    out = _render(new_sections(EVIL))
    body = _section(out, sid)
    assert EVIL not in body and "<script" not in body
    assert "&lt;script&gt;" in body, sid
    for s in re.findall(r"<svg\b.*?</svg>", body, flags=re.S):
        ET.fromstring(s)


def test_line_panels_direct():
    p = figures.Panel(title="a<b", y_label="y (units)", series={
        "x": [figures.SeriesPoint(1, 0.1, 0.0, 0.2), figures.SeriesPoint(2, None), figures.SeriesPoint(3, 0.3, 0.2, 0.4)]})
    out = figures.line_panels([p], title="t", x_label="step", interval="band")
    root = ET.fromstring(out)
    assert len(_cls(root, "pt")) == 2  # the missing value leaves a gap
    assert _axis_labels(root) == (["step"], ["y (units)"])
    with pytest.raises(ValueError):
        figures.line_panels([p], title="t", x_label="x", interval="dots")
    empty = ET.fromstring(figures.line_panels([], title="t", x_label="x"))
    assert "no values" in "".join(empty.itertext())


def test_family_colors():
    cols = figures.family_colors(["icl", "sgd@lr=1", "sgd@lr=2", "adam@lr=1", "mystery"], {"icl": "#D55E00"})
    assert cols["icl"] == "#D55E00" and cols["adam@lr=1"] == figures.PALETTE["adam"]
    assert cols["sgd@lr=1"] != cols["sgd@lr=2"]
    assert cols["mystery"] in figures.EXTRA_COLORS
    assert figures.shade("#000000", 1.0) == "#ffffff" and figures.shade("red", 0.5) == "red"


# --------------------------------------------------------------------------- #
# Rank plots of the Bayes slices
# --------------------------------------------------------------------------- #
def _write_idata(path: pathlib.Path, methods=("icl", "sgd", "adam"), n_chains=4, n_draws=200) -> None:
    from hyptest.stats._arviz import from_draws, to_netcdf

    rng = np.random.default_rng(0)
    sd = np.abs(rng.normal(0.3, 0.05, size=(n_chains, n_draws, len(methods))))
    idata = from_draws({"sd_query": sd}, coords={"method": list(methods)}, dims={"sd_query": ["method"]})
    to_netcdf(idata, path)


def test_rank_plot_direct():
    counts = np.full((2, 3, 8), 5)
    out = figures.rank_plot(counts, ["σ_order <i>", "b"], 5.0, title="r")
    root = ET.fromstring(out)
    assert len(_cls(root, "bar")) == 2 * 3 * 8
    assert len(_cls(root, "expected")) == 2 * 3
    assert "&lt;i&gt;" in out
    assert "no rank data" in figures.rank_plot(np.empty((0, 0, 0)), [], 1.0, title="r")


def _rank_figures(out: str) -> list[str]:
    return re.findall(r'<figure class="rank-plot">(.*?)</figure>', out, flags=re.S)


def test_rank_plot_is_drawn_from_the_results(tmp_path):
    """The report draws the rank histograms the analysis wrote into the slice (``rank_plot``); it reads no file."""
    pytest.importorskip("arviz")
    from hyptest.analysis.bayes_ranks import rank_plot_from_file

    pq, res, po, text = synthetic()
    _write_idata(tmp_path / "x.nc")
    res["bayes"][0]["rank_plot"] = rank_plot_from_file(tmp_path / "x.nc")
    out = render_report(res, pq, study_text=text, per_order=po)  # no run directory
    figs = _rank_figures(out)
    assert len(figs) == 1  # the second slice has no rank_plot
    root = _svg_in(figs[0])
    panels = _cls(root, "panel")
    assert [p.get("data-parameter") for p in panels] == ["SD_query ICL", "SD_query SGD", "SD_query Adam"]
    for p in panels:
        assert len({b.get("data-chain") for b in _cls(p, "bar")}) == 4
        assert len(_cls(p, "expected")) == 4
    # the bars of one chain add up to its draws
    first = [int(b.get("data-count")) for b in _cls(panels[0], "bar") if b.get("data-chain") == "0"]
    assert sum(first) == 200
    assert "near-uniform bars" in out
    # without the field the figure is left out, silently
    del res["bayes"][0]["rank_plot"]
    assert _rank_figures(render_report(res, pq, study_text=text, per_order=po)) == []


def _old_run_dir(path: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """A run directory as an older hyptest left it: results.json without rank plots beside the NetCDF file."""
    pq, res, po, text = synthetic()
    assert all("rank_plot" not in sl for sl in res["bayes"])
    _write_idata(path / res["bayes"][0]["file"])
    (path / "results.json").write_text(json.dumps(res))
    (path / "manifest.json").write_text(json.dumps({"study_text": text}))
    pq.to_parquet(path / "per_query.parquet")
    po.to_parquet(path / "per_order.parquet")
    return path, res


def test_hyptest_report_on_an_older_run_dir_computes_the_rank_plots(tmp_path):
    """``hyptest report`` on results.json of the previous shape: the workflow computes the missing rank plots."""
    pytest.importorskip("arviz")
    from typer.testing import CliRunner

    from hyptest.analysis.bayes_ranks import rank_plot_from_file
    from hyptest.cli import app

    run, res = _old_run_dir(tmp_path)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    out = (run / "report.html").read_text(encoding="utf-8")
    (fig,) = _rank_figures(out)
    # the same figure as from results that carry the histograms (computed here from the same file)
    res["bayes"][0]["rank_plot"] = rank_plot_from_file(run / res["bayes"][0]["file"])
    text = json.loads((run / "manifest.json").read_text())["study_text"]
    drawn = render_report(res, pd.read_parquet(run / "per_query.parquet"), study_text=text,
                          per_order=pd.read_parquet(run / "per_order.parquet"))
    assert _rank_figures(drawn) == [fig]
    # results.json itself is left as it was: the report computes nothing into the run's results
    assert "rank_plot" not in (run / "results.json").read_text()


def test_complete_results_leaves_out_what_it_cannot_read(tmp_path, monkeypatch):
    """A missing, unreadable or outside file, or no ArviZ: the slice gets ``rank_plot`` None, nothing fails."""
    from hyptest.workflows.study import complete_results

    base = contract_results(bayes=[{"file": "bayes_x.nc"}, {"file": "../escape.nc"}, {"file": None}, {}])
    done = complete_results(tmp_path, base)
    assert [sl["rank_plot"] for sl in done["bayes"]] == [None] * 4  # file missing
    assert all("rank_plot" not in sl for sl in base["bayes"])  # the input is not modified
    (tmp_path / "bayes_x.nc").write_bytes(b"not netcdf")
    assert complete_results(tmp_path, base)["bayes"][0]["rank_plot"] is None  # unreadable
    (tmp_path.parent / "escape.nc").write_bytes(b"x")
    assert complete_results(tmp_path, base)["bayes"][1]["rank_plot"] is None  # outside the run directory
    # a slice that has the field keeps it; results without slices come back as they are
    kept = {**base, "bayes": [{"file": "bayes_x.nc", "rank_plot": None}]}
    assert complete_results(tmp_path, kept) is kept
    pytest.importorskip("arviz")
    import hyptest.stats._arviz as adapter

    _write_idata(tmp_path / "bayes_y.nc")

    def no_arviz(*a, **k):
        raise ImportError("no arviz")

    monkeypatch.setattr(adapter, "from_netcdf", no_arviz)
    import hyptest.analysis.bayes_ranks as ranks

    monkeypatch.setattr(ranks, "from_netcdf", no_arviz)
    assert complete_results(tmp_path, contract_results(bayes=[{"file": "bayes_y.nc"}]))["bayes"][0]["rank_plot"] is None


def test_data_range_fits_the_data():
    # the span plus 6% each side; a natural bound closer than the data's span is included
    assert figures.data_range([0.4, 0.6]) == pytest.approx((0.388, 0.612))
    assert figures.data_range([0.005, 0.02], floor=0.0) == pytest.approx((0.0, 0.0209))
    assert figures.data_range([0.4, 0.6], floor=0.0) == pytest.approx((0.388, 0.612))
    assert figures.data_range([0.9, 0.99], floor=0.0, ceiling=1.0) == pytest.approx((0.8946, 1.0))
    assert figures.data_range([2.0], include=[0.0]) == pytest.approx((-0.12, 2.12))
    assert figures.data_range([float("nan"), None]) == (0.0, 1.0)
    lo, hi = figures.data_range([3.0, 3.0])  # one value: a range around it
    assert lo < 3.0 < hi


def test_ticks_of_tiny_ranges_stay_distinct():
    for lo, hi in [(0.0, 1e-13), (1e-14, 3e-13), (-2e-15, 5e-15)]:
        p = figures.Panel(title="t", y_label="y", series={"a": [figures.SeriesPoint(0, lo), figures.SeriesPoint(1, hi)]})
        root = ET.fromstring(figures.line_panels([p], title="t", x_label="x"))
        (panel,) = _cls(root, "panel")
        y0, y1 = (float(v) for v in panel.get("data-ylim").split())
        assert y0 <= lo < hi <= y1 and y1 - y0 < 10 * (hi - lo)


def test_report_renders_when_every_order_sd_is_below_1e_12():
    pq, res, po, text = synthetic()
    for column in ("sd_gold", "sd_labels", "spread"):
        if column in pq:
            pq[column] = pq[column] * 1e-13
    out = render_report(res, pq, study_text=text, per_order=po)
    assert "<svg" in out


# --------------------------------------------------------------------------- #
# Axes fitted to the data, tooltips equal to the data, deterministic bytes
# --------------------------------------------------------------------------- #
def test_sparsity_axis_fits_small_shares():
    """Shares of 0.005–0.02 get an axis from 0 to about 0.02, not 0–1 (and every point is inside it)."""
    rows = [{**r, "sparsity": 0.005 + 0.0025 * r["layer"] + 0.0001 * MATRICES.index(r["matrix"])}
            for r in sparsity_rows()]
    root = _svg_in(_section(_render({"sparsity": rows}), "sparsity"))
    values = [r["sparsity"] for r in rows]
    for panel in _cls(root, "panel"):
        y0, y1 = (float(v) for v in panel.get("data-ylim").split())
        assert y0 == 0.0 and max(values) <= y1 <= 1.1 * max(values)
        for series in _cls(panel, "series"):
            mine = [r["sparsity"] for r in rows if r["matrix"] == series.get("data-series") and r["relative"]]
            pts = _cls(series, "pt")
            assert len(pts) == len(LAYERS)
            assert [float(pt.get("data-y")) for pt in pts] == pytest.approx(mine)
            assert [pt.find(f"{SVG_NS}title").text.rsplit(": ", 1)[1] for pt in pts] == [f"{v:.3g}" for v in mine]


def test_tooltips_and_limits_of_the_n_sweep_equal_the_data(full):
    rows = [r for r in n_sweep_rows() if r["metric"] == "accuracy"]
    root = _svg_in(_section(full, "n-sweep"))
    panel = next(p for p in _cls(root, "panel") if p.get("data-panel") == "accuracy")
    y0, y1 = (float(v) for v in panel.get("data-ylim").split())
    assert y0 <= min(r["ci_low"] for r in rows) and max(r["ci_high"] for r in rows) <= y1
    for s in _cls(panel, "series"):
        got = [(pt.get("data-x"), float(pt.get("data-y"))) for pt in _cls(s, "pt")]
        want = [(str(r["n_demos"]), r["estimate"]) for r in rows if r["method"] == s.get("data-series")]
        assert got == [(x, pytest.approx(y)) for x, y in want]
        tips = ["".join(pt.find(f"{SVG_NS}title").itertext()) for pt in _cls(s, "pt")]
        assert [t.rsplit(": ", 1)[1] for t in tips] == [
            f"{r['estimate']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" for r in rows
            if r["method"] == s.get("data-series")]


def test_bar_tooltips_equal_the_data():
    values = {("g1", "icl"): 0.81, ("g1", "gd"): 0.5, ("g2", "gd"): 0.0042}
    root = ET.fromstring(figures.grouped_bar_chart(["g1", "g2"], ["icl", "gd"], values, title="t", y_label="y",
                                                   series_labels={"icl": "ICL", "gd": "GD"}))
    bars = _cls(root, "bar")
    assert len(bars) == len(values)
    got = {(b.get("data-group"), b.get("data-series")): b.find(f"{SVG_NS}title").text for b in bars}
    assert got == {("g1", "icl"): "ICL: 0.81", ("g1", "gd"): "GD: 0.5", ("g2", "gd"): "GD: 0.0042"}


def _all_figures() -> dict[str, str]:
    """One of every figure kind, from fixed inputs."""
    rng = np.random.default_rng(3)
    per_query = pd.DataFrame({"method": np.repeat(["icl", "gd", "sgd"], 20), "sd_gold": rng.uniform(0, 0.05, 60)})
    pairs = pd.DataFrame({"method": "gd", "x": rng.uniform(size=200), "y": rng.uniform(size=200)})
    panel = figures.Panel(title="p", y_label="y", series={"a": [figures.SeriesPoint(i, 0.1 * i, 0.1 * i - 0.05,
                                                                                     0.1 * i + 0.05, i == 2)
                                                              for i in range(4)]}, hlines=[(0.2, "ref")])
    return {
        "strip": figures.order_sensitivity_plot(per_query, methods_order=["icl", "gd", "sgd"], title="s"),
        "boot": figures.resampling_distribution_plot(rng.normal(size=500), 0.1, title="b", null_value=0.0,
                                                     margin=0.2, interval=(-0.1, 0.3)),
        "scatter": figures.order_scatter_plot(pairs, methods=["gd"], title="c"),
        "posterior": figures.posterior_plot([1, 4, 9, 4, 1], np.linspace(-1, 1, 6), title="p", hdi=(-0.5, 0.5),
                                            rope=0.2, mean=0.0),
        "bars": figures.grouped_bar_chart(["a", "b"], ["x", "y"], {("a", "x"): 1.0, ("b", "y"): 2.0}, title="g",
                                          y_label="v", reference="x"),
        "lines": figures.line_panels([panel], title="l", x_label="x", marker_label="m"),
        "rank": figures.rank_plot(np.full((2, 2, 5), 4), ["a", "b"], 4.0, title="r"),
    }


def test_figures_are_byte_identical_across_calls_and_processes():
    import hashlib
    import json
    import os
    import subprocess
    import sys

    first, second = _all_figures(), _all_figures()
    assert first == second
    code = ("import hashlib, json, sys; sys.path.insert(0, sys.argv[1]); from tests.test_report_figures import "
            "_all_figures; print(json.dumps({k: hashlib.sha256(v.encode()).hexdigest() "
            "for k, v in _all_figures().items()}))")
    root = pathlib.Path(__file__).resolve().parent.parent
    here = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in first.items()}
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        out = subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True,
                             check=True, cwd=root)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == here, seed


def test_inline_svg_has_no_date_prolog_or_foreign_url():
    for name, fig in _all_figures().items():
        assert fig.startswith("<svg ") and "<?xml" not in fig and "DOCTYPE" not in fig, name
        for bad in ("dc:date", "<metadata", "Date", "matplotlib.org", "xlink", "url(", "clip-path"):
            assert bad not in fig, (name, bad)
        root = ET.fromstring(fig)
        assert root.get("role") == "img" and root.get("aria-label")
        assert root[0].tag == f"{SVG_NS}title" and root[0].text == root.get("aria-label")
        ids = [e.get("id") for e in root.iter() if e.get("id")]
        assert len(ids) == len(set(ids)) and all(not i.startswith(("figure_", "axes_", "hyptest-tag")) for i in ids)


def test_a_tooltip_never_lands_on_another_point():
    """Tooltips are matched to markers by order; a count mismatch is an error, not a shifted tooltip."""
    import matplotlib

    from hyptest.report.figures.canvas import RC, Sketch, add_line

    with matplotlib.rc_context(RC):
        sk = Sketch(200, 100)
        ax = sk.axes(20, 10, 160, 80)
        ax.set_xlim(0, 3)
        ax.set_ylim(0, 3)
        line = add_line(ax, [1, 2, 2.5], [1, 2, 2.5], ls="none", marker="o")
        sk.tag(line, "pts", child_class="pt", children=[{"title": "a"}, {"title": "b"}])
        with pytest.raises(RuntimeError, match="2 tooltips for 3 markers"):
            sk.svg(title="t", kind="x")


def test_figures_use_matplotlib_object_api_only():
    """No pyplot (global state, a GUI backend): a Figure and the SVG backend only."""
    folder = pathlib.Path(figures.__file__).parent
    for path in folder.glob("*.py"):
        src = path.read_text(encoding="utf-8")
        assert "import matplotlib.pyplot" not in src and "from matplotlib import pyplot" not in src, path
