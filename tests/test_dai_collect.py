"""Dai et al.'s records written by hyptest.collect.dai, against straight recomputations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch

from ._naive import label_word_ids, naive_label_logprobs, prompt_string
from .test_internals import manual_internals

LR = 0.05


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hyptest.collect.encoding import PromptEncoder
    from hyptest.collect.dai import collect_dai_records
    from hyptest.models.tiny import load_tiny
    from hyptest.study import SGDMethod
    from hyptest.tasks import load_builtin_task

    lm = load_tiny("tiny-dai", seed=2)
    lm.model.set_attn_implementation("eager")
    task = load_builtin_task("sentiment")
    demos = list(task.demos[:3])
    queries = list(task.queries[:4])
    method = SGDMethod(kind="sgd", learning_rate=LR, epochs=1, params="attention_kv", loss="all_tokens")
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    out = tmp_path_factory.mktemp("dai")
    folder = collect_dai_records(lm, task, demos, queries, ft_method=method, out_dir=out, model_name="tiny",
                                 task_name="sentiment", seed=0)
    records = {s: [json.loads(line) for line in (folder / s / "record_info.jsonl").read_text().splitlines()]
               for s in ("zs", "icl", "ftzs")}
    return {"lm": lm, "task": task, "demos": demos, "queries": queries, "method": method, "out": out,
            "folder": folder, "records": records, "before": before, "enc": PromptEncoder(lm.tokenizer, task)}


def _whole(enc, demos, query):
    """The whole prompt string's ids, built in tests/_naive.py (default special tokens)."""
    return list(enc.tokenizer(prompt_string(enc.task, demos, query)).input_ids)


def _own(enc, query):
    """The query's own tokens: its input tokenised alone."""
    return list(enc.tokenizer(enc.task.format_input(query.text), add_special_tokens=False).input_ids)


def _demo_positions(enc, demos):
    """ICL-prompt positions of each demo's ``input + label word`` tokens (separator excluded); byte-level."""
    tok, task = enc.tokenizer, enc.task
    positions, lengths = [], []
    for k, d in enumerate(demos):
        before = prompt_string(task, demos[:k], d)[: -len(task.format_input(d.text))]  # head + earlier demos
        offset = len(tok(before).input_ids) if before else len(tok("").input_ids)
        n = len(tok(task.format_demo(d), add_special_tokens=False).input_ids)
        positions += list(range(offset, offset + n))
        lengths.append(n)
    return positions, lengths


def test_layout_order_and_weights_restored(setup):
    folder, records = setup["folder"], setup["records"]
    assert folder == setup["out"] / "ana_rlt" / "tiny" / "sentiment"
    assert sorted(p.name for p in folder.iterdir()) == ["ftzs", "icl", "zs"]
    assert not [p for p in folder.rglob("*") if p.name.startswith(".tmp")]
    for setting, recs in records.items():
        assert [r["query_id"] for r in recs] == [q.id for q in setup["queries"]]
        assert [r["gold_label"] for r in recs] == [q.label for q in setup["queries"]]
        for r in recs:
            assert np.shape(r["self_attn_out_hiddens"]) == (2, 32)
            assert np.shape(r["attn_map"])[:2] == (2, 4)
    for n, p in setup["lm"].model.named_parameters():
        assert torch.equal(p, setup["before"][n]), n
        assert p.requires_grad


def test_zs_and_icl_records_equal_a_straight_forward(setup):
    enc, demos, queries, model = setup["enc"], setup["demos"], setup["queries"], setup["lm"].model
    positions, lengths = _demo_positions(enc, demos)
    labels = label_word_ids(enc.tokenizer, enc.task)
    for name, shots in (("zs", []), ("icl", demos)):
        prompts = [_whole(enc, shots, q) for q in queries]
        naive = naive_label_logprobs(model, [], prompts, labels)
        for i, q in enumerate(queries):
            rec = setup["records"][name][i]
            ref = manual_internals(model, prompts[i])
            n = len(prompts[i]) - len(_own(enc, q))
            # the manual scores are the model's: their softmax is its attention row
            np.testing.assert_allclose(torch.softmax(torch.tensor(ref["scores"]), -1).numpy(), ref["probs"],
                                       atol=1e-5)
            np.testing.assert_allclose(rec["attn_map"], ref["scores"][:, :, n:], atol=1e-5)
            np.testing.assert_allclose(rec["self_attn_out_hiddens"], ref["output"], atol=1e-5)
            assert rec["pred_label"] == setup["task"].labels[int(np.argmax(naive[i]))]
            if name == "icl":
                ctx = ref["scores"][:, :, :n].sum(axis=1)
                np.testing.assert_allclose(rec["attn_map_ctx"], ctx, atol=1e-5)
                np.testing.assert_allclose(rec["demo_attn"], ctx[:, positions], atol=1e-5)
                assert rec["demo_lengths"] == lengths


