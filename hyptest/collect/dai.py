"""Collect Dai et al.'s analysis records (ZS, ICL, FT) from a hyptest model and task.

Writes the log layout of the reference code (microsoft/LMOps
``understand_icl``)::

    out_dir/ana_rlt/<model_name>/<task_name>/{zs,icl,ftzs}/record_info.jsonl

one JSON object per query, in the order of ``queries`` (the three files are
aligned by line, as Dai's ``compute_sim.py`` assumes), so that
:mod:`hyptest.importers.dai` and :func:`hyptest.workflows.reanalyse.dai_metric_values`
read them like Dai's own logs.

The three settings, for one demo set in its given order:

``zs``
    the pretrained model on ``tokenizer([instruction sep] query)``;
``icl``
    the pretrained model on ``tokenizer([instruction sep] demo_1 sep ... demo_N sep query)``
    (:class:`hyptest.collect.encoding.PromptEncoder`'s prompt, tokenised as
    one whole string; the query's own tokens, ``tokenizer(query input)`` on
    its own, must be the end of both prompts, else a ValueError);
``ftzs``
    the model after ``ft_method`` (Dai et al.: SGD, batch 1, one epoch over the
    demos in prompt order, key/value projections of every layer, loss on every
    demo token; e.g. ``SGDMethod(kind="sgd", learning_rate=..., epochs=1,
    params="attention_kv", loss="all_tokens")``), each demo formatted as a
    zero-shot training sequence ``tokenizer([instruction sep] input) label_word``,
    evaluated on the zero-shot prompt.  The weights are restored in place
    afterwards (:class:`hyptest.collect.gd.WeightSnapshot`), also on error.

Record keys (``L`` layers, ``H`` query heads, ``d`` head size; the *scored
position* is the last token of the prompt, the one whose next-token
distribution scores the label words; all internals come from
:func:`hyptest.collect.internals.capture_attention`):

``gold_label``, ``pred_label`` (every setting)
    The query's label and the argmax over the task's label words of
    ``log P(label word | prompt)`` (sum over the word's tokens), computed by
    :func:`hyptest.collect.scoring.score_queries` as everywhere in hyptest.
    Label names (strings); Dai writes class indices; both compare with ``==``.
``self_attn_out_hiddens`` (every setting), ``(L, hidden)``
    Each layer's self-attention output (after ``o_proj``, before the
    residual) at the scored position.
``attn_map`` (every setting), ``(L, H, n_query_tokens)``
    Pre-softmax scores (``q . k * scaling``, rotary applied) from the scored
    position to the query's own tokens (``tokenizer(query input)``), i.e.
    the positions common to all three prompts.  Dai's ``fs_eval.py``
    records ``attn_map[:, :, -1, context_len:]`` where ``context_len``
    counts BOS and, for ICL, the demonstrations: the query part only in
    every setting.  BOS and instruction are likewise left out here.
``attn_map_ctx`` (``icl``), ``(L, n_prefix)``
    Pre-softmax scores from the scored position to every position before the
    query (BOS, instruction, every demo with its separator), **summed over
    heads**: Dai's ``attn_map[:, :, -1, :context_len].sum(dim=-2)``.
``attn_q`` (``ftzs``), ``(L, H * d)``
    The query vector at the scored position after fine-tuning, heads
    concatenated, times ``scaling`` and before the rotary rotation: Dai's
    ``attn_q[:, -1, :]`` of the ``ftzs`` setting (their ``q = q_proj(x) *
    scaling``; their GPT has no rotary, so the pre-rotary query is the
    position-free counterpart).
``demo_lengths`` (``icl``, ``ftzs``), list of ``N`` ints
    Tokens of each demo counted in ``demo_attn``: ``input + label_word``,
    the training sequence after its head, found token by token in the ICL
    prompt's whole-string tokens (in order; separator tokens between them
    are skipped).
``demo_attn`` (``icl``, ``ftzs``), ``(L, sum(demo_lengths))``
    The inputs of Dai's ``compute_training_example_attn.py``, before its
    softmax.  ``icl``: ``attn_map_ctx`` at the demo tokens (separators, BOS
    and instruction dropped, as Dai's ``slice_icl_attn_map`` drops BOS and
    the one separator token after each demo).  ``ftzs``: for each training
    token ``t``, ``sum_{i} attn_q[l, i] * q_train[l, t, i]``, where
    ``q_train`` is the training token's scaled pre-rotary query vector (heads
    concatenated) read by :class:`hyptest.collect.internals.QueryRecorder`
    during that demo's training forward pass, i.e. at the weights before its
    SGD step: Dai's ``ft`` ``attn_q`` records (BOS dropped) dotted with the
    ``ftzs`` ``attn_q``, ``(expand_ft_attn_q * expand_ftzs_attn_q).sum(-1)``.
    Kendall over these two rows is :func:`hyptest.analysis.dai_demo.kendall_demo_values`.
``query_id`` (every setting)
    The query's ``Example.id`` (ignored by the readers).

Dai's code differs in one detail not reproduced: for one-token label words it
ran the prompt with the first option's label token appended and recorded at
that last token; hyptest records at the position that predicts the label.
Dai's separate ``ft`` folder (the training tokens' ``attn_q``, one line per
step) is not written: its use, the FT side of the Kendall, is precomputed in
``ftzs``'s ``demo_attn``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._util import atomic_write_text
from .encoding import PromptEncoder, common_prefix_length
from .gd import TrainingExample, WeightSnapshot, train_in_place, training_schedule
from .internals import QueryRecorder, capture_attention
from .scoring import score_queries
from ..importers.dai import RECORD_FILE
from ..tasks import Example, Task

__all__ = ["FineTuned", "collect_dai_records", "fine_tuned"]

#: Queries per captured forward pass.
BATCH = 8


@dataclass
class FineTuned:
    """What :func:`fine_tuned` yields while the model holds the fine-tuned weights.

    Attributes
    ----------
    losses : list of float
        The training loss of every step (before the step).
    train_queries : list of numpy.ndarray
        Per training example, in training order (first epoch): ``(n_layers,
        seq_len, n_heads * head_dim)``, the scaled pre-rotary query vectors of
        every token during its training forward pass.
    """

    losses: list[float]
    train_queries: list[np.ndarray]


@contextmanager
def fine_tuned(model: Any, examples: Sequence[TrainingExample], method: Any, *, seed: int = 0,
               device: Any = "cpu") -> Iterator[FineTuned]:
    """Fine-tune ``model`` in place for the duration of a ``with`` block, then restore it.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        At the pretrained weights; restored to them on exit (also on error).
    examples : sequence of TrainingExample
        The training sequences, in order.
    method : SGDMethod, AdamMethod or LayerCausalGDMethod
        Must take one example per step (``kind`` ``sgd``, ``adam`` or
        ``layer_causal_gd``).
    seed : int, default 0
        Passed to :func:`hyptest.collect.gd.train_in_place`.
    device : str or torch.device, default "cpu"
        Device of the model.

    Yields
    ------
    FineTuned

    Raises
    ------
    ValueError
        If the method does not train on one example per step.
    """
    schedule = training_schedule(list(examples), method)
    if any(len(batch) != 1 for batch in schedule):
        raise ValueError(f"the fine-tuning of Dai et al. takes one demo per step (sgd, adam, layer_causal_gd); "
                         f"got kind {getattr(method, 'kind', None)!r}")
    snapshot = WeightSnapshot(model)
    try:
        with QueryRecorder(model) as recorder:
            losses = train_in_place(model, list(examples), method, seed=seed, device=device)
        passes = recorder.passes
        if len(passes) != len(schedule):
            raise RuntimeError(f"recorded {len(passes)} training forward passes for {len(schedule)} steps")
        yield FineTuned(losses, [p[0] for p in passes[: len(examples)]])
    finally:
        snapshot.restore()


def _demo_layout(enc: PromptEncoder, demos: Sequence[Example], prefix: list[int], loss: str
                 ) -> tuple[list[TrainingExample], list[int], list[int]]:
    """Training examples, ICL positions of the demo tokens in ``prefix``, and tokens per demo.

    Each demo's training tokens after its head (``input + label_word``) are
    looked up in the whole-string ICL prefix, in order, from where the
    previous demo ended (separator tokens in between are skipped).
    """
    examples, positions, lengths = [], [], []
    offset = 0
    for demo in demos:
        ids, targets = enc.training_example(demo, loss=loss)
        tail = list(ids[common_prefix_length(enc.head_ids(), ids):])
        at = offset
        while at + len(tail) <= len(prefix) and prefix[at: at + len(tail)] != tail:
            at += 1
        if at + len(tail) > len(prefix):
            raise ValueError(
                f"demo {demo.id!r}: its training tokens ({tail}) do not occur in the ICL prompt's tokens after "
                f"position {offset}; the tokenizer merges the label word or separator differently, so ICL and FT "
                "demo tokens cannot be aligned one to one")
        examples.append(TrainingExample(tuple(ids), tuple(targets)))
        positions.extend(range(at, at + len(tail)))
        lengths.append(len(tail))
        offset = at + len(tail)
    return examples, positions, lengths


def _split_query(enc: PromptEncoder, demos: Sequence[Example], queries: Sequence[Example]
                 ) -> tuple[list[int], list[list[int]]]:
    """The whole-string prompts of ``demos`` as one shared prefix and each query's own tokens.

    A query's own tokens are ``tokenizer(format_input(text))`` without special
    tokens; they must be the end of its whole prompt, and what comes before
    them must be the same for every query.
    """
    prefix: list[int] | None = None
    own_ids = []
    for q in queries:
        whole = enc.prompt_ids(demos, q)
        own = enc.encode(enc.task.format_input(q.text), special=False)
        if not own or whole[-len(own):] != own or (prefix is not None and whole[: -len(own)] != prefix):
            raise ValueError(
                f"query {q.id!r}: its tokens on their own are not the end of the whole prompt's tokens after the "
                "same prefix (the tokenizer merges the query with the separator); the query positions of the "
                "ZS, ICL and FT prompts cannot be aligned")
        prefix = whole[: -len(own)]
        own_ids.append(own)
    assert prefix is not None
    return prefix, own_ids


def _capture(model: Any, prefix: list[int], qids: list[list[int]], *, ctx: bool, queries: bool,
             device: Any) -> list[dict[str, Any]]:
    """Internals at the last token of ``prefix + query`` for every query."""
    out = []
    n_prefix = len(prefix)
    for start in range(0, len(qids), BATCH):
        chunk = qids[start: start + BATCH]
        rows = [prefix + q for q in chunk]
        keys = [(list(range(n_prefix)) if ctx else []) + list(range(n_prefix, n_prefix + len(q))) for q in chunk]
        got = capture_attention(model, rows, key_positions=keys, return_queries=queries, device=device)
        for b in range(len(chunk)):
            s = got.scores[b]
            rec: dict[str, Any] = {"hidden": got.attn_output[b], "attn_map": s[:, :, n_prefix:] if ctx else s}
            if ctx:
                rec["ctx"] = s[:, :, :n_prefix].sum(axis=1)
            if queries:
                rec["q"] = got.queries[b]  # type: ignore[index]
            out.append(rec)
    return out


def _dumps(record: dict[str, Any]) -> str:
    def plain(v: Any) -> Any:
        return v.tolist() if isinstance(v, np.ndarray) else v

    return json.dumps({k: plain(v) for k, v in record.items()}, separators=(",", ":"))


def collect_dai_records(
    lm: Any,
    task: Task,
    demos: Sequence[Example],
    queries: Sequence[Example],
    *,
    ft_method: Any,
    out_dir: str | Path,
    model_name: str,
    task_name: str,
    seed: int = 0,
) -> Path:
    """Write Dai et al.'s ZS / ICL / FT records of one demo set for a list of queries.

    Parameters
    ----------
    lm : LoadedModel
        Model (eval mode), tokenizer and device; the weights are fine-tuned in
        place and restored before returning (also on error).
    task : Task
        Template, label words, separator, instruction.
    demos : sequence of Example
        The demonstrations, in prompt (and training) order.
    queries : sequence of Example
        The test examples; one line per query in every file, in this order.
    ft_method : SGDMethod, AdamMethod or LayerCausalGDMethod
        The fine-tuning; Dai et al.: ``SGDMethod(kind="sgd", learning_rate=...,
        epochs=1, params="attention_kv", loss="all_tokens")``; Deutch et al.'s
        layer-causal variant: the same with ``kind="layer_causal_gd"``.  Its
        ``loss`` picks the training sequences' targets.
    out_dir : str or Path
        Root under which ``ana_rlt/<model_name>/<task_name>/`` is written.
    model_name, task_name : str
        Folder names.
    seed : int, default 0
        Seed of the fine-tuning (see :func:`hyptest.collect.gd.train_in_place`).

    Returns
    -------
    Path
        The task folder ``out_dir/ana_rlt/<model_name>/<task_name>``.

    Raises
    ------
    ValueError
        On no demos or queries, a bad folder name, a method that is not
        one-demo-per-step, or demo tokens that cannot be aligned between the
        ICL prompt and the training sequence.

    Notes
    -----
    The record keys and their definitions are in the module docstring.  Each
    file is written atomically (temporary file, then rename) once all three
    settings are computed.
    """
    if not demos or not queries:
        raise ValueError("`demos` and `queries` must each hold at least one example")
    for what, name in (("model_name", model_name), ("task_name", task_name)):
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"`{what}` must be a plain folder name, got {name!r}")
    model, device = lm.model, lm.device
    enc = PromptEncoder(lm.tokenizer, task)
    head, qids = _split_query(enc, [], queries)
    prefix, icl_qids = _split_query(enc, list(demos), queries)
    if icl_qids != qids:  # pragma: no cover - both are the queries' own tokenisations
        raise ValueError("the queries' tokens differ between the zero-shot and the ICL prompt")
    labels = enc.label_ids()
    loss = getattr(ft_method, "loss", "all_tokens")
    examples, demo_pos, lengths = _demo_layout(enc, demos, prefix, loss)

    def preds(prefix_ids: list[int]) -> list[str]:
        scores = score_queries(model, prefix_ids, qids, labels, top_k=1, device=device)
        return [task.labels[i] for i in np.argmax(scores.label_logprobs, axis=1)]

    zs = _capture(model, head, qids, ctx=False, queries=False, device=device)
    zs_pred = preds(head)
    icl = _capture(model, prefix, qids, ctx=True, queries=False, device=device)
    icl_pred = preds(prefix)
    with fine_tuned(model, examples, ft_method, seed=seed, device=device) as ft:
        ftzs = _capture(model, head, qids, ctx=False, queries=True, device=device)
        ft_pred = preds(head)
    q_train = np.concatenate([q[:, len(head):] for q in ft.train_queries], axis=1)  # (L, n_tokens, q_dim)

    lines: dict[str, list[str]] = {"zs": [], "icl": [], "ftzs": []}
    for i, query in enumerate(queries):
        common = {"query_id": query.id, "gold_label": query.label}
        lines["zs"].append(_dumps({**common, "pred_label": zs_pred[i], "self_attn_out_hiddens": zs[i]["hidden"],
                                   "attn_map": zs[i]["attn_map"]}))
        lines["icl"].append(_dumps({**common, "pred_label": icl_pred[i],
                                    "self_attn_out_hiddens": icl[i]["hidden"], "attn_map": icl[i]["attn_map"],
                                    "attn_map_ctx": icl[i]["ctx"], "demo_lengths": lengths,
                                    "demo_attn": icl[i]["ctx"][:, demo_pos]}))
        ft_attn = np.einsum("ld,ltd->lt", ftzs[i]["q"], q_train)
        lines["ftzs"].append(_dumps({**common, "pred_label": ft_pred[i],
                                     "self_attn_out_hiddens": ftzs[i]["hidden"], "attn_map": ftzs[i]["attn_map"],
                                     "attn_q": ftzs[i]["q"], "demo_lengths": lengths, "demo_attn": ft_attn}))
    folder = Path(out_dir) / "ana_rlt" / model_name / task_name
    for setting, text in lines.items():
        atomic_write_text(folder / setting / RECORD_FILE, "\n".join(text) + "\n")
    return folder
