"""The untrained-model control (Deutch et al. 2024): re-initialisation, records, statistics, validation."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch


def _control_spec(seed: int, *, model_seed: int = 0):
    from hyptest.study import ModelSpec

    return ModelSpec(name=f"tiny+untrained[s{seed}]", source="tiny", seed=model_seed, control_of="tiny",
                     control_seed=seed)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _naive_tiny_config():
    """The tiny model's config, written out by hand (the byte tokenizer: 256 bytes + end of text)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       pad_token_id=256, eos_token_id=256, bos_token_id=None, tie_word_embeddings=False)


def _naive_fresh_model(seed: int):
    """What an outsider builds for "a fresh model of that config with seed s"."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(_naive_tiny_config()).eval()


# ---------------------------------------------------------------------------
# re-initialisation
# ---------------------------------------------------------------------------


def test_reinitialisation_is_reproducible_differs_from_trained_and_leaves_the_rng_alone():
    from hyptest.models import load_model
    from hyptest.models.tiny import load_tiny

    trained = _state(load_tiny("tiny", seed=0).model)
    before = torch.random.get_rng_state()
    a, again, other = (_state(load_model(_control_spec(s)).model) for s in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's generator is not moved
    assert a.keys() == trained.keys()
    for key in a:
        assert torch.equal(a[key], again[key]), key
    random_matrices = [k for k in a if a[k].ndim == 2]  # norms start at ones in every model
    assert random_matrices
    for key in random_matrices:
        assert not torch.equal(a[key], trained[key]), key
        assert not torch.equal(a[key], other[key]), key


def test_control_equals_a_fresh_model_built_by_hand_and_so_do_its_dai_records(tmp_path):
    from hyptest.collect.dai import collect_dai_records
    from hyptest.models import LoadedModel, load_model
    from hyptest.models.tiny import byte_tokenizer
    from hyptest.study import SGDMethod
    from hyptest.tasks import load_builtin_task

    control = load_model(_control_spec(3))
    naive = _naive_fresh_model(3)
    got, ref = control.model.state_dict(), naive.state_dict()
    assert got.keys() == ref.keys()
    for key in ref:
        assert torch.equal(got[key], ref[key]), key
    assert control.model.training is False
    task = load_builtin_task("sentiment")
    demos, queries = list(task.demos[:3]), list(task.queries[:4])
    method = SGDMethod(kind="sgd", learning_rate=0.05, epochs=1, params="attention_kv", loss="all_tokens")
    naive_lm = LoadedModel(name="naive", model=naive, tokenizer=byte_tokenizer(), device="cpu")
    folders = [collect_dai_records(lm, task, demos, queries, ft_method=method, out_dir=tmp_path / name,
                                   model_name="m", task_name="t", seed=0)
               for name, lm in (("control", control), ("naive", naive_lm))]
    for setting in ("zs", "icl", "ftzs"):
        assert (folders[0] / setting / "record_info.jsonl").read_text() == \
            (folders[1] / setting / "record_info.jsonl").read_text(), setting


def test_identity_says_untrained_control_with_its_seed():
    from hyptest.models import load_model, model_identity
    from hyptest.study import ModelSpec

    spec = _control_spec(4, model_seed=2)
    identity = model_identity(spec)
    assert identity == load_model(spec).identity
    assert identity["control"] == "untrained" and identity["init_seed"] == 4
    assert identity["of"] == model_identity(ModelSpec(name="tiny", source="tiny", seed=2))
    assert {"torch", "transformers", "init"} <= set(identity)
    assert model_identity(_control_spec(5, model_seed=2)) != identity


# ---------------------------------------------------------------------------
# study file
# ---------------------------------------------------------------------------

BASE = {"name": "s", "models": [{"name": "tiny", "source": "tiny"}], "tasks": ["sentiment"],
        "methods": [{"kind": "icl"}, {"kind": "sgd"}]}


def _parse(model_overrides=None, *, extra_models=(), **top):
    from hyptest.study import parse_study

    data = json.loads(json.dumps({**BASE, **top}))
    data["models"][0].update(model_overrides or {})
    data["models"] += list(extra_models)
    return parse_study(data)


def test_control_expands_into_named_models_and_revalidates_to_itself():
    from hyptest.study import parse_study

    study = _parse({"control": "untrained"})
    assert [m.name for m in study.models] == ["tiny", "tiny+untrained[s0]", "tiny+untrained[s1]",
                                              "tiny+untrained[s2]"]
    assert study.controls() == {f"tiny+untrained[s{s}]": ("tiny", s) for s in (0, 1, 2)}
    assert study.control_groups() == {"tiny": [f"tiny+untrained[s{s}]" for s in (0, 1, 2)]}
    assert parse_study(study.model_dump(mode="json")) == study  # the manifest's dump is a fixed point
    seeded = _parse({"control": {"untrained": {"seeds": [5, 1]}}})
    assert [m.name for m in seeded.models] == ["tiny", "tiny+untrained[s5]", "tiny+untrained[s1]"]
    assert [m.name for m in _parse({"control": {"untrained": None}}).models][1:] == \
        [m.name for m in study.models][1:]


@pytest.mark.parametrize("overrides, extra, fragment", [
    ({"control": "trained"}, (), "models[0].control: unknown control 'trained'; known: untrained"),
    ({"control": {"random": {}}}, (), "unknown control 'random'"),
    ({"control": 3}, (), "must be 'untrained' or {untrained: {seeds: [...]}}"),
    ({"control": {"untrained": {"seeds": [1, 1]}}}, (), "values must be unique, repeated: 1"),
    ({"control": {"untrained": {"seeds": []}}}, (), "models[0].control.untrained.seeds"),
    ({"control": {"untrained": {"seeds": [-1]}}}, (), "models[0].control.untrained.seeds[0]"),
    ({"control": {"untrained": {"seeds": [True]}}}, (), "true/false is not a number"),
    ({"control": {"untrained": {"seed": [0]}}}, (), "unknown key"),
    ({"control_of": "tiny"}, (), "`control_of` and `control_seed` go together"),
    ({}, ({"name": "x", "source": "tiny", "control_of": "nope", "control_seed": 0},),
     "'x' has control_of 'nope', which is not a model of this study"),
    ({}, ({"name": "x", "source": "tiny", "seed": 9, "control_of": "tiny", "control_seed": 0},),
     "'x' is an untrained control of 'tiny' but has other settings"),
    ({"control": "untrained"}, ({"name": "tiny+untrained[s1]", "source": "tiny"},),
     "`models` names must be unique, repeated: tiny+untrained[s1]"),
    ({"source": "hf", "path": "org/m", "checkpoints": ["a"], "control": "untrained"}, (),
     "`control` and `checkpoints` cannot be combined"),
])
def test_bad_controls_name_the_field(overrides, extra, fragment):
    from hyptest.study import StudyError

    with pytest.raises(StudyError) as info:
        _parse(overrides, extra_models=extra)
    assert fragment in str(info.value)


@pytest.mark.parametrize("margins, fragment", [
    ({"simaoo": {"absolute": 0.1}}, "unknown Dai metric 'simaoo'"),
    ({"simaou": {"ratio": 1.2}}, "give an `absolute` margin"),
])
def test_bad_margins_vs_untrained(margins, fragment):
    from hyptest.study import StudyError

    with pytest.raises(StudyError) as info:
        _parse(dai={"margins_vs_untrained": margins})
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------
# trained vs untrained statistics
# ---------------------------------------------------------------------------

N_EX, N_LAYERS, SEEDS = 40, 3, (0, 1, 2)


def _synthetic_values(rng: np.random.Generator):
    """Dai values of a trained model and three controls on the same examples (SimAOU only) + correctness."""
    from hyptest.workflows.reanalyse import DaiValues

    frames, correct = [], []
    models = {"m": 0.30, **{f"m+untrained[s{s}]": 0.10 + 0.05 * s for s in SEEDS}}
    for model, level in models.items():
        value = level + rng.normal(0, 0.2, size=(N_EX, N_LAYERS)) + np.linspace(0, 0.1, N_LAYERS)
        frames.append(pd.DataFrame({"model": model, "task": "t", "analysis": "simaou",
                                    "example": np.repeat(np.arange(N_EX), N_LAYERS),
                                    "layer": np.tile(np.arange(N_LAYERS), N_EX), "value": value.ravel(),
                                    "baseline": rng.normal(0, 0.05, size=N_EX * N_LAYERS)}))
        correct.append(pd.DataFrame({"model": model, "task": "t", "example": np.arange(N_EX),
                                     "zs_correct": rng.random(N_EX) < 0.3, "ft_correct": rng.random(N_EX) < 0.8,
                                     "icl_correct": rng.random(N_EX) < (0.9 if model == "m" else 0.5)}))
    values = DaiValues(pd.concat(frames, ignore_index=True), pd.concat(correct, ignore_index=True), [], N_EX, 0)
    controls = {f"m+untrained[s{s}]": ("m", s) for s in SEEDS}
    return values, controls


def _naive_two_way(t: np.ndarray, u: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Owen's pigeonhole bootstrap written out: draw examples and seeds with replacement, recompute the means."""
    n, s = len(t), len(u)
    out = np.empty(n_draws)
    for b in range(n_draws):
        rows = rng.integers(0, n, n)
        seeds = rng.integers(0, s, s)
        out[b] = t[rows].mean() - u[np.ix_(seeds, rows)].mean()
    return out


