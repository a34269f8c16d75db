"""Server settings: command-line flags, each with an environment-variable fallback."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    data_dir: str = "./var/ciphergrad"
    workers: int = 2
    max_upload_mb: int = 4096
    max_batch_mb: int = 64
    tls_cert: str | None = None
    tls_key: str | None = None
    grace_seconds: float = 10.0
    port_file: str | None = None
    token_ttl: float = 0.0
    metrics_port: int | None = None
    executor: str = "local"
    ray_address: str = ""
    ray_num_cpus: int | None = None
    ray_blocks: str = "object-store"
    ray_object_store_mb: int = 256
    refresh_timeout: float = 600.0
    stream_idle_timeout: float = 300.0
    max_streams_per_session: int = 16
    max_jobs_per_session: int = 8
    max_anonymous_streams: int = 64
    max_inflight_mb: int = 1024
    keepalive_seconds: float = 60.0


# flag -> (environment variable, type, help)
_FLAGS = {
    "listen": ("CIPHERGRAD_LISTEN", str, "HOST:PORT to serve on (port 0 picks a free one)"),
    "data_dir": ("CIPHERGRAD_DATA_DIR", str, "directory for the SQLite metadata and ciphertext blobs"),
    "workers": ("CIPHERGRAD_WORKERS", int, "training jobs computing at once (more wait in JOB_STATE_QUEUED); "
                "as many threads again compute uploads, predictions and statistics"),
    "max_upload_mb": ("CIPHERGRAD_MAX_UPLOAD_MB", int, "largest context, dataset or metrics input, MiB"),
    "max_batch_mb": ("CIPHERGRAD_MAX_BATCH_MB", int, "largest prediction or query batch in a stream, MiB"),
    "tls_cert": ("CIPHERGRAD_TLS_CERT", str, "PEM certificate chain; enables TLS together with --tls-key"),
    "tls_key": ("CIPHERGRAD_TLS_KEY", str, "PEM private key for --tls-cert"),
    "grace_seconds": ("CIPHERGRAD_GRACE_SECONDS", float, "on SIGTERM, seconds in-flight calls may finish"),
    "port_file": ("CIPHERGRAD_PORT_FILE", str, "once serving, write HOST:PORT here (for --listen HOST:0)"),
    "token_ttl": ("CIPHERGRAD_TOKEN_TTL", float, "seconds a session token stays valid (0: until revoked)"),
    "metrics_port": (
        "CIPHERGRAD_METRICS_PORT",
        int,
        "Prometheus /metrics on this port of --listen's host (0: a free one)",
    ),
    "executor": ("CIPHERGRAD_EXECUTOR", str, "where HE work runs (full-batch jobs, predictions, statistics): "
                 "local (this process) or ray"),
    "ray_address": ("CIPHERGRAD_RAY_ADDRESS", str, "with --executor ray: empty starts a local Ray, auto or "
                    "HOST:PORT joins a cluster"),
    "ray_num_cpus": ("CIPHERGRAD_RAY_NUM_CPUS", int, "with --executor ray and no address: CPUs of the local Ray"),
    "ray_blocks": ("CIPHERGRAD_RAY_BLOCKS", str, "with --executor ray: how workers get a table's blocks and the "
                   "session's context: object-store (the server reads them and sends them through Ray's object "
                   "store; no shared disk) or path (workers read the data directory, which every node must mount "
                   "at the same path)"),
    "ray_object_store_mb": ("CIPHERGRAD_RAY_OBJECT_STORE_MB", int, "with --ray-blocks object-store: MiB of blocks "
                            "in Ray's object store at once; a larger table streams to the workers in pieces"),
    "refresh_timeout": ("CIPHERGRAD_REFRESH_TIMEOUT", float, "seconds a job waits for its key holder's reply "
                        "before it pauses (resumable with attach)"),
    "stream_idle_timeout": ("CIPHERGRAD_STREAM_IDLE_TIMEOUT", float, "seconds an inbound stream (upload, batch, "
                            "context) may stay silent before the server ends it"),
    "max_streams_per_session": ("CIPHERGRAD_MAX_STREAMS_PER_SESSION", int, "open streaming calls per session "
                                "(Train, UploadDataset, Predict, Metrics, Distances)"),
    "max_jobs_per_session": ("CIPHERGRAD_MAX_JOBS_PER_SESSION", int, "training jobs per session attached at "
                             "once, running or queued"),
    "max_anonymous_streams": ("CIPHERGRAD_MAX_ANONYMOUS_STREAMS", int, "CreateSession streams (no token yet) "
                              "open at once, server-wide"),
    "max_inflight_mb": ("CIPHERGRAD_MAX_INFLIGHT_MB", int, "request data parsed into memory at once, "
                        "server-wide (prediction, query and metrics batches, Describe's table), MiB"),
    "keepalive_seconds": ("CIPHERGRAD_KEEPALIVE_SECONDS", float, "HTTP/2 keepalive ping interval on idle "
                          "connections (a dead peer is dropped 20 s after an unanswered ping); clients' own "
                          "keepalive pings are always accepted"),
}


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    env = os.environ if env is None else env
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="ciphergrad-server",
        description="Serve ciphergrad's gRPC API: training and inference on CKKS-encrypted data.",
    )
    for name, (variable, kind, text) in _FLAGS.items():
        default = env.get(variable, getattr(defaults, name))
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=kind(default) if default is not None else None,
            help=f"{text} [env {variable}; default {getattr(defaults, name)}]",
        )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not args.token_ttl >= 0:
        parser.error("--token-ttl must be 0 (no expiry) or a positive number of seconds")
    if args.max_batch_mb < 1:
        parser.error("--max-batch-mb must be at least 1")
    if args.max_upload_mb < 1:
        parser.error("--max-upload-mb must be at least 1")
    if args.executor not in ("local", "ray"):
        parser.error(f"--executor must be local or ray, not {args.executor!r}")
    if args.ray_num_cpus is not None and args.ray_num_cpus < 1:
        parser.error("--ray-num-cpus must be at least 1")
    if args.ray_blocks not in ("object-store", "path"):
        parser.error(f"--ray-blocks must be object-store or path, not {args.ray_blocks!r}")
    if args.ray_object_store_mb < 1:
        parser.error(f"--ray-object-store-mb must be at least 1 (MiB), not {args.ray_object_store_mb}")
    for name in ("refresh_timeout", "stream_idle_timeout", "keepalive_seconds"):
        if not getattr(args, name) > 0:  # also refuses NaN
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    for name in ("max_streams_per_session", "max_jobs_per_session", "max_anonymous_streams", "max_inflight_mb"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return ServerConfig(**vars(args))
