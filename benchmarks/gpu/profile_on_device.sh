#!/usr/bin/env bash
# Where a large-batch training step spends its GPU time, which fast paths pay there, and torch.compile at the
# largest batch. Run from the repository root on the GPU machine, like run_on_device.sh:
#
#   OUT=results/gpu bash benchmarks/gpu/profile_on_device.sh    # 262 s on an H200
#
# Results land in $OUT: profile.json (eager: batch 8192 bf16, top kernels at 48 and 8192, fast paths at 4096 bf16),
# compile.json (compiled, batch 8192 bf16) and run.log.
source "$(dirname "$0")/device_env.sh"

echo "== stage 1: eager bf16 at batch 8192, kernel profile, fast paths at batch 4096"
timeout 120 python3 -m benchmarks.training_throughput --device cuda --dtypes bf16 --batch-sizes 8192 --rounds 3 \
    --fast-paths --fast-paths-batch 4096 --fast-paths-dtype bf16 --cache-dir "$CACHE" --out "$OUT/profile.json"
echo "== stage 1 exit status $?"

echo "== stage 2: torch.compile, bf16, batch 8192"
timeout 150 python3 -m benchmarks.training_throughput --device cuda --compile --dtypes bf16 --batch-sizes 8192 \
    --warmup 2 --rounds 3 --cache-dir "$CACHE" --out "$OUT/compile.json"
echo "== stage 2 exit status $?"
