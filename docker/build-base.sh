#!/usr/bin/env bash
# Build the local base image `ciphergrad-base:bookworm` (Debian bookworm minbase + python3.11)
# with debootstrap + `docker import`, for machines that cannot pull from a registry.
# On a machine that can pull, you may instead build with
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm .
# Usage: sudo docker/build-base.sh [IMAGE_TAG]      (needs root, debootstrap and a Docker engine)
# Env:   MIRROR (default http://deb.debian.org/debian), WORKDIR (default ./build/base)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-ciphergrad-base:bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
WORKDIR="${WORKDIR:-$PWD/build/base}"
ROOTFS="$WORKDIR/rootfs"
TARBALL="$WORKDIR/rootfs.tar"
# python3-venv brings ensurepip (pip + setuptools wheels); ca-certificates for any TLS the app does; openssl
# generates the TLS certificate at the server's first start (docker/entrypoint.sh).
INCLUDE="python3,python3-venv,ca-certificates,openssl"

command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap needs it)" >&2; exit 1; }

rm -rf "$ROOTFS" "$TARBALL"
mkdir -p "$ROOTFS"
debootstrap --variant=minbase --include="$INCLUDE" bookworm "$ROOTFS" "$MIRROR"

# Slim it down: apt caches and lists, docs, man pages, non-English locales.
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/*
find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'en*' ! -name locale.alias \
     -exec rm -rf {} + 2>/dev/null || true
# debootstrap copies the host resolv.conf/hostname; Docker manages those at run time.
: > "$ROOTFS"/etc/resolv.conf
echo ciphergrad > "$ROOTFS"/etc/hostname

tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$TARBALL" .
docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --message "debian bookworm minbase + python3 (docker/build-base.sh)" \
  "$TARBALL" "$TAG"
rm -rf "$ROOTFS" "$TARBALL"
docker image ls "$TAG"
docker run --rm "$TAG" python3 --version
