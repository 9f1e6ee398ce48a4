"""Tests for the self-contained HTML report (hyptest.report)."""

from __future__ import annotations

import html as html_lib
import pathlib
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from hyptest.report import render_report, write_report
from hyptest.report import svg
from hyptest.report.html import (
    banner_text,
    fmt_num,
    fmt_p,
    fmt_ratio,
    headline_text,
    verdict_phrase,
)

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


def _comparison(model, task, n, b, verdict, **kw):
    base = {
        "model": model,
        "task": task,
        "n_demos": n,
        "method_a": "icl",
        "method_b": b,
        "analysis": "order_sensitivity",
        "estimate": 0.031,
        "ci_low": 0.02,
        "ci_high": 0.04,
        "ci_level": 0.95,
        "ci_method": "bootstrap (percentile)",
        "ratio": 12.3,
        "p_value": 0.0001,
        "p_adjusted": 0.0004,
        "adjust_method": "holm",
        "test": "paired sign-flip permutation test (10000 resamples)",
        "n": 15,
        "margin": None,
        "margin_source": None,
        "verdict": verdict,
    }
    base.update(kw)
    return base


def _results(per_query: pd.DataFrame, evil_task: str = EVIL_TASK) -> dict:
    comps = [
        _comparison("smollm2-135m", "sentiment", 4, "gd", "different",
                    summary="ICL is far more order-sensitive than full-batch GD."),
        _comparison("smollm2-135m", "sentiment", 4, "sgd", "equivalent",
                    estimate=0.001, ci_low=-0.004, ci_high=0.006, ratio=1.1, p_value=0.6,
                    p_adjusted=1.0, margin=0.01, margin_source="study file"),
        _comparison("smollm2-135m", "sentiment", 4, "adam", "negligible",
                    estimate=0.004, ci_low=0.002, ci_high=0.006, p_value=1.23e-05,
                    p_adjusted=1.23e-05, margin=0.01),
        _comparison(EVIL_MODEL, evil_task, 8, "gd", "inconclusive",
                    estimate=0.002, ci_low=-0.001, ci_high=0.005, ratio=float("inf"),
                    p_value=0.2, p_adjusted=None),
        # extra analyses, with fields the report does not know about
        _comparison("smollm2-135m", "sentiment", 4, "sgd", "equivalent",
                    analysis="tost_order_sensitivity", margin=0.01, p_value=0.003,
                    p_adjusted=0.009, p_lower=0.003, p_upper=0.001),
        {"model": "smollm2-135m", "task": "sentiment", "n_demos": 4, "method_a": "icl",
         "method_b": "adam", "analysis": "bayes_order_variance", "verdict": "did_not_converge",
         "estimate": None, "ci_low": None, "ci_high": None, "rhat": 1.31, "ess_bulk": 12.0,
         "summary": "R-hat 1.31 > 1.01: the sampler did not converge."},
        {"model": "smollm2-135m", "task": "sentiment", "n_demos": 4, "method_a": "icl",
         "method_b": "sgd", "analysis": "order_alignment", "verdict": "different",
         "estimate": 0.42, "ci_low": 0.3, "ci_high": 0.55, "p_value": 0.002,
         "p_adjusted": 0.004, "statistic": {"kendall_tau": 0.42}},
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
                  "description": "", "output_dir": None},
        "comparisons": comps,
        "order_sensitivity": os_rows,
        "accuracy": acc_rows,
        "null_distributions": {"0": rng.normal(0, 0.005, 2000).tolist(),
                               "3": rng.normal(0, 0.003, 500).tolist()},
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
        "bayes": {"draws": [1, 2, 3], "note": "<script>never shown</script>"},
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


def _banners(out: str) -> list[tuple[str, str]]:
    return re.findall(r'<div class="banner verdict-([a-z_]+)"[^>]*>(.*?)</div>', out, re.S)


def test_banners(data):
    _, res, out, _ = data
    banners = _banners(out)
    comps = res["comparisons"]
    assert len(banners) == len(comps)
    for (cls, body), comp in zip(banners, comps, strict=True):
        assert cls == comp["verdict"]
        text = _text(body)
        assert headline_text(comp) in text
        assert text.startswith(comp["verdict"].replace("_", " "))
    first = _text(banners[0][1])
    assert first == (
        "differentICL vs full-batch GD · order sensitivity · sentiment · N=4 · smollm2-135m: "
        "equivalence rejected — ICL is far more order-sensitive than full-batch GD."
    )
    second = _text(banners[1][1])
    assert "ICL vs SGD (batch 1, in order)" in second
    assert "equivalent within margin ±0.01" in second
    third = _text(banners[2][1])
    assert "Adam (batch 1, in order)" in third
    assert "different but negligible (inside margin)" in third
    fourth = banners[3][1]
    assert "inconclusive: equivalence not rejected, not shown" in _text(fourth)
    assert "&lt;script&gt;" in fourth
    # extra analyses get readable names
    assert "order sensitivity, TOST" in _text(banners[4][1])
    assert "order alignment" in _text(banners[6][1])


