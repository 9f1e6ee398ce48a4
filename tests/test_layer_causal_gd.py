"""Layer-causal GD (Deutch et al., NAACL 2024), checked against an explicit per-layer torch loop, ordinary SGD and
the one-layer closed form; its walk over orders, its units, its Dai records and its study-file validation."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch

from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.gd import TrainingExample, WeightSnapshot, train_in_place, train_orders, trainable_parameters
from hyptest.models.tiny import load_tiny
from hyptest.study import LayerCausalGDMethod, SGDMethod, StudyError, parse_study

from ._naive import naive_label_logprobs

LR = 0.05


@pytest.fixture(scope="module")
def lm3():
    return load_tiny("tiny3", seed=1, num_layers=3)


def _raw(lm, task, n, loss):
    enc = PromptEncoder(lm.tokenizer, task)
    return [tuple(map(tuple, enc.training_example(d, loss=loss))) for d in task.demos[:n]]


def _examples(raw):
    return [TrainingExample(ids, targets) for ids, targets in raw]


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- the explicit reference loop


def _loss_from_logits(logits, ids, targets, loss):
    """The loss of one sequence from its (positions, vocab) logits: summed NLL of the targets, or their mean."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -sum(logp[t - 1, ids[t]] for t in targets)
    return nll if loss == "label" else nll / len(targets)


def reference_layer_causal_sgd(model, raw, lr, *, loss, trains):
    """Layer-causal SGD written out from the paper's definition, with no hooks, no detach and no optimiser.

    For every demo, in order: for every layer l, bottom up, a fresh forward of the training sequence at the
    weights before this step; layer l's prediction is its output read through the final norm and the LM
    head (the last layer's is the model's own logits); the gradient of that prediction's loss is taken with
    ``torch.autograd.grad`` with respect to layer l's own trained parameters and to the shared final norm
    and LM head only (so nothing flows into a lower layer, and the embeddings get nothing). The gradients of
    every layer are summed per parameter and applied at once: ``p -= lr * g``.
    """
    named = dict(model.named_parameters())
    n_layers = model.config.num_hidden_layers
    shared = [n for n in trains if not n.startswith("model.layers.") and n != "model.embed_tokens.weight"]
    for ids, targets in raw:
        grads = {n: torch.zeros_like(named[n]) for n in trains}
        for layer in range(n_layers):
            out = model(torch.tensor([list(ids)]), output_hidden_states=True)
            if layer == n_layers - 1:
                logits = out.logits[0]
            else:  # hidden_states[0] is the embedding output, [l + 1] the output of layer l
                logits = model.lm_head(model.model.norm(out.hidden_states[layer + 1]))[0]
            own = [n for n in trains if n.startswith(f"model.layers.{layer}.")] + shared
            value = _loss_from_logits(logits, ids, targets, loss)
            for name, g in zip(own, torch.autograd.grad(value, [named[n] for n in own], allow_unused=True)):
                if g is not None:
                    grads[name] += g
        with torch.no_grad():
            for name in trains:
                named[name] -= lr * grads[name]


def reference_sgd(model, raw, lr, *, loss, trains):
    """Ordinary SGD, batch 1: the loss of the model's own logits, gradient through every layer."""
    named = dict(model.named_parameters())
    for ids, targets in raw:
        value = _loss_from_logits(model(torch.tensor([list(ids)])).logits[0], ids, targets, loss)
        grads = torch.autograd.grad(value, [named[n] for n in trains], allow_unused=True)
        with torch.no_grad():
            for name, g in zip(trains, grads):
                if g is not None:
                    named[name] -= lr * g


def _trained(lm, raw, method):
    snapshot = WeightSnapshot(lm.model)
    try:
        train_in_place(lm.model, _examples(raw), method, seed=0)
        return _state(lm.model)
    finally:
        snapshot.restore()


def _trains(model, method):
    return [n for n, _ in trainable_parameters(model, method)]


