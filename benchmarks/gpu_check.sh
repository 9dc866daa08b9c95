#!/usr/bin/env bash
# The whole GPU sweep of the diffusers renderer in one call (a lent GPU machine has minutes, not hours):
# SD1.5-shaped pipeline (random weights, SD 1.5's cost) at 512x256, 25 steps, guidance 7.5, bf16, SDPA:
# eager at batch 8 and 32 (renderer / bare overhead), compiled + channels_last at 32 and 64, the same with
# 1x1 convolutions as matrix products, the shard worker end to end, the batch-size probe, an fp16 check.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # figures to OUT_DIR/bench.json, log to OUT_DIR/log.txt
#
# Stage 2 (issue 25) is the part `train`: PARTS=train bash benchmarks/gpu_check.sh OUT_DIR (PARTS=render,train
# for both). It writes a 512-identity procedural dataset at 256x128 without Ray, builds the ViT-B/16-shaped
# CLIP, and runs benchmarks/bench_train_gpu.py (PDM phases 1 and 2, P x K = 16 x 4, bf16; sdpa and eager
# attention, eager and torch.compile, fused AdamW; in-memory vs streaming with 6 loader processes) into
# OUT_DIR/train.json, then benchmarks/bench_loader.py at 256x128 with 1, 2 and 6 processes and the nvjpeg
# decode into OUT_DIR/loader.json. About 8 minutes on an H100; narrow it with TRAIN_FLAGS.
#
# Missing Python packages may travel as wheels in .whl/ (the device tool's notes): they are installed
# into /tmp/site first. Narrow a rerun with SETTINGS=compile-cl:64, FLAGS="--worker --worker-shards 6",
# PAIRS=2, and pass anything else in EXTRA.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/log.txt"
parts=",${PARTS:-render},"
if [[ $parts == *,render,* ]]; then
settings=${SETTINGS:-eager:8,eager:32,compile-cl:32,compile-cl:64,compile-cl+mm:64}
python3 benchmarks/bench_diffusers.py --sd15-shaped --height 512 --width 256 --steps 25 --guidance 7.5 \
  --dtype bf16 --attention sdpa --settings "$settings" --pairs "${PAIRS:-4}" ${FLAGS:---worker --probe --check-fp16} \
  --json "$out/bench.json" ${EXTRA:-} 2>&1 | grep -v -e "Warning" -e "torchvision" | tee -a "$out/log.txt"
fi
if [[ $parts == *,train,* ]]; then
data=${TRAIN_DATA:-/tmp/dppp-train-data}
nproc | sed 's/^/cpus: /' | tee -a "$out/log.txt"
python3 benchmarks/bench_train_gpu.py --data "$data" --make-data 512 --loader-processes "${LOADER_PROCESSES:-6}" \
  ${TRAIN_FLAGS:---attention sdpa,eager --compile --fused --steps 30} --json "$out/train.json" 2>&1 \
  | grep -v -e "Warning" -e "Loading weights" | tee -a "$out/log.txt"
python3 benchmarks/bench_loader.py --data "$data" --size 256 128 --processes 1 2 6 --gpu-decode \
  --json "$out/loader.json" 2>&1 | grep -v -e "Warning" | tee -a "$out/log.txt"
fi
