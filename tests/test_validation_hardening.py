"""Issue 16, item 4: every study file that `validate` passes is one `study` can run.

Each case below crashed `hyptest study` (or ran something else than asked) while
`hyptest validate` said ok; now each is a field-path error with exit 2.
"""

from __future__ import annotations

import copy
import os

import pytest
import yaml
from typer.testing import CliRunner

from hyptest.cli import app
from hyptest.study import StudyError, load_study, parse_study

runner = CliRunner()

BASE = {
    "name": "hard",
    "seed": 3,
    "models": [{"name": "tiny", "source": "tiny"}],
    "tasks": ["sentiment"],
    "demos": {"n_demos": 3, "n_sets": 2, "n_orders": 4, "n_queries": 6},
    "methods": [{"kind": "icl"}, {"kind": "sgd", "learning_rate": 0.01}, {"kind": "adam", "learning_rate": 0.001}],
    "analysis": {"n_resamples": 2000, "bayes": False},
}


def _with(path: str, value):
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def _method(**options):
    return _with("methods", [{"kind": "icl"}, options])


# (study, fragment of the one error message)
CASES = {
    "seed_negative": (_with("seed", -1), "seed: Input should be greater than or equal to 0"),
    "seed_2_63": (_with("seed", 2**63), "seed: Input should be less than 9223372036854775808"),
    "seed_true": (_with("seed", True), "seed: must be a number, got True"),
    "n_sets_true": (_with("demos.n_sets", True), "demos.n_sets: must be a number"),
    "epochs_true": (_method(kind="sgd", epochs=True), "methods[1].epochs: must be a number"),
    "train_seed_true": (_method(kind="sgd", train_seeds=[0, True]), "methods[1].train_seeds: must be a number"),
    "n_demos_true": (_with("demos.n_demos", [True, 3]), "demos.n_demos: must be a number"),
    "margin_inf": (_with("analysis.margins", {"order_sensitivity": {"ratio": float("inf")}}),
                   "analysis.margins.order_sensitivity.ratio: must be finite"),
    "margin_true": (_with("analysis.margins", {"order_sensitivity": {"ratio": True}}),
                    "analysis.margins.order_sensitivity.ratio: must be a number"),
    "alpha_nan": (_with("analysis.alpha", float("nan")), "analysis.alpha: Input should be a finite number"),
    "rope_inf": (_with("analysis.rope", float("inf")), "analysis.rope: Input should be a finite number"),
    "eps_inf": (_method(kind="adam", eps=float("inf")), "methods[1].eps: Input should be a finite number"),
    "betas_above_1": (_method(kind="adam", betas=[1.5, 0.9]), "methods[1].betas[0]: Input should be less than 1"),
    "betas_1": (_method(kind="adam", betas=[0.9, 1.0]), "methods[1].betas[1]: Input should be less than 1"),
    "betas_negative": (_method(kind="adam", betas=[-0.1, 0.9]), "methods[1].betas[0]"),
    "betas_nan": (_method(kind="adam", betas=[float("nan"), 0.9]), "methods[1].betas[0]: Input should be a finite"),
    "n_queries_1": (_with("demos.n_queries", 1), "demos.n_queries: at least 2 queries are needed"),
    "cluster_one_set": ({**_with("demos.n_sets", 1), "analysis": {"bootstrap": "cluster", "bayes": False}},
                        "analysis.bootstrap: 'cluster' resamples demo sets"),
    "top_k_huge": (_with("analysis.top_k", 10**9), "analysis.top_k: Input should be less than or equal to 1000"),
    "lr_1e9": (_method(kind="sgd", learning_rate=1e9), "methods[1].learning_rate: must be at most 100"),
    "lr_grid_1e9": (_method(kind="sgd", learning_rate=[0.1, 1e9]), "methods[1].learning_rate: must be at most 100"),
    "n_orders_1e9": (_with("demos", {"n_demos": 13, "n_orders": 10**9}), "demos.n_orders: at most 100000"),
    "steps_1e9": (_method(kind="gd", steps=10**9), "methods[1].steps: must be at most 10000"),
    "epochs_1e9": (_method(kind="sgd", epochs=10**9), "methods[1].epochs: Input should be less than or equal to"),
    "n_resamples_1e9": (_with("analysis.n_resamples", 10**9), "analysis.n_resamples"),
    "bayes_draws_1e9": (_with("analysis.bayes_draws", 10**9), "analysis.bayes_draws"),
    "name_dotdot": (_with("name", ".."), "name: String should match pattern"),
    "name_dot": (_with("name", "."), "name: String should match pattern"),
    "name_slash": (_with("name", "a/../b"), "name: String should match pattern"),
    "name_dash": (_with("name", "--help"), "name: String should match pattern"),
}