@pytest.mark.parametrize("params, loss", [("attention_kv", "all_tokens"), ("all", "label")])
def test_equals_the_explicit_per_layer_loop(lm3, sentiment, params, loss):
    raw = _raw(lm3, sentiment, 3, loss)
    method = LayerCausalGDMethod(kind="layer_causal_gd", learning_rate=LR, params=params, loss=loss)
    ours = _trained(lm3, raw, method)
    reference = copy.deepcopy(lm3.model)
    reference_layer_causal_sgd(reference, raw, LR, loss=loss, trains=_trains(lm3.model, method))
    moved = 0
    for name, p in reference.named_parameters():
        torch.testing.assert_close(ours[name], p.detach(), atol=1e-6, rtol=1e-5, msg=name)
        moved += not torch.equal(ours[name], dict(lm3.model.named_parameters())[name])
    assert moved >= (6 if params == "attention_kv" else 20)  # every K/V (3 layers x 2); most of the model
    # the input embeddings are stopped before layer 0 (the LM head is not tied): they never move
    assert torch.equal(ours["model.embed_tokens.weight"], lm3.model.model.embed_tokens.weight)


def test_differs_from_ordinary_sgd_except_in_the_last_layers_first_step(lm3, sentiment):
    raw = _raw(lm3, sentiment, 3, "all_tokens")
    kw = dict(learning_rate=LR, params="attention_kv", loss="all_tokens")
    lc = LayerCausalGDMethod(kind="layer_causal_gd", **kw)
    sgd = SGDMethod(kind="sgd", **kw)
    start = _state(lm3.model)
    # one step: the last layer's loss is the ordinary loss and its K/V reach it only through themselves, so
    # their update is the ordinary one; a lower layer's update is not (the loss above it no longer reaches it)
    one_lc, one_sgd = _trained(lm3, raw[:1], lc), _trained(lm3, raw[:1], sgd)
    for name in ("model.layers.2.self_attn.k_proj.weight", "model.layers.2.self_attn.v_proj.weight"):
        torch.testing.assert_close(one_lc[name] - start[name], one_sgd[name] - start[name], atol=1e-7, rtol=1e-5)
    for name in ("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"):
        step_lc, step_sgd = one_lc[name] - start[name], one_sgd[name] - start[name]
        assert (step_lc - step_sgd).abs().max() > 0.05 * step_sgd.abs().max(), name
    # three steps: every layer's update differs (the last one's through the layers below it)
    all_lc, all_sgd = _trained(lm3, raw, lc), _trained(lm3, raw, sgd)
    for name in _trains(lm3.model, lc):
        gap = (all_lc[name] - all_sgd[name]).abs().max() / (all_sgd[name] - start[name]).abs().max()
        assert gap > (0.01 if ".layers.2." in name else 0.1), name
    # and ordinary SGD is what the outsider's plain loop gives (the comparison is not against a broken baseline)
    reference = copy.deepcopy(lm3.model)
    reference_sgd(reference, raw, LR, loss="all_tokens", trains=_trains(lm3.model, sgd))
    for name, p in reference.named_parameters():
        torch.testing.assert_close(all_sgd[name], p.detach(), atol=1e-6, rtol=1e-5)


def test_with_one_layer_it_is_ordinary_sgd(sentiment):
    lm1 = load_tiny("tiny1", seed=2, num_layers=1)
    raw = _raw(lm1, sentiment, 3, "label")
    # all three steps with the K/V projections; one step with every weight (after it the embeddings differ)
    for params, data in (("attention_kv", raw), ("all", raw[:1])):
        kw = dict(learning_rate=LR, params=params, loss="label")
        lc = _trained(lm1, data, LayerCausalGDMethod(kind="layer_causal_gd", **kw))
        sgd = _trained(lm1, data, SGDMethod(kind="sgd", **kw))
        for name in lc:
            if name == "model.embed_tokens.weight" and params == "all":
                # the one difference: the embeddings sit below the stop-gradient at layer 0's input
                assert torch.equal(lc[name], lm1.model.model.embed_tokens.weight)
                assert not torch.equal(sgd[name], lm1.model.model.embed_tokens.weight)
                continue
            torch.testing.assert_close(lc[name], sgd[name], atol=1e-6, rtol=1e-5, msg=name)


def test_walk_over_orders_is_bitwise_the_straight_loop_and_leaves_no_hooks(lm3, sentiment):
    model = lm3.model
    examples = _examples(_raw(lm3, sentiment, 3, "label"))
    method = LayerCausalGDMethod(kind="layer_causal_gd", learning_rate=LR, params="attention_kv")
    orders = [[examples[i] for i in p] for p in itertools.permutations(range(3))]
    snapshot = WeightSnapshot(model)
    straight = []
    for order in orders:
        snapshot.restore()
        losses = train_in_place(model, order, method, seed=0)
        straight.append((losses, [p.detach().clone() for p in model.parameters()]))
    snapshot.restore()
    before = [p.detach().clone() for p in model.parameters()]
    seen = set()
    for max_snapshots in (None, 0):
        for index, losses in train_orders(model, orders, method, seed=0, max_snapshots=max_snapshots):
            assert losses == straight[index][0]
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), straight[index][1]))
            seen.add(index)
    assert seen == set(range(6))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.requires_grad for p in model.parameters())
    for layer in model.model.layers:
        assert not layer._forward_pre_hooks and not layer._forward_hooks


