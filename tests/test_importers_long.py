"""The long-format importer: columns, mapping, derived fields, RFC 4180 files, problems with file:line, fuzzing."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

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

from ._benchmarks import load_benchmark

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
    # list columns hold numpy arrays, as records read from a run directory do
    assert isinstance(first["labels"], np.ndarray) and isinstance(first["topk_ids"], np.ndarray)
    assert list(first["labels"]) == ["neg", "pos"] and first["gold"] == "neg"
    assert first["p_gold"] == first["label_probs"][0] and first["pred"] == "pos" and not first["correct"]
    assert any("1 row(s) had label probabilities summing to 1 ± up to 0.0004" in n for n in res.notes)
    # exact sums are kept as given (float rounding is not "renormalised")
    assert rec["label_probs"].iloc[1].tolist() == [rows[1]["prob_neg"], rows[1]["prob_pos"]]
    assert rec["method_kind"].tolist() == ["icl"] * 12 + ["sgd"] * 12
    assert list(rec["order"].iloc[0]) == ["d0", "d1"] and rec["topk_ids"].iloc[0].tolist() == rows[0]["topk_ids"]
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
    assert list(res.records["order"].iloc[4]) == ["1"]  # [str(order_id)] without an order column
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
    assert f"{path}:3: malformed row" in str(info.value)
    res = read_long(path, strict=False)
    got = _problem_lines(res)
    # line 3's open quote runs into line 4 (a quoted field may hold a line break): that row is reported at its
    # first line, and reading goes on at line 4
    assert got[3].startswith("malformed row: a quoted field opened on this line runs to line 4")
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


# ---------------------------------------------------------------------------
# RFC 4180 CSV and TSV: what Python's csv module reads, pyarrow reads
# ---------------------------------------------------------------------------


def _rfc_text(rows: list[dict], *, delimiter: str = ",", newline: str = "\n", bom: bool = False,
              note: bool = False) -> str:
    """The rows as RFC 4180 text (csv.writer); with ``note``, an extra column whose values hold line breaks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(HEADER + ["note"] * note)
    for i, row in enumerate(rows):
        values = [json.dumps(row[c]) if isinstance(row[c], list) else (repr(row[c]) if isinstance(row[c], float)
                                                                        else row[c]) for c in HEADER]
        if note:
            values.append('one\nline "two", with a comma\r\nthree' if i % 3 == 0 else "plain")
        writer.writerow(values)
    return ("\ufeff" if bom else "") + buffer.getvalue()


@pytest.mark.parametrize("variant", ["quoted_newlines", "crlf", "bom", "tsv", "cr", "all"])
def test_rfc4180_files_are_read_as_the_csv_module_reads_them(tmp_path, variant):
    options = {"quoted_newlines": {"note": True}, "crlf": {"newline": "\r\n"}, "bom": {"bom": True},
               "tsv": {"delimiter": "\t"}, "cr": {"newline": "\r"},
               "all": {"note": True, "newline": "\r\n", "bom": True, "delimiter": "\t"}}[variant]
    rows = make_rows(n_queries=5)
    path = tmp_path / ("runs.tsv" if options.get("delimiter") == "\t" else "runs.csv")
    path.write_bytes(_rfc_text(rows, **options).encode("utf-8"))
    res = read_long(path)
    # independent: Python's csv module on the decoded text
    expected = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline=""),
                                   delimiter=options.get("delimiter", ",")))
    rec = res.records
    assert res.problems == [] and res.n_rows_read == len(expected) == len(rows) == len(rec)
    assert rec["query_id"].tolist() == [r["query_id"] for r in expected]
    assert rec["label_probs"].map(lambda v: v.tolist()).tolist() == [[float(r["prob_neg"]), float(r["prob_pos"])]
                                                                      for r in expected]
    assert rec["topk_ids"].map(lambda v: v.tolist()).tolist() == [json.loads(r["topk_ids"]) for r in expected]
    assert rec["topk_probs"].map(lambda v: v.tolist()).tolist() == [json.loads(r["topk_probs"]) for r in expected]
    assert rec["order"].map(list).tolist() == [json.loads(r["order"]) for r in expected]
    assert ("note" in expected[0]) == any("ignored column(s): note" in n for n in res.notes)


