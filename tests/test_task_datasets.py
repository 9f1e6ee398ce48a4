"""Public-dataset task loaders (``hyptest.tasks.datasets``) on tiny fixture files."""

from __future__ import annotations

import collections
import json
import sys
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

from hyptest.tasks import (
    DATASET_TASKS,
    TaskError,
    dataset_task_from_spec,
    dataset_task_names,
    load_dataset_task,
)

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"

# rows per split in the fixture files: name -> (demo rows, query rows)
FIXTURE_SIZES = {
    "sst2": (6, 4),
    "sst5": (7, 5),
    "mr": (4, 3),
    "subj": (4, 3),
    "agnews": (8, 4),
    "cb": (6, 3),
    "rte": (4, 3),
}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_covers_dai_datasets_and_rte():
    assert dataset_task_names() == sorted(["sst2", "sst5", "mr", "subj", "agnews", "cb", "rte"])
    assert set(FIXTURE_SIZES) == set(DATASET_TASKS)
    for info in DATASET_TASKS.values():
        assert info.template_source and info.hub_id and info.description
        assert "{text}" in info.input_template
        assert info.is_pair == (info.name in {"cb", "rte"})


@pytest.mark.parametrize("name", sorted(FIXTURE_SIZES))
def test_every_dataset_loads_from_its_fixture(name):
    info = DATASET_TASKS[name]
    task = load_dataset_task(name, path=FIXTURES / name)
    n_demos, n_queries = FIXTURE_SIZES[name]
    assert task.name == name
    assert [e.id for e in task.demos] == [f"{info.demo_split}-{i}" for i in range(n_demos)]
    assert [e.id for e in task.queries] == [f"{info.query_split}-{i}" for i in range(n_queries)]
    assert task.labels == info.labels
    assert {e.label for e in (*task.demos, *task.queries)} <= set(info.labels)
    assert task.input_template == info.input_template
    assert task.demo_separator == "\n" and task.instruction == ""
    assert info.template_source in task.description
    # same files, same task
    assert load_dataset_task(name, path=FIXTURES / name).content_hash() == task.content_hash()


@pytest.mark.parametrize(
    ("name", "example_id", "expected"),
    [
        ("sst2", "train-0",
         "Sentence: a warm , funny and quietly moving film about two sisters  Label: Positive"),
        ("sst5", "train-0", "Sentence: an unwatchable mess from start to finish . Label: terrible"),
        ("mr", "train-1", "Review: the script is lazy, the direction lazier . Sentiment: Negative"),
        ("subj", "train-1", "Input: the film is a dazzling , heartfelt delight . Type: subjective"),
        ("agnews", "train-3",
         "Classify the news articles into the categories of World, Sports, Business, and Technology. "
         "Article: New probe reaches distant comet. Engineers say the spacecraft is sending back its "
         "first images. Answer: Technology"),
        ("cb", "train-2",
         "He mentioned that his brother might visit in the spring. Question: his brother will visit in "
         "the spring. True, False, or Neither? Answer: Neither"),
        ("rte", "train-1",
         "The mayor announced on Monday that the bridge will close for repairs. question: The bridge was "
         "closed permanently. True or False? answer: False"),
    ],
)
def test_formatted_demo_matches_hand_written_prompt(name, example_id, expected):
    task = load_dataset_task(name, path=FIXTURES / name)
    assert task.format_demo(task.example(example_id)) == expected


def test_pair_query_prompt_joins_premise_and_hypothesis():
    task = load_dataset_task("cb", path=FIXTURES / "cb")
    query = task.example("validation-1")
    assert query.text == "I don't believe the meeting was ever rescheduled. Question: the meeting was rescheduled"
    assert task.format_input(query.text) == (
        "I don't believe the meeting was ever rescheduled. Question: the meeting was rescheduled. "
        "True, False, or Neither? Answer:"
    )
    assert query.label == "contradiction"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sst2", {0: ("negative", " Negative"), 1: ("positive", " Positive")}),
        ("sst5", {0: ("very negative", " terrible"), 1: ("negative", " bad"), 2: ("neutral", " neutral"),
                  3: ("positive", " good"), 4: ("very positive", " great")}),
        ("mr", {0: ("neg", " Negative"), 1: ("pos", " Positive")}),
        ("subj", {0: ("objective", " objective"), 1: ("subjective", " subjective")}),
        ("agnews", {0: ("World", " World"), 1: ("Sports", " Sports"), 2: ("Business", " Business"),
                    3: ("Sci/Tech", " Technology")}),
        ("cb", {0: ("entailment", " True"), 1: ("contradiction", " False"), 2: ("neutral", " Neither")}),
        ("rte", {0: ("entailment", " True"), 1: ("not_entailment", " False")}),
    ],
)
def test_label_mapping_id_name_word(name, expected):
    info = DATASET_TASKS[name]
    assert {i: (info.label_names[i], info.label_word(i)) for i in info.label_names} == expected
    task = load_dataset_task(name, path=FIXTURES / name)
    assert task.label_words == {label: word for label, word in expected.values()}


