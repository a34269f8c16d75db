"""Assemble the gRPC server: our seven services, health checking and reflection."""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.access import Access
from server.compute import ComputeServicer
from server.config import ServerConfig
from server.contributions import ContributionServicer
from server.datasets import DatasetServicer
from server.engines import EngineCache
from server.execution import open_executor
from server.jobs import JobRunner
from server.models import ModelServicer
from server.observability import Interceptor, Metrics
from server.pools import PoolServicer
from server.sessions import SessionServicer
from server.storage import Store
from server.training import TrainingServicer
from wire.chunks import CHANNEL_OPTIONS
from wire.proto_gen.ciphergrad.v1 import (
    compute_service_pb2,
    compute_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    pool_service_pb2,
    pool_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)

log = logging.getLogger("ciphergrad.server")

SERVICE_NAMES = (
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name,
    training_service_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    compute_service_pb2.DESCRIPTOR.services_by_name["ComputeService"].full_name,
    pool_service_pb2.DESCRIPTOR.services_by_name["PoolService"].full_name,
    pool_service_pb2.DESCRIPTOR.services_by_name["ContributionService"].full_name,
)


class CipherGradServer:
    """The server with its storage; ``start()`` binds, ``stop()`` pauses jobs and drains calls."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # First: a bad --ray-address fails here (ExecutionError naming it) before anything is opened.
        self.executor = open_executor(config.executor, config.ray_address, config.ray_num_cpus)
        self.store = Store(config.data_dir)
        self.metrics = Metrics(self.store.job_counts)
        self.engines = EngineCache(self.store, track=self.metrics.track)
        self.runner = JobRunner(self.store, self.engines, config.workers, executor=self.executor)
        self.runner.recover()
        access = Access(self.store, config.token_ttl)
        max_upload = config.max_upload_mb * 2**20
        max_batch = config.max_batch_mb * 2**20
        # Each open stream (training, upload, predict) holds a thread for its lifetime.
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max(16, 8 * config.workers), thread_name_prefix="grpc"),
            options=list(CHANNEL_OPTIONS),  # bulk data is chunked and limited by --max-upload-mb
            interceptors=[Interceptor(self.metrics)],
        )
        session_service_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(self.store, access, self.engines, self.runner.stop, max_upload), self.server
        )
        dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(
            DatasetServicer(self.store, access, self.engines, max_upload), self.server
        )
        training_service_pb2_grpc.add_TrainingServiceServicer_to_server(
            TrainingServicer(self.store, access, self.runner), self.server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.store, access, self.engines, max_batch), self.server
        )
        compute_service_pb2_grpc.add_ComputeServiceServicer_to_server(
            ComputeServicer(self.store, access, self.engines, max_upload, max_batch), self.server
        )
        pool_service_pb2_grpc.add_PoolServiceServicer_to_server(
            PoolServicer(self.store, access, self.engines, self.executor), self.server
        )
        pool_service_pb2_grpc.add_ContributionServiceServicer_to_server(
            ContributionServicer(self.store, access, self.engines, max_upload), self.server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self._bind()
        self.metrics_port: int | None = None

    def _bind(self) -> int:
        config = self.config
        if config.tls_cert and config.tls_key:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
            )
            port = self.server.add_secure_port(config.listen, credentials)
        else:
            port = self.server.add_insecure_port(config.listen)
        if not port:
            raise OSError(f"cannot listen on {config.listen}")
        return port

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> CipherGradServer:
        self.server.start()
        if self.config.metrics_port is not None:
            host = self.config.listen.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
            self.metrics_port = self.metrics.serve(host, self.config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("ciphergrad server listening on %s, data in %s, executor %s", self.address, self.config.data_dir,
                 self.config.executor if self.config.executor == "local" else
                 f"ray at {self.config.ray_address or 'a local Ray'}")
        return self

    def stop(self, grace: float | None = None) -> None:
        """Graceful: report NOT_SERVING, pause jobs at their checkpoints, drain calls, close storage."""
        grace = self.config.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        self.runner.shutdown(timeout=grace)
        self.server.stop(grace).wait()
        self.metrics.close()
        self.store.close()
        self.executor.close()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def __enter__(self) -> CipherGradServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)
