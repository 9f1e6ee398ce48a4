"""Task = demo pool + held-out queries + template + label words."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml

from .._util import stable_hash

__all__ = [
    "Example",
    "Task",
    "TaskError",
    "builtin_task_names",
    "load_builtin_task",
    "load_task_file",
]


class TaskError(ValueError):
    """A task definition or data file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text."""

    id: str
    text: str
    label: str


@dataclass(frozen=True)
class Task:
    """A classification task for ICL and fine-tuning.

    Attributes
    ----------
    name : str
        Task name used in results.
    input_template : str
        Format string with ``{text}``; the label word follows it directly.
    label_words : dict[str, str]
        Label -> continuation string (usually with a leading space).
    demos, queries : tuple[Example, ...]
        The demonstration pool and the held-out queries.
    demo_separator : str
        Text between consecutive demonstrations and before the query.
    instruction : str
        Optional text placed before the first demonstration.
    """

    name: str
    input_template: str
    label_words: dict[str, str]
    demos: tuple[Example, ...]
    queries: tuple[Example, ...]
    demo_separator: str = "\n\n"
    instruction: str = ""
    description: str = ""
    _by_id: dict[str, Example] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {ex.id: ex for ex in (*self.demos, *self.queries)})
        _check_task(self)

    @property
    def labels(self) -> list[str]:
        """The labels, in the order of ``label_words``."""
        return list(self.label_words)

    def example(self, example_id: str) -> Example:
        """Return the demo or query with this id."""
        return self._by_id[example_id]

    def format_input(self, text: str) -> str:
        """Format one input (without its label)."""
        return self.input_template.replace("{text}", text)

    def format_demo(self, example: Example) -> str:
        """Format one demonstration: its input followed by its label word."""
        return self.format_input(example.text) + self.label_words[example.label]

    def content_hash(self) -> str:
        """Hash of everything that defines the task's prompts and data."""
        return stable_hash(
            {
                "input_template": self.input_template,
                "label_words": self.label_words,
                "demo_separator": self.demo_separator,
                "instruction": self.instruction,
                "demos": [(e.id, e.text, e.label) for e in self.demos],
                "queries": [(e.id, e.text, e.label) for e in self.queries],
            }
        )


def _check_task(task: Task) -> None:
    if "{text}" not in task.input_template:
        raise TaskError(f"task {task.name!r}: `input_template` must contain '{{text}}'")
    if len(task.label_words) < 2:
        raise TaskError(f"task {task.name!r}: `label_words` needs at least two labels")
    words = list(task.label_words.values())
    if any(not w for w in words) or len(set(words)) != len(words):
        raise TaskError(f"task {task.name!r}: label words must be non-empty and distinct, got {words}")
    for split, examples in (("demo", task.demos), ("query", task.queries)):
        if not examples:
            raise TaskError(f"task {task.name!r}: no examples with split {split!r}")
        for ex in examples:
            if ex.label not in task.label_words:
                raise TaskError(
                    f"task {task.name!r}: example {ex.id!r} has label {ex.label!r}, "
                    f"not one of {sorted(task.label_words)}"
                )
    ids = [e.id for e in (*task.demos, *task.queries)]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise TaskError(f"task {task.name!r}: duplicate example ids {dupes[:5]}")


def read_text_file(path: Path) -> str:
    """A data file's text as UTF-8; invalid bytes are a :class:`TaskError` naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise TaskError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise TaskError(f"{path}:{line}: not valid UTF-8 (byte {raw[error.start]:#04x}); save the file as UTF-8") \
            from None


def csv_error(path: Path, line: int, error: csv.Error) -> TaskError:
    """A CSV parsing error as a :class:`TaskError` naming the line (e.g. a field over the 128 KiB limit)."""
    message = str(error)
    if "field larger than field limit" in message:
        message = (f"a field is longer than {csv.field_size_limit():,} characters (an unclosed quote, or a text far "
                   "longer than a demonstration can be)")
    return TaskError(f"{path}:{line}: malformed CSV ({message})")


def json_row(path: Path, line_no: int, line: str) -> Any:
    """One JSON value, with malformed, too deeply nested or oversized values as a :class:`TaskError`."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise TaskError(f"{path}:{line_no}: malformed JSON ({error.msg})") from None
    except RecursionError:
        raise TaskError(f"{path}:{line_no}: malformed JSON (nested too deeply)") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise TaskError(f"{path}:{line_no}: malformed JSON ({error})") from None


def jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines text read from ``path``.

    Lines end at ``\n`` only, as JSON Lines says (a U+2028 inside a string is
    text, not a line break); a trailing ``\r`` is whitespace to JSON.

    Parameters
    ----------
    path : Path
        The file the text came from, named in the errors.
    text : str
        Its decoded text (:func:`read_text_file`).

    Yields
    ------
    tuple of (int, dict)
        The 1-based line number and the JSON object on it.

    Raises
    ------
    TaskError
        ``path:line: ...`` for malformed JSON or a value that is not an object.
    """
    for line_no, line in enumerate(io.StringIO(text, newline="\n"), start=1):
        if not line.strip():
            continue
        row = json_row(path, line_no, line)
        if not isinstance(row, dict):
            raise TaskError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        yield line_no, row


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Read (line number, row) pairs from a JSONL or CSV file."""
    rows: list[tuple[int, dict[str, Any]]] = []
    text = read_text_file(path)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                rows.append((reader.line_num, dict(row)))
        except csv.Error as error:
            raise csv_error(path, reader.line_num + 1, error) from None
        return rows
    return list(jsonl_rows(path, text))


def _examples_from_rows(
    path: Path, rows: Iterable[tuple[int, dict[str, Any]]]
) -> tuple[list[Example], list[Example]]:
    demos: list[Example] = []
    queries: list[Example] = []
    for line_no, row in rows:
        missing = [k for k in ("text", "label", "split") if row.get(k) in (None, "")]
        if missing:
            raise TaskError(f"{path}:{line_no}: missing field(s) {', '.join(missing)}")
        split = str(row["split"]).strip().lower()
        if split not in {"demo", "query"}:
            raise TaskError(f"{path}:{line_no}: `split` must be 'demo' or 'query', got {row['split']!r}")
        example_id = str(row.get("id") or f"{split}-{line_no}")
        example = Example(id=example_id, text=str(row["text"]), label=str(row["label"]))
        (demos if split == "demo" else queries).append(example)
    return demos, queries


def load_task_file(
    path: str | Path,
    *,
    name: str,
    input_template: str,
    label_words: dict[str, str],
    demo_separator: str = "\n\n",
    instruction: str = "",
) -> Task:
    """Load a user task from a JSONL or CSV file.

    Each row needs ``text``, ``label`` and ``split`` (``demo`` or ``query``) and
    may have an ``id``.

    Raises
    ------
    TaskError
        With the file name and line number of the first bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task {name!r}: no such data file {path}")
    demos, queries = _examples_from_rows(path, _read_rows(path))
    return Task(
        name=name,
        input_template=input_template,
        label_words=dict(label_words),
        demos=tuple(demos),
        queries=tuple(queries),
        demo_separator=demo_separator,
        instruction=instruction,
    )


def _builtin_root() -> Path:
    return Path(str(resources.files("hyptest.tasks").joinpath("data")))


def builtin_task_names() -> list[str]:
    """Names of the tasks shipped with hyptest."""
    root = _builtin_root()
    return sorted(p.name for p in root.iterdir() if (p / "task.yaml").is_file())


def load_builtin_task(name: str) -> Task:
    """Load a built-in task by name.

    Raises
    ------
    TaskError
        For an unknown name, listing the available ones.
    """
    names = builtin_task_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TaskError(
            f"unknown task {name!r}.{hint} Built-in tasks: {', '.join(names)}; "
            "or give `path`, `input_template` and `label_words` for your own file."
        )
    folder = _builtin_root() / name
    spec = yaml.safe_load((folder / "task.yaml").read_text(encoding="utf-8"))
    task = load_task_file(
        folder / "data.jsonl",
        name=name,
        input_template=spec["input_template"],
        label_words=spec["label_words"],
        demo_separator=spec.get("demo_separator", "\n\n"),
        instruction=spec.get("instruction", ""),
    )
    return Task(**{**_task_fields(task), "description": spec.get("description", "")})


def _task_fields(task: Task) -> dict[str, Any]:
    return {
        "name": task.name,
        "input_template": task.input_template,
        "label_words": task.label_words,
        "demos": task.demos,
        "queries": task.queries,
        "demo_separator": task.demo_separator,
        "instruction": task.instruction,
        "description": task.description,
    }


def sample_examples(examples: Sequence[Example], k: int, *, rng: Any, balanced: bool) -> list[Example]:
    """Draw ``k`` examples without replacement; label-stratified when ``balanced``."""
    import numpy as np

    if not balanced:
        idx = rng.choice(len(examples), size=k, replace=False)
        return [examples[i] for i in idx]
    by_label: dict[str, list[Example]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    labels = sorted(by_label)
    shuffled = {lab: [by_label[lab][i] for i in rng.permutation(len(by_label[lab]))] for lab in labels}
    # round-robin over labels in a random label order, so N < n_labels stays fair
    label_order = [labels[i] for i in rng.permutation(len(labels))]
    chosen: list[Example] = []
    depth = 0
    while len(chosen) < k:
        progressed = False
        for lab in label_order:
            if depth < len(shuffled[lab]) and len(chosen) < k:
                chosen.append(shuffled[lab][depth])
                progressed = True
        if not progressed:
            raise TaskError(f"cannot draw {k} examples from a pool of {len(examples)}")
        depth += 1
    return [chosen[i] for i in np.asarray(rng.permutation(len(chosen)))]
