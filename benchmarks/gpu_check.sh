#!/usr/bin/env bash
# One prepared GPU check (see benchmarks/gpu_check.py): training step (mmbert-base shape, 256k vocabulary,
# length 512, bf16, with and without LoRA), sampler (diffutron and fast presets, batch 1 and 16) and
# evaluation throughput, written to one JSON file. Under 5 minutes on one H100/H200-class GPU.
#
#   bash benchmarks/gpu_check.sh [--out gpu_check.json]     # on a GPU machine, from the repository root
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
