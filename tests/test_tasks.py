"""Built-in tasks and the user-file loader."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from hyptest.tasks import TaskError, builtin_task_names, load_builtin_task, load_task_file, sample_examples


@pytest.mark.parametrize(("name", "n_labels"), [("sentiment", 2), ("topic", 4)])
def test_builtin_task_sizes(name, n_labels):
    task = load_builtin_task(name)
    assert len(task.labels) == n_labels
    assert len(task.demos) >= 32 and len(task.queries) >= 100
    counts = collections.Counter(e.label for e in task.demos)
    assert set(counts) == set(task.labels) and len(set(counts.values())) == 1  # balanced pool
    texts = [e.text for e in (*task.demos, *task.queries)]
    assert len(set(texts)) == len(texts)


def test_builtin_names_and_did_you_mean():
    assert {"sentiment", "topic"} <= set(builtin_task_names())
    with pytest.raises(TaskError, match="Did you mean 'sentiment'"):
        load_builtin_task("sentimnt")


def test_format_demo(sentiment):
    ex = sentiment.demos[0]
    assert sentiment.format_demo(ex) == f"Review: {ex.text}\nSentiment:" + sentiment.label_words[ex.label]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_user_jsonl_and_csv(tmp_path):
    rows = [
        {"id": "a", "text": "great", "label": "pos", "split": "demo"},
        {"id": "b", "text": "awful", "label": "neg", "split": "demo"},
        {"text": "fine", "label": "pos", "split": "query"},
    ]
    _write_jsonl(tmp_path / "t.jsonl", rows)
    task = load_task_file(tmp_path / "t.jsonl", name="t", input_template="{text} ->",
                          label_words={"pos": " yes", "neg": " no"})
    assert [e.id for e in task.demos] == ["a", "b"]
    assert task.queries[0].id == "query-3" and task.queries[0].label == "pos"
    (tmp_path / "t.csv").write_text("id,text,label,split\na,great,pos,demo\nb,awful,neg,demo\nc,fine,pos,query\n")
    task2 = load_task_file(tmp_path / "t.csv", name="t", input_template="{text} ->",
                           label_words={"pos": " yes", "neg": " no"})
    assert [e.text for e in task2.demos] == ["great", "awful"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"text": "x", "label": "pos", "split": "demo"}\n{not json}\n', "t.jsonl:2: malformed JSON"),
        ('{"text": "x", "label": "pos"}\n', "t.jsonl:1: missing field(s) split"),
        ('{"text": "x", "label": "pos", "split": "train"}\n', "`split` must be 'demo' or 'query'"),
        ('{"text": "x", "label": "maybe", "split": "demo"}\n{"text": "y", "label": "pos", "split": "query"}\n',
         "has label 'maybe'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, content, fragment):
    (tmp_path / "t.jsonl").write_text(content)
    with pytest.raises(TaskError) as info:
        load_task_file(tmp_path / "t.jsonl", name="t", input_template="{text}",
                       label_words={"pos": " yes", "neg": " no"})
    assert fragment in str(info.value)


def test_balanced_sampling(sentiment):
    rng = np.random.default_rng(0)
    for k in (2, 4, 6):
        chosen = sample_examples(sentiment.demos, k, rng=rng, balanced=True)
        counts = collections.Counter(e.label for e in chosen)
        assert len(chosen) == k == len({e.id for e in chosen})
        assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 2
