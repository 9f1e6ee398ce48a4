"""The long-format importer: columns, mapping, derived fields, problems with file:line, fuzzing."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyptest.importers import (
    ImportProblems,
    detect_format,
    load_mapping,
    read_long,
    unit_key,
)
from hyptest.store import RECORD_COLUMNS

HEADER = ["model", "task", "method", "n_demos", "demo_set", "order_id", "order", "seed", "step", "query_id",
          "gold", "prob_neg", "prob_pos", "topk_ids", "topk_probs"]


def make_rows(n_sets: int = 2, n_orders: int = 2, n_queries: int = 3, *, seed: int = 0) -> list[dict]:
    """Valid long-format rows: icl and sgd, every (set, order, query); label probs sum to 1."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("icl", "sgd"):
        for s in range(n_sets):
            orders = [[f"d{2 * s}", f"d{2 * s + 1}"], [f"d{2 * s + 1}", f"d{2 * s}"]][:n_orders]
            for o, order in enumerate(orders):
                for q in range(n_queries):
                    p = float(rng.uniform(0.05, 0.95))
                    ids = rng.choice(50, size=3, replace=False).tolist()
                    probs = sorted(rng.dirichlet(np.ones(4))[:3].tolist(), reverse=True)
                    rows.append({"model": "m", "task": "t", "method": method, "n_demos": 2, "demo_set": s,
                                 "order_id": o, "order": order, "seed": 0, "step": 0 if method == "icl" else 2,
                                 "query_id": f"q{q}", "gold": ["neg", "pos"][q % 2], "prob_neg": 1 - p,
                                 "prob_pos": p, "topk_ids": ids, "topk_probs": probs})
    return rows


def write_csv(path: Path, rows: list[dict], header: list[str] = HEADER) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([json.dumps(row[c]) if isinstance(row[c], list) else
                         (repr(row[c]) if isinstance(row[c], float) else row[c]) for c in header])
    path.write_text(buffer.getvalue())
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_csv_records_are_derived_as_documented(tmp_path):
    rows = make_rows()
    rows[0]["prob_neg"], rows[0]["prob_pos"] = 0.2996, 0.7  # sums to 0.9996: within 1e-3, renormalised
    res = read_long(write_csv(tmp_path / "runs.csv", rows))
    rec = res.records
    assert list(rec.columns) == list(RECORD_COLUMNS)
    assert len(rec) == len(rows) == 24 and res.n_rows_read == 24 and res.n_rows_skipped == 0
    first = rec.iloc[0]
    np.testing.assert_allclose(first["label_probs"], [0.2996 / 0.9996, 0.7 / 0.9996], rtol=1e-15)
    np.testing.assert_allclose(first["label_logprobs"], np.log([0.2996 / 0.9996, 0.7 / 0.9996]), rtol=1e-15)
    assert first["labels"] == ["neg", "pos"] and first["gold"] == "neg"
    assert first["p_gold"] == first["label_probs"][0] and first["pred"] == "pos" and not first["correct"]
    assert any("1 row(s) had label probabilities summing to 1 ± up to 0.0004" in n for n in res.notes)
    # exact sums are kept as given (float rounding is not "renormalised")
    assert rec["label_probs"].iloc[1] == [rows[1]["prob_neg"], rows[1]["prob_pos"]]
    assert rec["method_kind"].tolist() == ["icl"] * 12 + ["sgd"] * 12
    assert rec["order"].iloc[0] == ["d0", "d1"] and rec["topk_ids"].iloc[0] == rows[0]["topk_ids"]
    assert rec["unit_key"].iloc[0] == unit_key("m", "t", "icl", 2, 0, 0, 0, 0)
    assert rec.groupby("unit_key").size().tolist() == [3] * 8  # 2 methods x 2 sets x 2 orders
    for name in ("n_demos", "demo_set", "order_id", "seed", "step"):
        assert rec[name].dtype == np.int64
    assert res.problems == []