def test_bad_rows_in_a_file_with_quoted_line_breaks_name_the_line_where_they_start(tmp_path):
    rows = make_rows(n_queries=5)
    rows[4]["prob_pos"] = 1.5
    rows[10]["gold"] = "maybe"
    rows[20] = dict(rows[3])
    path = tmp_path / "notes.csv"
    path.write_bytes(_rfc_text(rows, note=True, newline="\r\n").encode("utf-8"))
    # independent: the physical line where each row starts, from the csv module's line counter
    reader = csv.reader(io.StringIO(path.read_text(), newline=""))
    starts, previous = [], 0
    for _ in reader:
        starts.append(previous + 1)
        previous = reader.line_num
    row_line = starts[1:]  # data row i starts on row_line[i]
    assert row_line[4] != 4 + 2  # the rows before it span several lines
    res = read_long(path, strict=False)
    got = _problem_lines(res)
    assert sorted(got) == [row_line[4], row_line[10], row_line[20]]
    assert got[row_line[4]] == "probability 'prob_pos' = 1.5 is outside [0, 1]"
    assert got[row_line[10]] == "gold label 'maybe' is not one of the labels ['neg', 'pos']"
    assert got[row_line[20]].endswith(f"already on line {row_line[3]}")
    with pytest.raises(ImportProblems, match=rf"notes.csv:{row_line[4]}: probability 'prob_pos'"):
        read_long(path)


def _plain_rows(n: int) -> list[str]:
    lines = ["model,task,method,n_demos,demo_set,order_id,query_id,gold,prob_neg,prob_pos\n"]
    for i in range(n):
        lines.append(f"m,t,icl,2,{i % 3},{(i // 3) % 2},q{i // 6},{['neg', 'pos'][i % 2]},0.25,0.75\n")
    return lines


def test_an_unclosed_quote_is_reported_at_its_line_and_reading_goes_on(tmp_path):
    lines = _plain_rows(300)
    lines[50] = lines[50].replace(",q", ',"q', 1)  # line 51 opens a quote that is never closed
    path = tmp_path / "open.csv"
    path.write_text("".join(lines))
    res = read_long(path, strict=False)
    assert res.n_rows_read == 300 and res.n_rows_skipped == 1 and len(res.records) == 299
    (problem,) = res.problems
    assert problem.line == 51 and problem.message.startswith(
        "malformed row: a quoted field opened on this line runs to line 301")
    with pytest.raises(ImportProblems, match=r"open.csv:51: malformed row"):
        read_long(path, batch_rows=40)


def test_blank_lines_are_no_rows_but_empty_fields_are(tmp_path):
    lines = _plain_rows(12)
    lines[4:4] = ["\n", "   \n", "\r\n"]  # lines 5-7: blank
    lines.insert(10, ",,,,,,,,,\n")  # line 11: every field empty
    path = tmp_path / "blank.csv"
    path.write_text("".join(lines))
    res = read_long(path, strict=False)
    assert res.n_rows_read == 13 and res.n_rows_skipped == 1
    assert {p.line for p in res.problems} == {11}
    assert res.problems[0].message == "missing value for 'model'"


