"""Study files: valid ones parse; bad ones give one clear message naming the field."""

from __future__ import annotations

import math

import pytest
import yaml

from hyptest.study import StudyError, check_feasible, load_study, parse_study

from .conftest import TINY_STUDY


def _study(**overrides):
    data = yaml.safe_load(TINY_STUDY)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return data


def test_valid_study_parses_with_defaults():
    study = parse_study(_study())
    assert study.method_names() == ["icl", "gd", "sgd", "adam"]
    assert study.demos.n_orders == "all"
    assert study.analysis.adjust == "holm"
    assert study.analysis.alpha == 0.05
    assert study.method("gd").steps == 2


def test_default_study_file_is_valid():
    study, text = load_study("studies/order_sensitivity.yaml")
    assert study.models[0].source == "embedded"
    assert study.demos.n_sets >= 2 and study.demos.n_orders >= 8 and study.demos.n_queries >= 32
    assert "order_sensitivity" in text


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"demos.n_order": 5}, "demos.n_order: unknown key"),
        ({"demos.n_orders": "many"}, "demos.n_orders"),
        ({"demos.n_orders": 1}, "at least 2 orders"),
        ({"demos.n_sets": 0}, "demos.n_sets"),
        ({"analysis.alpha": 1.5}, "analysis.alpha"),
        ({"analysis.reference": "nope"}, "not one of the methods"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": -1}]}, "methods[1].learning_rate"),
        ({"methods": [{"kind": "icl"}, {"kind": "newton"}]}, "methods[1]"),
        ({"methods": [{"kind": "icl"}, {"kind": "icl"}]}, "names must be unique"),
        ({"models": [{"name": "x", "source": "hf"}]}, "`path`"),
        # GD variants, grids, zero-shot and checkpoints
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "lr": 0.1}]}, "methods[1].lr: unknown key"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "params": "qkv"}]}, "methods[1].params"),
        ({"methods": [{"kind": "icl"}, {"kind": "adam", "loss": "tokens"}]}, "methods[1].loss"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "params": "value_proj", "layer": "top"}]},
         "methods[1].layer: must be a layer index (0-based; negative counts from the end), 'middle' or 'last'"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "params": "value_proj", "layer": 1.5}]}, "methods[1].layer"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "layer": 3}]},
         "methods[1]: `layer` only applies when `params` is 'value_proj' (`params` is 'all')"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": []}]},
         "methods[1].learning_rate: must be a positive number or a non-empty list of them"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": [0.1, -1]}]}, "the list holds -1"),
        ({"methods": [{"kind": "icl"}, {"kind": "gd", "steps": [2, 2]}]}, "methods[1].steps: grid values must be"),
        ({"methods": [{"kind": "icl"}, {"kind": "gd", "steps": [2, 0]}]}, "must be a positive integer"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "steps": [1, 2]}]}, "methods[1].steps: unknown key"),
        ({"methods": [{"kind": "icl"}, {"kind": "zs", "learning_rate": 0.1}]}, "methods[1].learning_rate: unknown"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": [0.1, 0.2]}, {"kind": "sgd", "name":
                                                                                     "sgd@lr=0.1"}]},
         "names must be unique, repeated: sgd@lr=0.1"),
        ({"methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": [0.1, 0.2]}], "analysis.reference": "sgd"},
         "`analysis.reference` is 'sgd', a grid of 2 methods (sgd@lr=0.1, sgd@lr=0.2); name one of them"),
        ({"models": [{"name": "t", "source": "tiny", "checkpoints": ["a"]}]},
         "models[0]: `checkpoints` only apply when source is 'hf'"),
        ({"models": [{"name": "t", "source": "hf", "path": "org/m", "checkpoints": ["a", "a"]}]},
         "`checkpoints` must be unique, repeated: a"),
        ({"models": [{"name": "t", "source": "hf", "path": "org/m", "checkpoints": []}]}, "models[0].checkpoints"),
        # declared margins, thresholds and families
        ({"analysis.margin": "auto"}, "`analysis.margin` was replaced by `analysis.margins`"),
        ({"analysis.margin": 0.02}, "the data-derived `auto` margin is no longer offered"),
        ({"analysis.alignment_margin": 0.5}, "replaced by `analysis.alignment_rho0`"),
        ({"analysis.margins": {"order_sensitivity": {"ratio": 1.0}}},
         "analysis.margins.order_sensitivity.ratio: Input should be greater than 1"),
        ({"analysis.margins": {"order_sensitivity": {"absolute": 0}}},
         "analysis.margins.order_sensitivity.absolute: Input should be greater than 0"),
        ({"analysis.margins": {"order_sensitivity": {"absolute": -0.1}}}, "greater than 0"),
        ({"analysis.margins": {"order_sensitivity": {"ratio": True}}}, "must be a number, got True"),
        ({"analysis.margins": {"order_sensitivity": {"ratio": float("inf")}}}, "must be finite"),
        ({"analysis.margins": {"order_sensitivity": {}}}, "give exactly one of `ratio`"),
        ({"analysis.margins": {"token_overlap": {"ratio": 1.2}}}, "a `ratio` margin applies to"),
        ({"analysis.margins": {"order_sensitivty": {"ratio": 1.2}}}, "unknown analysis 'order_sensitivty'"),
        ({"analysis.alignment_rho0": 0}, "analysis.alignment_rho0"),
        ({"analysis.alignment_rho0": 1.01}, "analysis.alignment_rho0"),
        ({"analysis.confirmatory": ["order_sensitivity", "bogus"]}, "unknown analysis 'bogus'"),
        ({"analysis.confirmatory": []}, "analysis.confirmatory"),
    ],
)
def test_bad_values_name_the_field(overrides, fragment):
    with pytest.raises(StudyError) as info:
        parse_study(_study(**overrides), source="s.yaml")
    assert fragment in str(info.value)
    assert str(info.value).startswith("s.yaml: invalid study file")