def test_banner_text_function():
    comp = _comparison("smollm2-135m", "sentiment", 4, "gd", "different")
    assert banner_text(comp) == (
        "sentiment · N=4 · smollm2-135m — ICL vs full-batch GD in order sensitivity: "
        "equivalence rejected (different). Δ = 0.031 [0.02, 0.04], ratio 12.3×, "
        "p_adj = 0.0004 (holm)"
    )
    comp = _comparison("m", "t", 2, "adam", "negligible", p_adjusted=1.23e-05)
    assert "p_adj = < 1e-4 (holm)" in banner_text(comp)
    comp = _comparison("m", "t", 2, "gd", "inconclusive", ratio=float("inf"), p_adjusted=None)
    assert "ratio ∞" in banner_text(comp) and "p = 0.0001" in banner_text(comp)


def test_did_not_converge(data):
    _, res, out, _ = data
    banners = _banners(out)
    cls, body = banners[5]
    assert cls == "did_not_converge"
    text = _text(body)
    assert text.startswith("did not converge")
    assert "ICL vs Adam (batch 1, in order) · order variance, Bayesian" in text
    assert "did not converge: no decision" in text
    assert "R-hat 1.31" in text
    # neutral styling exists for the class (grey, not one of the decision colours)
    rule = re.search(r"\.banner\.verdict-did_not_converge \{([^}]*)\}", out).group(1)
    assert "--dnc-bg" in rule and "--diff" not in rule and "--eq" not in rule
    # its table row: verdict word, and dashes for the missing numbers
    row = re.search(r'<tr class="verdict-did_not_converge">(.*?)</tr>', out, re.S).group(1)
    cells = [_text(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[4] == "did not converge"
    assert cells[5] == "— —"  # estimate and CI
    assert cells[7] == "—" and cells[8] == "—"  # p and p_adj
    assert verdict_phrase("did_not_converge") == "did not converge: no decision"


def test_verdicts_at_a_glance(data):
    _, res, out, _ = data
    comps = res["comparisons"]
    m = re.search(r'<table class="comparisons">(.*?)</table>', out, re.S)
    assert m
    # right below the banners, above every other section
    assert out.index('<div class="banner') < m.start() < out.index('id="order-sensitivity"')
    assert ">Verdicts at a glance</h2>" in out[: m.start()]
    last_banner = max(mm.end() for mm in re.finditer(r'<div class="banner ', out))
    between = out[last_banner : m.start()]
    assert "<figure" not in between and "<h3" not in between
    rows = re.findall(r'<tr class="verdict-([a-z_]+)">(.*?)</tr>', m.group(1), re.S)
    assert [r[0] for r in rows] == [c["verdict"] for c in comps]
    cells = [_text(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0][1], re.S)]
    assert cells == ["0", "ICL vs GD", "order sensitivity", "sentiment · N=4 · smollm2-135m",
                     "different", "0.031 [0.02, 0.04]", "12.3×", "0.0001", "0.0004", "15", "—"]
    counts = re.search(r'<p class="counts">(.*?)</p>', out, re.S).group(1)
    assert _text(counts) == (
        "7 comparisons: 2 different · 2 equivalent · 1 negligible · 1 inconclusive · 1 did not converge."
    )
    # columns that would repeat one value on every row are stated once instead
    few = render_report({**res, "comparisons": comps[:3]}, pd.DataFrame(), study_text="")
    table = re.search(r'<table class="comparisons">(.*?)</table>', few, re.S).group(1)
    heads = [_text(h) for h in re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table, re.S)]
    assert heads == ["#", "A vs B", "verdict", "effect Δ (A − B) [CI]", "ratio A/B", "p", "padj", "n", "margin"]
    counts = _text(re.search(r'<p class="counts">(.*?)</p>', few, re.S).group(1))
    assert counts == ("3 comparisons: 1 different · 1 equivalent · 1 negligible. "
                      "All: order sensitivity · sentiment · N=4 · smollm2-135m.")
    # warnings are surfaced right under the table too
    callout = re.search(r'<div class="warn-callout"[^>]*>(.*?)</div>', out, re.S).group(1)
    assert "1 warning" in _text(callout) and "has few queries" in _text(callout)


