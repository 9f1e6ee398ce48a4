"""Read lm-evaluation-harness sample logs (``lm-eval ... --log_samples``) as hyptest records.

The harness writes, per run, ``samples_<task>_<date>.jsonl`` (one line per
evaluated document: the prompts it scored in ``arguments`` and the
log-likelihood of each continuation in ``filtered_resps``) and
``results_<date>.json`` (the run's configuration: task configs, number of
shots, few-shot seed, model).  This module turns each (run, doc) into one
record of hyptest's long format (``hyptest.store.RECORD_COLUMNS``):

* **label probabilities** are the softmax of the choices' log-likelihoods,
  i.e. the model's probabilities *renormalised over the choices* (for a
  ``loglikelihood`` task with one continuation: ``exp(ll)`` for the target
  and ``1 - exp(ll)`` for anything else, not renormalised);
* **demos** are recovered from the few-shot context in the prompt: the task
  description is stripped, the rest is split at the few-shot delimiter into
  N demos and the query.  A demo is identified by its text (id ``d`` + a
  hash of the text; :attr:`LmEvalImport.demos` maps ids to texts);
* **demo set** = the multiset of demo ids, **order** = their sequence in the
  prompt; sets are numbered per (model, task, N) and orders per set, both in
  order of first appearance.

How lm-eval draws demos (0.4.x, ``lm_eval.api.samplers``): the ``default``
sampler holds one ``random.Random(fewshot_seed)`` per task and calls
``rnd.sample(pool, N)`` once per document, in document order.  So every
document of a run gets its own random demo set in a random order, and each
``--fewshot_seed`` gives each document another set.  Order sensitivity
*within* a set is then only identifiable where a document meets the same set
in different orders, which happens reliably when the few-shot pool holds
exactly N documents (every draw is a permutation of that set).  The
``first_n`` sampler gives every document the same demos in the same order.
:attr:`LmEvalImport.design` states, per (model, task, N), what was
recovered and which analyses apply.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validation import validate_flag
from ..store import RECORD_COLUMNS
from ._problems import ImportProblems, ProblemLog
from .long import ImportResult, unit_key

__all__ = ["LM_EVAL_OUTPUT_TYPES", "LmEvalImport", "demo_id", "find_lm_eval_runs", "read_lm_eval"]

#: Output types whose logs carry per-continuation log-likelihoods.
LM_EVAL_OUTPUT_TYPES: tuple[str, ...] = ("multiple_choice", "loglikelihood")
_SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.:\-]+)\.jsonl$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
#: Largest positive log-likelihood accepted as float rounding of 0.
_LL_SLACK: float = 1e-6
_HINT = "Fix these lines, or read with strict=False (CLI: --skip-bad) to skip bad lines and count them."


@dataclass(frozen=True, slots=True)
class LmEvalImport:
    """What :func:`read_lm_eval` read.

    Attributes
    ----------
    result : ImportResult
        The records (one per (run, doc), long format), problems, counts and
        notes, as :func:`hyptest.importers.read_long` returns them.
    demos : dict of str to str
        Demo id -> the demo's text as it appears in the prompt.
    design : list of dict
        One entry per (model, task, N): runs, few-shot seeds and samplers,
        documents, distinct demos, demo sets, orders per set, the (set, doc)
        cells seen in at least two orders, and ``applies`` (which analyses
        the design supports, in words).
    runs : list of dict
        One entry per samples file: file, results file, model, task, N,
        few-shot seed, sampler, output type, lines read.
    """

    result: ImportResult
    demos: dict[str, str] = field(default_factory=dict)
    design: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------
# finding runs
# ---------------------------------------------------------------------------


def find_lm_eval_runs(path: str | Path) -> list[tuple[Path, str, Path]]:
    """The samples files under `path` with their task and results file.

    Parameters
    ----------
    path : str or Path
        A ``samples_<task>_<date>.jsonl`` file, or a folder searched
        recursively for them.

    Returns
    -------
    list of (samples file, task, results file)
        Sorted by path. The results file is ``results_<date>.json`` beside
        the samples file; it may not exist (:func:`read_lm_eval` reports it).
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("samples_*.jsonl") if p.is_file())
    out = []
    for f in files:
        m = _SAMPLES.match(f.name)
        if m:
            out.append((f, m.group("task"), f.with_name(f"results_{m.group('date')}.json")))
    return out


