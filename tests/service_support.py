"""Shared helpers for the service tests: servers (in-process or as a subprocess) and Ames data."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ciphergrad.client.sdk import Client, default_parameters
from ciphergrad.core.data import load_ames
from ciphergrad.core.layout import choose_tile
from ciphergrad.server.app import CipherGradServer
from ciphergrad.server.config import ServerConfig
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

ROOT = Path(__file__).resolve().parent.parent


def ames() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Ames with the intercept column of ones first (LinearRegressionConfig.intercept_column=0)."""
    data = load_ames()
    X = np.hstack([np.ones((len(data.X), 1)), data.X])
    return X, data.y, ["intercept", *data.feature_names]


@contextmanager
def local_server(data_dir: Path, **settings: object) -> Iterator[CipherGradServer]:
    server = CipherGradServer(ServerConfig(listen="127.0.0.1:0", data_dir=str(data_dir), **settings)).start()
    try:
        yield server
    finally:
        server.stop(grace=1.0)


def session_client(address: str, shape: tuple[int, int]) -> Client:
    """A client with a fresh session whose Galois keys cover a matrix of ``shape``."""
    params = default_parameters()
    client = Client(address)
    client.create_session(params, tiles=[choose_tile(shape, params.slots, "rows")])
    return client


class ServerProcess:
    """``ciphergrad-server`` as a child process (for SIGTERM / SIGKILL tests)."""

    def __init__(self, data_dir: Path, *flags: str) -> None:
        env = {**os.environ, "CIPHERGRAD_DATA_DIR": str(data_dir), "CIPHERGRAD_LISTEN": "127.0.0.1:0"}
        self.metrics_port: int | None = None  # with --metrics-port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ciphergrad.server.main", *flags],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited with {self.process.wait()}")
            metrics = re.search(r"metrics on http://[^\s]+:(\d+)/metrics", line)
            if metrics:
                self.metrics_port = int(metrics.group(1))
            found = re.search(r"ciphergrad server listening on ([^\s,]+), data in ", line)
            if found:
                self.address = found.group(1)
                # Keep reading its log so a chatty server never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise RuntimeError("server did not start within 60 s")

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)


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


def streams_in_flight(server: CipherGradServer | ServerProcess) -> float:
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