def test_bytes_that_are_not_utf8_spoil_their_row_only(tmp_path):
    lines = _plain_rows(300)
    lines[50] = "m,\udcff,x\n"  # not UTF-8, and the wrong number of fields
    lines[120] = lines[120].replace(",t,", ",t\udcff,")  # not UTF-8 in a well-formed row
    path = tmp_path / "bytes.csv"
    path.write_bytes("".join(lines).encode("utf-8", errors="surrogateescape"))
    res = read_long(path, strict=False)
    assert res.n_rows_read == 300 and res.n_rows_skipped == 2
    assert _problem_lines(res) == {51: "not valid UTF-8 (invalid start byte at byte 2)",
                                   121: "not valid UTF-8 (invalid start byte at byte 3)"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_small_pyarrow_blocks_give_the_same_result(tmp_path, monkeypatch, suffix):
    import hyptest.importers.long as long_module

    rows = make_rows(n_sets=2, n_orders=2, n_queries=40)
    rows[37]["prob_pos"] = 3.0
    rows[90] = dict(rows[12])
    path = tmp_path / f"blocks{suffix}"
    if suffix == ".csv":
        path.write_text(_rfc_text(rows, note=True))
    else:
        write_jsonl(path, rows)
        text = path.read_text().splitlines()
        text[60] = text[60][:50]  # a broken line: its block is read line by line
        path.write_text("\n".join(text) + "\n")

    def outcome() -> tuple:
        res = read_long(path, strict=False)
        return res.n_rows_read, res.n_rows_skipped, [(p.line, p.message) for p in res.problems], res.records

    whole = outcome()
    monkeypatch.setattr(long_module, "_BLOCK_BYTES", 700)  # a few rows per block
    small = outcome()
    assert whole[:3] == small[:3] and len(whole[2]) == (2 if suffix == ".csv" else 3)
    pd.testing.assert_frame_equal(whole[3], small[3])


# ---------------------------------------------------------------------------
# the vectorised checks give what the row-by-row checks give
# ---------------------------------------------------------------------------


def _conflicting_rows(seed: int) -> tuple[list[dict], dict]:
    """Rows with every kind of conflict between rows (duplicates, orders, label order, k, kinds) at random."""
    rng = np.random.default_rng(seed)
    mode = ["prob", "list", "prob_declared"][seed % 3]
    labels = {"t": ["neg", "pos"], "u": ["a", "b", "c"]}
    has_order, has_id = [(True, True), (True, False), (False, True)][seed % 3 if seed % 2 else 0]
    rows = []
    for _ in range(300):
        task = str(rng.choice(["t", "u"])) if mode != "prob" else "t"
        names, method, s, o = labels[task], str(rng.choice(["icl", "sgd", "ft"])), int(rng.integers(3)), int(
            rng.integers(3))
        row = {"model": "m", "task": task, "method": method, "demo_set": s, "n_demos": 3, "seed": int(rng.integers(2)),
               "query_id": f"q{int(rng.integers(0, 8 if seed % 2 else 10 ** 6))}",
               "gold": str(rng.choice(names)) if rng.random() > 0.02 else "zz"}
        if has_id:
            row["order_id"] = o if rng.random() > 0.03 else int(rng.integers(3))
        if has_order:
            order = [f"d{s}{x}" for x in "abc"]
            row["order"] = (order[o:] + order[:o])[::-1 if rng.random() < 0.03 else 1]
        p = rng.dirichlet(np.ones(len(names))) * (1.2 if rng.random() < 0.02 else 1.0)
        p = np.round(p, 4) if rng.random() < 0.05 else p  # renormalised
        if mode == "list":
            perm = rng.permutation(len(names)) if rng.random() < 0.1 else np.arange(len(names))
            row["labels"], row["label_probs"] = [names[i] for i in perm], [float(p[i]) for i in perm]
        else:
            for label in ("neg", "pos", "a", "b", "c")[:2 if mode == "prob" else 5]:
                row[f"prob_{label}"] = float(p[names.index(label)]) if label in names else None
        k = 5 if rng.random() > 0.03 else 4
        ids = rng.choice(100, k, replace=False).tolist()
        row["topk_ids"] = [ids[0], *ids[:-1]] if rng.random() < 0.02 else ids
        row["topk_probs"] = sorted(rng.dirichlet(np.ones(8))[:k].tolist(), reverse=True)
        if rng.random() < 0.3:
            row["method_kind"] = str(rng.choice(["sgd", "other"])) if method == "ft" else method
        rows.append(row)
    return rows, ({"labels": labels} if mode == "prob_declared" else {})


def _row_by_row(monkeypatch) -> None:
    """Send every row through the Python checks, one at a time."""
    import hyptest.importers.long as long_module

    def table_rows(self, segment):
        rows = [(int(line), row, segment.names) for line, row in zip(segment.lines,
                                                                     segment.pyrows(np.arange(len(segment.lines))))]
        return self._dict_rows(rows)

    monkeypatch.setattr(long_module._Reader, "_table_rows", table_rows)
    monkeypatch.setattr(long_module._Reader, "_accept_all", lambda self, parsed: None)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("seed", range(6))
def test_vectorised_checks_match_the_row_by_row_checks(tmp_path, monkeypatch, suffix, seed):
    rows, mapping = _conflicting_rows(seed)
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        header = list(dict.fromkeys(k for r in rows for k in r))
        write_csv(path, [{c: ("" if r.get(c) is None else r[c]) for c in header} for r in rows], header=header)
    elif suffix == ".jsonl":
        write_jsonl(path, [{k: v for k, v in r.items() if v is not None} for r in rows])
    else:
        pd.DataFrame(rows).to_parquet(path, row_group_size=37)

    def outcome(strict: bool) -> Any:
        try:
            res = read_long(path, mapping=mapping, strict=strict, batch_rows=50)
        except ImportProblems as error:
            return [(p.line, p.message) for p in error.problems]
        return res.n_rows_read, res.n_rows_skipped, [(p.line, p.message) for p in res.problems], res.notes, res.records

    fast = [outcome(False), outcome(True)]
    _row_by_row(monkeypatch)
    slow = [outcome(False), outcome(True)]
    assert fast[1] == slow[1]
    assert fast[0][:4] == slow[0][:4] and fast[0][1] > 0
    pd.testing.assert_frame_equal(fast[0][4], slow[0][4])


def test_labels_in_another_order_follow_their_own_tasks_first_order(tmp_path):
    # two tasks with the same label set, first seen in opposite orders
    given = [("t", ["a", "b"], [0.2, 0.8]), ("u", ["b", "a"], [0.3, 0.7]), ("u", ["a", "b"], [0.9, 0.1]),
             ("t", ["b", "a"], [0.4, 0.6])]
    rows = [{"model": "m", "task": task, "method": "icl", "demo_set": 0, "order_id": 0, "n_demos": 2,
             "query_id": f"q{i}", "gold": "a", "labels": labels, "label_probs": probs}
            for i, (task, labels, probs) in enumerate(given)]
    rec = read_long(write_jsonl(tmp_path / "orders.jsonl", rows)).records
    assert rec["labels"].map(list).tolist() == [["a", "b"], ["b", "a"], ["b", "a"], ["a", "b"]]
    assert rec["label_probs"].map(lambda v: v.tolist()).tolist() == [[0.2, 0.8], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4]]
    assert rec["p_gold"].tolist() == [0.2, 0.7, 0.9, 0.6]


