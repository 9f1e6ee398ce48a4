"""Read Dai et al.'s analysis logs: ``ana_rlt/<model>/<task>/{zs,ftzs,ft,icl}/record_info.jsonl``.

The reference code (microsoft/LMOps ``understand_icl``) writes one JSON object
per test example and setting.  hyptest reads, per example:

``self_attn_out_hiddens``
    ``(n_layers, hidden)``: the attention output of every layer at the last
    (scored) position.
``attn_map``
    ``(n_layers, n_heads, n_positions)``: that position's pre-softmax
    attention scores over the positions of the zero-shot prompt (the ICL map
    restricted to the same positions, as ``compute_sim.py`` assumes when it
    pads ICL with the zero-shot lengths).
``gold_label``, ``pred_label``
    Compared with ``==`` for correctness.

Other keys are ignored.  Examples are aligned across settings by line index,
as in the reference code; the files must have equal numbers of lines.

Which setting is fine-tuning: ``compute_sim.py`` computes Rec2FTP, SimAOU and
SimAM against ``ftzs`` (the fine-tuned model evaluated zero-shot on each test
example); ``ft`` holds records of the training pass (the training examples'
query vectors, used by ``compute_training_example_attn.py``), which are not
aligned with the test examples.  So FT is ``ftzs`` by default; pass
``ft_setting="ft"`` for logs whose ``ft`` folder is aligned per test example.

Files are streamed line by line in lock-step, one example at a time, so a
multi-GB log is never held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import validate_choice
from ._problems import ImportProblems, Problem, ProblemLog

__all__ = ["DAI_SETTINGS", "DaiExample", "DaiImport", "DaiTaskData", "DaiTaskDir", "RECORD_FILE", "find_dai_tasks",
           "iter_dai_examples", "read_dai"]

#: Setting folders of Dai et al.'s logs.
DAI_SETTINGS: tuple[str, ...] = ("zs", "ftzs", "ft", "icl")
#: The file name of one setting's records in a Dai et al. log folder.
RECORD_FILE = "record_info.jsonl"
_FT_SETTINGS: tuple[str, ...] = ("ftzs", "ft")
_HINT = "Fix the logs, or read with strict=False (CLI: --skip-bad) to skip bad examples and count them."


@dataclass(frozen=True, slots=True)
class DaiTaskDir:
    """One ``<model>/<task>`` folder of a Dai log."""

    model: str
    task: str
    path: Path


@dataclass(frozen=True, slots=True)
class DaiExample:
    """One test example under the zero-shot, fine-tuned and ICL settings.

    Attributes
    ----------
    index : int
        0-based line index (the same in every setting's file).
    correct : dict
        Setting role (``"zs"``, ``"ft"``, ``"icl"``) -> gold_label == pred_label.
    hidden : dict
        Role -> attention outputs, shape ``(n_layers, hidden)``.
    attn : dict
        Role -> pre-softmax attention scores, shape ``(n_layers, n_heads, n_positions)``.
    """

    index: int
    correct: dict[str, bool]
    hidden: dict[str, np.ndarray]
    attn: dict[str, np.ndarray]


def find_dai_tasks(path: str | Path, *, ft_setting: str = "ftzs") -> list[DaiTaskDir]:
    """The ``<model>/<task>`` folders under a Dai log directory.

    Parameters
    ----------
    path : str or Path
        ``ana_rlt`` itself, a folder holding ``ana_rlt``, one ``<model>``
        folder, or one ``<model>/<task>`` folder.
    ft_setting : {"ftzs", "ft"}, default "ftzs"
        The setting read as fine-tuning; a task folder must hold ``zs``,
        ``icl`` and this one.

    Returns
    -------
    list of DaiTaskDir
        Sorted by (model, task); empty when none is found.
    """
    root = Path(path)
    if (root / "ana_rlt").is_dir():
        root = root / "ana_rlt"
    needed = ("zs", "icl", ft_setting)

    def is_task(folder: Path) -> bool:
        return all((folder / s / RECORD_FILE).is_file() for s in needed)

    if not root.is_dir():
        return []
    if is_task(root):
        return [DaiTaskDir(root.parent.name, root.name, root)]
    found = [DaiTaskDir(root.name, t.name, t) for t in sorted(root.iterdir()) if t.is_dir() and is_task(t)]
    if found:
        return found
    for model in sorted(p for p in root.iterdir() if p.is_dir()):
        found += [DaiTaskDir(model.name, t.name, t) for t in sorted(model.iterdir()) if t.is_dir() and is_task(t)]
    return found


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield line, None, f"not valid UTF-8 ({error.reason} at byte {error.start})"
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as error:
                yield line, None, f"malformed JSON ({error.msg} at column {error.colno})"
                continue
            if not isinstance(obj, dict):
                yield line, None, f"each line must be a JSON object, got {type(obj).__name__}"
                continue
            yield line, obj, None


def _array(value: Any, name: str, ndim: int, shape_text: str) -> tuple[np.ndarray | None, str | None]:
    if value is None:
        return None, f"missing key {name!r}"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None, f"{name!r} must be a rectangular array of numbers {shape_text}"
    if arr.ndim != ndim:
        return None, f"{name!r} must have {ndim} dimensions {shape_text}, got shape {arr.shape}"
    if not np.isfinite(arr).all():
        return None, f"{name!r} holds NaN or inf"
    return arr, None


class _Shapes:
    """Shapes fixed by the first good example of a task."""

    def __init__(self) -> None:
        self.hidden: tuple[int, ...] | None = None
        self.heads: tuple[int, int] | None = None


def _parse(obj: dict[str, Any], shapes: _Shapes, hidden_key: str, attn_key: str) -> tuple[Any, list[str]]:
    errors = []
    for key in ("gold_label", "pred_label"):
        if key not in obj:
            errors.append(f"missing key {key!r}")
    hidden, err = _array(obj.get(hidden_key), hidden_key, 2, "(layers x hidden)")
    if err:
        errors.append(err)
    attn, err = _array(obj.get(attn_key), attn_key, 3, "(layers x heads x positions)")
    if err:
        errors.append(err)
    if hidden is not None and shapes.hidden is not None and hidden.shape != shapes.hidden:
        errors.append(f"{hidden_key!r} has shape {hidden.shape}, other examples {shapes.hidden}")
    if attn is not None:
        if shapes.heads is not None and attn.shape[:2] != shapes.heads:
            errors.append(f"{attn_key!r} has {attn.shape[:2]} (layers, heads), other examples {shapes.heads}")
        if attn.shape[2] < 2:
            errors.append(f"{attn_key!r} needs at least 2 positions, got {attn.shape[2]}")
    if hidden is not None and attn is not None and hidden.shape[0] != attn.shape[0]:
        errors.append(f"{hidden_key!r} has {hidden.shape[0]} layers but {attn_key!r} has {attn.shape[0]}")
    if errors:
        return None, errors
    return (bool(obj["gold_label"] == obj["pred_label"]), hidden, attn), []


class DaiTaskReader:
    """Stream the aligned examples of one task folder; counts are set as it goes.

    Attributes
    ----------
    n_read : int
        Examples met (the longest file's number of lines).
    n_skipped : int
        Examples left out because of a problem in any of the settings.
    """

    def __init__(self, task: DaiTaskDir, *, ft_setting: str = "ftzs", log: ProblemLog | None = None,
                 strict: bool = True, hidden_key: str = "self_attn_out_hiddens", attn_key: str = "attn_map",
                 batch_examples: int = 1000) -> None:
        validate_choice(ft_setting, "ft_setting", _FT_SETTINGS)
        self.task = task
        self.roles = {"zs": "zs", "ft": ft_setting, "icl": "icl"}
        self.log = log if log is not None else ProblemLog()
        self.strict = strict
        self.hidden_key = hidden_key
        self.attn_key = attn_key
        self.batch_examples = batch_examples
        self.n_read = 0
        self.n_skipped = 0

    def files(self) -> dict[str, Path]:
        """Role -> the record file read for it."""
        return {role: self.task.path / setting / RECORD_FILE for role, setting in self.roles.items()}

    def __iter__(self) -> Iterator[DaiExample]:
        files = self.files()
        shapes = _Shapes()
        counts = dict.fromkeys(files, 0)
        streams = [_lines(files[role]) for role in files]
        roles = list(files)
        in_batch = 0
        for index, items in enumerate(zip_longest(*streams)):
            self.n_read += 1
            in_batch += 1
            parsed = {}
            lines: dict[str, int] = {}
            bad = False
            for role, item in zip(roles, items):
                if item is None:
                    bad = True
                    continue
                counts[role] += 1
                line, obj, error = item
                lines[role] = line
                errors = [error] if error else []
                if obj is not None:
                    value, errors = _parse(obj, shapes, self.hidden_key, self.attn_key)
                    parsed[role] = value
                for message in errors:
                    self.log.add(str(files[role]), line, f"example {index}: {message}")
                bad = bad or bool(errors)
            if not bad:
                hidden = {self.roles[r]: parsed[r][1].shape for r in roles}
                attn = {self.roles[r]: parsed[r][2].shape for r in roles}
                if len(set(hidden.values())) > 1 or len(set(attn.values())) > 1:
                    bad = True
                    self.log.add(str(files["icl"]), lines["icl"],
                                 f"example {index}: the settings disagree on shapes ({self.hidden_key} {hidden}, "
                                 f"{self.attn_key} {attn}); they must match (same layers, heads and positions)")
            if bad:
                self.n_skipped += 1
            else:
                if shapes.hidden is None:
                    shapes.hidden = parsed["zs"][1].shape
                    shapes.heads = parsed["zs"][2].shape[:2]
                yield DaiExample(index, {r: parsed[r][0] for r in roles}, {r: parsed[r][1] for r in roles},
                                 {r: parsed[r][2] for r in roles})
            if in_batch >= self.batch_examples:
                in_batch = 0
                self._check()
        if len(set(counts.values())) > 1:
            text = ", ".join(f"{self.roles[r]}: {n}" for r, n in counts.items())
            self.log.add(str(self.task.path), None,
                         f"the settings have different numbers of examples ({text}); examples are aligned by "
                         "line index, so the files must have the same number of lines; the unmatched lines "
                         "were skipped")
        self._check()

    def _check(self) -> None:
        if self.strict and (batch := self.log.batch()):
            raise ImportProblems(batch, hint=_HINT)


def iter_dai_examples(task: DaiTaskDir, **options: Any) -> DaiTaskReader:
    """An iterable over the aligned examples of one task folder (see :class:`DaiTaskReader`)."""
    return DaiTaskReader(task, **options)


@dataclass(frozen=True, slots=True)
class DaiTaskData:
    """Every example of one task, in memory (for small logs and tests).

    Attributes
    ----------
    model, task : str
        Folder names.
    index : numpy.ndarray
        0-based line index of each kept example.
    correct : dict
        Role -> bool array ``(n,)``.
    hidden : dict
        Role -> ``(n, n_layers, hidden)``.
    attn : dict
        Role -> list of ``(n_layers, n_heads, n_positions)`` arrays (positions may differ by example).
    """

    model: str
    task: str
    index: np.ndarray
    correct: dict[str, np.ndarray]
    hidden: dict[str, np.ndarray]
    attn: dict[str, list[np.ndarray]]


@dataclass(frozen=True, slots=True)
class DaiImport:
    """What :func:`read_dai` read."""

    tasks: list[DaiTaskData]
    problems: list[Problem]
    n_examples_read: int
    n_examples_skipped: int
    notes: list[str] = field(default_factory=list)


def read_dai(path: str | Path, *, ft_setting: str = "ftzs", strict: bool = True) -> DaiImport:
    """Read every task of a Dai log into memory.

    Parameters
    ----------
    path : str or Path
        See :func:`find_dai_tasks`.
    ft_setting : {"ftzs", "ft"}, default "ftzs"
        The setting read as fine-tuning (see the module docstring).
    strict : bool, default True
        Raise :class:`ImportProblems` on the first batch of problems; else
        skip bad examples (in every setting) and record a Problem for each.

    Returns
    -------
    DaiImport

    Raises
    ------
    ImportProblems
        In strict mode.
    ValueError
        If no task folder is found under `path`.

    See Also
    --------
    iter_dai_examples : the streaming reader, one example at a time.
    """
    tasks = find_dai_tasks(path, ft_setting=ft_setting)
    if not tasks:
        raise ValueError(_not_found(path, ft_setting))
    log = ProblemLog()
    out = []
    n_read = n_skipped = 0
    for task in tasks:
        reader = DaiTaskReader(task, ft_setting=ft_setting, log=log, strict=strict)
        examples = list(reader)
        n_read += reader.n_read
        n_skipped += reader.n_skipped
        roles = ("zs", "ft", "icl")
        if not examples:
            continue
        out.append(DaiTaskData(
            task.model, task.task, np.array([e.index for e in examples]),
            {r: np.array([e.correct[r] for e in examples]) for r in roles},
            {r: np.stack([e.hidden[r] for e in examples]) for r in roles},
            {r: [e.attn[r] for e in examples] for r in roles},
        ))
    return DaiImport(out, log.problems(), n_read, n_skipped,
                     [f"fine-tuning (FT) read from the '{ft_setting}' setting"])


def _not_found(path: str | Path, ft_setting: str) -> str:
    return (f"{path}: no Dai et al. log found; looked for <model>/<task>/{{zs,{ft_setting},icl}}/{RECORD_FILE} "
            "under the folder (or under its ana_rlt/ folder)")
