#!/usr/bin/env bash
# Download (here, with network) the wheels that benchmarks/gpu_check.sh installs offline on a bare GPU
# machine (torch but no pydantic/pyyaml/tqdm/pytest). Binary wheels for several CPython versions, since
# the GPU machine's Python is not known in advance. Goes to build/gpu_wheels (git-ignored, ~15 MB):
# pass it to the device run with carry: ["build/gpu_wheels"].
#   PY_VERSIONS="3.10 3.11 3.12 3.13"   which CPython versions (default: all four)
#   WITH_NUMPY=1                          also numpy (~16 MB per version: name one version then)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=build/gpu_wheels
mkdir -p "$dest"
packages=(pydantic pydantic-core annotated-types typing-inspection typing-extensions pyyaml tqdm pytest)
if [[ "${WITH_NUMPY:-0}" == 1 ]]; then packages+=(numpy); fi
for py in ${PY_VERSIONS:-3.10 3.11 3.12 3.13}; do
  python -m pip download --quiet --only-binary=:all: --implementation cp --python-version "$py" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$dest" "${packages[@]}"
done
ls "$dest" | sed 's/^/  /'
du -sh "$dest"