def test_svg_parses_and_counts_points(data):
    pq, _, out, _ = data
    figs = _figs(out, "order-sensitivity")
    assert len(figs) == len(GROUPS)
    for fig, (model, task, n) in zip(figs, sorted(GROUPS, key=lambda g: (g[0], g[1], g[2])), strict=True):
        root = ET.fromstring(fig)
        assert root.tag == f"{{{SVG_NS}}}svg"
        assert root.get("viewBox")
        n_rows = int(((pq["model"] == model) & (pq["task"] == task) & (pq["n_demos"] == n)).sum())
        pts = root.findall(f".//{{{SVG_NS}}}circle[@class='pt']")
        assert len(pts) == n_rows
        assert fig.count('<circle class="pt"') == n_rows
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
        panels = root.findall(f"{{{SVG_NS}}}g[@class='panel']")
        assert [p.get("data-method") for p in panels] == ["gd", "sgd", "adam"]
        for panel in panels:
            method = panel.get("data-method")
            expected = _expected_pairs(po, model, task, n, method)
            pts = panel.findall(f".//{{{SVG_NS}}}circle[@class='pt']")
            assert len(pts) == expected, method
            assert len(panel.findall(f"{{{SVG_NS}}}line[@class='diagonal']")) == 1
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
    # drawn at x = left + p * size, y = bottom - p * size inside the panel frame
    fig = svg.order_scatter_plot(one.assign(method="sgd"), methods=["sgd"], title="t")
    root = ET.fromstring(fig)
    frame = root.find(f".//{{{SVG_NS}}}g[@class='panel']/{{{SVG_NS}}}rect")
    left, top, size = (float(frame.get(k)) for k in ("x", "y", "width"))
    pt = root.find(f".//{{{SVG_NS}}}circle[@class='pt']")
    np.testing.assert_allclose(float(pt.get("cx")), left + one.x.iloc[0] * size, atol=0.01)
    np.testing.assert_allclose(float(pt.get("cy")), top + size - one.y.iloc[0] * size, atol=0.01)


def test_scatter_subsamples_deterministically():
    rng = np.random.default_rng(1)
    pairs = pd.DataFrame({"method": "gd", "x": rng.uniform(size=5000), "y": rng.uniform(size=5000)})
    a = svg.order_scatter_plot(pairs, methods=["gd", "sgd"], title="big <&>", max_points=3000)
    b = svg.order_scatter_plot(pairs, methods=["gd", "sgd"], title="big <&>", max_points=3000)
    assert a == b
    root = ET.fromstring(a)
    gd, sgd = root.findall(f"{{{SVG_NS}}}g[@class='panel']")
    assert len(gd.findall(f".//{{{SVG_NS}}}circle[@class='pt']")) == 3000
    assert len(sgd.findall(f".//{{{SVG_NS}}}circle[@class='pt']")) == 0
    texts = " ".join(t.text or "" for t in root.iter(f"{{{SVG_NS}}}text"))
    assert "3000 of 5000 pairs (subsample)" in texts and "no paired data" in texts
    assert "big &lt;&amp;&gt;" in a
    np.testing.assert_array_equal(svg.subsample_index(10, 20), np.arange(10))
    idx = svg.subsample_index(100, 7)
    assert len(idx) == 7 and len(set(idx.tolist())) == 7 and np.all(np.diff(idx) > 0)


