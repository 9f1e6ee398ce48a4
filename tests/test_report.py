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
from hyptest.report.html import banner_text, fmt_num, fmt_p, fmt_ratio, verdict_phrase

EVIL_TASK = '<script>alert("x")</script>'
EVIL_MODEL = "m'o\"del<b>&"
SVG_NS = "http://www.w3.org/2000/svg"

GROUPS = [
    ("smollm2-135m", "sentiment", 4),
    (EVIL_MODEL, EVIL_TASK, 8),
]
METHODS = ["icl", "gd", "sgd", "adam"]


def _per_query() -> pd.DataFrame:
    rng = np.random.default_rng(123)
    rows = []
    for gi, (model, task, n) in enumerate(GROUPS):
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


def _results(per_query: pd.DataFrame) -> dict:
    comps = [
        _comparison("smollm2-135m", "sentiment", 4, "gd", "different",
                    summary="ICL is far more order-sensitive than full-batch GD."),
        _comparison("smollm2-135m", "sentiment", 4, "sgd", "equivalent",
                    estimate=0.001, ci_low=-0.004, ci_high=0.006, ratio=1.1, p_value=0.6,
                    p_adjusted=1.0, margin=0.01, margin_source="study file"),
        _comparison("smollm2-135m", "sentiment", 4, "adam", "negligible",
                    estimate=0.004, ci_low=0.002, ci_high=0.006, p_value=1.23e-05,
                    p_adjusted=1.23e-05, margin=0.01),
        _comparison(EVIL_MODEL, EVIL_TASK, 8, "gd", "inconclusive",
                    estimate=0.002, ci_low=-0.001, ci_high=0.005, ratio=float("inf"),
                    p_value=0.2, p_adjusted=None),
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
        "study": {"name": "order_sensitivity", "alpha": 0.05, "methods": METHODS},
        "comparisons": comps,
        "order_sensitivity": os_rows,
        "accuracy": acc_rows,
        "null_distributions": {"0": rng.normal(0, 0.005, 2000).tolist(),
                               "3": rng.normal(0, 0.003, 500).tolist()},
        "provenance": {
            "hyptest_version": "0.1.0", "python": "3.11.7", "platform": "Linux-x86_64",
            "device": "cpu", "torch_threads": 2,
            "libraries": {"torch": "2.13.0", "transformers": "4.46.0", "numpy": "2.1"},
            "models": [{"name": "smollm2-135m", "source": "https://huggingface.co/HuggingFaceTB/SmolLM2-135M", "sha256": "ab" * 32}],
            "seeds": {"root": 0}, "started": "2025-01-01T00:00:00Z",
            "finished": "2025-01-01T00:02:05Z",
            "wall_time_s": {"collect": 123.4, "analyse": 2.1, "total": 125.5},
            "n_units": 96, "n_units_reused": 0,
            "warnings": [f"task {EVIL_TASK} has few queries"], "run_dir": "/tmp/run",
        },
        "data_files": ["per_query.parquet", "units/u0.parquet", "https://evil.example/x",
                       "javascript:alert(1)"],
    }


STUDY_TEXT = f"name: order_sensitivity\nalpha: 0.05\ntasks: ['{EVIL_TASK}']\n"


@pytest.fixture(scope="module")
def data():
    pq = _per_query()
    res = _results(pq)
    out = render_report(res, pq, study_text=STUDY_TEXT)
    return pq, res, out


def _svgs(doc: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", doc, flags=re.S)


# --------------------------------------------------------------------------- #
def test_self_contained(data):
    _, _, out = data
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


def test_html_is_balanced(data):
    _, _, out = data

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
    _, _, out = data
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


def test_banners(data):
    _, res, out = data
    banners = re.findall(r'<div class="banner verdict-([a-z]+)"[^>]*>(.*?)</div>\s*</div>', out, re.S)
    comps = res["comparisons"]
    assert len(banners) == len(comps)
    for (cls, body), comp in zip(banners, comps, strict=True):
        assert cls == comp["verdict"]
        text = html_lib.unescape(re.sub(r"<[^>]+>", "", body))
        assert banner_text(comp) in text
    first = html_lib.unescape(re.sub(r"<[^>]+>", "", banners[0][1]))
    assert (
        "sentiment · N=4 · smollm2-135m — ICL vs full-batch GD in order sensitivity: "
        "equivalence rejected (different). Δ = 0.031 [0.02, 0.04], ratio 12.3×, "
        "p_adj = 0.0004 (holm)"
    ) in first
    assert "ICL is far more order-sensitive than full-batch GD." in first
    second = html_lib.unescape(banners[1][1])
    assert "ICL vs SGD (batch 1, in order)" in second
    assert "equivalent within margin ±0.01 (equivalent)" in second
    third = html_lib.unescape(banners[2][1])
    assert "Adam (batch 1, in order)" in third
    assert "different but negligible (inside margin)" in third
    assert "p_adj = < 1e-4" in third
    fourth = html_lib.unescape(banners[3][1])
    assert "inconclusive: equivalence not rejected, not shown" in fourth
    assert "ratio ∞" in fourth
    assert "&lt;script&gt;" in banners[3][1]


def test_svg_parses_and_counts_points(data):
    pq, _, out = data
    figs = [s for s in _svgs(out) if "order-sensitivity" in s]
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
        ET.fromstring(fig)  # every figure (incl. null plots) is well-formed XML


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
    # empty input still gives valid SVG
    ET.fromstring(svg.order_sensitivity_plot(pd.DataFrame(), methods_order=["icl"], title="x"))


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
    _, _, out = data
    assert 'id="null-distributions"' in out
    assert len([s for s in _svgs(out) if "null-distribution" in s]) == 2


def test_number_formatting(data):
    _, _, out = data
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
    _, _, out = data
    for sec in ("Order sensitivity", "Accuracy", "Method", "Provenance", "Study file"):
        assert f">{sec}</h2>" in out
    assert "hyptest 0.1.0 · generated 2025-01-01T00:02:05Z" in out
    assert "order-invariant by construction" in out
    assert "Phipson" in out and "2310.08540" in out
    assert "ab" * 32 in out
    assert '<ul class="warnings nonempty">' in out
    assert "125.5 s" in out
    assert "transformers" in out


def test_missing_optional_keys():
    out = render_report({"comparisons": [{"verdict": "different"}]}, pd.DataFrame(), study_text="")
    assert 'class="banner verdict-different"' in out
    assert "No provenance recorded." in out
    assert "No accuracy results." in out
    out2 = render_report({}, pd.DataFrame(), study_text="")
    assert "No comparisons" in out2


def test_write_report(tmp_path: pathlib.Path, data):
    pq, res, out = data
    (tmp_path / "report.html").write_text("old")
    path = write_report(tmp_path, res, pq, STUDY_TEXT)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "&lt;script&gt;" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_write_report_failure_leaves_no_temp(tmp_path: pathlib.Path, monkeypatch):
    import hyptest.report.html as mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mod.os, "replace", boom)
    with pytest.raises(OSError):
        write_report(tmp_path, {}, pd.DataFrame(), "")
    assert list(tmp_path.iterdir()) == []