# ---------------------------------------------------------------------------
# parsing one prompt
# ---------------------------------------------------------------------------


def _maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """lm-eval's ``maybe_delimit``: join, adding `delimiter` unless either side has whitespace at the join."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


def _render(template: str, doc: Any) -> str | None:
    """A description template with only ``{{ field }}`` placeholders, filled from the doc; else None."""
    if "{{" not in template and "{%" not in template:
        return template
    if "{%" in template or not isinstance(doc, dict):
        return None
    try:
        text = _PLACEHOLDER.sub(lambda m: str(doc[m.group(1)]), template)
    except KeyError:
        return None
    return None if "{{" in text else text


def _split_demos(body: str, n: int, delim: str, known: set[str] | None) -> list[str] | None:
    """Split `body` into `n` demos (each followed by `delim`) and the query; None when ambiguous or impossible."""
    if n == 0:
        return []
    parts = body.split(delim)
    if len(parts) == n + 1:
        return parts[:n]
    if len(parts) < n + 1 or not known:
        return None
    # the delimiter occurs inside a demo or the query: match demos already seen unambiguously

    def walk(pos: int, left: int) -> list[str] | None:
        if left == 0:
            return []
        for text in known:
            if body.startswith(text + delim, pos):
                rest = walk(pos + len(text) + len(delim), left - 1)
                if rest is not None:
                    return [text, *rest]
        return None

    return walk(0, n)


def demo_id(text: str) -> str:
    """Id of a demo: ``d`` + 10 hex digits of a hash of its text."""
    return "d" + hashlib.blake2b(text.encode("utf-8"), digest_size=5).hexdigest()


# ---------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------


@dataclass
class _Run:
    samples: Path
    results: Path
    task: str
    model: str
    n_demos: int
    seed: int | None
    sampler: str
    output_type: str
    prefix: str | None  # None: the description is a template (rendered per doc)
    description: str
    system: str | None
    few_delim: str
    tgt_delim: str
    lines: int = 0


def _run_config(samples: Path, task: str, results: Path, log: ProblemLog) -> _Run | None:
    if not results.is_file():
        log.add(str(samples), None, f"no {results.name} beside it: the run's config (shots, delimiters, output "
                                    "type, few-shot seed) is read from there; keep the two files together")
        return None
    try:
        info = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        line = getattr(error, "lineno", None)
        log.add(str(results), line, f"not a readable JSON file ({type(error).__name__}: {error})")
        return None
    cfg = (info.get("configs") or {}).get(task) if isinstance(info, dict) else None
    if not isinstance(cfg, dict):
        log.add(str(results), None, f"no configs[{task!r}]: is this the results file of the same run?")
        return None
    output_type = str(cfg.get("output_type"))
    if output_type not in LM_EVAL_OUTPUT_TYPES:
        log.add(str(samples), None, f"task {task!r} has output_type {output_type!r}; only "
                                    f"{' and '.join(LM_EVAL_OUTPUT_TYPES)} tasks carry log-likelihoods to read")
        return None
    if info.get("chat_template"):  # fewshot_as_multiturn only acts with a chat template
        log.add(str(samples), None, "the prompts were built with a chat template: the demos cannot be recovered "
                                    "from the context (run lm-eval without --apply_chat_template)")
        return None
    n_shot = (info.get("n-shot") or {}).get(task, cfg.get("num_fewshot"))
    if not isinstance(n_shot, int) or n_shot < 0:
        log.add(str(results), None, f"no number of shots for task {task!r} (n-shot or configs.num_fewshot)")
        return None
    if n_shot == 0:
        log.add(str(samples), None, "a zero-shot run (num_fewshot 0): no demos, so no order or demo-set to analyse")
        return None
    fewshot = cfg.get("fewshot_config") or {}
    general = info.get("config") or {}
    model = str(info.get("model_name") or "")
    if model.startswith(("/", "./", "../", "~")):  # a local directory: its last part names the model
        model = Path(model).name
    if not model:
        args = str(general.get("model_args") or "")
        match = re.search(r"(?:^|,)\s*pretrained=([^,]+)", args)
        model = Path(match.group(1)).name if match else (str(general.get("model") or "") or samples.parent.name)
    seed = general.get("fewshot_seed")
    description = str(cfg.get("description") or "")
    few_delim = fewshot.get("fewshot_delimiter") or cfg.get("fewshot_delimiter") or "\n\n"
    system = info.get("system_instruction") or None
    templated = "{{" in description or "{%" in description
    return _Run(samples, results, task, str(model), n_shot, seed if isinstance(seed, int) else None,
                str(fewshot.get("sampler") or "default"), output_type,
                None if templated else _maybe_delimit(system, description, few_delim), description, system,
                few_delim, str(cfg.get("target_delimiter", " ")))


def _lines(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw.decode("utf-8")), None
            except UnicodeDecodeError:
                yield number, None, "bytes that are not UTF-8"
            except json.JSONDecodeError as error:
                yield number, None, f"not a JSON object ({error.msg}, column {error.colno})"


def _requests(obj: dict[str, Any]) -> tuple[list[tuple[str, str]] | None, str | None]:
    args = obj.get("arguments")
    if isinstance(args, dict):
        keys = sorted(args, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 0)
        pairs = [args[k] for k in keys]
        if all(isinstance(p, dict) and "arg_0" in p and "arg_1" in p for p in pairs):
            pairs = [(p["arg_0"], p["arg_1"]) for p in pairs]
    elif isinstance(args, list):
        pairs = args
    else:
        return None, "missing or malformed 'arguments'"
    if not pairs or not all(isinstance(p, (list, tuple)) and len(p) >= 2 and isinstance(p[0], str)
                            and isinstance(p[1], str) for p in pairs):
        return None, "'arguments' must hold (context, continuation) pairs of strings"
    return [(p[0], p[1]) for p in pairs], None


def _loglikelihoods(obj: dict[str, Any], n: int) -> tuple[list[float] | None, str | None]:
    resps = obj.get("filtered_resps", obj.get("resps"))
    if not isinstance(resps, list) or len(resps) != n:
        return None, f"'filtered_resps' must hold one response per request ({n}), got {resps!r:.80}"
    out = []
    for r in resps:
        while isinstance(r, list) and r and isinstance(r[0], list):  # resps nests one level deeper
            r = r[0]
        value = r[0] if isinstance(r, list) and r else r
        try:
            ll = float(value)
        except (TypeError, ValueError):
            return None, f"log-likelihood {value!r} is not a number"
        if not math.isfinite(ll) or ll > _LL_SLACK:
            return None, f"log-likelihood {value!r} must be finite and <= 0"
        out.append(min(ll, 0.0))
    return out, None


# ---------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------


@dataclass
class _Row:
    run: int
    file: str
    line: int
    doc_id: int | str
    body: str
    choices: list[str]
    gold: int
    lls: list[float]
    demos: list[str] | None


def _read_run(run: _Run, index: int, log: ProblemLog, rows: list[_Row]) -> int:
    n_read = 0
    seen: dict[Any, int] = {}
    for line, obj, error in _lines(run.samples):
        n_read += 1
        file = str(run.samples)
        if error is None and not isinstance(obj, dict):
            error = "not a JSON object"
        if error is not None:
            log.add(file, line, error)
            continue
        if "doc_id" not in obj:
            log.add(file, line, "missing 'doc_id'")
            continue
        doc_id = obj["doc_id"]
        key = json.dumps(doc_id)
        if key in seen:
            log.add(file, line, f"doc_id {doc_id!r} again (first on line {seen[key]}); one line per doc is "
                                "expected (a task with several filters is not a loglikelihood task)")
            continue
        seen[key] = line
        pairs, error = _requests(obj)
        if error is None:
            lls, error = _loglikelihoods(obj, len(pairs))
        if error is not None:
            log.add(file, line, error)
            continue
        contexts = {c for c, _ in pairs}
        if len(contexts) != 1:
            log.add(file, line, "the choices have different contexts (a multiple-input task such as winogrande): "
                                "the demos and the query cannot be told apart")
            continue
        context = pairs[0][0]
        if run.output_type == "loglikelihood":
            if len(pairs) != 1:
                log.add(file, line, f"a loglikelihood task should score one continuation, got {len(pairs)}")
                continue
            choices, gold = ["target", "other"], 0
        else:
            choices = [c[len(run.tgt_delim):] if run.tgt_delim and c.startswith(run.tgt_delim) else c
                       for _, c in pairs]
            gold, error = _gold(obj.get("target"), choices)
            if error is not None:
                log.add(file, line, error)
                continue
        prefix = run.prefix if run.prefix is not None else _maybe_delimit(
            run.system, _render(run.description, obj.get("doc")), run.few_delim)
        if prefix is None or not context.startswith(prefix):
            log.add(file, line, "the prompt does not start with the task's description "
                                f"({run.description[:40]!r}...); cannot locate the demos")
            continue
        body = context[len(prefix):]
        demos = _split_demos(body, run.n_demos, run.few_delim, None)
        # the prompt is kept only when it still has to be split (against demos other prompts name)
        rows.append(_Row(index, file, line, doc_id, body if demos is None else "", choices, gold, lls, demos))
    return n_read


def _gold(target: Any, choices: list[str]) -> tuple[int, str | None]:
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    if isinstance(target, bool) or target is None:
        return 0, f"missing or unusable 'target' {target!r}"
    text = str(target).strip()
    if re.fullmatch(r"\d+", text) and int(text) < len(choices):
        return int(text), None
    for i, choice in enumerate(choices):
        if choice.strip() == text:
            return i, None
    return 0, f"'target' {target!r} is neither a choice index (< {len(choices)}) nor one of the choices"


def read_lm_eval(path: str | Path, *, strict: bool = True, max_problems: int = 10_000) -> LmEvalImport:
    """Read lm-evaluation-harness ``--log_samples`` output as hyptest records.

    Parameters
    ----------
    path : str or Path
        A ``samples_<task>_<date>.jsonl`` file (its ``results_<date>.json``
        beside it), or a folder holding such pairs at any depth (e.g. the
        ``--output_path`` of several runs with different ``--fewshot_seed``).
    strict : bool, default True
        Raise :class:`ImportProblems` after the first file with a problem;
        with ``False`` skip bad lines and files, each with a Problem.
    max_problems : int, default 10000
        Problems kept; further ones are counted only.

    Returns
    -------
    LmEvalImport

    Raises
    ------
    ImportProblems
        In strict mode, for the first file with a problem.
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If `path` holds no ``samples_*.jsonl`` file.

    Notes
    -----
    One record per (run, doc): model (the run's ``model_name``, the last
    part only for a local path; else the ``pretrained=`` of its model
    args), task, method ``icl`` (kind icl),
    N = the run's number of shots, query = ``doc_id``, gold = the target
    choice, labels = the choices (positional names ``choice_<i>`` when the
    choices differ between docs), ``label_probs`` = softmax of the
    continuations' log-likelihoods (renormalised over the choices),
    ``label_logprobs`` = their logs, demo set and order as recovered from the
    prompt (see the module docstring), seed and step 0, no top-k.  A prompt
    repeated exactly (same doc, demos and order, e.g. two runs with one
    seed) is kept once and counted in the notes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist")
    validate_flag(strict, "strict")
    found = find_lm_eval_runs(path)
    if not found:
        raise ValueError(f"{path}: no lm-eval samples file (samples_<task>_<date>.jsonl, written by "
                         "`lm-eval ... --log_samples`)")
    log = ProblemLog(max_problems)
    runs: list[_Run] = []
    rows: list[_Row] = []
    n_read = 0
    for samples, task, results in found:
        run = _run_config(samples, task, results, log)
        if run is not None:
            run.lines = _read_run(run, len(runs), log, rows)
            n_read += run.lines
            runs.append(run)
        else:
            n_read += sum(1 for _ in _lines(samples))
        if strict and (batch := log.batch()):
            raise ImportProblems(batch, hint=_HINT)
    # prompts split unambiguously name the demos; the others are matched against them
    known: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        if r.demos is not None:
            known.setdefault((runs[r.run].task, runs[r.run].few_delim), set()).update(r.demos)
    good: list[_Row] = []
    for r in rows:
        run = runs[r.run]
        if r.demos is None:
            r.demos = _split_demos(r.body, run.n_demos, run.few_delim, known.get((run.task, run.few_delim)))
        if r.demos is None:
            log.add(r.file, r.line, f"cannot split the prompt into {run.n_demos} demos and the query at the "
                                    f"few-shot delimiter {run.few_delim!r} (it occurs inside a demo or the query, "
                                    "and no unambiguous prompt names these demos)")
        else:
            good.append(r)
    if strict and (batch := log.batch()):
        raise ImportProblems(batch, hint=_HINT)
    records, demos, notes, design, repeats = _records(good, runs, log)
    records = _models_as_methods(records, notes)
    if strict and (batch := log.batch()):
        raise ImportProblems(batch, hint=_HINT)
    n_skipped = n_read - len(records) - repeats
    result = ImportResult(records, log.problems(), n_read, n_skipped, notes, str(path))
    run_info = [{"samples": str(r.samples), "results": str(r.results), "model": r.model, "task": r.task,
                 "n_demos": r.n_demos, "fewshot_seed": r.seed, "sampler": r.sampler,
                 "output_type": r.output_type, "lines": r.lines} for r in runs]
    return LmEvalImport(result, demos, design, run_info)


