"""Shen et al.'s GD-hat, Dai et al.'s K/V fine-tuning and all-token loss, trajectories, zero-shot,
grids and checkpoints: each checked against an explicit torch loop, a closed form or the model's
own forward."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hyptest.collect import gd as gd_module
from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import (
    TrainingExample,
    WeightSnapshot,
    train_in_place,
    train_orders,
    trainable_parameters,
    training_loss,
)
from hyptest.collect.plan import method_settings
from hyptest.records import final_step_rows
from hyptest.study import AdamMethod, GDMethod, SGDMethod, parse_study

from ._naive import example_loss, manual_adam, manual_full_batch_gd, manual_sgd, naive_label_logprobs

# --------------------------------------------------------------------------- explicit reference loops


def _mean_token_loss(model, ids, targets):
    """Dai et al.'s loss written out: mean NLL of the target tokens, from the model's own logits."""
    logp = torch.log_softmax(model(torch.tensor([list(ids)])).logits[0].float(), dim=-1)
    return -sum(logp[t - 1, ids[t]] for t in targets) / len(targets)


def _examples(tiny_lm, task, n, loss="label"):
    enc = PromptEncoder(tiny_lm.tokenizer, task)
    raw = [enc.training_example(d, loss=loss) for d in task.demos[:n]]
    return enc, raw, [TrainingExample(tuple(i), tuple(t)) for i, t in raw]


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------- which parameters train


def test_trainable_parameters_pick_the_named_modules(tiny_lm):
    model = tiny_lm.model
    layers = model.model.layers
    assert len(layers) == 2

    def ids(method):
        return [id(p) for _, p in trainable_parameters(model, method)]

    # "middle" = n_layers // 2 = 1; -2 counts from the end = 0; Llama's v_proj has no bias
    assert ids(SGDMethod(kind="sgd", params="value_proj")) == [id(layers[1].self_attn.v_proj.weight)]
    assert ids(SGDMethod(kind="sgd", params="value_proj", layer=-2)) == [id(layers[0].self_attn.v_proj.weight)]
    assert ids(SGDMethod(kind="sgd", params="value_proj", layer="last")) == [id(layers[1].self_attn.v_proj.weight)]
    kv = [id(getattr(layers[i].self_attn, f"{w}_proj").weight) for i in range(2) for w in "kv"]
    assert ids(SGDMethod(kind="sgd", params="attention_kv")) == kv
    assert ids(SGDMethod(kind="sgd")) == [id(p) for p in model.parameters()]
    names = [n for n, _ in trainable_parameters(model, SGDMethod(kind="sgd", params="attention_kv"))]
    assert names == [f"model.layers.{i}.self_attn.{w}_proj.weight" for i in range(2) for w in "kv"]


def test_value_projection_bias_is_trained_when_present():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, attention_bias=True)
    model = LlamaForCausalLM(config)
    v = model.model.layers[1].self_attn.v_proj  # 3 // 2 = 1
    got = [p for _, p in trainable_parameters(model, AdamMethod(kind="adam", params="value_proj"))]
    assert [id(p) for p in got] == [id(v.weight), id(v.bias)]
    kv = trainable_parameters(model, AdamMethod(kind="adam", params="attention_kv"))
    assert len(kv) == 3 * 2 * 2  # 3 layers x (k, v) x (weight, bias)


@pytest.mark.parametrize("layer", [2, -3, 10])
def test_layer_outside_the_model_is_a_clear_error(tiny_lm, layer):
    method = SGDMethod(kind="sgd", name="hat", params="value_proj", layer=layer)
    with pytest.raises(ValueError, match=rf"method 'hat': `layer` is {layer}, but the model has 2 layers"):
        trainable_parameters(tiny_lm.model, method)


def test_fused_qkv_model_is_refused_with_its_module_names():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    with pytest.raises(ValueError, match=r"`params: attention_kv`.*has none.*transformer\.h\.0\.attn") as info:
        trainable_parameters(model, SGDMethod(kind="sgd", params="attention_kv"))
    assert "GPT2LMHeadModel" in str(info.value)


def test_value_proj_sgd_equals_an_explicit_loop_and_touches_nothing_else(tiny_lm, sentiment):
    model = tiny_lm.model
    _, raw, examples = _examples(tiny_lm, sentiment, 3)
    method = SGDMethod(kind="sgd", learning_rate=0.5, params="value_proj", layer=0)
    reference = copy.deepcopy(model)
    manual_sgd(reference, raw, 0.5, names=["model.layers.0.self_attn.v_proj.weight"])
    before = _params(model)
    snapshot = WeightSnapshot(model)
    try:
        train_in_place(model, examples, method, seed=0)
        after = dict(model.named_parameters())
        for (name, ref), old in zip(reference.named_parameters(), before):
            if name == "model.layers.0.self_attn.v_proj.weight":
                assert not torch.equal(after[name], old)  # it moved ...
                torch.testing.assert_close(after[name], ref, atol=2e-6, rtol=1e-4)  # ... as the loop moved it
            else:
                assert torch.equal(after[name], old)  # nothing else moved, not even by rounding
                assert after[name].grad is None
        assert all(p.requires_grad for p in model.parameters())  # flags put back
    finally:
        snapshot.restore()


def test_requires_grad_flags_are_restored_on_errors(tiny_lm, sentiment, monkeypatch):
    model = tiny_lm.model
    _, _, examples = _examples(tiny_lm, sentiment, 2)
    model.lm_head.weight.requires_grad_(False)  # a caller's own frozen parameter stays frozen
    seen = []

    def boom(*args, **kwargs):
        seen.append(sum(p.requires_grad for p in model.parameters()))
        raise RuntimeError("boom")

    monkeypatch.setattr(gd_module, "training_loss", boom)
    method = SGDMethod(kind="sgd", params="attention_kv")
    try:
        with pytest.raises(RuntimeError, match="boom"):
            train_in_place(model, examples, method, seed=0)
        with pytest.raises(RuntimeError, match="boom"):
            next(train_orders(model, [examples], method, seed=0))
        assert seen == [4, 4]  # while training, only the 4 K/V weights required gradients
        assert [p.requires_grad for p in model.parameters()] == [
            p is not model.lm_head.weight for p in model.parameters()]
    finally:
        model.lm_head.weight.requires_grad_(True)


@pytest.mark.parametrize("max_snapshots", [None, 0])
def test_kv_adam_walk_is_bitwise_the_straight_loop_and_equals_explicit_adam(tiny_lm, sentiment, monkeypatch,
                                                                              max_snapshots):
    model = tiny_lm.model
    _, raw, examples = _examples(tiny_lm, sentiment, 3)
    method = AdamMethod(kind="adam", learning_rate=1e-3, params="attention_kv")
    kv = [n for n, _ in trainable_parameters(model, method)]
    perms = list(itertools.permutations(range(3)))
    orders = [[examples[i] for i in p] for p in perms]
    snapshot = WeightSnapshot(model)
    straight = []
    for order in orders:
        snapshot.restore()
        train_in_place(model, order, method, seed=0)
        straight.append(_params(model))
    snapshot.restore()
    held = []
    real_state = gd_module._TrainingState

    class Recording(real_state):
        def __init__(self, params, *args, **kwargs):
            held.append(sum(p.numel() for p in params))
            super().__init__(params, *args, **kwargs)

    monkeypatch.setattr(gd_module, "_TrainingState", Recording)
    before = _params(model)
    pretrained = copy.deepcopy(model)
    for index, _ in train_orders(model, orders, method, seed=0, max_snapshots=max_snapshots):
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), straight[index]))
        if index in (0, 5):
            reference = copy.deepcopy(pretrained)
            manual_adam(reference, [raw[i] for i in perms[index]], 1e-3, names=kv)
            for p, q in zip(model.parameters(), reference.parameters()):
                torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-4)
    kv_numel = sum(p.numel() for _, p in trainable_parameters(model, method))
    assert held and set(held) == {kv_numel}  # snapshots hold the K/V weights only
    assert kv_numel < sum(p.numel() for p in model.parameters()) / 5
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- the all-token loss


def test_all_token_targets_are_every_demo_token_after_the_first(tiny_lm, sentiment, topic):
    from hyptest.tasks import Example, Task

    with_head = Task(name="h", input_template="Q: {text}\nA:", label_words={"a": " yes", "b": " no"},
                     demos=(Example("d1", "one", "a"),), queries=(Example("q1", "two", "b"),),
                     instruction="Answer.")
    for task in (sentiment, topic, with_head):
        enc = PromptEncoder(tiny_lm.tokenizer, task)
        demo = task.demos[0]
        ids, label_targets = enc.training_example(demo)
        all_ids, targets = enc.training_example(demo, loss="all_tokens")
        head = tiny_lm.tokenizer(task.instruction + task.demo_separator, add_special_tokens=False).input_ids \
            if task.instruction else []
        demo_text = task.format_input(demo.text) + task.label_words[demo.label]
        demo_tokens = tiny_lm.tokenizer(demo_text, add_special_tokens=False).input_ids  # byte tokenizer
        assert all_ids == ids == head + demo_tokens
        assert targets == list(range(len(head) + 1, len(ids)))
        label = task.label_words[demo.label].encode()
        assert label_targets == list(range(len(ids) - len(label), len(ids)))  # the label path is unchanged
    with pytest.raises(ValueError, match="`loss` must be"):
        PromptEncoder(tiny_lm.tokenizer, sentiment).training_example(sentiment.demos[0], loss="tokens")


def test_all_token_loss_is_the_mean_per_example_then_over_the_batch(tiny_lm, sentiment):
    model = tiny_lm.model
    _, raw, examples = _examples(tiny_lm, sentiment, 3, loss="all_tokens")
    assert len({len(i) for i, _ in raw}) > 1  # different lengths: padding and per-example means matter
    got = training_loss(model, examples, loss="all_tokens")
    with torch.no_grad():
        expected = sum(_mean_token_loss(model, i, t) for i, t in raw) / len(raw)
        summed = sum(example_loss(model, i, t) for i, t in raw) / len(raw)
    torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(training_loss(model, examples, loss="label").detach(), summed,
                               atol=1e-4, rtol=1e-5)  # the label reduction is the sum per example


def test_full_batch_gd_on_all_tokens_equals_an_explicit_loop(tiny_lm, sentiment):
    model = tiny_lm.model
    _, raw, examples = _examples(tiny_lm, sentiment, 3, loss="all_tokens")
    method = GDMethod(kind="gd", learning_rate=0.5, steps=2, loss="all_tokens", params="attention_kv")
    names = [n for n, _ in trainable_parameters(model, method)]
    reference = copy.deepcopy(model)
    manual_full_batch_gd(reference, raw, 0.5, 2, names=names, loss_fn=_mean_token_loss)
    before = _params(model)
    snapshot = WeightSnapshot(model)
    try:
        losses = train_in_place(model, examples, method, seed=0)
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-4)
        moved = [n for (n, p), q in zip(model.named_parameters(), before) if not torch.equal(p, q)]
        assert moved == names
    finally:
        snapshot.restore()
    with torch.no_grad():
        first = sum(_mean_token_loss(model, i, t) for i, t in raw) / len(raw)
    assert losses[0] == pytest.approx(float(first), rel=1e-5)


# --------------------------------------------------------------------------- trajectories


def test_observe_scores_each_shared_state_once_and_matches_explicit_prefix_training(tiny_lm, sentiment):
    model = tiny_lm.model
    enc, raw, examples = _examples(tiny_lm, sentiment, 3)
    queries = [enc.prompt_ids([], q) for q in sentiment.queries[:3]]
    labels = enc.label_ids()
    perms = list(itertools.permutations(range(3)))
    orders = [[examples[i] for i in p] for p in perms]
    pretrained = copy.deepcopy(model)
    calls = []

    def observe(step):
        calls.append(step)
        return naive_label_logprobs(model, [], queries, labels)

    got = {index: trail for index, _, trail in
           train_orders(model, orders, SGDMethod(kind="sgd", learning_rate=0.5), seed=0, observe=observe)}
    assert sorted(calls) == [0] + [1] * 3 + [2] * 6 + [3] * 6  # one call per node of the step tree, not 6 x 4
    for index in (0, 3):
        assert len(got[index]) == 4
        for k in range(4):  # step k: that order trained alone for k steps, then scored
            reference = copy.deepcopy(pretrained)
            manual_sgd(reference, [raw[i] for i in perms[index][:k]], 0.5)
            expected = naive_label_logprobs(reference, [], queries, labels)
            np.testing.assert_allclose(np.exp(got[index][k]), np.exp(expected), atol=1e-5)
    assert np.abs(got[0][3] - got[0][0]).max() > 1e-3  # training moved the scores


def test_final_step_rows_keeps_each_units_largest_step():
    frame = pd.DataFrame({
        "unit_key": ["a"] * 6 + ["b"] * 2,
        "query_id": ["q1", "q2"] * 4,
        "step": [0, 0, 1, 1, 2, 2, 0, 0],
        "p_gold": np.arange(8, dtype=float),
    })
    got = final_step_rows(frame.sample(frac=1.0, random_state=1))
    assert sorted(got["p_gold"]) == [4.0, 5.0, 6.0, 7.0]
    imported = frame.drop(columns="unit_key").assign(model="m", method=["x"] * 6 + ["y"] * 2)
    assert sorted(final_step_rows(imported)["p_gold"]) == [4.0, 5.0, 6.0, 7.0]
    assert final_step_rows(frame.drop(columns="step")) is not None


# --------------------------------------------------------------------------- units: zs, record_steps, grids


def _study(methods, reference="icl", **demos):
    return parse_study({
        "name": "variants", "seed": 1,
        "models": [{"name": "tiny", "source": "tiny"}],
        "tasks": ["sentiment"],
        "demos": {"n_demos": 2, "n_sets": 1, "n_orders": "all", "n_queries": 3, **demos},
        "methods": methods,
        "analysis": {"n_resamples": 1000, "bayes": False, "reference": reference},
    })


def _plan(study):
    from hyptest.workflows.study import load_tasks, plan_study

    tasks = load_tasks(study)
    units, _ = plan_study(study, tasks)
    return tasks, units


def test_units_record_every_step_and_zero_shot_scores_once(tiny_lm, sentiment, monkeypatch):
    from hyptest.collect.executors import group_units
    from hyptest.collect.units import UnitRunner

    study = _study([{"kind": "icl"}, {"kind": "zs"},
                    {"kind": "sgd", "name": "traj", "learning_rate": 0.5, "record_steps": True},
                    {"kind": "sgd", "name": "plain", "learning_rate": 0.5}])
    tasks, units = _plan(study)
    runner = UnitRunner(tiny_lm, tasks, study)
    enc = runner.encoder(sentiment)
    labels = enc.label_ids()
    by_method = {g.method: g.units for g in group_units(units)}
    assert {m: len(u) for m, u in by_method.items()} == {"icl": 2, "zs": 2, "traj": 2, "plain": 2}
    queries = [enc.prompt_ids([], sentiment.example(q)) for q in units[0].query_ids]
    zero_shot = naive_label_logprobs(tiny_lm.model, [], queries, labels)

    calls = []
    real = runner._score_orders
    monkeypatch.setattr(runner, "_score_orders", lambda *a: calls.append(1) or real(*a))
    zs = dict((u.order_id, rows) for u, rows in runner.run_group(by_method["zs"]))
    assert len(calls) == 1  # scored once for both orders
    for rows in zs.values():
        np.testing.assert_allclose(np.exp(np.stack(rows["label_logprobs"])), np.exp(zero_shot), atol=1e-6)
    pd.testing.assert_series_equal(zs[0]["label_logprobs"], zs[1]["label_logprobs"])

    calls.clear()
    traj = {u.order_id: (u, rows) for u, rows in runner.run_group(by_method["traj"])}
    assert len(calls) == 1 + 2 + 2  # the step tree of 2 orders of 2 demos: root, 2 first steps, 2 leaves
    plain = {u.order_id: rows for u, rows in runner.run_group(by_method["plain"])}
    pretrained = copy.deepcopy(tiny_lm.model)
    raw = {d: enc.training_example(sentiment.example(d)) for d in units[0].order}
    for order_id, (unit, rows) in traj.items():
        assert sorted(set(rows["step"])) == [0, 1, 2]
        for k in range(3):
            reference = copy.deepcopy(pretrained)
            manual_sgd(reference, [raw[d] for d in unit.order[:k]], 0.5)
            expected = naive_label_logprobs(reference, [], queries, labels)
            at_k = rows[rows["step"] == k]
            np.testing.assert_allclose(np.exp(np.stack(at_k["label_logprobs"])), np.exp(expected), atol=1e-5)
        step0 = rows[rows["step"] == 0]
        np.testing.assert_allclose(np.exp(np.stack(step0["label_logprobs"])), np.exp(zero_shot), atol=1e-6)
        final = final_step_rows(rows)
        assert list(final["step"]) == [2, 2, 2]
        # the final answer is bit for bit the unit collected without a trajectory
        assert list(final["label_logprobs"]) == list(plain[order_id]["label_logprobs"])
        alone = runner.run(unit)
        pd.testing.assert_frame_equal(rows, alone, check_exact=True)


def test_layer_is_checked_against_the_model_before_anything_runs(tiny_lm):
    from hyptest.collect.units import UnitRunner
    from hyptest.study import StudyError

    study = _study([{"kind": "icl"}, {"kind": "sgd", "params": "value_proj", "layer": 5}])
    with pytest.raises(StudyError, match=r"layer: 5 is outside model 'tiny', which has 2 layers"):
        _plan(study)
    # the runner keeps its own check for callers that build units without planning
    tasks, _ = _plan(_study([{"kind": "icl"}, {"kind": "sgd", "params": "value_proj", "layer": 1}]))
    with pytest.raises(ValueError, match=r"method 'sgd': `layer` is 5, but the model has 2 layers"):
        UnitRunner(tiny_lm, tasks, study)


def test_unit_keys_change_with_every_new_option_and_stay_stable_otherwise():
    # the key of a method written before these options existed: its old model_dump, literally
    assert method_settings(SGDMethod(kind="sgd", learning_rate=0.01)) == {
        "kind": "sgd", "learning_rate": 0.01, "loss": "label", "epochs": 1}
    assert method_settings(GDMethod(kind="gd", learning_rate=0.01, steps=2)) == {
        "kind": "gd", "learning_rate": 0.01, "loss": "label", "steps": 2}
    base = {"kind": "sgd", "learning_rate": 0.01}
    variants = [base, {**base, "params": "value_proj"}, {**base, "params": "value_proj", "layer": 0},
                {**base, "params": "attention_kv"}, {**base, "loss": "all_tokens"}, {**base, "record_steps": True},
                {**base, "learning_rate": 0.02}, {"kind": "zs"}, {"kind": "icl"}]
    methods = [{**m, "name": f"m{i}"} for i, m in enumerate(variants)]
    study = _study(methods, reference="m8", n_sets=1, n_orders=2)
    _, units = _plan(study)
    keys = {}
    for u in units:
        keys.setdefault(u.method, set()).add(u.key)
    assert all(len(k) == 2 for k in keys.values())  # one key per order
    assert len(set().union(*keys.values())) == 2 * len(methods)  # every option gives new keys
    # stable across runs, and an explicit default "middle" changes nothing
    explicit = [dict(m) for m in methods]
    explicit[1]["layer"] = "middle"
    again = _plan(_study(explicit, reference="m8", n_sets=1, n_orders=2))[1]
    assert [u.key for u in again] == [u.key for u in units]
    # a name names the rows, so it is part of the unit's identity (two names never share a unit file)
    renamed = [{**m, "name": f"other{i}"} for i, m in enumerate(variants)]
    other = _plan(_study(renamed, reference="other8", n_sets=1, n_orders=2))[1]
    assert not {u.key for u in other} & {u.key for u in units}


def test_grid_expands_into_plain_methods_with_distinct_keys():
    study = _study([{"kind": "icl"}, {"kind": "gd", "learning_rate": [0.1, 0.01], "steps": [1, 3]},
                    {"kind": "sgd", "name": "s", "learning_rate": [3e-4]}])
    names = study.method_names()
    assert names == ["icl", "gd@lr=0.1,steps=1", "gd@lr=0.1,steps=3", "gd@lr=0.01,steps=1",
                     "gd@lr=0.01,steps=3", "s"]
    assert [study.method_family(n) for n in names] == ["icl", "gd", "gd", "gd", "gd", "s"]
    m = study.method("gd@lr=0.01,steps=3")
    assert (m.learning_rate, m.steps) == (0.01, 3) and isinstance(m.learning_rate, float)
    assert study.method("s").learning_rate == 3e-4  # a one-value list is just that value
    _, units = _plan(study)
    keys = {u.method: u.key for u in units if u.order_id == 0}
    assert len(set(keys.values())) == len(names)
    plain = _study([{"kind": "icl"}, {"kind": "gd", "learning_rate": 0.01, "steps": 3}])
    # an expanded member has the settings of the plain method (its key differs only by its name)
    assert method_settings(study.method("gd@lr=0.01,steps=3")) == method_settings(plain.method("gd"))
    # a dumped study (the manifest, Ray workers) validates back to the same plain methods
    assert type(study).model_validate(study.model_dump(mode="json")) == study


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    from hyptest.models.tiny import load_tiny

    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for seed, label in ((0, "step100"), (1, "step200")):
        lm = load_tiny(seed=seed)
        lm.model.save_pretrained(root / label)
        lm.tokenizer.save_pretrained(root / label)
        out[label] = lm.model
    return root, out


def test_checkpoints_expand_into_loadable_models(two_checkpoints):
    from hyptest.models import load_model

    root, saved = two_checkpoints
    data = yaml.safe_load(f"""
        name: ck
        models:
          - {{name: tinyhf, source: hf, checkpoints: ["{root / 'step200'}", "{root / 'step100'}"]}}
          - {{name: rel, source: hf, path: "{root}", checkpoints: [step100]}}
          - {{name: hub, source: hf, path: org/model, checkpoints: [main, step3000]}}
          - tiny
        tasks: [sentiment]
        methods: [{{kind: icl}}, {{kind: zs}}]
    """)
    study = parse_study(data)
    assert [m.name for m in study.models] == ["tinyhf@step200", "tinyhf@step100", "rel@step100", "hub@main",
                                              "hub@step3000", "tiny"]
    assert study.checkpoint_groups() == {"tinyhf": ["tinyhf@step200", "tinyhf@step100"], "rel": ["rel@step100"],
                                         "hub": ["hub@main", "hub@step3000"]}
    hub = [m for m in study.models if m.checkpoint_of == "hub"]
    assert [(m.path, m.revision) for m in hub] == [("org/model", "main"), ("org/model", "step3000")]
    assert all(m.checkpoints is None for m in study.models)
    assert type(study).model_validate(study.model_dump(mode="json")) == study
    for spec in study.models[:3]:
        label = spec.name.split("@")[1]
        lm = load_model(spec)
        expected = dict(saved[label].named_parameters())
        assert all(torch.equal(p, expected[n]) for n, p in lm.model.named_parameters())
    _, units = _plan(parse_study({**data, "models": data["models"][:2],
                                  "demos": {"n_demos": 2, "n_sets": 1, "n_orders": 2, "n_queries": 2}}))
    keys = {u.model: u.key for u in units if u.order_id == 0}
    assert keys["tinyhf@step100"] != keys["rel@step100"]  # same weights, other name: own units (rows carry it)
    assert keys["tinyhf@step100"] != keys["tinyhf@step200"]


def test_checkpoint_entry_that_is_neither_a_directory_nor_a_revision(two_checkpoints):
    from hyptest.study import StudyError

    root, _ = two_checkpoints
    data = {"name": "ck", "tasks": ["sentiment"], "methods": [{"kind": "icl"}],
            "models": [{"name": "m", "source": "hf", "path": str(root), "checkpoints": ["step999"]}]}
    with pytest.raises(StudyError, match=r"models\[0\]\.checkpoints: `checkpoints` entry 'step999' is not a "
                                         r"directory"):
        parse_study(data)


# --------------------------------------------------------------------------- the step inside the backward pass


def _tied_model():
    """A tiny Llama whose LM head is its input embedding (as SmolLM2's is)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hyptest.models.tiny import byte_tokenizer

    tokenizer = byte_tokenizer()
    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)).eval()
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    return model


