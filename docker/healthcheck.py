#!/usr/bin/env python3
"""Container healthcheck: ask the server's standard gRPC health service whether it is SERVING.

Exit 0 when SERVING, 1 otherwise. The address is the first argument, else derived from
CIPHERGRAD_LISTEN (a wildcard host such as 0.0.0.0 or [::] is probed on loopback).
Env: CIPHERGRAD_HEALTH_SERVICE (default "": the whole server), CIPHERGRAD_HEALTH_TIMEOUT (s, 3).
TLS: when the server runs with CIPHERGRAD_TLS_CERT, the probe uses TLS too, trusting
CIPHERGRAD_HEALTH_CA (when that file exists: the image points it at the generated CA, docker/entrypoint.sh;
else the certificate itself) and checking the name CIPHERGRAD_HEALTH_TLS_NAME (default: the certificate's
own name as the channel sees it). CIPHERGRAD_PLAINTEXT=1 (the entrypoint's opt-out) probes in plaintext.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def probe_address(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::", "*"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def open_channel(address: str) -> grpc.Channel:
    cert = os.environ.get("CIPHERGRAD_TLS_CERT")
    if not cert or os.environ.get("CIPHERGRAD_PLAINTEXT") == "1":
        return grpc.insecure_channel(address)
    ca = os.environ.get("CIPHERGRAD_HEALTH_CA", "")
    with open(ca if ca and os.path.isfile(ca) else cert, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    name = os.environ.get("CIPHERGRAD_HEALTH_TLS_NAME")
    options = [("grpc.ssl_target_name_override", name)] if name else []
    return grpc.secure_channel(address, credentials, options=options)


def main() -> int:
    listen = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CIPHERGRAD_LISTEN", "")
    address = probe_address(listen or "127.0.0.1:50051")
    service = os.environ.get("CIPHERGRAD_HEALTH_SERVICE", "")
    timeout = float(os.environ.get("CIPHERGRAD_HEALTH_TIMEOUT", "3"))
    try:
        with open_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        print(f"unhealthy: {address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
