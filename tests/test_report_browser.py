"""Browser tests of the HTML report: open it in headless Chromium via Playwright.

Two reports are checked: one rendered from synthetic results (every verdict
kind, extra analyses, a Bayes slice that converged and one that did not,
hostile strings) and one from a real run of a tiny study on a tiny random
model (Bayes off, to keep the file fast).  Each is opened from ``file://`` in Debian's
``/usr/bin/chromium`` (``playwright install`` is never used), and the tests
check what only a browser can: nothing is fetched, nothing runs, the figures
have a size, the verdicts fit on a 1280×800 screen, and the page prints.

The module is skipped when the ``playwright`` package or the Chromium binary
is missing (install them with ``pip install -e ".[test]"`` and ``apt-get
install chromium``).
"""

from __future__ import annotations

import json
import pathlib
import struct

import pandas as pd
import pytest

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed (pip install 'playwright>=1.40'; never `playwright install`)",
)

CHROMIUM = pathlib.Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)

from hyptest.report import write_report  # noqa: E402

from .test_report import synthetic  # noqa: E402
from .test_report_figures import SECTION_IDS, new_sections  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
#: Injected as a task name and in the study text; if it ever ran, window.__pwned would be set.
CANARY = "<script>window.__pwned = 1</script>"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        except sync_api.Error as exc:  # a broken local chromium is an environment problem
            pytest.skip(f"cannot launch {CHROMIUM}: {exc}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    run_dir = tmp_path_factory.mktemp("synthetic")
    per_query, results, per_order, study_text = synthetic(evil_task=CANARY)
    # every further-analysis section, with the canary as the model / group name
    results.update(new_sections(evil=CANARY))
    try:  # the first Bayes slice's posterior file, and its rank plot computed by the analysis
        from hyptest.analysis.bayes_ranks import rank_plot_from_file

        from .test_report_figures import _write_idata

        _write_idata(run_dir / results["bayes"][0]["file"])
        results["bayes"][0]["rank_plot"] = rank_plot_from_file(run_dir / results["bayes"][0]["file"])
    except ImportError:
        pass
    write_report(run_dir, results, per_query, study_text, per_order=per_order)
    return run_dir, results


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    from hyptest.workflows.study import run_study
    from hyptest.study import load_study

    from .conftest import TINY_STUDY

    folder = tmp_path_factory.mktemp("real")
    path = folder / "tiny.yaml"
    # bayes stays off here: the PyMC fit would triple this file's run time (about +20 s on
    # 2 cores); the synthetic report carries the Bayes section (converged and not) instead
    assert "bayes: false" in TINY_STUDY
    path.write_text(TINY_STUDY)
    study, text = load_study(path)
    summary = run_study(study, text, out_dir=folder / "out", threads=1)
    run_dir = summary.run_dir
    results = json.loads((run_dir / "results.json").read_text())
    # render again with the per-order frame passed explicitly
    write_report(
        run_dir,
        results,
        pd.read_parquet(run_dir / "per_query.parquet"),
        text,
        per_order=pd.read_parquet(run_dir / "per_order.parquet"),
    )
    return run_dir, results


class Loaded:
    """A report opened in a page, with everything the page did while loading."""

    def __init__(self, page, url: str, results: dict, run_dir: pathlib.Path):
        self.page, self.url, self.results, self.run_dir = page, url, results, run_dir
        self.requests: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []


@pytest.fixture(scope="module", params=["synthetic", "real"])
def loaded(request, browser):
    run_dir, results = request.getfixturevalue(f"{request.param}_run")
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=True)
    page = context.new_page()
    url = (run_dir / "report.html").resolve().as_uri()
    rec = Loaded(page, url, results, run_dir)
    page.on("request", lambda r: rec.requests.append(r.url))
    page.on("console", lambda m: rec.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: rec.errors.append(str(e)))
    page.goto(url, wait_until="load")
    rec.kind = request.param
    yield rec
    context.close()


# --------------------------------------------------------------------------- #
def test_no_console_errors_and_no_network(loaded):
    assert loaded.errors == []
    assert [m for m in loaded.console if m[0] in ("error", "warning", "assert")] == []
    # the only request is the document itself
    assert loaded.requests == [loaded.url]


