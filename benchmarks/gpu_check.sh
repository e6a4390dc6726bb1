#!/usr/bin/env bash
# One prepared GPU check (see benchmarks/gpu_check.py): training step (mmbert-base shape, 256k vocabulary,
# length 512, bf16, with and without LoRA, torch.compile off and on), sampler (fp32, bf16 and fp16 weights;
# diffutron and fast presets; no cache and the dual cache; batch 1 and 16) and evaluation throughput, with
# peak CUDA memory and host-sync counts per row, written to one JSON file after every row (a crash keeps
# what ran; exit status 1 if a section failed). Under 5 minutes on one H100/H200-class GPU.
#
#   bash benchmarks/gpu_check.sh [--out gpu_check.json] [--compile both|off|on]   # on a GPU machine
#   bash benchmarks/gpu_check.sh --cpu-smoke --out /tmp/x.json   # toy sizes on a CPU (tested)
#
# Needs the package importable: an installed checkout (pip install -e .) or, as here, PYTHONPATH=src.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