def _records(rows: list[_Row], runs: list[_Run], log: ProblemLog
             ) -> tuple[pd.DataFrame, dict[str, str], list[str], list[dict[str, Any]], int]:
    """Records, demo texts, notes, design summaries and the number of repeated prompts."""
    notes: list[str] = []
    demos: dict[str, str] = {}
    by_task: dict[tuple[str, str, int], list[_Row]] = {}
    for r in rows:
        run = runs[r.run]
        by_task.setdefault((run.model, run.task, run.n_demos), []).append(r)
    cols: dict[str, list[Any]] = {c: [] for c in RECORD_COLUMNS}
    design: list[dict[str, Any]] = []
    repeats = 0
    for (model, task, n), task_rows in sorted(by_task.items()):
        width = len(task_rows[0].choices)
        kept = []
        for r in task_rows:
            if len(r.choices) != width:
                log.add(r.file, r.line, f"{len(r.choices)} choices, but the task's first doc has {width}")
            else:
                kept.append(r)
        # labels: the choice texts when every doc has the same ones, else their positions
        same = all(r.choices == kept[0].choices for r in kept) and len(set(kept[0].choices)) == width
        labels = list(kept[0].choices) if same else [f"choice_{i}" for i in range(width)]
        if not same:
            notes.append(f"{model}/{task}/N={n}: the choices differ between docs, so the labels are their "
                         f"positions (choice_0 .. choice_{width - 1})")
        if runs[kept[0].run].output_type == "loglikelihood":
            notes.append(f"{model}/{task}/N={n}: a loglikelihood task; label 'target' has probability "
                         "exp(log-likelihood) of the target continuation and 'other' the rest (not renormalised); "
                         "'correct' is P(target) > 0.5, not lm-eval's is_greedy")
        sets: dict[tuple[str, ...], int] = {}
        orders: dict[tuple[int, tuple[str, ...]], int] = {}
        per_set: dict[int, int] = {}  # orders numbered so far in each set
        cells: dict[tuple[int, str], set[int]] = {}
        kept.sort(key=lambda r: (-1 if runs[r.run].seed is None else runs[r.run].seed, str(runs[r.run].samples),
                                 r.line))
        for r in kept:
            ids = []
            for text in r.demos or []:
                demos[demo_id(text)] = text
                ids.append(demo_id(text))
            s = sets.setdefault(tuple(sorted(ids)), len(sets))
            o = orders.get((s, tuple(ids)))
            if o is None:
                o = orders[(s, tuple(ids))] = per_set.get(s, 0)
                per_set[s] = o + 1
            query = str(r.doc_id)
            if o in cells.setdefault((s, query), set()):
                repeats += 1
                continue
            cells[(s, query)].add(o)
            if runs[r.run].output_type == "loglikelihood":
                p = math.exp(r.lls[0])
                probs = [p, 1.0 - p]
                logprobs = [r.lls[0], math.log1p(-p) if p < 1 else -math.inf]
            else:  # softmax over the choices = the model's probabilities renormalised over them
                ll = np.asarray(r.lls, dtype=np.float64)
                top = float(ll.max())
                log_p = ll - (top + math.log(float(np.exp(ll - top).sum())))
                probs, logprobs = np.exp(log_p).tolist(), log_p.tolist()
            gold, pred = labels[r.gold], labels[int(np.argmax(probs))]
            values = {"unit_key": unit_key(model, task, "icl", n, s, o, 0, 0), "model": model, "task": task,
                      "method": "icl", "method_kind": "icl", "n_demos": n, "demo_set": s, "order_id": o,
                      "order": ids, "seed": 0, "step": 0, "query_id": query, "gold": gold, "labels": list(labels),
                      "label_logprobs": logprobs, "label_probs": probs, "p_gold": probs[r.gold], "pred": pred,
                      "correct": pred == gold, "topk_ids": [], "topk_probs": []}
            for c in RECORD_COLUMNS:
                cols[c].append(values[c])
        design.append(_design(model, task, n, kept, runs, sets, orders, cells))
    if repeats:
        notes.append(f"{repeats} (run, doc) prompt(s) repeat a prompt already read (same doc, demos and order, "
                     "e.g. two runs with the same few-shot seed): each kept once")
    notes += [d["summary"] for d in design]
    frame = pd.DataFrame(cols, columns=list(RECORD_COLUMNS))
    for name in ("n_demos", "demo_set", "order_id", "seed", "step"):
        frame[name] = frame[name].astype(np.int64)
    frame["p_gold"] = frame["p_gold"].astype(np.float64)
    frame["correct"] = frame["correct"].astype(bool)
    return frame, demos, notes, design, repeats


