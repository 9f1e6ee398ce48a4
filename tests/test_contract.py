"""The results contract: committed schema, committed results, migration and refusal of newer versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hyptest.cli import app
from hyptest.contract import SCHEMA_VERSION, ResultsVersionError, migrate, read_results, schema_text

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(p.parent.name for p in (ROOT / "reports").glob("*/results.json")
                   if "experiment" not in json.loads(p.read_text()).get("study", {"experiment": None}))


def test_committed_schema_is_the_generated_one():
    committed = (ROOT / "docs" / "results.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "regenerate it: python -m hyptest.contract > docs/results.schema.json"
    schema = json.loads(committed)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert {"study", "comparisons", "provenance"} <= set(schema["required"])


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_results_follow_the_contract(name):
    data = json.loads((ROOT / "reports" / name / "results.json").read_text(encoding="utf-8"))
    results = read_results(data)
    assert results.schema_version == SCHEMA_VERSION
    assert len(results.comparisons) == len(data["comparisons"])
    # every field survives: the typed model keeps the extra columns of each row
    dumped = results.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for row, original in zip(dumped["comparisons"], data["comparisons"]):
        assert set(original) <= set(row)


def test_version_1_is_migrated_and_future_versions_refused():
    old = {"study": {}, "comparisons": [], "provenance": {"hyptest_version": "0", "python": "3", "libraries": {}}}
    assert migrate(old)["schema_version"] == 2 and "schema_version" not in old
    assert read_results(old).schema_version == 2
    with pytest.raises(ResultsVersionError, match=r"newer hyptest .*version 3.*upgrade"):
        read_results({**old, "schema_version": 3})
    with pytest.raises(ResultsVersionError, match="positive integer"):
        migrate({**old, "schema_version": "2"})
    with pytest.raises(ValueError, match=r"comparisons\.0\.verdict"):
        read_results({**old, "comparisons": [{"model": "m", "task": "t", "method_a": "icl", "method_b": "gd",
                                              "analysis": "a", "family": "f", "role": "exploratory",
                                              "rule": "two_sided"}]})


def _tiny_run(tmp_path: Path) -> Path:
    from hyptest.workflows.study import run_study
    from hyptest.study import load_study

    from .conftest import TINY_STUDY

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY)
    study, text = load_study(path)
    return run_study(study, text, out_dir=tmp_path / "out", threads=1).run_dir


def test_hyptest_report_renders_the_previous_version_and_refuses_a_newer_one(tmp_path):
    run = _tiny_run(tmp_path)
    data = json.loads((run / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    data.pop("schema_version", None)  # as written before the contract
    (run / "results.json").write_text(json.dumps(data))
    ok = CliRunner().invoke(app, ["report", str(run)])
    assert ok.exit_code == 0, ok.output
    assert (run / "report.html").is_file()
    (run / "report.html").unlink()
    (run / "results.json").write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    refused = CliRunner().invoke(app, ["report", str(run)])
    assert refused.exit_code != 0
    assert "newer hyptest" in refused.output and "upgrade" in refused.output
    assert not (run / "report.html").exists()
