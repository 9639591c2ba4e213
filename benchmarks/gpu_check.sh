#!/usr/bin/env bash
# GPU check of the training path (CUDA, bf16 autocast, ResNet-101, ICA under autocast, images/s).
# Usage: bash benchmarks/gpu_check.sh [--device cpu]   (run from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
export DO_NOT_TRACK=1 KEDRO_DISABLE_TELEMETRY=true
exec timeout 300 python benchmarks/gpu_check.py "$@"