def test_trained_vs_untrained_matches_an_independent_computation():
    from hyptest.analysis.untrained_control import FAMILY, FAMILY_BY_LAYER, dai_vs_untrained

    values, controls = _synthetic_values(np.random.default_rng(0))
    table = dai_vs_untrained(values, controls, n_resamples=20000, rng=1)
    raw = values.values.pivot_table(index=["model", "example"], columns="layer", values="value")
    t = raw.loc["m"].to_numpy()
    u = np.stack([raw.loc[f"m+untrained[s{s}]"].to_numpy() for s in SEEDS])  # (S, n, L)
    rows = table[table["analysis"] == "simaou"]
    assert set(rows["family"]) == {FAMILY, FAMILY_BY_LAYER}
    for layer in range(N_LAYERS):
        row = rows[rows["layer"] == layer].iloc[0]
        assert row["estimate"] == pytest.approx(t[:, layer].mean() - u[:, :, layer].mean(), abs=1e-12)
        assert row["mean_a"] == pytest.approx(t[:, layer].mean(), abs=1e-12)
        assert row["seed_means"] == pytest.approx(list(u[:, :, layer].mean(axis=1)), abs=1e-12)
        assert row["family"] == FAMILY_BY_LAYER and row["n"] == N_EX and row["n_seeds"] == 3
    head = rows[rows["layer"].isna()].iloc[0]
    tm, um = t.mean(axis=1), u.mean(axis=2)
    assert head["family"] == FAMILY
    assert head["estimate"] == pytest.approx(tm.mean() - um.mean(), abs=1e-12)
    # interval and p-value against the naive bootstrap (Monte-Carlo tolerance)
    draws = _naive_two_way(tm, um, 20000, np.random.default_rng(2))
    level = float(head["ci_level"])
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    spread = draws.std()
    assert head["ci_low"] == pytest.approx(lo, abs=0.08 * spread)
    assert head["ci_high"] == pytest.approx(hi, abs=0.08 * spread)
    p_naive = min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean()))
    assert head["p_value"] == pytest.approx(p_naive, abs=0.01)
    # the seed spread is in the interval: it is wider than a bootstrap over examples alone
    fixed = np.random.default_rng(3).integers(0, N_EX, (4000, N_EX))
    examples_only = tm[fixed].mean(axis=1) - um[:, fixed].mean(axis=0).mean(axis=1)
    assert spread > 1.2 * examples_only.std()
    assert head["verdict"] == "different" and head["direction"] == "trained higher"
    # Rec2FTP: P(ICL right | ZS wrong, FT right), trained − mean of the controls'
    c = values.correctness
    def rec(model):
        m = c[c["model"] == model]
        group = ~m["zs_correct"] & m["ft_correct"]
        return m.loc[group, "icl_correct"].mean()
    rec_row = table[table["analysis"] == "rec2ftp"].iloc[0]
    assert rec_row["family"] == FAMILY
    assert rec_row["estimate"] == pytest.approx(rec("m") - np.mean([rec(n) for n in controls]), abs=1e-12)