# --------------------------------------------------------------------------- a study's units and Dai records


def _study(methods, **extra):
    return parse_study({
        "name": "lc", "seed": 1,
        "models": [{"name": "tiny", "source": "tiny"}],
        "tasks": ["sentiment"],
        "demos": {"n_demos": 2, "n_sets": 1, "n_orders": "all", "n_queries": 3},
        "methods": methods,
        "analysis": {"n_resamples": 1000, "bayes": False},
        **extra,
    })


def test_units_score_the_layer_causally_trained_model(tiny_lm, sentiment):
    from hyptest.collect.executors import group_units
    from hyptest.collect.units import UnitRunner
    from hyptest.workflows.study import load_tasks, plan_study

    study = _study([{"kind": "icl"}, {"kind": "layer_causal_gd", "learning_rate": 0.5},
                    {"kind": "sgd", "learning_rate": 0.5}])
    tasks = load_tasks(study)
    units, _ = plan_study(study, tasks)
    groups = {g.method: g.units for g in group_units(units)}
    assert {u.method_kind for u in groups["layer_causal_gd"]} == {"layer_causal_gd"}
    assert not {u.key for u in groups["layer_causal_gd"]} & {u.key for u in groups["sgd"]}
    runner = UnitRunner(tiny_lm, tasks, study)
    enc = runner.encoder(sentiment)
    labels = enc.label_ids()
    pretrained = copy.deepcopy(tiny_lm.model)
    trains = _trains(tiny_lm.model, study.method("layer_causal_gd"))
    for unit, rows in runner.run_group(groups["layer_causal_gd"]):
        reference = copy.deepcopy(pretrained)
        raw = [tuple(map(tuple, enc.training_example(sentiment.example(d)))) for d in unit.order]
        reference_layer_causal_sgd(reference, raw, 0.5, loss="label", trains=trains)
        queries = [enc.prompt_ids([], sentiment.example(q)) for q in unit.query_ids]
        expected = naive_label_logprobs(reference, [], queries, labels)
        np.testing.assert_allclose(np.exp(np.stack(rows["label_logprobs"])), np.exp(expected), atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(tiny_lm.model.parameters(), pretrained.parameters()))


def test_dai_records_of_layer_causal_ft_come_from_the_layer_causally_trained_model(tiny_lm, sentiment, tmp_path):
    from hyptest.collect.dai import collect_dai_records

    demos, queries = list(sentiment.demos[:3]), list(sentiment.queries[:2])
    method = LayerCausalGDMethod(kind="layer_causal_gd", learning_rate=0.5, params="attention_kv",
                                 loss="all_tokens")
    folder = collect_dai_records(tiny_lm, sentiment, demos, queries, ft_method=method, out_dir=tmp_path,
                                 model_name="tiny", task_name="sentiment__lc", seed=0)
    records = [json.loads(line) for line in (folder / "ftzs" / "record_info.jsonl").read_text().splitlines()]
    enc = PromptEncoder(tiny_lm.tokenizer, sentiment)
    reference = copy.deepcopy(tiny_lm.model)
    raw = [tuple(map(tuple, enc.training_example(d, loss="all_tokens"))) for d in demos]
    reference_layer_causal_sgd(reference, raw, 0.5, loss="all_tokens", trains=_trains(tiny_lm.model, method))
    # the self-attention output of every layer at the scored position of the zero-shot prompt, after training
    outputs = []
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, o: outputs.append(o[0][0, -1].detach()))
             for layer in reference.model.layers]
    try:
        for record, query in zip(records, queries):
            outputs.clear()
            with torch.no_grad():
                reference(torch.tensor([enc.prompt_ids([], query)]))
            np.testing.assert_allclose(np.asarray(record["self_attn_out_hiddens"]),
                                       torch.stack(outputs).numpy(), atol=1e-5)
    finally:
        for h in hooks:
            h.remove()


