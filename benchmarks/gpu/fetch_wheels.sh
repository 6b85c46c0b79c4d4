#!/usr/bin/env bash
# Download into .whl/ (repository root, git-ignored) the Python packages that run_on_device.sh and
# profile_on_device.sh install on a GPU machine without registry access. Such a machine's image typically has torch,
# numpy, pillow, scikit-learn, scipy, pandas, pyarrow, accelerate and safetensors; the benchmarks also need the
# versions this project pins (transformers 5.24, huggingface_hub 2.4), datasets, ImageHash and their dependencies.
# Copy .whl/ (about 25 MB) with the repository to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .gitignore 2>/dev/null || grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --dest .whl \
    transformers==5.24.0 tokenizers==0.23.3 regex==2026.11.19 \
    huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 click==8.5.1 fsspec==2026.9.0 \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
    ImageHash==4.3.2 PyWavelets==1.9.0
ls .whl
du -sh .whl