@pytest.mark.parametrize("method", [SGDMethod(kind="sgd", learning_rate=0.05), AdamMethod(kind="adam", learning_rate=1e-3)],
                         ids=["sgd", "adam"])
def test_walk_with_tied_embeddings_equals_the_straight_loop_and_explicit_steps(tiny_lm, sentiment, method):
    """The walk steps each parameter inside the backward pass; a tied weight steps once, on its summed gradient."""
    model = _tied_model()
    _, raw, examples = _examples(tiny_lm, sentiment, 3)
    perms = list(itertools.permutations(range(3)))
    orders = [[examples[i] for i in p] for p in perms]
    pretrained = copy.deepcopy(model)
    snapshot = WeightSnapshot(model)
    straight = []
    for order in orders:
        snapshot.restore()
        train_in_place(model, order, method, seed=0)
        straight.append([p.detach().clone() for p in model.parameters()])
    snapshot.restore()
    for index, _ in train_orders(model, orders, method, seed=0):
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), straight[index]))
        reference = copy.deepcopy(pretrained)
        chosen = [raw[i] for i in perms[index]]
        if method.kind == "adam":
            manual_adam(reference, chosen, 1e-3)
        else:
            manual_sgd(reference, chosen, 0.05)
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-4)
    # the hooks are gone: a plain backward pass leaves its gradients and moves nothing
    before = [p.detach().clone() for p in model.parameters()]
    example_loss(model, *raw[0]).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_walk_never_holds_every_gradient_at_once(tiny_lm, sentiment):
    """While the walk trains, at most the gradients of a few parameters exist at any moment."""
    model = tiny_lm.model
    _, _, examples = _examples(tiny_lm, sentiment, 3)
    params = list(model.parameters())
    most, calls = [0], [0]

    def count(_grad):
        calls[0] += 1
        most[0] = max(most[0], sum(p.grad is not None for p in params))

    handles = [p.register_hook(count) for p in params]  # runs before each gradient is accumulated
    try:
        for _ in train_orders(model, [examples], AdamMethod(kind="adam", learning_rate=1e-3), seed=0):
            pass
    finally:
        for h in handles:
            h.remove()
    assert calls[0] >= 3 * len(params)  # every parameter got a gradient at each of the 3 steps
    assert most[0] <= 2 < len(params)  # the plain loop holds len(params) - 1 by its last one
