"""Browser tests of the HTML report: open it in headless Chromium via Playwright.

Two reports are checked: one rendered from synthetic results (every verdict
kind, extra analyses, hostile strings) and one from a real run of a tiny
study on a tiny random model.  Each is opened from ``file://`` in Debian's
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
    write_report(run_dir, results, per_query, study_text, per_order=per_order)
    return run_dir, results


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    from hyptest.pipeline import run_study
    from hyptest.study import load_study

    from .conftest import TINY_STUDY

    folder = tmp_path_factory.mktemp("real")
    path = folder / "tiny.yaml"
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


def test_one_banner_per_comparison_with_its_verdict(loaded):
    comps = loaded.results["comparisons"]
    banners = loaded.page.locator("#verdicts .banner")
    assert banners.count() == len(comps)
    known = {"different", "equivalent", "negligible", "inconclusive", "did_not_converge"}
    for i, comp in enumerate(comps):
        b = banners.nth(i)
        classes = b.get_attribute("class").split()
        verdict = comp["verdict"]
        assert f"verdict-{verdict if verdict in known else 'unknown'}" in classes
        assert b.locator(".verdict-word").inner_text().lower() == verdict.replace("_", " ")
        assert b.is_visible()
    if loaded.kind == "synthetic":
        dnc = banners.nth(5)
        assert "did not converge: no decision" in dnc.inner_text()
        # neutral grey, not a decision colour
        bg = dnc.evaluate("e => getComputedStyle(e).backgroundColor")
        assert bg == "rgb(244, 244, 244)"


def test_verdicts_fit_on_a_laptop_screen(loaded):
    table = loaded.page.locator("table.comparisons")
    box = table.bounding_box()
    assert box is not None and box["height"] > 0
    # banners and the glance table are on screen at 1280x800 without scrolling
    assert box["y"] + box["height"] <= VIEWPORT["height"], box
    assert table.locator("tbody tr").count() == len(loaded.results["comparisons"])
    assert loaded.page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]


def test_every_figure_has_a_size(loaded):
    svgs = loaded.page.locator("svg")
    html = pathlib.Path(loaded.run_dir / "report.html").read_text(encoding="utf-8")
    assert svgs.count() == html.count("<svg ") > 0
    for i in range(svgs.count()):
        box = svgs.nth(i).bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0, i
    for cls in ("order-sensitivity", "order-scatter", "null-distribution"):
        assert loaded.page.locator(f"svg.{cls}").count() >= 1, cls
    # the scatter has one panel per gradient-based method, each with points
    panels = loaded.page.locator("svg.order-scatter >> nth=0").locator("g.panel")
    assert panels.count() == 3
    for i in range(3):
        assert panels.nth(i).locator("circle.pt").count() > 0


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
    pdf = loaded.page.pdf(format="A4", print_background=True)
    assert pdf[:5] == b"%PDF-" and len(pdf) > 1000


def test_screenshot(loaded, tmp_path):
    path = tmp_path / f"report-{loaded.kind}.png"
    loaded.page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == VIEWPORT["width"] and height > VIEWPORT["height"]