# ---------------------------------------------------------------------------
# the analysis of a long file whose demo sets have their own query ids
# ---------------------------------------------------------------------------


def test_demo_sets_with_their_own_query_ids_are_analysed(tmp_path):
    """Demo set 0 scored on q0..q4, demo set 1 on q5..q9 (the analysis used to crash on such files)."""
    from hyptest.workflows.reanalyse import reanalyse
    from hyptest.study import AnalysisSpec

    rng = np.random.default_rng(11)
    rows = []
    for method, spread in (("icl", 0.12), ("sgd", 0.03)):
        for s in range(2):
            for o in range(4):
                for q in range(5):
                    p = float(np.clip(0.5 + 0.2 * (q % 2 - 0.5) + rng.normal(0, spread), 0.02, 0.98))
                    rows.append({"model": "m", "task": "t", "method": method, "n_demos": 4, "demo_set": s,
                                 "order_id": o, "seed": 0, "step": 0 if method == "icl" else 3,
                                 "query_id": f"q{5 * s + q}", "gold": ["neg", "pos"][q % 2], "prob_neg": 1 - p,
                                 "prob_pos": p, "topk_ids": rng.choice(100, 6, replace=False).tolist(),
                                 "topk_probs": sorted(rng.dirichlet(np.ones(8))[:6].tolist(), reverse=True)})
    path = write_csv(tmp_path / "own_queries.csv", rows, header=[h for h in HEADER if h != "order"])
    analysis = {"n_resamples": 1000, **({"bayes": False} if "bayes" in AnalysisSpec.model_fields else {})}
    out = reanalyse(path, out_dir=tmp_path / "out", study_overrides={"analysis": analysis})
    results = json.loads((out / "results.json").read_text())
    (row,) = [r for r in results["comparisons"] if r["analysis"] == "order_sensitivity"]
    # by hand: the SD of P(gold) across orders of each (set, query), ddof 1; its mean over the 10 (set, query) pairs
    frame = pd.DataFrame(rows)
    frame["p_gold"] = np.where(frame["gold"] == "pos", frame["prob_pos"], frame["prob_neg"])
    sd = frame.groupby(["method", "demo_set", "query_id"])["p_gold"].std(ddof=1)
    per_set = sd.groupby(["method", "demo_set"]).mean()
    assert per_set.index.get_level_values("demo_set").unique().tolist() == [0, 1]
    mean_sd = sd.groupby("method").mean()
    assert row["n"] == 10 and row["n_sets"] == 2 and row["n_orders"] == 4
    assert row["mean_a"] == pytest.approx(mean_sd["icl"], rel=1e-12)
    assert row["mean_b"] == pytest.approx(mean_sd["sgd"], rel=1e-12)
    assert row["estimate"] == pytest.approx(math.log(mean_sd["icl"] / mean_sd["sgd"]), rel=1e-12)
    assert row["ci_low"] <= row["estimate"] <= row["ci_high"] and row["verdict"] != "not_estimable"
    per_query = pd.read_parquet(out / "per_query.parquet").set_index(["method", "demo_set", "query_id"])
    assert sorted(per_query.index.get_level_values("query_id").unique()) == sorted(f"q{i}" for i in range(10))
    np.testing.assert_allclose(per_query["sd_gold"].sort_index(), sd.sort_index(), rtol=1e-12)
    np.testing.assert_allclose(per_query["sd_gold"].groupby(["method", "demo_set"]).mean().sort_index(),
                               per_set.sort_index(), rtol=1e-12)