def test_integer_and_string_labels_agree(tmp_path):
    """RTE's GLUE TSV has label names; the hub layout has ids: same task either way."""
    from_names = load_dataset_task("rte", path=FIXTURES / "rte")
    for split, examples in (("train", from_names.demos), ("validation", from_names.queries)):
        rows = []
        for ex in examples:
            premise, hypothesis = ex.text.split(" question: ")
            label_id = {"entailment": 0, "not_entailment": 1}[ex.label]
            rows.append({"sentence1": premise, "sentence2": hypothesis, "label": label_id, "idx": 0})
        _write_jsonl(tmp_path / f"{split}.jsonl", rows)
    from_ids = load_dataset_task("rte", path=tmp_path)
    assert from_ids.content_hash() == from_names.content_hash()


def test_string_labels_accept_names_words_aliases_and_digit_strings(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [
        {"text": "a", "label": "neg"}, {"text": "b", "label": " Positive "}, {"text": "c", "label": "negative"},
        {"text": "d", "label": "1"},
    ])
    _write_jsonl(tmp_path / "validation.jsonl", [{"text": "e", "label": 0}])
    task = load_dataset_task("mr", path=tmp_path)
    assert [e.label for e in task.demos] == ["neg", "pos", "neg", "pos"]


def _pool(tmp_path: Path, counts: dict[int, int]) -> Path:
    """A CB-layout folder whose train split has ``counts[label]`` rows per label id."""
    rows = [  # labels interleaved: 0, 1, 2, 0, 1, 2, ...
        {"premise": f"premise {label}-{i}", "hypothesis": f"hyp {label}-{i}", "label": label}
        for i in range(max(counts.values()))
        for label, n in counts.items()
        if i < n
    ]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    _write_jsonl(tmp_path / "validation.jsonl", rows[:12])
    return tmp_path


def test_subsampling_is_deterministic_balanced_and_keeps_ids(tmp_path):
    folder = _pool(tmp_path, {0: 12, 1: 12, 2: 12})
    full = load_dataset_task("cb", path=folder)
    a = load_dataset_task("cb", path=folder, max_demos=9, max_queries=6, seed=3)
    b = load_dataset_task("cb", path=folder, max_demos=9, max_queries=6, seed=3)
    c = load_dataset_task("cb", path=folder, max_demos=9, max_queries=6, seed=4)
    assert a.content_hash() == b.content_hash()
    assert [e.id for e in a.demos] != [e.id for e in c.demos]
    assert len(a.demos) == 9 and len(a.queries) == 6
    assert collections.Counter(e.label for e in a.demos) == {"entailment": 3, "contradiction": 3, "neutral": 3}
    assert len({e.label for e in a.queries}) == 3
    # ids and texts are those of the full load, in file order
    for ex in (*a.demos, *a.queries):
        assert full.example(ex.id) == ex
    order = [int(e.id.split("-")[1]) for e in a.demos]
    assert order == sorted(order)


def test_subsampling_gives_a_short_label_all_its_rows(tmp_path):
    folder = _pool(tmp_path, {0: 12, 1: 12, 2: 2})
    task = load_dataset_task("cb", path=folder, max_demos=9, seed=0)
    counts = collections.Counter(e.label for e in task.demos)
    assert counts["neutral"] == 2
    assert sorted([counts["entailment"], counts["contradiction"]]) == [3, 4]


def test_subsampling_larger_than_split_keeps_everything():
    task = load_dataset_task("sst5", path=FIXTURES / "sst5", max_demos=1000, max_queries=1000)
    assert len(task.demos) == 7 and len(task.queries) == 5