def test_one_banner_per_primary_comparison_with_its_verdict(loaded):
    comps = loaded.results["comparisons"]
    primary = [i for i, c in enumerate(comps) if c.get("analysis", "order_sensitivity") == "order_sensitivity"]
    assert primary and len(primary) < len(comps)  # other analyses are in the table only
    banners = loaded.page.locator("#verdicts .banner")
    assert banners.count() == len(primary)
    known = {"different", "equivalent", "negligible", "inconclusive", "did_not_converge"}
    for k in range(banners.count()):
        b = banners.nth(k)
        i = int(b.get_attribute("id").removeprefix("banner-"))
        assert i in primary
        classes = b.get_attribute("class").split()
        verdict = comps[i]["verdict"]
        assert f"verdict-{verdict if verdict in known else 'unknown'}" in classes
        assert b.locator(".verdict-word").inner_text().lower() == verdict.replace("_", " ")
        assert b.is_visible()
    # one banner per (model, task, N, method)
    keys = [(comps[i]["model"], comps[i]["task"], comps[i]["n_demos"], comps[i]["method_b"]) for i in primary]
    assert len(set(keys)) == len(keys)
    # a did-not-converge row is neutral grey, not a decision colour
    dnc = [i for i, c in enumerate(comps) if c["verdict"] == "did_not_converge"]
    if loaded.kind == "synthetic":
        assert dnc
    for i in dnc:
        cell = loaded.page.locator(f"#comparison-{i} td.verdict")
        assert cell.inner_text().rstrip(" †").endswith("did not converge")  # † marks a row note
        assert cell.evaluate("e => getComputedStyle(e).color") == "rgb(117, 117, 117)"


def test_verdicts_fit_on_a_laptop_screen(loaded):
    wrap = loaded.page.locator(".glance-wrap").first  # the confirmatory family's table comes first
    box = wrap.bounding_box()
    assert box is not None and box["height"] > 0
    # banners and the (scrolling) glance table are on screen at 1280x800 without scrolling the page
    assert box["y"] + box["height"] <= VIEWPORT["height"], box
    table = loaded.page.locator("table.comparisons")
    assert table.locator("tbody tr[id^='comparison-']").count() == len(loaded.results["comparisons"])
    # every row can be reached: the box scrolls, and its header stays in view
    inner = wrap.evaluate("e => [e.scrollHeight, e.clientHeight]")
    if inner[0] > inner[1]:
        wrap.evaluate("e => { e.scrollTop = e.scrollHeight; }")
        head = loaded.page.locator("table.comparisons thead th").first.bounding_box()
        assert box["y"] - 1 <= head["y"] <= box["y"] + 5, (head, box)
        wrap.evaluate("e => { e.scrollTop = 0; }")
    assert loaded.page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]


def test_every_figure_has_a_size(loaded):
    svgs = loaded.page.locator("svg")
    html = pathlib.Path(loaded.run_dir / "report.html").read_text(encoding="utf-8")
    assert svgs.count() == html.count("<svg ") > 0
    for i in range(svgs.count()):
        box = svgs.nth(i).bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0, i
    classes = ["order-sensitivity", "order-scatter", "resampling-distribution", "grouped-bars"]
    if loaded.results.get("bayes"):
        classes.append("posterior")
    for cls in classes:
        assert loaded.page.locator(f"svg.{cls}").count() >= 1, cls
    # the scatter has one panel per gradient-based method, each with points
    panels = loaded.page.locator("svg.order-scatter >> nth=0").locator("g.panel")
    assert panels.count() == 3
    for i in range(3):
        pts = panels.nth(i).locator(".pt")
        assert pts.count() > 0
        # a point is a <use> of matplotlib's marker (SVG 2 href): the browser draws it with a size
        box = pts.first.bounding_box()
        assert box is not None and 0 < box["width"] < 20 and 0 < box["height"] < 20, box


