#!/usr/bin/env bash
# Download every wheel the image needs (cp311, manylinux x86_64) into build/wheelhouse, so the
# Docker build installs offline (`pip install --no-index --find-links`): pip inside the build
# cannot reach or verify the package index on every machine.
# Usage: docker/fetch-wheels.sh [WHEELHOUSE]       (default build/wheelhouse, or build/wheelhouse-EXTRA; git-
#        and docker-ignored except these, the only parts of build/ sent to the Docker daemon)
# Env:   PIP (default .venv/bin/pip, else pip3)
#        EXTRA: fetch one optional-dependency group instead of the base closure (EXTRA=torch: the twins
#        the client image adds on top of the server's virtualenv)
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRA="${EXTRA:-}"
DEST="${1:-build/wheelhouse${EXTRA:+-$EXTRA}}"
PIP="${PIP:-$( [ -x .venv/bin/pip ] && echo .venv/bin/pip || echo pip3 )}"
PY="$(dirname "$PIP")/python"; [ -x "$PY" ] || PY=python3
mkdir -p "$DEST"

# Runtime dependencies straight from pyproject.toml, plus the build backend that `pip install .`
# needs in its isolated build environment. The check runs in Python, not as `printf | grep -q`:
# under pipefail, grep -q exits at its first match and printf dies of SIGPIPE, failing the check
# now and then. torch may be a base dependency or only an extra; wherever pyproject names it, the
# pin must be exactly torch==2.13.0 (any other spec pulls several GB of CUDA wheels).
# A command substitution, not `mapfile < <(...)`: set -e sees its exit status.
REQS_TEXT="$(EXTRA="$EXTRA" "$PY" - <<'PYEOF'
import os
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    data = tomllib.load(f)
project = data["project"]
named = list(project["dependencies"])
for extra in project.get("optional-dependencies", {}).values():
    named += extra
torch_specs = {r.replace(" ", "") for r in named if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() == "torch"}
if torch_specs - {"torch==2.13.0"}:
    sys.exit(f"pyproject.toml must pin torch==2.13.0 exactly, found {sorted(torch_specs)}")
extra = os.environ["EXTRA"]
if extra:
    if extra not in project.get("optional-dependencies", {}):
        sys.exit(f"pyproject.toml has no extra {extra!r}")
    wanted = project["optional-dependencies"][extra]
else:
    wanted = project["dependencies"] + data["build-system"]["requires"]
for req in wanted:
    print(req)
PYEOF
)"
mapfile -t REQS <<<"$REQS_TEXT"

# Download into a fresh directory and swap it in, so the wheelhouse holds exactly today's closure
# (the image installs every wheel in it; a stale wheel would ride along). Wheels already on disk
# are reused through --find-links instead of being fetched again.
FRESH="$(mktemp -d "${DEST%/}.new.XXXXXX")"
trap 'rm -rf "$FRESH"' EXIT

"$PIP" download --dest "$FRESH" --find-links "$DEST" \
  --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "${REQS[@]}"

rm -rf "$DEST"
mv "$FRESH" "$DEST"
echo "wheelhouse: $DEST ($(ls "$DEST" | wc -l) files, $(du -sh "$DEST" | cut -f1))"