def test_csv_jsonl_parquet_and_list_columns_agree(tmp_path):
    rows = make_rows()
    from_csv = read_long(write_csv(tmp_path / "a.csv", rows)).records
    from_jsonl = read_long(write_jsonl(tmp_path / "a.jsonl", rows)).records
    listed = [{**{k: v for k, v in r.items() if not k.startswith("prob_")}, "labels": ["neg", "pos"],
               "label_probs": [r["prob_neg"], r["prob_pos"]]} for r in rows]
    pd.DataFrame(listed).to_parquet(tmp_path / "a.parquet", row_group_size=5)  # several row groups
    from_parquet = read_long(tmp_path / "a.parquet", batch_rows=7).records
    tsv = tmp_path / "a.tsv"
    tsv.write_text((tmp_path / "a.csv").read_text().replace(",", "\t").replace("\t ", ", "))
    for other in (from_jsonl, from_parquet):
        pd.testing.assert_frame_equal(from_csv, other)
    assert len(read_long(write_csv(tmp_path / "b.csv", rows)).records) == 24
    assert detect_format(tmp_path / "a.csv") == detect_format(tmp_path / "a.parquet") == "long"


def test_mapping_file_renames_columns_and_sets_kinds(tmp_path):
    rows = make_rows()
    theirs = {"model": "mdl", "task": "dataset", "method": "algo", "demo_set": "set", "order_id": "perm",
              "query_id": "example", "gold": "answer", "prob_neg": "p_neg", "prob_pos": "p_pos"}
    renamed = [{theirs.get(k, k): v for k, v in r.items() if k not in ("order", "n_demos")} for r in rows]
    for r in renamed:
        r["algo"] = "kv-finetune" if r["algo"] == "sgd" else r["algo"]
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns:\n" + "".join(f"  {t}: {o}\n" for o, t in theirs.items())
                       + "methods: {kv-finetune: sgd}\n")
    path = write_jsonl(tmp_path / "theirs.jsonl", renamed)
    with pytest.raises(ValueError, match="not in the long format"):
        detect_format(path)
    with pytest.raises(ValueError, match="missing column 'n_demos' .needed when there is no 'order' column"):
        detect_format(path, mapping=mapping)
    with pytest.raises(ImportProblems):  # without 'order', N must be given
        read_long(path, mapping=mapping)
    (tmp_path / "map2.yaml").write_text(mapping.read_text() + "labels: [neg, pos]\n")
    renamed = [{**r, "n_demos": 2} for r in renamed]
    write_jsonl(path, renamed)
    assert detect_format(path, mapping=mapping) == "long"
    res = read_long(path, mapping=tmp_path / "map2.yaml")
    assert res.problems == [] and len(res.records) == 24
    assert set(res.records["method"]) == {"icl", "kv-finetune"}
    assert set(res.records["method_kind"]) == {"icl", "sgd"}
    assert res.records["order"].iloc[4] == ["1"]  # [str(order_id)] without an order column
    assert any("order = [str(order_id)]" in n for n in res.notes)


