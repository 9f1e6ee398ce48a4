#!/usr/bin/env bash
# Run the prepared GPU benchmark of the ICL scorer (issue 15, item 6) on the lent device machine.
#
# From a session whose task is lent a GPU (the device tool's `status`: can_start_another true), with
# this branch in the checkout the session was started in (the device tool sends that checkout):
#
#   run(command="bash benchmarks/gpu/run_on_device.sh", timeout_s=600)        # carry: nothing
#
# What it runs: benchmarks/bench_gpu_icl.py on CUDA, 1000 orders x 100 queries x N = 8, SmolLM2-135M's
# architecture and tokenizer (benchmarks/gpu/smollm2_shapes/) with seeded random weights, fp32 (TF32
# off) then bf16, each timed after a warm-up (best of 2 where the time budget allows), checked against
# the naive whole-prompt loop on 2 orders x 100 queries. Expected on an H100: a few minutes in all,
# most of it tokenising the 100,000 prompts on the CPU (about 40 s on the development machine).
# Extra arguments go to the script (e.g. `--orders 200` for a shorter run).
#
# Comes back under $OUT: env.txt (GPU, driver, versions), bench_gpu_icl.log (everything printed; the
# RESULT lines are at its end and in the tool's output_tail), bench_gpu_icl.json (every figure,
# rewritten after each dtype, so a run cut short keeps what it finished).
#
# Nothing needs installing: the path imports torch, transformers, tokenizers, numpy, pandas, pyyaml,
# safetensors (all in the image) and no pydantic. Should a wheel ever be needed: here, in the repo
# root, `echo /.whl/ >> .git/info/exclude`, fetch it with the device README's `pip download ...
# --python-version 3.12 --platform manylinux_2_17_x86_64 ... -d .whl NAME==VERSION`, and call with
# carry=[".whl"]; the block below installs whatever .whl/ holds.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/bench_gpu_icl}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 1
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv 2>&1
  python3 -c 'import sys, torch, transformers, tokenizers; print("python", sys.version.split()[0], "torch",
torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "tokenizers",
tokenizers.__version__, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' 2>&1
  nproc
} | tee "$OUT/env.txt"
timeout -k 10 560 python3 benchmarks/bench_gpu_icl.py --device cuda --repeats 2 --budget-s 420 \
  --out "$OUT/bench_gpu_icl.json" "$@" 2>&1 | tee "$OUT/bench_gpu_icl.log"