# need the tasks or the model's shape: errors of the feasibility check (`validate` and `study` both run it)
FEASIBILITY = {
    "layer_out_of_range": (_method(kind="sgd", params="value_proj", layer=99, learning_rate=0.01),
                           "methods (sgd).layer: 99 is outside model 'tiny', which has 2 layers"),
    "layer_negative_out_of_range": (_method(kind="sgd", params="value_proj", layer=-3, learning_rate=0.01),
                                    "methods (sgd).layer: -3 is outside model 'tiny'"),
    "top_k_above_vocabulary": (_with("analysis", {"top_k": 500, "bayes": False}),
                               "analysis.top_k: 500 is larger than the vocabulary of model 'tiny' (257 tokens)"),
    "only_icl": (_with("methods", [{"kind": "icl"}]), "methods: only 'icl' is listed, so there is nothing to compare"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_rejects_with_the_field_path(case):
    data, fragment = CASES[case]
    with pytest.raises(StudyError) as info:
        parse_study(copy.deepcopy(data), source="s.yaml")
    assert fragment in str(info.value)


def _validate(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return runner.invoke(app, ["validate", str(path)])


@pytest.mark.parametrize("case", sorted(CASES) + sorted(FEASIBILITY))
def test_validate_exits_2_with_one_message(tmp_path, case):
    data, fragment = {**CASES, **FEASIBILITY}[case]
    result = _validate(tmp_path, data)
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert fragment in " ".join(result.output.split())


def test_the_base_study_is_valid_and_prints_a_cost(tmp_path):
    result = _validate(tmp_path, {**BASE, "output_dir": str(tmp_path / "run")})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "cost: 24 unit(s)" in text  # 2 sets x 4 orders x (icl, sgd, adam)
    assert "optimiser step(s)" in text and "peak memory" in text and "expected ~" in text
    assert not (tmp_path / "run").exists()  # validate creates nothing


@pytest.mark.parametrize("extra", [{}, {"demos": {"n_demos": [2, 3], "n_sets": 2, "n_orders": 4, "n_queries": 6}},
                                   {"methods": [{"kind": "icl"}, {"kind": "zs"}, {"kind": "gd", "steps": [1, 2]},
                                                {"kind": "sgd", "train_seeds": [0, 1]}]}])
def test_cost_estimate_counts_the_planned_units(extra):
    from hyptest.workflows.study import load_tasks, plan_study
    from hyptest.preflight import estimate_cost

    study = parse_study({**copy.deepcopy(BASE), **extra})
    tasks = load_tasks(study)
    units, _ = plan_study(study, tasks)
    assert estimate_cost(study, tasks).units == len(units)


def test_booleans_stay_fine_where_booleans_are_meant():
    data = _with("demos.balanced", False)
    data["analysis"] = {"bayes": False, "sparsity_relative": True, "n_resamples": 2000}
    data["methods"][1] = {"kind": "sgd", "record_steps": True}
    assert parse_study(data).demos.balanced is False


def test_yaml_nested_900_deep_is_a_clean_error(tmp_path):
    result = _validate(tmp_path, "name: x\ndescription: " + "[" * 900 + "]" * 900 + "\n")
    assert result.exit_code == 2
    assert "nested too deeply" in result.output
    path = tmp_path / "d.yaml"
    path.write_text("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 1200)))
    with pytest.raises(StudyError):
        load_study(path)


@pytest.mark.skipif(os.geteuid() == 0 and not os.path.isdir("/proc/1"), reason="needs /proc")
def test_unwritable_output_dir(tmp_path):
    result = _validate(tmp_path, {**BASE, "output_dir": "/proc/hyptest-no/run"})
    assert result.exit_code == 2
    assert "output_dir: /proc/hyptest-no/run cannot be created" in " ".join(result.output.split())
    file = tmp_path / "plain"
    file.write_text("x")
    result = _validate(tmp_path, {**BASE, "output_dir": str(file)})
    assert result.exit_code == 2 and "is not a directory" in result.output


def test_study_refuses_an_unwritable_out_before_running(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    file = tmp_path / "plain"
    file.write_text("x")
    result = runner.invoke(app, ["study", str(path), "--out", str(file / "run")])
    assert result.exit_code == 2
    assert "output_dir" in result.output and "is not a directory" in result.output


def test_study_above_the_cost_threshold_needs_yes(tmp_path):
    big = {**BASE, "models": ["smollm2-135m"], "demos": {"n_demos": 8, "n_sets": 4, "n_orders": 5000,
                                                         "n_queries": 32}}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(big))
    result = runner.invoke(app, ["study", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Pass --yes to run it anyway" in text and "expected to take" in text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.jsonl", b'{"text":"a","label":"x","split":"demo"}\n{"text":"\xff","label":"y","split":"demo"}\n',
         "bad.jsonl:2: not valid UTF-8 (byte 0xff)"),
        ("bad.csv", b"text,label,split\na,x,demo\n\xc3(,y,demo\n", "bad.csv:3: not valid UTF-8"),
        ("big.csv", b'text,label,split\n"' + b"a" * (128 * 1024 + 10) + b'",x,demo\n',
         "big.csv:2: malformed CSV (a field is longer than 131,072 characters"),
        ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "deep.jsonl:1: malformed JSON (nested too deeply)"),
        ("int.jsonl", b'{"text": ' + b"9" * 5000 + b', "label": "x", "split": "demo"}\n', "int.jsonl:1: malformed JSON"),
    ],
)
def test_task_files_with_bad_bytes_are_line_errors(tmp_path, name, content, fragment):
    (tmp_path / name).write_bytes(content)
    task = {"name": "mine", "path": name, "input_template": "{text}", "label_words": {"x": " x", "y": " y"}}
    result = _validate(tmp_path, {**BASE, "tasks": [task]})
    assert result.exit_code == 2, result.output
    assert fragment in " ".join(result.output.split())


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_dataset_files_with_bad_bytes_are_line_errors(tmp_path, suffix):
    from hyptest.tasks import TaskError, load_dataset_task

    folder = tmp_path / "sst2"
    folder.mkdir()
    bad = b"sentence,label\nfine,1\n\xff\xfe,0\n" if suffix == ".csv" else b'{"sentence": "\xff", "label": 1}\n'
    for split in ("train", "validation"):
        (folder / f"{split}{suffix}").write_bytes(bad)
    with pytest.raises(TaskError, match="not valid UTF-8"):
        load_dataset_task("sst2", path=folder)