def test_mapping_validation_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colums'\]"):
        load_mapping({"colums": {}})
    with pytest.raises(ValueError, match="'probability' is not a long-format column"):
        load_mapping({"columns": {"p": "probability"}})
    with pytest.raises(ValueError, match="`methods.ft` is 'finetune'"):
        load_mapping({"methods": {"ft": "finetune"}})
    with pytest.raises(ValueError, match="maps several columns onto"):
        load_mapping({"columns": {"a": "gold", "b": "gold"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: [\n")
    with pytest.raises(ValueError, match="malformed YAML"):
        load_mapping(bad)
    with pytest.raises(ValueError, match="no such mapping file"):
        load_mapping(tmp_path / "missing.yaml")


def test_order_only_numbers_orders_by_first_appearance(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "order_id"} for r in make_rows()]
    res = read_long(write_jsonl(tmp_path / "o.jsonl", rows))
    rec = res.records
    np.testing.assert_array_equal(rec["order_id"], [r["order"] != [f"d{2 * r['demo_set']}", f"d{2 * r['demo_set'] + 1}"]
                                                    for r in rows])
    assert any("numbered 0, 1, ... by first appearance" in n for n in res.notes)


def test_label_sets_per_task_via_mapping(tmp_path):
    rows = [dict(r, prob_a="") for r in make_rows(n_sets=1, n_orders=2, n_queries=2)]
    topic = [dict(r, task="topic", gold="a", prob_neg="", prob_pos="0.25", prob_a="0.75") for r in rows]
    path = write_csv(tmp_path / "two.csv", rows + topic, header=[*HEADER, "prob_a"])
    with pytest.raises(ImportProblems, match="missing probability 'prob_a'"):
        read_long(path)
    res = read_long(path, mapping={"labels": {"t": ["neg", "pos"], "topic": ["pos", "a"]}})
    assert res.problems == [] and len(res.records) == 16
    assert res.records.loc[res.records["task"] == "topic", "p_gold"].eq(0.75).all()


def _problem_lines(res) -> dict[int, str]:
    return {p.line: p.message for p in res.problems}


def test_every_kind_of_bad_row_is_a_problem_with_its_line(tmp_path):
    rows = make_rows()  # data row i is on line i + 2 (the header is line 1)
    rows[3]["prob_neg"] = float("nan")                   # line 5: NaN probability
    rows[4]["prob_neg"], rows[4]["prob_pos"] = 0.5, 0.7  # line 6: sums to 1.2
    rows[5] = dict(rows[8])                              # line 7 = line 10: the duplicate is line 10
    rows[9]["gold"] = "maybe"                            # line 11: gold not a label
    rows[10]["order_id"] = "x"                           # line 12: order_id not an integer
    rows[12]["order"] = ["d1", "d0"]                     # line 14: order_id 0 of set 0 was [d0, d1]
    path = write_csv(tmp_path / "bad.csv", rows)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:30]                             # line 3: truncated inside the quoted order
    lines[3] = lines[3] + ",extra"                       # line 4: one field too many
    lines[14] = lines[14].replace('""d0"", ""d1""', '""d0"" ""d1""')  # line 15: order is not JSON
    lines.insert(16, "")                                 # a blank line (line 17) is no row
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportProblems) as info:
        read_long(path)
    assert f"{path}:3: malformed line" in str(info.value)
    res = read_long(path, strict=False)
    got = _problem_lines(res)
    assert got[3].startswith("malformed line (unexpected end of data)")
    assert got[4] == "expected 15 fields (as in the header), got 16: a truncated or malformed line"
    assert got[5] == "'prob_neg' is NaN"
    assert got[6].startswith("label probabilities sum to 1.2, not 1 (tolerance 0.001)")
    assert got[10].startswith("duplicate row") and got[10].endswith("already on line 7")
    assert got[11] == "gold label 'maybe' is not one of the labels ['neg', 'pos']"
    assert got[12] == "'order_id' must be an integer, got 'x'"
    assert got[14] == ("order_id 0 of demo set 0 was order ['d0', 'd1'] on line 2, here ['d1', 'd0']")
    assert got[15].startswith("'order' is not a JSON list")
    assert sorted(got) == [3, 4, 5, 6, 10, 11, 12, 14, 15]
    assert res.n_rows_read == 24 and res.n_rows_skipped == 9 and len(res.records) == 15


def test_missing_column_strict_and_skip_bad(tmp_path):
    rows = make_rows()
    header = [c for c in HEADER if c != "gold"]
    path = write_csv(tmp_path / "nogold.csv", rows, header=header)
    with pytest.raises(ImportProblems) as info:
        read_long(path)
    assert info.value.problems[0].line == 1
    assert "missing column 'gold'" in info.value.problems[0].message
    res = read_long(path, strict=False)
    assert res.n_rows_read == res.n_rows_skipped == 24 and res.records.empty
    rows_no_gold = [{k: v for k, v in r.items() if k != "gold"} for r in rows]
    res = read_long(write_jsonl(tmp_path / "nogold.jsonl", rows_no_gold), strict=False)
    assert res.n_rows_skipped == 24 and {p.line for p in res.problems} == set(range(1, 25))


def test_parquet_problems_have_row_numbers_and_damaged_files_do_not_crash(tmp_path):
    rows = make_rows()
    rows[4]["prob_pos"] = float("nan")
    rows[7] = dict(rows[6])
    frame = pd.DataFrame(rows)
    frame.to_parquet(tmp_path / "p.parquet", row_group_size=4)
    res = read_long(tmp_path / "p.parquet", strict=False)
    assert _problem_lines(res).keys() == {5, 8}
    data = (tmp_path / "p.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImportProblems, match="cannot read the Parquet file"):
        read_long(tmp_path / "cut.parquet")
    res = read_long(tmp_path / "cut.parquet", strict=False)
    assert res.records.empty and len(res.problems) == 1


def test_strict_stops_at_the_first_batch_with_problems(tmp_path):
    rows = make_rows(n_sets=2, n_orders=2, n_queries=25)  # 200 rows
    rows[150]["prob_pos"] = 2.0
    path = write_jsonl(tmp_path / "late.jsonl", rows)
    with pytest.raises(ImportProblems) as info:
        read_long(path, batch_rows=50)
    assert [p.line for p in info.value.problems] == [151]
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------
# fuzzing: random damage never crashes, and every row is accounted for
# ---------------------------------------------------------------------------


def _damage(lines: list[str], rng: np.random.Generator, *, first: int) -> tuple[list[str], set[int]]:
    """Damage random lines from index `first` on; return them and the damaged 1-based line numbers."""
    out = list(lines)
    damaged: set[int] = set()
    for _ in range(int(rng.integers(1, 8))):
        i = int(rng.integers(first, len(out)))
        kind = rng.choice(["truncate", "flip", "nan", "duplicate", "bytes"])
        if kind == "truncate":
            out[i] = out[i][: int(rng.integers(0, max(1, len(out[i]))))]
        elif kind == "flip":
            j = int(rng.integers(0, len(out[i])))
            out[i] = out[i][:j] + chr(int(rng.integers(33, 127))) + out[i][j + 1:]
        elif kind == "nan":
            out[i] = re.sub(r"0\.\d{4,}", "NaN", out[i], count=1)
        elif kind == "duplicate":
            k = int(rng.integers(first, len(out)))
            out[i] = out[k]
            damaged.add(k + 1)
        else:  # a byte that is not UTF-8
            out[i] = out[i][:5] + "\udcff" + out[i][5:]
        damaged.add(i + 1)
    return out, damaged


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("seed", range(20))
def test_fuzzed_files_never_crash_and_every_row_is_counted(tmp_path, suffix, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / f"fuzz{suffix}"
    (write_csv if suffix == ".csv" else write_jsonl)(path, make_rows(seed=seed))
    first = 1 if suffix == ".csv" else 0  # the CSV header (line 1) is left intact
    lines, damaged = _damage(path.read_text().splitlines(), rng, first=first)
    text = "\n".join(lines) + "\n"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    n_data = sum(1 for line in lines[first:] if line.strip())
    try:
        strict = read_long(path)
    except ImportProblems as error:
        assert error.problems and all(p.file == str(path) for p in error.problems)
        assert all(isinstance(p.line, int) for p in error.problems)
        assert re.search(rf"{re.escape(str(path))}:\d+: ", str(error))
    else:
        assert strict.n_rows_skipped == 0 and strict.n_rows_read == n_data
    res = read_long(path, strict=False)
    assert res.n_rows_read == n_data
    assert len(res.records) + res.n_rows_skipped == res.n_rows_read
    assert len({p.line for p in res.problems}) == res.n_rows_skipped  # one line per skipped row
    for problem in res.problems:
        # a problem is on a damaged line, or names the damaged line it conflicts with
        named = {int(x) for x in re.findall(r"on line (\d+)", problem.message)}
        assert problem.line in damaged or named & damaged, (problem, damaged)
    good = res.records
    assert good["label_probs"].map(lambda p: math.isclose(sum(p), 1.0, abs_tol=1e-12)).all()
    assert np.isfinite(good["p_gold"]).all()


def test_mapping_from_command_line_options(tmp_path):
    from hyptest.importers import mapping_from_options

    base = tmp_path / "m.yaml"
    base.write_text("columns: {algo: method, p: prob_pos}\nlabels: [neg, pos]\nmethods: {ft: gd}\n")
    m = mapping_from_options(base, columns=["p=prob_yes", "q=query_id"], labels=["no", "yes"],
                             methods=["ft=sgd"], ft_setting="ft")
    assert m.columns == {"algo": "method", "p": "prob_yes", "q": "query_id"}
    assert m.labels == ("no", "yes") and m.methods == {"ft": "sgd"} and m.ft_setting == "ft"
    with pytest.raises(ValueError, match="`--column` takes THEIRS=OURS, got 'oops'"):
        mapping_from_options(columns=["oops"])
