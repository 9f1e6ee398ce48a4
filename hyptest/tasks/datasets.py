"""Loaders for the public classification datasets of the ICL-vs-GD literature.

The registry :data:`DATASET_TASKS` describes the six datasets of Dai et al.
(2023), *Why Can GPT Learn In-Context? Language Models Implicitly Perform
Gradient Descent as Meta-Optimizers* (SST-2, SST-5, MR, Subj, AGNews, CB), and
RTE, which Shen et al. (2024), *Do pretrained Transformers Learn In-Context by
Gradient Descent?*, add. For every dataset it records where the rows live on the
Hugging Face hub, which splits give the demonstration pool and the queries, the
columns, the label ids and names, and the prompt template with its label words.

Provenance of the prompts
-------------------------
The templates and label words of the six Dai et al. datasets follow the first
template (``temp_index=0``, the default the experiment scripts never change) of
each task class in ``understand_icl/struprompting/tasks/fewshot_task.py`` of
https://github.com/microsoft/LMOps (read at commit
``4f2a9deb5f08e459fd44c2e4792344d78ca89fc3``). The splits are those the same
classes load (``dataset_train`` -> demos, ``dataset_valid`` -> queries); Dai et
al. shuffle the query split with seed 1 and keep at most 2000 rows, which
``max_queries=2000`` approximates.

For RTE the template is the ``<premise> question: <hypothesis> True or False?
answer: <True|False>`` format of Brown et al. (2020, GPT-3) and Zhao et al.
(2021, *Calibrate Before Use*; ``load_rte`` in
https://github.com/tonyzhaozh/few-shot-learning ``data_utils.py``), the one
the ICL literature, Shen et al. included, uses for RTE; it is written on one
line, like Dai et al.'s templates. (The LMOps code also has an unused ``RTE``
class with a ``Passage: ... Yes or No? Answer:`` template; it is not the one
used here.)

Demonstrations are joined with ``"\\n"``: Dai et al. tokenise every
demonstration separately and end it with fairseq's end-of-line symbol
``</s>``, which in fairseq language-model data stands for a line break.

Data sources
------------
``source="local"`` (the default) reads files the user has downloaded, in the
dataset's own Hugging Face layout (its column names and label ids, or the
label names as strings); ``source="hub"`` reads them through the optional
``datasets`` package. hyptest never downloads anything unless asked to.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .task import Example, Task, TaskError, csv_error, jsonl_rows, read_text_file, sample_examples

__all__ = [
    "DATASET_TASKS",
    "DatasetInfo",
    "dataset_task_from_spec",
    "dataset_task_names",
    "load_dataset_task",
]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: File endings the local reader understands.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".tsv", ".parquet")

#: Other names the files of a split are often given (GLUE's ``dev.tsv``, SuperGLUE's ``val.jsonl``).
_SPLIT_FILE_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "dev", "val", "valid"),
    "test": ("test",),
}

_LMOPS = (
    "Dai et al. (2023), microsoft/LMOps understand_icl/struprompting/tasks/fewshot_task.py, "
    "class {cls}, template 0"
)


@dataclass(frozen=True)
class DatasetInfo:
    """How one public dataset becomes a :class:`~hyptest.tasks.Task`.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"sst2"``.
    hub_id : str
        Hugging Face hub repository of the data, e.g. ``"nyu-mll/glue"``.
    hub_config : str or None
        Configuration (subset) name on the hub, e.g. ``"sst2"``; None if the
        repository has a single one.
    demo_split, query_split : str
        Split that supplies the demonstration pool (and the fine-tuning
        examples), and split that supplies the held-out queries.
    text_columns : tuple of str
        Columns holding the input text(s), in the order they appear in
        ``template``; two columns for premise/hypothesis pairs.
    label_column : str
        Column holding the label (an integer id, or a label name as a string).
    label_names : dict[int, str]
        Label id -> label name. The names are the dataset's own class names on
        the hub and are the labels of the resulting task.
    label_words : dict[str, str]
        Label name -> the continuation the model scores (with its leading space).
    template : str
        Prompt for one input with a ``{column}`` placeholder for every text
        column; the label word follows it directly.
    instruction : str
        Text placed once before the first demonstration ("" for every
        registered dataset: where Dai et al. have an instruction, as for AGNews,
        it is part of every demonstration's template).
    demo_separator : str
        Text between consecutive demonstrations and before the query.
    label_aliases : dict[str, int]
        Extra strings accepted as labels in local files (lower-case), besides
        the label names, the label words and the ids written as strings.
    description : str
        One line on the data.
    hub_id_in_reference : str
        The name the reference code passes to ``datasets.load_dataset`` (older
        hub names, now redirected).
    template_source : str
        Where the template and label words come from.
    """

    name: str
    hub_id: str
    hub_config: str | None
    demo_split: str
    query_split: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: dict[int, str]
    label_words: dict[str, str]
    template: str
    instruction: str = ""
    demo_separator: str = "\n"
    label_aliases: dict[str, int] = field(default_factory=dict)
    description: str = ""
    hub_id_in_reference: str = ""
    template_source: str = ""

    def __post_init__(self) -> None:
        placeholders = _PLACEHOLDER.findall(self.template)
        if tuple(placeholders) != self.text_columns:
            raise TaskError(
                f"dataset {self.name!r}: template placeholders {placeholders} must be the text columns "
                f"{list(self.text_columns)}, each once and in that order"
            )
        if list(self.label_names.values()) != list(self.label_words):
            raise TaskError(
                f"dataset {self.name!r}: `label_words` must have one word per label name, in id order "
                f"{list(self.label_names.values())}"
            )
        if self.demo_split == self.query_split:
            raise TaskError(f"dataset {self.name!r}: demo and query splits must differ")
        self._label_lookup()  # raises on an ambiguous alias

    @property
    def labels(self) -> list[str]:
        """Label names in id order."""
        return [self.label_names[i] for i in sorted(self.label_names)]

    @property
    def is_pair(self) -> bool:
        """Whether the input is a pair of texts (premise and hypothesis)."""
        return len(self.text_columns) > 1

    @property
    def splits(self) -> tuple[str, str]:
        """``(demo_split, query_split)``."""
        return (self.demo_split, self.query_split)

    @property
    def input_template(self) -> str:
        """The task's ``input_template``: ``template`` with the text span replaced by ``{text}``.

        The span runs from the first column placeholder to the end of the last
        one, so a single-text dataset keeps the raw sentence as the example's
        text, and a pair dataset joins premise and hypothesis with the words
        the template puts between them.
        """
        prefix, _, suffix = _split_template(self.template)
        return prefix + "{text}" + suffix

    def render_text(self, values: Mapping[str, Any]) -> str:
        """The example text of one row: the template's text span with the columns filled in.

        Parameters
        ----------
        values : Mapping[str, Any]
            At least the ``text_columns`` of one row.

        Returns
        -------
        str
            ``input_template.replace("{text}", render_text(row))`` is the full prompt
            for the row, without its label word.
        """
        _, span, _ = _split_template(self.template)
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), span)

    def label_word(self, label_id: int) -> str:
        """The label word of a label id (id -> name -> word)."""
        return self.label_words[self.label_names[label_id]]

    def _label_lookup(self) -> dict[str, int]:
        lookup: dict[str, int] = {}

        def add(key: str, label_id: int) -> None:
            key = key.strip().lower()
            if lookup.get(key, label_id) != label_id:
                raise TaskError(f"dataset {self.name!r}: label string {key!r} would mean two labels")
            lookup[key] = label_id

        for label_id, name in self.label_names.items():
            add(str(label_id), label_id)
            add(name, label_id)
            add(self.label_words[name], label_id)
        for alias, label_id in self.label_aliases.items():
            add(alias, label_id)
        return lookup


def _split_template(template: str) -> tuple[str, str, str]:
    matches = list(_PLACEHOLDER.finditer(template))
    start, end = matches[0].start(), matches[-1].end()
    return template[:start], template[start:end], template[end:]


DATASET_TASKS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="sst2",
            hub_id="nyu-mll/glue",
            hub_config="sst2",
            demo_split="train",
            query_split="validation",
            text_columns=("sentence",),
            label_column="label",
            label_names={0: "negative", 1: "positive"},
            label_words={"negative": " Negative", "positive": " Positive"},
            template="Sentence: {sentence} Label:",
            description="SST-2 (GLUE): binary sentiment of movie-review sentences.",
            hub_id_in_reference="glue/sst2",
            template_source=_LMOPS.format(cls="SST2"),
        ),
        DatasetInfo(
            name="sst5",
            hub_id="SetFit/sst5",
            hub_config=None,
            demo_split="train",
            query_split="validation",
            text_columns=("text",),
            label_column="label",
            label_names={0: "very negative", 1: "negative", 2: "neutral", 3: "positive", 4: "very positive"},
            label_words={
                "very negative": " terrible",
                "negative": " bad",
                "neutral": " neutral",
                "positive": " good",
                "very positive": " great",
            },
            template="Sentence: {text} Label:",
            description="SST-5: five-way sentiment of movie-review sentences.",
            hub_id_in_reference="SetFit/sst5",
            template_source=_LMOPS.format(cls="SST5"),
        ),
        DatasetInfo(
            name="mr",
            hub_id="cornell-movie-review-data/rotten_tomatoes",
            hub_config=None,
            demo_split="train",
            query_split="validation",
            text_columns=("text",),
            label_column="label",
            label_names={0: "neg", 1: "pos"},
            label_words={"neg": " Negative", "pos": " Positive"},
            template="Review: {text} Sentiment:",
            label_aliases={"negative": 0, "positive": 1},
            description="MR (Rotten Tomatoes, Pang and Lee 2005): binary sentiment of movie-review snippets.",
            hub_id_in_reference="rotten_tomatoes",
            template_source=_LMOPS.format(cls="MR"),
        ),
        DatasetInfo(
            name="subj",
            hub_id="SetFit/subj",
            hub_config=None,
            demo_split="train",
            query_split="test",
            text_columns=("text",),
            label_column="label",
            label_names={0: "objective", 1: "subjective"},
            label_words={"objective": " objective", "subjective": " subjective"},
            template="Input: {text} Type:",
            description="Subj (Pang and Lee 2004): subjective vs objective movie sentences.",
            hub_id_in_reference="SetFit/subj",
            template_source=_LMOPS.format(cls="Subj"),
        ),
        DatasetInfo(
            name="agnews",
            hub_id="fancyzhx/ag_news",
            hub_config=None,
            demo_split="train",
            query_split="test",
            text_columns=("text",),
            label_column="label",
            label_names={0: "World", 1: "Sports", 2: "Business", 3: "Sci/Tech"},
            label_words={"World": " World", "Sports": " Sports", "Business": " Business", "Sci/Tech": " Technology"},
            template=(
                "Classify the news articles into the categories of World, Sports, Business, and "
                "Technology. Article: {text} Answer:"
            ),
            label_aliases={"sci_tech": 3, "science": 3},
            description="AG News: four-way topic of news articles (title and description).",
            hub_id_in_reference="ag_news",
            template_source=_LMOPS.format(cls="AGNews"),
        ),
        DatasetInfo(
            name="cb",
            hub_id="aps/super_glue",
            hub_config="cb",
            demo_split="train",
            query_split="validation",
            text_columns=("premise", "hypothesis"),
            label_column="label",
            label_names={0: "entailment", 1: "contradiction", 2: "neutral"},
            label_words={"entailment": " True", "contradiction": " False", "neutral": " Neither"},
            template="{premise} Question: {hypothesis}. True, False, or Neither? Answer:",
            description="CB (SuperGLUE CommitmentBank): three-way entailment of premise/hypothesis pairs.",
            hub_id_in_reference="super_glue/cb",
            template_source=_LMOPS.format(cls="CB"),
        ),
        DatasetInfo(
            name="rte",
            hub_id="nyu-mll/glue",
            hub_config="rte",
            demo_split="train",
            query_split="validation",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            label_names={0: "entailment", 1: "not_entailment"},
            label_words={"entailment": " True", "not_entailment": " False"},
            template="{sentence1} question: {sentence2} True or False? answer:",
            description="RTE (GLUE): binary entailment of premise/hypothesis pairs (used by Shen et al. 2024).",
            hub_id_in_reference="glue/rte",
            template_source=(
                "GPT-3 / Calibrate-Before-Use RTE format (Brown et al. 2020; Zhao et al. 2021, "
                "tonyzhaozh/few-shot-learning data_utils.py load_rte), as used for RTE in the ICL "
                "literature and by Shen et al. (2024); written on one line like Dai et al.'s templates"
            ),
        ),
    )
}


def dataset_task_names() -> list[str]:
    """Names of the registered public datasets, sorted."""
    return sorted(DATASET_TASKS)


# --------------------------------------------------------------------------- reading rows

_Row = tuple[str, dict[str, Any]]  # (location for error messages, row)


def _read_table(path: Path) -> Iterator[_Row]:
    """Yield ``(location, row)`` for every data row of one local file."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise TaskError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in (".csv", ".tsv"):
        yield from _read_delimited(path, tsv=suffix == ".tsv")
    else:
        yield from _read_json(path)


def _read_parquet(path: Path) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for bad files
        raise TaskError(f"{path}: cannot read Parquet ({error})") from None
    for index, row in enumerate(table.to_pylist()):
        yield f"{path}: row {index + 1}", row


def _read_delimited(path: Path, *, tsv: bool) -> Iterator[_Row]:
    # GLUE's TSV files are unquoted (quotes are part of the sentences); CSV files use standard quoting.
    options: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
    reader = csv.DictReader(io.StringIO(read_text_file(path), newline=""), **options)
    try:
        if reader.fieldnames is None:  # reads the header line
            return
        previous_end = reader.line_num
        for row in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if None in row:
                raise TaskError(f"{path}:{start}: more fields than the header has columns")
            yield f"{path}:{start}", dict(row)
    except csv.Error as error:
        raise csv_error(path, reader.line_num + 1, error) from None


def _read_json(path: Path) -> Iterator[_Row]:
    text = read_text_file(path)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise TaskError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
        except (RecursionError, ValueError) as error:
            raise TaskError(f"{path}: malformed JSON ({'nested too deeply' if isinstance(error, RecursionError) else error})") \
                from None
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise TaskError(f"{path}: item {index + 1}: expected a JSON object, got {type(row).__name__}")
            yield f"{path}: item {index + 1}", row
        return
    for line_no, row in jsonl_rows(path, text):
        yield f"{path}:{line_no}", row


def _split_files(info: DatasetInfo, path: str | os.PathLike[str] | Mapping[str, Any], split: str) -> list[Path]:
    """The local file(s) holding one split."""
    if isinstance(path, Mapping):
        if split not in path:
            raise TaskError(
                f"dataset {info.name!r}: the file mapping has no entry for split {split!r}; "
                f"it needs {list(info.splits)}, got {sorted(path)}"
            )
        file = Path(path[split])
        if not file.is_file():
            raise TaskError(f"dataset {info.name!r}: no such file {file} (split {split!r})")
        return [file]
    root = Path(path)
    if root.is_file():
        raise TaskError(
            f"dataset {info.name!r}: {root} is a single file; give a directory with one file per split "
            f"or a mapping {{{info.demo_split!r}: ..., {info.query_split!r}: ...}}"
        )
    if not root.is_dir():
        raise TaskError(f"dataset {info.name!r}: no such directory {root}")
    names = _SPLIT_FILE_ALIASES.get(split, (split,))
    folders = [root] + [root / sub for sub in (info.hub_config, "data") if sub and (root / sub).is_dir()]
    for folder in folders:
        exact, shards = [], []
        for file in sorted(folder.iterdir()):
            if not file.is_file() or file.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            stem = file.name[: -len(file.suffix)].lower()
            if stem in names:
                exact.append(file)
            elif any(stem.startswith(f"{name}-") for name in names):  # hub shards: train-00000-of-00002.parquet
                shards.append(file)
        if len(exact) > 1 or (exact and shards):
            found = ", ".join(f.name for f in exact + shards)
            raise TaskError(f"dataset {info.name!r}: several files for split {split!r} in {folder}: {found}")
        if exact:
            return exact
        if shards:
            return shards
    listing = ", ".join(sorted(f.name for f in root.iterdir())) or "nothing"
    raise TaskError(
        f"dataset {info.name!r}: no file for split {split!r} in {root} (looked for "
        f"{'|'.join(names)}{{{','.join(SUPPORTED_SUFFIXES)}}}); it holds {listing}"
    )


def _local_rows(info: DatasetInfo, path: str | os.PathLike[str] | Mapping[str, Any], split: str) -> Iterator[_Row]:
    for file in _split_files(info, path, split):
        yield from _read_table(file)


def _hub_rows(info: DatasetInfo, split: str, cache_dir: str | os.PathLike[str] | None) -> Iterator[_Row]:
    try:
        import datasets
    except ImportError:
        raise TaskError(
            f"dataset {info.name!r} with source='hub' needs the Hugging Face `datasets` package: "
            "pip install datasets (or download the files and pass `path`)"
        ) from None
    where = info.hub_id + (f"[{info.hub_config}]" if info.hub_config else "")
    try:
        rows = datasets.load_dataset(
            info.hub_id,
            info.hub_config,
            split=split,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except Exception as error:  # network, cache and hub errors come in many types
        offline = os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        hint = (
            " HF_DATASETS_OFFLINE is set, so only a cached copy can be used."
            if offline
            else " Check the network, or download the files and pass `path`."
        )
        raise TaskError(f"dataset {info.name!r}: cannot load {where} split {split!r}: {error}.{hint}") from error
    for index, row in enumerate(rows):
        yield f"{where} split {split!r} row {index}", dict(row)


# --------------------------------------------------------------------------- rows -> examples


def _parse_label(info: DatasetInfo, value: Any, where: str, lookup: Mapping[str, int]) -> int:
    valid = ", ".join(f"{i}={n!r}" for i, n in sorted(info.label_names.items()))
    label_id: int | None = None
    if isinstance(value, bool):
        label_id = None
    elif isinstance(value, (int, np.integer)):
        label_id = int(value)
    elif isinstance(value, float) and value.is_integer():
        label_id = int(value)
    elif isinstance(value, str):
        key = value.strip().lower()
        if re.fullmatch(r"-?\d+", key):
            label_id = int(key)
        else:
            label_id = lookup.get(key)
    if label_id == -1:
        raise TaskError(
            f"{where}: label -1 marks an unlabelled row (as in the GLUE/SuperGLUE test splits); "
            f"dataset {info.name!r} needs labelled splits {list(info.splits)}"
        )
    if label_id is None or label_id not in info.label_names:
        raise TaskError(f"{where}: unknown label {value!r} in column {info.label_column!r}; expected {valid}")
    return label_id


def _examples(info: DatasetInfo, rows: Iterator[_Row], split: str) -> list[Example]:
    lookup = info._label_lookup()
    needed = (*info.text_columns, info.label_column)
    examples: list[Example] = []
    for index, (where, row) in enumerate(rows):
        missing = [column for column in needed if column not in row]
        if missing:
            raise TaskError(
                f"{where}: no column(s) {', '.join(map(repr, missing))} (the row has {sorted(row)}); "
                f"dataset {info.name!r} reads text from {list(info.text_columns)} and the label from "
                f"{info.label_column!r}"
            )
        for column in info.text_columns:
            value = row[column]
            if value is None or not str(value).strip():
                raise TaskError(f"{where}: empty text in column {column!r}")
        label_id = _parse_label(info, row[info.label_column], where, lookup)
        examples.append(Example(id=f"{split}-{index}", text=info.render_text(row), label=info.label_names[label_id]))
    if not examples:
        raise TaskError(f"dataset {info.name!r}: split {split!r} has no rows")
    return examples


def _subsample(examples: list[Example], k: int | None, *, seed: int, stream: int) -> list[Example]:
    """Keep ``k`` examples, label-balanced where the pool allows, in their original order."""
    if k is None or k >= len(examples):
        return examples
    rng = np.random.default_rng([seed, stream])
    chosen = sample_examples(examples, k, rng=rng, balanced=True)
    position = {ex.id: i for i, ex in enumerate(examples)}
    return sorted(chosen, key=lambda ex: position[ex.id])


# --------------------------------------------------------------------------- public loaders


def load_dataset_task(
    name: str,
    *,
    path: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]] | None = None,
    source: Literal["local", "hub"] = "local",
    max_demos: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    task_name: str | None = None,
    template: str | None = None,
    label_words: Mapping[str, str] | None = None,
    instruction: str | None = None,
    demo_separator: str | None = None,
) -> Task:
    """Load a registered public dataset as a :class:`~hyptest.tasks.Task`.

    Parameters
    ----------
    name : str
        A key of :data:`DATASET_TASKS` (``sst2``, ``sst5``, ``mr``, ``subj``,
        ``agnews``, ``cb``, ``rte``).
    path : path or mapping, optional
        Local data (``source="local"``): a directory with one file per split,
        named after the split (``train.jsonl``, ``validation.parquet``;
        ``dev``/``val`` also stand for ``validation``; hub shards
        ``train-00000-of-00001.parquet`` are concatenated; the directory's
        ``<config>/`` or ``data/`` sub-folder is searched too), or a mapping
        split -> file. Files are JSONL (or a JSON array), CSV, TSV (unquoted,
        as GLUE ships it) or Parquet, with the dataset's own column names;
        labels are integer ids or label names (see :class:`DatasetInfo`).
    source : {"local", "hub"}
        ``"hub"`` reads the splits with ``datasets.load_dataset`` (which honours
        ``HF_DATASETS_OFFLINE`` and ``HF_DATASETS_CACHE``); it needs the
        optional ``datasets`` package and is only used when asked for.
    max_demos, max_queries : int, optional
        Keep at most this many demonstration-pool / query examples, drawn
        without replacement with ``seed``, label-balanced where the split
        allows (labels short of their share give it to the others), and kept in
        file order. None keeps the whole split.
    seed : int
        Seed of that subsampling; the same data and seed give the same examples.
    cache_dir : path, optional
        Cache folder passed to ``datasets.load_dataset`` (hub only).
    task_name : str, optional
        Name of the task in results; defaults to ``name``.
    template : str, optional
        Replaces the registered template; it uses the same ``{column}`` placeholders.
    label_words : Mapping[str, str], optional
        Replaces the registered label words; keys are the label names.
    instruction, demo_separator : str, optional
        Replace the registered values ("" and "\\n").

    Returns
    -------
    Task
        Demos from the demo split, queries from the query split, with ids
        ``"<split>-<row index>"`` (0-based index of the row within its split,
        counted before subsampling, so ids are stable).

    Raises
    ------
    TaskError
        For an unknown dataset, a missing file, a missing column, an empty
        text or an unknown label (naming the file and line), or a missing
        ``datasets`` package.
    """
    info = _dataset_info(name)
    info = _with_overrides(info, template=template, label_words=label_words)
    for label, limit in (("max_demos", max_demos), ("max_queries", max_queries)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise TaskError(f"dataset {name!r}: `{label}` must be a positive integer, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TaskError(f"dataset {name!r}: `seed` must be a non-negative integer, got {seed!r}")
    if source == "local":
        if path is None:
            raise TaskError(
                f"dataset {name!r}: give `path` (the downloaded files of {info.hub_id}"
                f"{' config ' + info.hub_config if info.hub_config else ''}, splits {list(info.splits)}), "
                "or source='hub' to read them with the `datasets` package"
            )
    elif source == "hub":
        if path is not None:
            raise TaskError(f"dataset {name!r}: give either `path` (local files) or source='hub', not both")
    else:
        raise TaskError(f"dataset {name!r}: `source` must be 'local' or 'hub', got {source!r}")

    def rows_of(split: str) -> Iterator[_Row]:
        if path is not None:
            return _local_rows(info, path, split)
        return _hub_rows(info, split, cache_dir)

    demos = _examples(info, rows_of(info.demo_split), info.demo_split)
    queries = _examples(info, rows_of(info.query_split), info.query_split)
    demos = _subsample(demos, max_demos, seed=seed, stream=0)
    queries = _subsample(queries, max_queries, seed=seed, stream=1)
    return Task(
        name=task_name or info.name,
        input_template=info.input_template,
        label_words=dict(info.label_words),
        demos=tuple(demos),
        queries=tuple(queries),
        demo_separator=info.demo_separator if demo_separator is None else demo_separator,
        instruction=info.instruction if instruction is None else instruction,
        description=f"{info.description} Prompt: {info.template_source}.",
    )


def _dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASET_TASKS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(DATASET_TASKS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TaskError(
            f"unknown dataset {name!r}.{hint} Registered datasets: {', '.join(dataset_task_names())}"
        ) from None


def _with_overrides(
    info: DatasetInfo, *, template: str | None, label_words: Mapping[str, str] | None
) -> DatasetInfo:
    if template is None and label_words is None:
        return info
    changes: dict[str, Any] = {}
    if template is not None:
        if len(info.text_columns) == 1 and _PLACEHOLDER.findall(template) == ["text"]:
            # a hyptest-style ``{text}`` template on a single-text dataset means its text column
            template = template.replace("{text}", "{" + info.text_columns[0] + "}")
        changes["template"] = template
    if label_words is not None:
        if set(label_words) != set(info.label_words):
            raise TaskError(
                f"dataset {info.name!r}: `label_words` must have exactly the labels {info.labels}, "
                f"got {sorted(label_words)}"
            )
        changes["label_words"] = {label: label_words[label] for label in info.labels}
    import dataclasses

    return dataclasses.replace(info, **changes)


def dataset_task_from_spec(spec: Any, *, base_dir: Path | None = None) -> Task:
    """Build a task from a study ``TaskSpec`` that names a registered dataset.

    Reads ``spec.dataset`` (the registry key), ``spec.name``, and, when present,
    ``spec.path`` (a directory or a split -> file mapping; relative paths that
    do not exist are taken relative to ``base_dir``, the study file's folder),
    ``spec.source``, ``spec.max_demos``, ``spec.max_queries``,
    ``spec.data_seed``, ``spec.cache_dir``, ``spec.input_template`` (here a
    template with ``{column}`` placeholders), ``spec.label_words``, and
    ``spec.instruction`` / ``spec.demo_separator`` when they were set
    explicitly (pydantic's ``model_fields_set``).

    Parameters
    ----------
    spec : Any
        A ``TaskSpec``-like object.
    base_dir : Path, optional
        Folder against which relative paths are resolved.

    Returns
    -------
    Task
    """
    explicit = set(getattr(spec, "model_fields_set", ()) or ())

    def resolve(value: Any) -> Any:
        if value is None:
            return None
        candidate = Path(value)
        if not candidate.is_absolute() and base_dir is not None and not candidate.exists():
            candidate = Path(base_dir) / candidate
        return candidate

    raw_path = getattr(spec, "path", None)
    path = (
        {split: resolve(file) for split, file in raw_path.items()}
        if isinstance(raw_path, Mapping)
        else resolve(raw_path)
    )
    overrides = {
        key: getattr(spec, key) for key in ("instruction", "demo_separator") if key in explicit and hasattr(spec, key)
    }
    return load_dataset_task(
        spec.dataset,
        path=path,
        source=getattr(spec, "source", None) or "local",
        max_demos=getattr(spec, "max_demos", None),
        max_queries=getattr(spec, "max_queries", None),
        seed=getattr(spec, "data_seed", 0) or 0,
        cache_dir=getattr(spec, "cache_dir", None),
        task_name=getattr(spec, "name", None),
        template=getattr(spec, "input_template", None),
        label_words=getattr(spec, "label_words", None),
        **overrides,
    )
