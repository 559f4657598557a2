#!/usr/bin/env bash
# The one GPU check of issue 13, for a machine with one CUDA device (about 6 minutes on an H100-class GPU is the
# plan; the timeouts below keep it under 9). Run from the repository root with the project's venv:
#   PATH=.venv/bin:$PATH bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the CUDA-marked tests; 2. the engine's solve at OPT-125M's and Llama-2-7B's layer shapes (random weights),
# against the old solver on the same device; 3. the I-OBS gradient step of two Llama-2-7B layers (embeddings and
# head included) under every memory plan, the device's peak beside iobs.iterative.memory's estimate.
# Each part writes its log under OUT_DIR (default results/benchmarks/gpu) and a failing part does not stop the rest.
set -uo pipefail
out=${1:-results/benchmarks/gpu}
export PYTHONPATH="${PYTHONPATH:-src}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device visible to torch ' + torch.__version__ + ': install a CUDA build (README, The environment)')" || exit 2
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/device.txt" 2>&1
status=0
timeout 120 python -m pytest -q -m cuda -rs tests 2>&1 | tee "$out/tests.log" || status=1
timeout 300 python benchmarks/bench_engine.py --parts solve --device cuda --repeats 3 \
    --shapes 768x768,3072x768,768x3072,4096x4096,11008x4096,4096x11008 --json "$out/engine.json" 2>&1 \
    | tee "$out/engine.log" || status=1
timeout 150 python benchmarks/bench_step_memory.py --device cuda --models llama-2-7b-2layers --dtype float16 \
    --seqlen 2048 --sequences 1 --micro-batch 1 --steps 2 2>&1 | tee "$out/step_memory.log" || status=1
exit $status