def test_new_method_options_parse_and_expand():
    study = parse_study(_study(**{
        "methods": [
            {"kind": "icl"}, {"kind": "zs"},
            {"kind": "sgd", "name": "hat", "params": "value_proj", "layer": -1, "learning_rate": [0.01, 0.001]},
            {"kind": "adam", "params": "attention_kv", "loss": "all_tokens", "record_steps": True},
            {"kind": "gd", "params": "value_proj", "steps": [1, 2]},
        ],
        "analysis.reference": "hat@lr=0.001",
    }))
    assert study.method_names() == ["icl", "zs", "hat@lr=0.01", "hat@lr=0.001", "adam", "gd@steps=1", "gd@steps=2"]
    assert [study.method_family(n) for n in study.method_names()] == [
        "icl", "zs", "hat", "hat", "adam", "gd", "gd"]
    assert study.method("hat@lr=0.001").layer == -1 and study.method("hat@lr=0.001").learning_rate == 0.001
    assert study.method("gd@steps=2").layer == "middle"  # the default layer of value_proj
    assert study.method("adam").layer is None and study.method("adam").record_steps is True
    assert study.method("zs").kind == "zs"
    assert study.checkpoint_groups() == {}
    with pytest.raises(KeyError):
        study.method_family("nope")


def test_missing_required_key():
    data = _study()
    del data["methods"]
    with pytest.raises(StudyError, match=r"methods: required key is missing"):
        parse_study(data)


def test_malformed_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [a, b\n")
    with pytest.raises(StudyError, match=r"malformed YAML at line \d+"):
        load_study(path)


def test_missing_file():
    with pytest.raises(StudyError, match="no such study file"):
        load_study("does/not/exist.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(StudyError, match="malformed YAML"):
        load_study(path)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"demos.n_demos": 49}, "N = 49 is larger than the demo pool of task 'sentiment' (48 demos)"),
        ({"demos.n_orders": 7}, f"N = 3 demos have only {math.factorial(3)} (N!) distinct orders"),
        ({"demos.n_sets": 17}, "17 disjoint demo sets of N = 3 need 51 demos"),
        ({"demos.n_queries": 500}, "500 queries asked, but task 'sentiment' has 128"),
    ],
)
def test_impossible_sizes(overrides, fragment):
    study = parse_study(_study(**overrides))
    with pytest.raises(StudyError) as info:
        check_feasible(study, {"sentiment": 48}, {"sentiment": 128})
    assert fragment in str(info.value)
