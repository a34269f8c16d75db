#!/bin/sh
# The server image's entrypoint: TLS by default, plaintext only when asked for, then `exec ciphergrad-server`.
#
# * CIPHERGRAD_PLAINTEXT=1: serve without TLS (say so on stderr). Only for a network you control: session
#   tokens and every ciphertext then travel in clear text. The healthcheck reads the same variable.
# * Otherwise the server serves TLS with CIPHERGRAD_TLS_CERT / CIPHERGRAD_TLS_KEY. When both files exist
#   (mounted, or generated at an earlier start) they are used as they are. When they are missing and are the
#   image's defaults ($CIPHERGRAD_TLS_DIR/server.pem and server.key), a private CA and a server certificate
#   are generated there once, at first start, into the data volume:
#     ca.pem       the CA certificate clients trust (Client(address, tls="ca.pem"), `ciphergrad ... --tls`);
#     server.pem   signed by that CA, names: localhost, 127.0.0.1, ::1, server, server-ray, this container's
#                  hostname and any in CIPHERGRAD_TLS_NAMES (comma-separated, e.g. "grpc.example.org,10.0.0.5");
#     server.key   the server's private key (mode 0600, never leaves the volume).
#   The CA's private key is deleted right after signing: nobody, the server included, can issue another
#   certificate under that CA. To change the names, delete $CIPHERGRAD_TLS_DIR and restart (clients then
#   trust the new ca.pem). Missing files at any other (mounted) path are an error, never silently replaced.
# * CIPHERGRAD_CA_EXPORT (a directory, e.g. a volume shared with client containers): ca.pem is copied there
#   (mode 0644) at every start, so clients can trust it without access to the data volume.
# Needs the openssl CLI (Debian's ca-certificates package depends on it, so the base images have it).
set -eu

log() { printf 'ciphergrad-entrypoint: %s\n' "$*" >&2; }

if [ "${CIPHERGRAD_PLAINTEXT:-0}" = 1 ]; then
  log "CIPHERGRAD_PLAINTEXT=1: serving WITHOUT TLS; tokens and ciphertexts travel in clear text"
  unset CIPHERGRAD_TLS_CERT CIPHERGRAD_TLS_KEY
  exec ciphergrad-server "$@"
fi
case "${CIPHERGRAD_PLAINTEXT:-0}" in
  0 | "") ;;
  *) log "CIPHERGRAD_PLAINTEXT=${CIPHERGRAD_PLAINTEXT}: use 1 (plaintext) or 0 (TLS, the default)"; exit 2 ;;
esac

dir="${CIPHERGRAD_TLS_DIR:-${CIPHERGRAD_DATA_DIR:-/var/lib/ciphergrad}/tls}"
cert="${CIPHERGRAD_TLS_CERT:-$dir/server.pem}"
key="${CIPHERGRAD_TLS_KEY:-$dir/server.key}"

generate() {
  # In a fresh directory beside the target, renamed into place at the end: a server and server-ray
  # starting together on one volume cannot both half-write it (the loser's rename fails; it uses the winner's).
  parent=$(dirname "$dir")
  mkdir -p "$parent"
  work=$(mktemp -d "$parent/.tls-XXXXXX")
  names="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:server,DNS:server-ray,DNS:$(hostname)"
  old_ifs=$IFS
  IFS=,
  for name in ${CIPHERGRAD_TLS_NAMES:-}; do
    name=$(printf '%s' "$name" | tr -d ' ')
    [ -n "$name" ] || continue
    case "$name" in
      *[!0-9.]*) case "$name" in *:*) names="$names,IP:$name" ;; *) names="$names,DNS:$name" ;; esac ;;
      *) names="$names,IP:$name" ;;
    esac
  done
  IFS=$old_ifs
  (
    cd "$work"
    umask 077
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -sha256 \
      -subj "/CN=ciphergrad CA $(hostname)" -keyout ca.key -out ca.pem \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
      -subj "/CN=ciphergrad server" -keyout server.key -out server.csr
    printf '%s\n' "subjectAltName=$names" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
      -days 825 -sha256 -extfile server.ext -out server.pem
    rm -f ca.key server.csr server.ext
    chmod 0644 ca.pem server.pem
  )
  if mv -T "$work" "$dir" 2>/dev/null; then
    log "generated a CA and a server certificate in $dir (names: $names)"
  else
    rm -rf "$work"
    log "$dir appeared meanwhile (another server on this volume): using it"
  fi
}

if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
  if [ "$cert" = "$dir/server.pem" ] && [ "$key" = "$dir/server.key" ] && [ -z "$(ls -A "$dir" 2>/dev/null)" ]; then
    command -v openssl >/dev/null || { log "no openssl CLI to generate a certificate: mount one"; exit 2; }
    generate
  else
    log "TLS certificate $cert or key $key is missing: mount both, or leave CIPHERGRAD_TLS_CERT and" \
        "CIPHERGRAD_TLS_KEY unset to generate them in an empty $dir (or set CIPHERGRAD_PLAINTEXT=1)"
    exit 2
  fi
fi
export CIPHERGRAD_TLS_CERT="$cert" CIPHERGRAD_TLS_KEY="$key"

ca="${CIPHERGRAD_HEALTH_CA:-$dir/ca.pem}"
[ -s "$ca" ] || ca="$cert"  # a mounted self-signed certificate is its own CA
if ! openssl x509 -in "$cert" -noout -checkend 2592000 >/dev/null 2>&1; then
  log "WARNING: $cert expires within 30 days (or cannot be read): renew it (generated: delete $dir, restart)"
fi
log "TLS with $cert; clients trust $ca, SHA-256 fingerprint" \
    "$(openssl x509 -in "$ca" -noout -fingerprint -sha256 2>/dev/null | sed 's/.*=//')"
if [ -n "${CIPHERGRAD_CA_EXPORT:-}" ]; then
  mkdir -p "$CIPHERGRAD_CA_EXPORT"
  cp "$ca" "$CIPHERGRAD_CA_EXPORT/ca.pem.tmp"
  chmod 0644 "$CIPHERGRAD_CA_EXPORT/ca.pem.tmp"
  mv -f "$CIPHERGRAD_CA_EXPORT/ca.pem.tmp" "$CIPHERGRAD_CA_EXPORT/ca.pem"
fi
exec ciphergrad-server "$@"