def _manual_kv_sgd(model, enc, demos):
    """Dai's fine-tuning written out: per demo one SGD step on the K/V weights, mean NLL of all demo tokens.

    Returns the scaled pre-rotary queries of every training sequence, read before its step.
    """
    head = list(enc.tokenizer("").input_ids)  # no instruction: BOS where the tokenizer adds one
    params = [p for n, p in model.named_parameters() if n.endswith(("k_proj.weight", "v_proj.weight"))]
    assert len(params) == 4
    seen = []
    labels = label_word_ids(enc.tokenizer, enc.task)
    for d in demos:
        ids = _whole(enc, [], d) + labels[enc.task.labels.index(d.label)]
        seen.append(manual_internals(model, ids)["queries"][:, len(head):])
        logits = model(torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        targets = range(len(head) + 1, len(ids))
        loss = -sum(logp[t - 1, ids[t]] for t in targets) / len(targets)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= LR * g
    return seen


def test_ftzs_records_equal_a_manual_kv_fine_tuning(setup):
    from hyptest.collect.gd import WeightSnapshot

    enc, demos, queries, model = setup["enc"], setup["demos"], setup["queries"], setup["lm"].model
    snap = WeightSnapshot(model)
    try:
        train_q = np.concatenate(_manual_kv_sgd(model, enc, demos), axis=1)
        prompts = [_whole(enc, [], q) for q in queries]
        naive = naive_label_logprobs(model, [], prompts, label_word_ids(enc.tokenizer, enc.task))
        for i, q in enumerate(queries):
            rec = setup["records"]["ftzs"][i]
            ref = manual_internals(model, prompts[i])
            n = len(prompts[i]) - len(_own(enc, q))
            np.testing.assert_allclose(rec["attn_map"], ref["scores"][:, :, n:], atol=1e-5)
            np.testing.assert_allclose(rec["self_attn_out_hiddens"], ref["output"], atol=1e-5)
            np.testing.assert_allclose(rec["attn_q"], ref["queries"][:, -1], atol=1e-5)
            np.testing.assert_allclose(rec["demo_attn"], np.einsum("ld,ltd->lt", ref["queries"][:, -1], train_q),
                                       atol=1e-5)
            assert rec["pred_label"] == setup["task"].labels[int(np.argmax(naive[i]))]
            # fine-tuning moved the internals away from zero-shot
            assert not np.allclose(rec["self_attn_out_hiddens"], setup["records"]["zs"][i]["self_attn_out_hiddens"],
                                   atol=1e-6)
    finally:
        snap.restore()


def test_fine_tuning_changes_only_key_value_weights_and_is_undone(setup):
    from hyptest.collect.gd import TrainingExample
    from hyptest.collect.dai import fine_tuned

    enc, model = setup["enc"], setup["lm"].model
    examples = [TrainingExample(*map(tuple, enc.training_example(d, loss="all_tokens"))) for d in setup["demos"]]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with fine_tuned(model, examples, setup["method"], seed=0) as ft:
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed == {f"model.layers.{i}.self_attn.{w}_proj.weight" for i in range(2) for w in "kv"}
        assert len(ft.losses) == 3 and len(ft.train_queries) == 3
        assert [q.shape[1] for q in ft.train_queries] == [len(e.ids) for e in examples]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(RuntimeError, match="inside"):
        with fine_tuned(model, examples, setup["method"], seed=0):
            raise RuntimeError("inside")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def _cos(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_dai_metric_values_on_the_written_logs_equal_numpy(setup):
    from hyptest.workflows.reanalyse import dai_metric_values

    rec = setup["records"]
    vals = dai_metric_values(setup["out"]).values
    assert vals["example"].nunique() == 4 and set(vals["layer"]) == {0, 1}

    def arr(setting, key):
        return np.array([r[key] for r in rec[setting]], dtype=np.float64)

    unit = {s: arr(s, "self_attn_out_hiddens") for s in rec}
    unit = {s: h / np.linalg.norm(h, axis=-1, keepdims=True) for s, h in unit.items()}
    simaou = _cos(unit["icl"] - unit["zs"], unit["ftzs"] - unit["zs"])
    simam, kendall = np.zeros((4, 2)), np.zeros((4, 2))
    for e in range(4):  # the query lengths differ: one example at a time
        icl, ft = (np.array(rec[s][e]["attn_map"]) for s in ("icl", "ftzs"))
        simam[e] = _cos(icl, ft).mean(axis=-1)
        for l in range(2):
            kendall[e, l] = scipy.stats.kendalltau(icl[l].mean(axis=0), ft[l].mean(axis=0))[0]
    for name, want in (("simaou", simaou), ("simam", simam), ("kendall", kendall)):
        got = vals[vals["analysis"] == name].pivot(index="example", columns="layer", values="value").to_numpy()
        np.testing.assert_allclose(got, want, atol=1e-9, err_msg=name)


def test_kendall_demo_values_equal_scipy(setup):
    from hyptest.analysis.dai_demo import kendall_demo_values

    rec = setup["records"]
    got = kendall_demo_values(setup["out"], rng=0)
    assert set(got["analysis"]) == {"kendall_demo_token", "kendall_demo_example"}
    assert len(got) == 4 * 2 * 2
    for e in range(4):
        icl, ft = np.array(rec["icl"][e]["demo_attn"]), np.array(rec["ftzs"][e]["demo_attn"])
        lengths = rec["icl"][e]["demo_lengths"]
        bounds = np.cumsum([0] + lengths)
        for l in range(2):
            tok = got[(got.analysis == "kendall_demo_token") & (got.example == e) & (got.layer == l)]
            assert tok["value"].item() == pytest.approx(scipy.stats.kendalltau(icl[l], ft[l])[0], abs=1e-9)
            p_icl, p_ft = np.exp(icl[l] - icl[l].max()), np.exp(ft[l] - ft[l].max())
            p_icl, p_ft = p_icl / p_icl.sum(), p_ft / p_ft.sum()
            s_icl = [p_icl[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
            s_ft = [p_ft[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
            ex = got[(got.analysis == "kendall_demo_example") & (got.example == e) & (got.layer == l)]
            assert ex["value"].item() == pytest.approx(scipy.stats.kendalltau(s_icl, s_ft)[0], abs=1e-9)
    assert got["baseline"].between(-1, 1).all()


def test_bad_arguments(setup, tmp_path):
    from hyptest.collect.dai import collect_dai_records
    from hyptest.analysis.dai_demo import kendall_demo_values
    from hyptest.study import GDMethod

    s = setup
    with pytest.raises(ValueError, match="at least one"):
        collect_dai_records(s["lm"], s["task"], [], s["queries"], ft_method=s["method"], out_dir=tmp_path,
                            model_name="m", task_name="t")
    with pytest.raises(ValueError, match="folder name"):
        collect_dai_records(s["lm"], s["task"], s["demos"], s["queries"], ft_method=s["method"], out_dir=tmp_path,
                            model_name="a/b", task_name="t")
    gd = GDMethod(kind="gd", learning_rate=0.01, steps=1, params="attention_kv", loss="all_tokens")
    with pytest.raises(ValueError, match="one demo per step"):
        collect_dai_records(s["lm"], s["task"], s["demos"][:2], s["queries"][:1], ft_method=gd, out_dir=tmp_path,
                            model_name="m", task_name="t")
    assert not (tmp_path / "ana_rlt").exists()
    with pytest.raises(ValueError, match="no Dai"):
        kendall_demo_values(tmp_path)