def test_colours_are_shared_between_figures():
    pq = _per_query([GROUPS[0]])
    po = _per_order([GROUPS[0]])
    pq.loc[pq.method == "adam", "method"] = "mystery"
    po.loc[po.method == "adam", "method"] = "mystery"
    pq.loc[pq.method == "sgd", "method"] = "other"
    po.loc[po.method == "sgd", "method"] = "other"
    res = {"study": {"methods": ["icl", "gd", "other", "mystery"]}}
    out = render_report(res, pq, study_text="", per_order=po)
    strip = _figs(out, "order-sensitivity")[0]
    scatter = _figs(out, "order-scatter")[0]
    for m, colour in (("other", svg.EXTRA_COLORS[0]), ("mystery", svg.EXTRA_COLORS[1]),
                      ("gd", svg.PALETTE["gd"])):
        assert re.search(rf'<g class="method" data-method="{m}">\s*<circle class="pt"[^>]*fill="{colour}"',
                         strip)
        assert re.search(rf'<g class="panel" data-method="{m}">.*?<g class="pts" fill="{colour}"[^>]*>\s*'
                         r'<circle class="pt"', scatter, re.S)


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
    a = svg.order_sensitivity_plot(sub, methods_order=["icl", "gd", "sgd"], title='T <&> "q"')
    b = svg.order_sensitivity_plot(sub, methods_order=["icl", "gd", "sgd"], title='T <&> "q"')
    assert a == b  # deterministic jitter
    root = ET.fromstring(a)
    assert len(root.findall(f".//{{{SVG_NS}}}circle[@class='pt']")) == len(sub)
    assert "T &lt;&amp;&gt; &quot;q&quot;" in a
    # palette: fixed colours for known methods, next colour for unknown ones
    cols = svg.method_colors(["icl", "gd", "sgd", "adam", "mystery", "other"])
    assert len(set(cols.values())) == 6
    assert cols["icl"] == svg.PALETTE["icl"] and cols["mystery"] == svg.EXTRA_COLORS[0]
    assert svg.method_colors(["gd"])["gd"] == cols["gd"]
    # mean + CI computed when no summary given: one mean marker per method
    assert len(root.findall(f".//{{{SVG_NS}}}path[@class='mean']")) == 4
    assert len(root.findall(f".//{{{SVG_NS}}}line[@class='ci']")) == 4
    # an explicit colour map wins
    c = svg.order_sensitivity_plot(sub, methods_order=["icl"], title="x", colors={"mystery": "#123456"})
    assert 'fill="#123456"' in c
    # empty input still gives valid SVG
    ET.fromstring(svg.order_sensitivity_plot(pd.DataFrame(), methods_order=["icl"], title="x"))
    ET.fromstring(svg.order_scatter_plot(pd.DataFrame(), methods=[], title="x"))


def test_null_plot():
    null = np.random.default_rng(0).normal(size=1000)
    s = svg.null_distribution_plot(null, 2.5, title="null <x>")
    root = ET.fromstring(s)
    assert len(root.findall(f".//{{{SVG_NS}}}rect[@class='bar']")) == 40
    assert len(root.findall(f".//{{{SVG_NS}}}line[@class='observed']")) == 1
    texts = " ".join(t.text or "" for t in root.iter(f"{{{SVG_NS}}}text"))
    assert "count" in texts and "observed" in texts
    ET.fromstring(svg.null_distribution_plot(np.zeros(10), 0.0, title="degenerate"))
    ET.fromstring(svg.null_distribution_plot(np.array([]), 1.0, title="empty"))


def test_null_section(data):
    _, _, out, _ = data
    assert 'id="null-distributions"' in out
    assert len(_figs(out, "null-distribution")) == 2


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
    assert verdict_phrase("equivalent", 0.01) == "equivalent within margin ±0.01"
    # in the rendered table
    table = re.search(r'<table class="comparisons">.*?</table>', out, re.S).group(0)
    assert "&lt; 1e-4" in table
    assert "1.23e-05" not in out
    assert "—" in table  # None margin / p_adjusted


def test_sections_and_provenance(data):
    _, _, out, _ = data
    for sec in ("Verdicts at a glance", "Order sensitivity", "Accuracy", "Method", "Provenance",
                "Study file"):
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
    out = render_report({"comparisons": [{"verdict": "different"}]}, pd.DataFrame(), study_text="")
    assert 'class="banner verdict-different"' in out
    assert "No provenance recorded." in out
    assert "No accuracy results." in out
    out2 = render_report({}, pd.DataFrame(), study_text="")
    assert "No comparisons" in out2
    # odd verdicts and odd rows are tolerated
    out3 = render_report(
        {"comparisons": [{"verdict": "weird<x>", "analysis": "new_thing"}, "not a row", {}],
         "provenance": {"wall_time_s": {"collect": "n/a"}, "models": {"m": {"sha256": "00"}}}},
        pd.DataFrame(), study_text="",
    )
    assert 'class="banner verdict-unknown" id="comparison-0" data-verdict="weird&lt;x&gt;"' in out3
    assert "new thing" in out3
    assert len(_banners(out3)) == 2


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
    import hyptest.report.html as mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mod.os, "replace", boom)
    with pytest.raises(OSError):
        write_report(tmp_path, {}, pd.DataFrame(), "")
    assert list(tmp_path.iterdir()) == []