def test_dai_jobs_add_one_folder_per_ft_method_and_keep_the_standard_key():
    from hyptest.collect.stages import dai_jobs
    from hyptest.workflows.study import load_tasks

    methods = [{"kind": "icl"}, {"kind": "sgd", "learning_rate": 0.01},
               {"kind": "layer_causal_gd", "name": "lcgd", "learning_rate": 0.02}]
    plain = _study(methods, dai={"learning_rate": 0.01})
    both = _study(methods, dai={"learning_rate": 0.01, "ft_methods": ["lcgd"]})
    tasks = load_tasks(plain)
    ids = {"tiny": {"source": "tiny"}}
    old, new = dai_jobs(plain, tasks, ids), dai_jobs(both, tasks, ids)
    assert [j["folder"] for j in old] == ["sentiment__N2_set0"]
    assert [j["folder"] for j in new] == ["sentiment__N2_set0", "sentiment__N2_set0__lcgd"]
    assert new[0]["key"] == old[0]["key"] and new[1]["key"] != new[0]["key"]
    assert [j["ft"] for j in new] == [None, "lcgd"]
    other_lr = _study([*methods[:2], {**methods[2], "learning_rate": 0.03}],
                      dai={"learning_rate": 0.01, "ft_methods": ["lcgd"]})
    assert dai_jobs(other_lr, tasks, ids)[1]["key"] != new[1]["key"]


# --------------------------------------------------------------------------- study-file validation


def test_study_file_accepts_the_method_and_its_grid():
    study = _study([{"kind": "icl"}, {"kind": "layer_causal_gd", "learning_rate": [0.01, 0.1], "epochs": 2,
                                      "params": "attention_kv", "loss": "all_tokens"}])
    assert study.method_names() == ["icl", "layer_causal_gd@lr=0.01", "layer_causal_gd@lr=0.1"]
    method = study.method("layer_causal_gd@lr=0.1")
    assert isinstance(method, LayerCausalGDMethod)
    assert (method.learning_rate, method.epochs, method.params, method.loss) == (0.1, 2, "attention_kv", "all_tokens")
    assert _study([{"kind": "icl"}, {"kind": "layer_causal_gd"}]).method("layer_causal_gd").learning_rate == 1e-3


@pytest.mark.parametrize("bad, message", [
    ({"learning_rate": 0}, "learning_rate"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"learning_rate": 1e3}, "at most"),
    ({"epochs": 0}, "epochs"),
    ({"momentum": 0.9}, "momentum"),
    ({"steps": 3}, "steps"),
    ({"params": "mlp"}, "params"),
    ({"loss": "squared"}, "loss"),
    ({"layer": 1}, "only applies when `params` is 'value_proj'"),
])
def test_study_file_rejects_bad_options(bad, message):
    with pytest.raises(StudyError, match=message):
        _study([{"kind": "icl"}, {"kind": "layer_causal_gd", **bad}])


@pytest.mark.parametrize("dai, message", [
    ({"ft_methods": ["nope"]}, "not one of the methods"),
    ({"ft_methods": ["gd"]}, "one demo per step"),
    ({"ft_methods": ["icl"]}, "one demo per step"),
    ({"ft_methods": ["layer_causal_gd", "layer_causal_gd"]}, "twice"),
    ({"ft_methods": "layer_causal_gd"}, "ft_methods"),
])
def test_dai_ft_methods_are_checked(dai, message):
    with pytest.raises(StudyError, match=message):
        _study([{"kind": "icl"}, {"kind": "gd"}, {"kind": "layer_causal_gd"}], dai=dai)


def test_report_names_the_method_and_carries_its_citable_note():
    import pandas as pd

    from hyptest.report.html import METHOD_NAMES, render_report

    assert "Deutch" in METHOD_NAMES["layer_causal_gd"]
    bare = {"comparisons": [], "provenance": {"hyptest_version": "0", "python": "3.11", "libraries": {}}}
    html = render_report({**bare, "study": {"name": "lc", "methods": [{"kind": "icl"},
                                                                      {"kind": "layer_causal_gd", "name": "lc_ft"}]}},
                         pd.DataFrame(), study_text="")
    assert 'id="method-layer-causal"' in html and "arXiv:2311.07772" in html and "(lc_ft;" in html
    plain = render_report({**bare, "study": {"name": "s", "methods": [{"kind": "icl"}, {"kind": "sgd"}]}},
                          pd.DataFrame(), study_text="")
    assert "method-layer-causal" not in plain