@pytest.mark.parametrize("loaded", ["synthetic"], indirect=True)
def test_injected_script_is_text_not_code(loaded):
    page = loaded.page
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("script").count() == 0
    # the payload is visible as text in the banners, tables and the study file
    assert CANARY in page.locator("#verdicts").inner_text()
    assert CANARY in page.locator("pre.study").inner_text()
    assert CANARY in page.locator("#provenance .warnings").inner_text()


def test_prints_to_pdf(loaded):
    page = loaded.page
    page.emulate_media(media="print")
    try:
        # in print the verdict table is not a scroll box: every row is on paper
        wraps = page.locator(".glance-wrap")  # confirmatory, exploratory and Bayesian tables
        for i in range(wraps.count()):
            assert wraps.nth(i).evaluate("e => getComputedStyle(e).maxHeight") == "none"
            assert wraps.nth(i).evaluate("e => e.scrollHeight <= e.clientHeight + 1")
    finally:
        page.emulate_media(media="screen")
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf[:5] == b"%PDF-" and len(pdf) > 1000


def test_bayes_section_in_the_browser(loaded):
    slices = loaded.results.get("bayes") or []
    page = loaded.page
    if not slices:
        assert page.locator("#bayes").count() == 0
        return
    assert page.locator("#bayes h3").count() == len(slices)
    for j in range(len(slices)):
        assert page.locator(f"#bayes-{j}").is_visible()
    # one posterior per fitted method, each drawn with a size
    n_post = sum(len(sl["posteriors"]) for sl in slices)
    posts = page.locator("#bayes svg.posterior")
    assert posts.count() == n_post
    for i in range(n_post):
        box = posts.nth(i).bounding_box()
        assert box["width"] > 200 and box["height"] > 100
    # a slice that did not converge says so in a visible box; the gate's failures are highlighted
    boxes = page.locator("#bayes .dnc-box")
    assert boxes.count() == sum(not sl["converged"] for sl in slices)
    for i in range(boxes.count()):
        assert boxes.nth(i).is_visible()
        assert boxes.nth(i).inner_text().lower().startswith("did not converge: no decision")
    bad = page.locator("#bayes table.diagnostics td.bad")
    if loaded.kind == "synthetic":
        assert bad.count() == 4
    for i in range(bad.count()):
        assert bad.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(253, 236, 234)"
    # order-invariant methods are stated in words
    for sl in slices:
        for m in sl["order_invariant"]:
            li = page.locator(f"#bayes li[data-method='{m}']").first
            assert "order SD fixed at 0: order-invariant by construction; log ratio = +∞" in li.inner_text()


def test_screenshot(loaded, tmp_path):
    path = tmp_path / f"report-{loaded.kind}.png"
    loaded.page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == VIEWPORT["width"] and height > VIEWPORT["height"]


@pytest.mark.parametrize("loaded", ["synthetic"], indirect=True)
def test_new_sections_in_the_browser(loaded):
    """N sweep, trajectories, checkpoints, vocabulary, Dai by layer, sparsity and rank plots render and fit."""
    page = loaded.page
    for sid in SECTION_IDS:
        section = page.locator(f"section#{sid}")
        assert section.count() == 1, sid
        assert page.locator(f"nav.toc a[href='#{sid}']").count() == 1, sid
        figs = section.locator("figure svg")
        assert figs.count() >= 1, sid
        for i in range(figs.count()):
            box = figs.nth(i).bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100, (sid, i, box)
        assert section.locator(".method-note").is_visible(), sid
        assert section.locator("table").count() >= 1, sid
        # the hostile model name is shown as text (escaped), never run
        assert CANARY in section.inner_text(), sid
    assert page.locator("svg.line-panels").count() >= 5
    # every point of the line figures carries its tooltip, and is drawn where the browser can hover it
    pts = page.locator("section#n-sweep svg.line-panels .pt")
    assert pts.count() > 0 and pts.count() == page.locator("section#n-sweep svg.line-panels .pt > title").count()
    box = pts.first.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    if (loaded.run_dir / loaded.results["bayes"][0]["file"]).exists():
        rank = page.locator("#bayes figure.rank-plot svg")
        assert rank.count() == 1
        assert rank.locator(".bar").count() > 0
    # nothing is wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
