"""Assemble the gRPC server (``grpc.aio``): our seven services, health checking and reflection."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ciphergrad.server.config import ServerConfig
from ciphergrad.server.execution import open_executor
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.jobs.runner import JobRunner
from ciphergrad.server.rpc.access import Access
from ciphergrad.server.rpc.observability import Interceptor, Metrics
from ciphergrad.server.rpc.work import MIB, Limits, Work
from ciphergrad.server.services.compute import ComputeServicer
from ciphergrad.server.services.contributions import ContributionServicer
from ciphergrad.server.services.datasets import DatasetServicer
from ciphergrad.server.services.models import ModelServicer
from ciphergrad.server.services.pools import PoolServicer
from ciphergrad.server.services.sessions import SessionServicer
from ciphergrad.server.services.training import TrainingServicer
from ciphergrad.server.store.store import Store
from ciphergrad.wire.chunks import CHANNEL_OPTIONS
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
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
T = TypeVar("T")
KEEPALIVE_TIMEOUT_MS = 20_000

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
    """The server with its storage; ``start()`` binds, ``stop()`` pauses jobs and drains calls.

    A ``grpc.aio`` server on an event loop of its own (one thread, started by ``start()``): the loop only
    waits, the work runs on ``server.rpc.work``'s bounded pools and on the jobs' threads. The facade is
    synchronous (start, stop, wait, a context manager) for ``server.main`` and in-process tests.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # First: a bad --ray-address fails here (ExecutionError naming it) before anything is opened.
        self.executor = open_executor(config.executor, config.ray_address, config.ray_num_cpus,
                                      blocks=config.ray_blocks, object_store_mb=config.ray_object_store_mb)
        self.store = Store(config.data_dir)
        self.metrics = Metrics(self.store.job_counts)
        self.engines = EngineCache(self.store, track=self.metrics.track)
        # A session's context reaches the Ray workers when the server first loads it (its upload), not at its first job.
        self.engines.on_load = self.executor.warm
        limits = Limits(config.max_streams_per_session, config.max_anonymous_streams, config.max_inflight_mb * MIB)
        self.work = Work(config.workers, limits, config.stream_idle_timeout)
        self.runner = JobRunner(self.store, self.engines, config.workers, self.work, config.refresh_timeout,
                                executor=self.executor, max_jobs_per_session=config.max_jobs_per_session)
        self.runner.recover()
        self.access = Access(self.store, config.token_ttl)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc-loop", daemon=True)
        self._thread.start()
        try:
            self.port = self._call(self._build())
        except BaseException:
            self._close_loop()
            raise
        self.metrics_port: int | None = None

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the server's loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _build(self) -> int:
        config, work = self.config, self.work
        max_upload = config.max_upload_mb * 2**20
        max_batch = config.max_batch_mb * 2**20
        self.server = grpc.aio.server(
            options=[*CHANNEL_OPTIONS, *keepalive_options(config.keepalive_seconds)],
            interceptors=[Interceptor(self.metrics)],
        )
        session_service_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(self.store, self.access, self.engines, self.runner.stop, max_upload, work,
                            self.executor), self.server
        )
        dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(
            DatasetServicer(self.store, self.access, self.engines, max_upload, work, self.executor), self.server
        )
        training_service_pb2_grpc.add_TrainingServiceServicer_to_server(
            TrainingServicer(self.store, self.access, self.runner, work), self.server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.store, self.access, self.engines, max_batch, work, self.executor), self.server
        )
        compute_service_pb2_grpc.add_ComputeServiceServicer_to_server(
            ComputeServicer(self.store, self.access, self.engines, max_upload, max_batch, work, self.executor),
            self.server,
        )
        pool_service_pb2_grpc.add_PoolServiceServicer_to_server(
            PoolServicer(self.store, self.access, self.engines, self.executor, work), self.server
        )
        pool_service_pb2_grpc.add_ContributionServiceServicer_to_server(
            ContributionServicer(self.store, self.access, self.engines, max_upload, work, self.executor),
            self.server
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        return self._bind()

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
        self._call(self._start())
        if self.config.metrics_port is not None:
            host = self.config.listen.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
            self.metrics_port = self.metrics.serve(host, self.config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)
        log.info("ciphergrad server listening on %s, data in %s, executor %s", self.address, self.config.data_dir,
                 self.config.executor if self.config.executor == "local" else
                 f"ray at {self.config.ray_address or 'a local Ray'}, blocks by {self.config.ray_blocks}")
        return self

    async def _start(self) -> None:
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> None:
        """Graceful: report NOT_SERVING, pause jobs at their checkpoints, drain calls, close storage."""
        grace = self.config.grace_seconds if grace is None else grace
        if not self.loop.is_closed():
            self._call(self.health.enter_graceful_shutdown())
            self.runner.shutdown(timeout=grace)
            self._call(self.server.stop(grace))
            self._close_loop()
        self.work.close()
        self.metrics.close()
        self.store.close()
        self.executor.close()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def wait(self) -> None:
        self._thread.join()

    def __enter__(self) -> CipherGradServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def keepalive_options(seconds: float) -> list[tuple[str, int]]:
    """HTTP/2 keepalive: ping an idle connection every ``seconds`` and drop it 20 s after an unanswered ping.
    Clients' own keepalive pings are never refused, with or without calls in flight: gRPC's default policy
    answers a client that pings more often than every 5 minutes with GOAWAY "too_many_pings", which fails
    its open streams (a ping costs the server an ack in the C core, no Python)."""
    return [
        ("grpc.keepalive_time_ms", int(seconds * 1000)),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0),  # 0: never GOAWAY a client for pinging
    ]
