#!/usr/bin/env bash
# The whole GPU sweep of the diffusers renderer in one call (a lent GPU machine has minutes, not hours):
# SD1.5-shaped pipeline (random weights, SD 1.5's cost) at 512x256, 25 steps, guidance 7.5, bf16, SDPA:
# eager at batch 8 and 32 (renderer / bare overhead), compiled + channels_last at 32 and 64, the same with
# 1x1 convolutions as matrix products, the shard worker end to end, the batch-size probe, an fp16 check.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # figures to OUT_DIR/bench.json, log to OUT_DIR/log.txt
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
settings=${SETTINGS:-eager:8,eager:32,compile-cl:32,compile-cl:64,compile-cl+mm:64}
python3 benchmarks/bench_diffusers.py --sd15-shaped --height 512 --width 256 --steps 25 --guidance 7.5 \
  --dtype bf16 --attention sdpa --settings "$settings" --pairs "${PAIRS:-4}" ${FLAGS:---worker --probe --check-fp16} \
  --json "$out/bench.json" ${EXTRA:-} 2>&1 | grep -v -e "Warning" -e "torchvision" | tee -a "$out/log.txt"
