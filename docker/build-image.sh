#!/usr/bin/env bash
# Build the ciphergrad image offline: base image (if missing), wheelhouse (refreshed), image.
# Usage: docker/build-image.sh [TAG]            (default ciphergrad:latest; the client image, the server's
#        plus the torch twins for `ciphergrad demo`, is tagged NAME-client:VERSION, e.g. ciphergrad-client:latest)
# Env:   BASE_IMAGE (default ciphergrad-base:bookworm; any Debian-based Python 3.11 image works,
#        e.g. python:3.11-slim-bookworm where registries are reachable). Extra `docker build`
#        arguments can be passed in DOCKER_BUILD_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-ciphergrad:latest}"
CLIENT_TAG="${TAG%%:*}-client:${TAG#*:}"
BASE_IMAGE="${BASE_IMAGE:-ciphergrad-base:bookworm}"

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if [ "$BASE_IMAGE" = ciphergrad-base:bookworm ]; then
    docker/build-base.sh "$BASE_IMAGE"
  else
    docker pull "$BASE_IMAGE"
  fi
fi
docker/fetch-wheels.sh build/wheelhouse
EXTRA=torch docker/fetch-wheels.sh build/wheelhouse-torch
EXTRA=ray docker/fetch-wheels.sh build/wheelhouse-ray

# BuildKit (when the buildx plugin is there) keeps build stages in its cache, not as images.
if [ -z "${DOCKER_BUILDKIT:-}" ] && docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=1
fi

start=$(date +%s)
# shellcheck disable=SC2086
docker build --build-arg BASE_IMAGE="$BASE_IMAGE" ${DOCKER_BUILD_ARGS:-} --target server -t "$TAG" .
# shellcheck disable=SC2086
docker build --build-arg BASE_IMAGE="$BASE_IMAGE" ${DOCKER_BUILD_ARGS:-} --target client -t "$CLIENT_TAG" .
# Untagged leftovers go: the legacy builder keeps the build stage as an image (~1.6 GB per build), and a
# rebuild untags the previous ciphergrad image. Both carry the Dockerfile's stage label, so exactly
# those are pruned; an image a container still uses stays.
docker image prune --force --filter label=org.ciphergrad.stage >/dev/null
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
echo "built $TAG ($(size "$TAG")) and $CLIENT_TAG ($(size "$CLIENT_TAG")) in $(( $(date +%s) - start )) s"
