"""Run lm-evaluation-harness on the embedded SmolLM2-135M with 6 few-shot seeds, then `hyptest reanalyse` it.

    python reports/lm_eval_sentiment/make_report.py        # from the repository root; about 10 min on 2 CPU cores

The task ``sentiment_order`` (``task/``) is hyptest's built-in sentiment data: its 128 queries, and a few-shot
split of exactly 3 demo docs with N = 3, so every draw of lm-eval's default sampler is an order of that one set
(6 possible orders): order sensitivity within the set is identifiable.
With a larger few-shot pool each doc would get a new random set per seed, and demo set and order would be
confounded (the importer says so; ``tests/test_importers_lm_eval.py`` runs that design too).

The harness logs go to ``lm_eval_logs/`` (not committed); the report to this folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEEDS = (1, 2, 3, 4, 5, 6)


def write_data() -> None:
    rows = [json.loads(line) for line in (ROOT / "hyptest/tasks/data/sentiment/data.jsonl").read_text().splitlines()]
    labels = ["negative", "positive"]
    demos = [{"text": r["text"], "label": labels.index(r["label"])} for r in rows if r["split"] == "demo"]
    queries = [{"text": r["text"], "label": labels.index(r["label"])} for r in rows if r["split"] == "query"]
    fixed = [next(d for d in demos if d["label"] == 1), next(d for d in demos if d["label"] == 0)]
    fixed.append(next(d for d in demos if d["label"] == 1 and d not in fixed))
    for name, docs in (("fixed", fixed), ("test", queries)):
        (HERE / "task" / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from hyptest.models.embedded import cache_root, load_embedded
    from tests.lm_eval_harness import run_harness

    write_data()
    load_embedded(device="cpu")  # dequantises the GGUF into the cache once: an ordinary HF directory
    (model_dir,) = (cache_root() / "models").glob("smollm2-135m-*")
    run_harness(model_dir, ["sentiment_order"], HERE / "task", SEEDS, HERE / "lm_eval_logs", num_fewshot=3,
                batch_size=16)
    subprocess.run(["hyptest", "reanalyse", str((HERE / "lm_eval_logs").relative_to(ROOT)), "--out",
                    str(HERE.relative_to(ROOT))], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