def test_parquet_hub_shards_and_split_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "glue" / "sst2"  # the hub's <config>/ sub-folder
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"sentence": ["good ", "bad "], "label": [1, 0], "idx": [0, 1]}),
                   folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"sentence": ["fine ", "awful "], "label": [1, 0], "idx": [2, 3]}),
                   folder / "train-00001-of-00002.parquet")
    pq.write_table(pa.table({"sentence": ["great ", "dull "], "label": [1, 0], "idx": [0, 1]}),
                   folder / "validation-00000-of-00001.parquet")
    task = load_dataset_task("sst2", path=tmp_path / "glue")
    assert [(e.id, e.text, e.label) for e in task.demos] == [
        ("train-0", "good ", "positive"), ("train-1", "bad ", "negative"),
        ("train-2", "fine ", "positive"), ("train-3", "awful ", "negative"),
    ]
    (tmp_path / "q.csv").write_text('sentence,label\n"so-so, but fun",1\nmeh,0\n', encoding="utf-8")
    mapped = load_dataset_task(
        "sst2", path={"train": folder / "train-00000-of-00002.parquet", "validation": tmp_path / "q.csv"}
    )
    assert [e.text for e in mapped.queries] == ["so-so, but fun", "meh"]


def test_overrides_template_words_separator_and_name():
    task = load_dataset_task(
        "sst2", path=FIXTURES / "sst2", template="Review: {text}\nSentiment:",
        label_words={"negative": " bad", "positive": " good"}, demo_separator="\n\n", task_name="sst2_alt",
    )
    assert task.name == "sst2_alt" and task.demo_separator == "\n\n"
    assert task.format_demo(task.example("train-1")) == (
        "Review: the plot limps along and the jokes never land \nSentiment: bad"
    )
    with pytest.raises(TaskError, match="placeholders"):
        load_dataset_task("cb", path=FIXTURES / "cb", template="{text} ?")
    with pytest.raises(TaskError, match="exactly the labels"):
        load_dataset_task("sst2", path=FIXTURES / "sst2", label_words={"neg": " no", "pos": " yes"})


# ---------------------------------------------------------------- errors


def test_missing_files_and_directories(tmp_path):
    with pytest.raises(TaskError, match="no such directory"):
        load_dataset_task("sst2", path=tmp_path / "nowhere")
    _write_jsonl(tmp_path / "train.jsonl", [{"sentence": "x", "label": 0}])
    with pytest.raises(TaskError, match=r"no file for split 'validation'.*validation\|dev\|val") as info:
        load_dataset_task("sst2", path=tmp_path)
    assert "train.jsonl" in str(info.value)  # lists what is there
    with pytest.raises(TaskError, match="no such file"):
        load_dataset_task("sst2", path={"train": tmp_path / "train.jsonl", "validation": tmp_path / "dev.jsonl"})
    with pytest.raises(TaskError, match="no entry for split 'validation'"):
        load_dataset_task("sst2", path={"train": tmp_path / "train.jsonl"})
    (tmp_path / "validation.csv").write_text("sentence,label\nx,0\n")
    (tmp_path / "dev.jsonl").write_text('{"sentence": "x", "label": 0}\n')
    with pytest.raises(TaskError, match="several files for split 'validation'"):
        load_dataset_task("sst2", path=tmp_path)


def test_bad_column_names_file_and_line(tmp_path):
    train = _write_jsonl(tmp_path / "train.jsonl", [{"sentence": "x", "label": 0}, {"text": "y", "label": 1}])
    _write_jsonl(tmp_path / "validation.jsonl", [{"sentence": "z", "label": 0}])
    with pytest.raises(TaskError) as info:
        load_dataset_task("sst2", path=tmp_path)
    assert f"{train}:2: no column(s) 'sentence'" in str(info.value)
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "train.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(TaskError, match=r"train\.tsv:2: no column\(s\) 'sentence'"):
        load_dataset_task("sst2", path=tmp_path)


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        (7, "unknown label 7 in column 'label'; expected 0='negative', 1='positive'"),
        ("meh", "unknown label 'meh'"),
        (-1, "label -1 marks an unlabelled row"),
        (True, "unknown label True"),
    ],
)
def test_unknown_label_names_file_and_line(tmp_path, label, fragment):
    rows = [{"sentence": "a", "label": 0}, {"sentence": "b", "label": 1}, {"sentence": "c", "label": label}]
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    _write_jsonl(tmp_path / "validation.jsonl", [{"sentence": "z", "label": 0}])
    with pytest.raises(TaskError) as info:
        load_dataset_task("sst2", path=tmp_path)
    assert str(info.value).startswith(f"{train}:3: ") and fragment in str(info.value)


