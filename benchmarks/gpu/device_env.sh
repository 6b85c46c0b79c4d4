# Sourced by the scripts beside it, on the GPU machine, from the repository root: the log of the run in
# $OUT/run.log, the carried wheels (.whl/, see fetch_wheels.sh) installed into a temporary site folder, the offline
# environment, and the card, the driver and the versions at the top of the log.
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, transformers, datasets, huggingface_hub as hub; print('torch', torch.__version__, 'cuda',
torch.version.cuda, '| transformers', transformers.__version__, '| datasets', datasets.__version__, '| hub',
hub.__version__, '|', torch.cuda.get_device_name())" || exit 1
CACHE=/tmp/mvaema-bench