def _models_as_methods(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Several models on one (task, N): the models become the methods compared, on shared set and order ids.

    lm-eval draws the demos from the task and the few-shot seed only, so two
    models run with the same seeds saw the same prompts. Their records then
    get ``method`` = the model's name (kind ``icl``) under one ``model``
    (the models' names joined by ``-vs-``), and demo sets and orders are
    numbered the same way for all of them (sets by their sorted demo ids,
    orders by their sequence), so that the analysis pairs the same
    (set, order, doc) cells and compares the models' order sensitivity with
    verdicts. The reference is the alphabetically first model. When the logs
    hold several models, every record's method is its model's name (also for
    a task only one model ran), so that one reference serves every task.
    """
    if frame.empty or frame["model"].nunique() < 2:
        return frame
    parts = []
    for (task, n), group in frame.groupby(["task", "n_demos"], sort=True):
        models = sorted(group["model"].unique())
        group = group.assign(method=group["model"])  # also alone on a task: one reference serves every task
        if len(models) >= 2:
            set_key = group["order"].map(lambda ids: tuple(sorted(ids)))
            sequence = group["order"].map(tuple)
            set_ids = {key: i for i, key in enumerate(sorted(set(set_key)))}
            order_ids: dict[tuple[Any, ...], int] = {}
            per_set: dict[tuple[Any, ...], int] = {}
            for seq in sorted(set(sequence)):  # sorted overall, hence sorted within each set
                key = tuple(sorted(seq))
                order_ids[seq] = per_set.get(key, 0)
                per_set[key] = order_ids[seq] + 1
            joined = re.sub(r"[^A-Za-z0-9._-]", "_", "-vs-".join(models))  # a name a study accepts
            group = group.assign(model=joined, demo_set=set_key.map(set_ids).astype(np.int64),
                                 order_id=sequence.map(order_ids).astype(np.int64))
            notes.append(f"{task}/N={n}: {len(models)} models ({', '.join(models)}) on prompts drawn by the same "
                         f"few-shot sampler: compared as methods under model {joined!r}, reference {models[0]!r}; "
                         "sets and orders numbered alike for all of them, and each comparison uses the (set, doc) "
                         "cells that both models saw in every order of the set")
        parts.append(group)
    out = pd.concat(parts, ignore_index=True)
    out["unit_key"] = [unit_key(mo, t, me, int(n), int(s_), int(o), 0, 0) for mo, t, me, n, s_, o in
                       zip(out["model"], out["task"], out["method"], out["n_demos"], out["demo_set"], out["order_id"])]
    return out


def _design(model: str, task: str, n: int, rows: list[_Row], runs: list[_Run], sets: dict[tuple[str, ...], int],
            orders: dict[tuple[int, tuple[str, ...]], int], cells: dict[tuple[int, str], set[int]]
            ) -> dict[str, Any]:
    """What one (model, task, N) recovered, and which analyses that design supports."""
    counts: dict[int, int] = {}
    for s, _ in orders:
        counts[s] = counts.get(s, 0) + 1
    per_set = sorted(counts.values())
    multi = sum(1 for v in cells.values() if len(v) >= 2)
    sets_per_doc: dict[str, int] = {}
    for _, q in cells:
        sets_per_doc[q] = sets_per_doc.get(q, 0) + 1
    run_ids = sorted({r.run for r in rows})
    seeds = sorted({runs[i].seed for i in run_ids if runs[i].seed is not None})
    samplers = sorted({runs[i].sampler for i in run_ids})
    n_distinct = len({d for key in sets for d in key})
    if multi == 0:
        applies = ("order sensitivity within a demo set is NOT identifiable: no doc was seen with the same demo "
                   "set in two orders (lm-eval's default sampler draws a new set per doc and run, its first_n "
                   "sampler always the same set and order); the variation across runs mixes demo set and order. "
                   "To estimate order sensitivity, give the few-shot split exactly N docs (every draw is then an "
                   "order of the same set) and run several --fewshot_seed")
    else:
        applies = (f"order sensitivity within a demo set: estimable for {multi} of {len(cells)} (set, doc) cells "
                   "(those seen in >= 2 orders): ICL's order SD per doc and its mean with an interval; comparison "
                   "verdicts need a second model run with the same few-shot seeds (the same prompts)")
    multi_set = sum(1 for v in sets_per_doc.values() if v >= 2)
    summary = (f"{model}/{task}/N={n}: {len(run_ids)} run(s) (few-shot seeds {seeds or 'unknown'}, sampler "
               f"{'/'.join(samplers)}), {len(sets_per_doc)} doc(s), {n_distinct} distinct demo(s), {len(sets)} "
               f"distinct demo set(s), {per_set[0]}-{per_set[-1]} order(s) per set, {multi_set} doc(s) seen under "
               f">= 2 sets; {applies}")
    return {"model": model, "task": task, "n_demos": n, "n_runs": len(run_ids), "fewshot_seeds": seeds,
            "samplers": samplers, "n_docs": len(sets_per_doc), "n_distinct_demos": n_distinct, "n_sets": len(sets),
            "orders_per_set_min": per_set[0], "orders_per_set_max": per_set[-1], "n_cells": len(cells),
            "n_cells_multi_order": multi, "n_docs_multi_set": multi_set, "applies": applies, "summary": summary}