def test_empty_text_and_csv_line_numbers(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"two\nlines",1\n"  ",0\n', encoding="utf-8")
    (tmp_path / "validation.csv").write_text("text,label\nok,0\n", encoding="utf-8")
    with pytest.raises(TaskError, match=r"train\.csv:4: empty text in column 'text'"):
        load_dataset_task("mr", path=tmp_path)


def test_argument_errors(tmp_path):
    with pytest.raises(TaskError, match="Did you mean 'sst2'"):
        load_dataset_task("sst-2", path=tmp_path)
    with pytest.raises(TaskError, match="give `path`.*source='hub'"):
        load_dataset_task("sst2")
    with pytest.raises(TaskError, match="not both"):
        load_dataset_task("sst2", path=tmp_path, source="hub")
    with pytest.raises(TaskError, match="`max_demos` must be a positive integer"):
        load_dataset_task("sst2", path=FIXTURES / "sst2", max_demos=0)
    with pytest.raises(TaskError, match="`source` must be 'local' or 'hub'"):
        load_dataset_task("sst2", path=tmp_path, source="web")


# ---------------------------------------------------------------- the hub path, with a fake `datasets`


@pytest.fixture
def fake_datasets(monkeypatch):
    calls: list[tuple] = []
    tables = {
        ("aps/super_glue", "cb", "train"): [
            {"premise": "P0", "hypothesis": "H0", "idx": 0, "label": 0},
            {"premise": "P1", "hypothesis": "H1", "idx": 1, "label": 1},
            {"premise": "P2", "hypothesis": "H2", "idx": 2, "label": 2},
        ],
        ("aps/super_glue", "cb", "validation"): [{"premise": "Q0", "hypothesis": "G0", "idx": 0, "label": 2}],
    }

    def load_dataset(path, name=None, *, split=None, cache_dir=None, **kwargs):
        calls.append((path, name, split, cache_dir))
        if (path, name, split) not in tables:
            raise ConnectionError("Couldn't reach the hub")
        return list(tables[(path, name, split)])

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_source_uses_datasets_load_dataset(fake_datasets, tmp_path):
    task = load_dataset_task("cb", source="hub", cache_dir=tmp_path)
    assert fake_datasets == [("aps/super_glue", "cb", "train", str(tmp_path)),
                             ("aps/super_glue", "cb", "validation", str(tmp_path))]
    assert [(e.id, e.text, e.label) for e in task.demos] == [
        ("train-0", "P0 Question: H0", "entailment"),
        ("train-1", "P1 Question: H1", "contradiction"),
        ("train-2", "P2 Question: H2", "neutral"),
    ]
    assert task.format_demo(task.queries[0]) == "Q0 Question: G0. True, False, or Neither? Answer: Neither"


def test_hub_errors_explain_offline_mode(fake_datasets, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TaskError, match=r"cannot load nyu-mll/glue\[rte\] split 'train'.*HF_DATASETS_OFFLINE"):
        load_dataset_task("rte", source="hub")


def test_hub_without_datasets_package_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(TaskError, match="pip install datasets"):
        load_dataset_task("sst2", source="hub")


# ---------------------------------------------------------------- study wiring


class _SpecLike(BaseModel):
    """What a study ``TaskSpec`` with dataset fields would look like."""

    name: str
    dataset: str | None = None
    path: str | dict[str, str] | None = None
    source: str = "local"
    max_demos: int | None = None
    max_queries: int | None = None
    data_seed: int = 0
    input_template: str | None = None
    label_words: dict[str, str] | None = None
    demo_separator: str = "\n\n"
    instruction: str = ""


def test_dataset_task_from_spec_resolves_paths_against_the_study_folder():
    spec = _SpecLike(name="sst2_small", dataset="sst2", path="datasets/sst2", max_queries=2)
    task = dataset_task_from_spec(spec, base_dir=FIXTURES.parent)
    assert task.name == "sst2_small" and len(task.queries) == 2 and len(task.demos) == 6
    assert task.demo_separator == "\n"  # the default of the spec does not override the registry
    spec = _SpecLike(name="c", dataset="cb", demo_separator="\n\n",
                     path={"train": "datasets/cb/train.jsonl", "validation": "datasets/cb/val.jsonl"})
    task = dataset_task_from_spec(spec, base_dir=FIXTURES.parent)
    assert task.demo_separator == "\n\n" and len(task.queries) == 3