def test_the_benchmark_file_reads_cleanly_and_as_pandas_reads_it(tmp_path):
    """benchmarks/bench_reanalyse.py times a file it synthesises; a small one here (the 200 MB case is not a test)."""

    bench = load_benchmark("bench_reanalyse")
    path = tmp_path / "long.csv"
    n_rows = bench.synthesise(path, 1.0)
    assert n_rows % bench.ROWS_PER_QUERY == 0 and 0.5 < path.stat().st_size / 1e6 < 2
    res = read_long(path)
    assert res.problems == [] and res.n_rows_read == len(res.records) == n_rows
    # independent: pandas.read_csv and json.loads, as the benchmark's naive load does
    frame = pd.read_csv(path)
    gold = np.where(frame["gold"] == "positive", frame["prob_positive"], frame["prob_negative"])
    np.testing.assert_array_equal(res.records["p_gold"].to_numpy(), gold)
    assert res.records["topk_ids"].map(lambda v: v.tolist()).tolist() == frame["topk_ids"].map(json.loads).tolist()
    # full-batch GD is order-invariant in the synthetic data: one value per (task, set, query)
    gd = res.records[res.records["method"] == "gd"]
    assert (gd.groupby(["task", "demo_set", "query_id"])["p_gold"].nunique() == 1).all()


# ---------------------------------------------------------------------------
# the read-ahead thread between the file reader and the conversion
# ---------------------------------------------------------------------------


def test_prefetched_gives_the_items_in_order_and_raises_where_the_source_did():
    import threading

    from hyptest.importers.long import _prefetched

    assert list(_prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield from range(3)
        raise ValueError("bad block")

    seen = []
    with pytest.raises(ValueError, match="bad block"):
        for item in _prefetched(failing()):
            seen.append(item)
    assert seen == [0, 1, 2]

    # a consumer that stops early (strict mode) stops the thread too
    pulled = []

    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield i
            i += 1

    reader = _prefetched(endless(), depth=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()
    assert not any(t.name == "hyptest-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(pulled) <= 3 + 2 + 1  # read ahead by at most the queue's depth, plus the item in hand


def test_read_long_with_read_ahead_equals_a_plain_loop(tmp_path, monkeypatch):
    """The records and the Arrow table are the same with the source read in the caller's thread."""
    from hyptest.importers import long as long_module

    lines = ["model,task,method,n_demos,demo_set,order_id,seed,step,query_id,gold,prob_negative,prob_positive"]
    for order in range(6):
        for query in range(40):
            p = 0.1 + 0.8 * ((order * 7 + query * 3) % 11) / 10
            lines.append(f"m,sst2,icl,2,0,{order},0,0,{query},{'positive' if query % 2 else 'negative'},"
                         f"{1 - p:.6f},{p:.6f}")
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(long_module, "_BLOCK_BYTES", 1024)  # many segments: the queue really runs ahead
    segments = list(long_module._source(path, long_module.load_mapping(None), 16).segments())
    assert len(segments) > 5
    fast = long_module.read_long(path, as_table=True, batch_rows=16)
    monkeypatch.setattr(long_module, "_prefetched", lambda segments, depth=2: segments)
    plain = long_module.read_long(path, as_table=True, batch_rows=16)
    assert fast.table.equals(plain.table)
    pd.testing.assert_frame_equal(fast.records.drop(columns=["label_probs", "label_logprobs", "topk_ids",
                                                             "topk_probs"], errors="ignore"),
                                  plain.records.drop(columns=["label_probs", "label_logprobs", "topk_ids",
                                                              "topk_probs"], errors="ignore"))
    for a, b in zip(fast.records["label_probs"], plain.records["label_probs"]):
        np.testing.assert_array_equal(a, b)