def test_one_control_seed_and_too_few_rec2ftp_examples():
    from hyptest.analysis.untrained_control import dai_vs_untrained

    values, _ = _synthetic_values(np.random.default_rng(5))
    keep = {"m", "m+untrained[s1]"}
    from hyptest.workflows.reanalyse import DaiValues

    few = DaiValues(values.values[values.values["model"].isin(keep)],
                    values.correctness[values.correctness["model"].isin(keep)].assign(ft_correct=False), [], N_EX, 0)
    table = dai_vs_untrained(few, {"m+untrained[s1]": ("m", 1)}, n_resamples=2000, rng=0)
    head = table[(table["analysis"] == "simaou") & table["layer"].isna()].iloc[0]
    assert "one control seed" in head["resampling"]
    assert table[table["analysis"] == "rec2ftp"].iloc[0]["verdict"] == "not_estimable"


def test_controls_get_families_of_their_own_and_change_no_trained_row():
    from hyptest.workflows.reanalyse import DaiValues, dai_comparisons

    values, controls = _synthetic_values(np.random.default_rng(1))
    alone = DaiValues(values.values[values.values["model"] == "m"],
                      values.correctness[values.correctness["model"] == "m"], [], N_EX, 0)
    both = dai_comparisons(values, n_resamples=2000, rng=0, controls=controls)
    solo = dai_comparisons(alone, n_resamples=2000, rng=0)
    trained = both[both["model"] == "m"].reset_index(drop=True)
    pd.testing.assert_frame_equal(trained, solo.reset_index(drop=True))
    assert set(both.loc[both["model"] != "m", "family"]) == {"untrained control: simaou",
                                                             "untrained control: rec2ftp"}


