"""Hostile clients, shared by ``benchmarks/hostile.py`` and the service tests: streams that send their first
messages and then nothing (``StalledStreams``, on an asyncio loop of their own: no thread per stream here
either), a health probe recording every latency (``HealthProbe``), and the server's streams-in-flight gauge.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ciphergrad.client.local import ServerProcess
from ciphergrad.client.sdk import Client, default_parameters
from ciphergrad.core.layout import choose_tile
from ciphergrad.wire.chunks import CHANNEL_OPTIONS
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
    types_pb2,
)

TINY_X = np.hstack([np.ones((16, 1)), np.random.default_rng(3).uniform(size=(16, 3))])
TINY_Y = TINY_X @ np.array([0.2, -0.1, 0.4, 0.3])
MANIFEST = session_service_pb2.SessionManifest(display_name="stalled", context_size_bytes=1000)


class HealthProbe:
    """Health checks every 50 ms on a channel of their own, each with a 1 s deadline; records each latency."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.latencies: list[float] = []
        self.failures: list[grpc.RpcError] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def _probe(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                answer = self.stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
                self.latencies.append(time.perf_counter() - start)
            except grpc.RpcError as exc:
                self.failures.append(exc)
            self._stop.wait(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.channel.close()


def session_client(address: str, shape: tuple[int, int]) -> Client:
    """A client with a fresh session whose Galois keys cover a matrix of ``shape``."""
    params = default_parameters()
    client = Client(address)
    client.create_session(params, tiles=[choose_tile(shape, params.slots, "rows")])
    return client


class StalledStreams:
    """Hostile clients on an asyncio loop of their own: each stream sends its first messages and then
    nothing, holding its call open until ``cancel()`` (no thread per stream on this side either)."""

    def __init__(self, address: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.channel = self._run(self._channel(address))
        self.calls: list[asyncio.Task] = []
        self.events: list[list[Any]] = []  # responses each stream has received so far

    async def _channel(self, address: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address, options=list(CHANNEL_OPTIONS))

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def create_session(self, manifest: session_service_pb2.SessionManifest) -> None:
        """CreateSession that sends its manifest and stops (no token needed)."""
        stub = session_service_pb2_grpc.SessionServiceStub(self.channel)
        self._open(stub.CreateSession, [session_service_pb2.CreateSessionRequest(manifest=manifest)], ())

    def upload(self, metadata: Any, chunk: bytes = b"CGEM") -> None:
        """UploadDataset stalled mid-matrix: a manifest, one chunk not marked last, then nothing."""
        stub = dataset_service_pb2_grpc.DatasetServiceStub(self.channel)
        first = dataset_service_pb2.UploadDatasetRequest(manifest=dataset_service_pb2.DatasetManifest())
        piece = dataset_service_pb2.UploadDatasetRequest(chunk=types_pb2.MatrixChunk(data=chunk, last=False))
        self._open(stub.UploadDataset, [first, piece], metadata)

    def train(self, metadata: Any, dataset_id: str, hyperparameters: dict[str, Any]) -> None:
        """Train whose key holder never answers a refresh request."""
        stub = training_service_pb2_grpc.TrainingServiceStub(self.channel)
        spec = training_service_pb2.JobSpec(dataset_id=dataset_id, algorithm=types_pb2.ALGORITHM_LINEAR_REGRESSION)
        spec.hyperparameters.update(hyperparameters)
        self._open(stub.Train, [training_service_pb2.TrainRequest(start=spec)], metadata, streaming_out=True)

    def _open(self, method: Any, first: list[Any], metadata: Any, streaming_out: bool = False) -> None:
        received: list[Any] = []
        self.events.append(received)

        async def requests() -> AsyncIterator[Any]:
            for message in first:
                yield message
            await asyncio.Event().wait()  # and then nothing, ever

        async def call() -> Any:
            answer = method(requests(), metadata=metadata)
            if not streaming_out:
                return await answer
            async for response in answer:
                received.append(response)

        async def start() -> None:
            self.calls.append(asyncio.ensure_future(call()))

        self._run(start())

    def outcomes(self) -> list[BaseException | None]:
        """What each ended call raised (None: it ended OK); still-open calls are left out."""
        return [call.exception() for call in self.calls if call.done() and not call.cancelled()]

    def cancel(self) -> None:
        """Cancel every stream (the client disconnects) and close the channel."""

        async def close() -> None:
            for call in self.calls:
                call.cancel()
            await asyncio.gather(*self.calls, return_exceptions=True)
            await self.channel.close()
            # grpc's tasks still feeding the requests (waiting forever) go too.
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self._run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def streams_in_flight(server: Any) -> float:
    """The server's ciphergrad_streams_in_flight gauge, summed over methods (a child process: scraped from its
    --metrics-port)."""
    if isinstance(server, ServerProcess):
        assert server.metrics_port is not None, "start the ServerProcess with --metrics-port 0"
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
        lines = [line for line in text.splitlines() if line.startswith("ciphergrad_streams_in_flight{")]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)
    total = 0.0
    for metric in server.metrics.registry.collect():
        if metric.name == "ciphergrad_streams_in_flight":
            total += sum(sample.value for sample in metric.samples)
    return total


def wait_until(condition: Any, seconds: float = 60.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {seconds:.0f} s")
        time.sleep(0.05)
