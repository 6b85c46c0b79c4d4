#!/usr/bin/env bash
# Every benchmark on one CUDA GPU, sized to end within 6 minutes: two stages, each under `timeout`, so the first
# stage's results survive when the second runs long. Run from the repository root on the GPU machine, with the
# wheels of fetch_wheels.sh in .whl/ (see benchmarks/README.md, "On a GPU"):
#
#   OUT=results/gpu bash benchmarks/gpu/run_on_device.sh        # 342 s on an H200
#
# Results land in $OUT: training.json, generation.json, data_pipeline.json, projection.json, summary.json
# (stage 1: eager, fp32 and bf16), compile.json (stage 2: torch.compile, bf16) and run.log (versions, nvidia-smi,
# every table printed).
source "$(dirname "$0")/device_env.sh"

echo "== stage 1: eager fp32 + bf16: training sweep, fast paths, memory; generation; data pipeline"
timeout 250 python3 -m benchmarks.run_all --device cuda --rounds 3 --cache-dir "$CACHE" --out "$OUT"
echo "== stage 1 exit status $?"

echo "== stage 2: torch.compile (MVaEMa: compile_for_training; peer: model.compile()), bf16, batch 48 and 4096"
timeout 100 python3 -m benchmarks.training_throughput --device cuda --compile --dtypes bf16 --batch-sizes 48 4096 \
    --warmup 2 --rounds 3 --cache-dir "$CACHE" --out "$OUT/compile.json"
echo "== stage 2 exit status $?"