def test_statements_say_in_words_when_a_metric_cannot_tell_them_apart():
    from hyptest.analysis.untrained_control import dai_vs_untrained, untrained_statements

    values, controls = _synthetic_values(np.random.default_rng(0))
    same = values.values.copy()
    same.loc[same["model"] == "m", "value"] -= 0.2  # the trained model now sits among its controls
    from hyptest.workflows.reanalyse import DaiValues

    values = DaiValues(same, values.correctness, [], N_EX, 0)
    table = dai_vs_untrained(values, controls, n_resamples=4000, rng=0)
    text = {s["analysis"]: s for s in untrained_statements(table)}
    assert text["simaou"]["text"].startswith("SimAOU cannot tell the trained model from an untrained one")
    assert text["simaou"]["tells_apart"] is False and "no equivalence margin" in text["simaou"]["text"]
    margined = dai_vs_untrained(values, controls, n_resamples=4000, rng=0, margins={"simaou": {"absolute": 0.5}})
    eq = {s["analysis"]: s for s in untrained_statements(margined)}["simaou"]
    assert eq["verdict"] == "equivalent" and "within the declared margin ±0.5" in eq["text"]


# ---------------------------------------------------------------------------
# end to end: a control in a study
# ---------------------------------------------------------------------------

STUDY = textwrap.dedent(
    """\
    name: ctl
    seed: 3
    models:
      - {{name: tiny, source: tiny{control}}}
    tasks: [sentiment]
    demos: {{n_demos: 2, n_sets: 2, n_orders: all, n_queries: 4}}
    methods:
      - kind: icl
      - {{kind: sgd, learning_rate: 0.01, params: attention_kv, loss: all_tokens}}
    dai: {{learning_rate: 0.05, n_queries: 4}}
    analysis: {{n_resamples: 1000, bayes: false}}
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import yaml

    from hyptest.workflows.study import run_study
    from hyptest.study import parse_study

    out = {}
    for label, control in (("plain", ""), ("control", ", control: {untrained: {seeds: [0, 1]}}")):
        text = STUDY.format(control=control)
        study = parse_study(yaml.safe_load(text))
        out[label] = run_study(study, text, out_dir=tmp_path_factory.mktemp(label), threads=1).results
    return out


def test_study_with_a_control_runs_it_as_models_and_keeps_the_trained_rows(runs):
    plain, control = runs["plain"], runs["control"]
    names = {r["name"] for r in control["provenance"]["models"]}
    assert names == {"tiny", "tiny+untrained[s0]", "tiny+untrained[s1]"}
    ident = next(r for r in control["provenance"]["models"] if r["name"] == "tiny+untrained[s1]")
    assert ident["control"] == "untrained" and ident["init_seed"] == 1
    assert {r["model"] for r in control["accuracy"]} == names
    key = ("model", "task", "n_demos", "method_b", "analysis", "family", "estimate", "ci_low", "ci_high",
           "p_adjusted", "verdict")
    trained = [tuple(r[k] for k in key) for r in control["comparisons"] if r["model"] == "tiny"]
    assert trained == [tuple(r[k] for k in key) for r in plain["comparisons"]]
    controls = [r for r in control["comparisons"] if r["model"] != "tiny"]
    assert controls and all(r["family"].startswith("untrained control: ") for r in controls)
    assert all(r["role"] == "exploratory" for r in controls)
    dai = control["dai"]
    assert {r["model"] for r in dai["correctness"]} == names
    assert [r for r in dai["comparisons"] if r["model"] == "tiny"] == plain["dai"]["comparisons"]
    heads = [r for r in dai["vs_untrained"] if r["family"] == "dai_vs_untrained"]
    assert {r["analysis"] for r in heads} >= {"rec2ftp", "simaou", "simam", "kendall"}
    assert all(r["model"] == "tiny" and r["n_seeds"] == 2 for r in heads)
    assert len(dai["untrained_statements"]) == len(heads)
    assert {r["analysis"] for r in dai["untrained_layers"]} >= {"simaou", "simam", "kendall"}


def test_report_shows_the_control_section(runs, tmp_path):
    from hyptest.report import render_report

    html = render_report(runs["control"], pd.DataFrame(), study_text="")
    assert 'id="untrained-control"' in html and "Deutch" in html
    assert "Trained vs untrained control by layer" in html
    assert "tell the trained model from an untrained one" in html
    assert 'id="untrained-control"' not in render_report(runs["plain"], pd.DataFrame(), study_text="")
