#!/usr/bin/env bash
# Download every wheel the image needs (cp311, manylinux x86_64) into build/wheelhouse, so the
# Docker build installs offline (`pip install --no-index --find-links`): pip inside the build
# cannot reach or verify the package index on every machine.
# Usage: docker/fetch-wheels.sh [WHEELHOUSE]       (default build/wheelhouse; git- and docker-ignored
#        except build/wheelhouse, which is the only part of build/ sent to the Docker daemon)
# Env:   PIP (default .venv/bin/pip, else pip3)
set -euo pipefail
cd "$(dirname "$0")/.."

DEST="${1:-build/wheelhouse}"
PIP="${PIP:-$( [ -x .venv/bin/pip ] && echo .venv/bin/pip || echo pip3 )}"
PY="$(dirname "$PIP")/python"; [ -x "$PY" ] || PY=python3
mkdir -p "$DEST"

# Runtime dependencies straight from pyproject.toml, plus the build backend that `pip install .`
# needs in its isolated build environment. torch stays pinned exactly (any other spec pulls CUDA).
mapfile -t REQS < <("$PY" - <<'PYEOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    data = tomllib.load(f)
for req in data["project"]["dependencies"]:
    print(req)
for req in data["build-system"]["requires"]:
    print(req)
PYEOF
)
printf '%s\n' "${REQS[@]}" | grep -qx 'torch==2.13.0' || {
  echo "pyproject.toml must pin torch==2.13.0 exactly" >&2; exit 1; }

"$PIP" download --dest "$DEST" \
  --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "${REQS[@]}"

echo "wheelhouse: $DEST ($(ls "$DEST" | wc -l) files, $(du -sh "$DEST" | cut -f1))"
