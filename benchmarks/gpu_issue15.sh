#!/usr/bin/env bash
# Issue 15, part 4, as one prepared run on a GPU machine (about 6-8 minutes on an H100/H200):
#   1. gpu_check.py   - CUDA / bf16 AMP / ResNet-101 training path, realistic loss, images/s
#   2. cuda_smoke.py  - ICA loss, beam search and Mask R-CNN on CUDA against CPU
#   3. gpu_speed.py   - the gpu environment's training step: profile (kernel launches, GPU busy
#                       time), torch.compile / CUDA graphs of the decoder step, channels_last,
#                       batch 32 -> 256, images/s before and after
#   4. bench_beam_search.py --paper-dims --device cuda --images 256 - batched vs per-image
# Each part has its own time limit; a failing part does not stop the others. Logs go to
# $1 (or $OUT, or benchmarks/results/gpu_run): at most 6 files.
#
# The GPU image has torch but not kedro, pydantic, pycocotools: build them here first with
#   bash benchmarks/device_site.sh          (-> .devsite/site, 12 MB, ignored by git)
# and carry .devsite to the device run:  command "bash benchmarks/gpu_issue15.sh", carry [".devsite"].
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/results/gpu_run}}
mkdir -p "$out"
export DO_NOT_TRACK=1 KEDRO_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
export PYTHONPATH="$PWD/.devsite/site:$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
start=$SECONDS
part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s, at ${SECONDS}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}
{ nvidia-smi || true; $py -c 'import torch, sys; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda)'; } >"$out/machine.txt" 2>&1
cat "$out/machine.txt"
dev=${GPU_ISSUE15_DEVICE:-cuda}  # "cpu": a dry run of this script (tiny sizes)
if [ "$dev" = cuda ]; then
  part gpu_check 120 $py benchmarks/gpu_check.py
  part cuda_smoke 60 $py benchmarks/cuda_smoke.py
  part gpu_speed 210 $py benchmarks/gpu_speed.py --budget 150
  part beam_256 150 $py benchmarks/bench_beam_search.py --paper-dims --device cuda --images 256 \
    --repeats 2 --calib-iters 10
else
  part gpu_check 300 $py benchmarks/gpu_check.py --device cpu
  part cuda_smoke 300 $py benchmarks/cuda_smoke.py --device cpu
  part gpu_speed 300 $py benchmarks/gpu_speed.py --device cpu --variants eager cached --sweep
  part beam_256 300 $py benchmarks/bench_beam_search.py --paper-dims --device cpu --images 4 \
    --repeats 1 --calib-images 2 --calib-iters 2 --max-len 4 --target-len 2
fi
echo "total $((SECONDS - start)) s" | tee -a "$out/summary.txt"
