"""Shared helpers for the service tests: servers (in-process or as a subprocess) and Ames data. The hostile
clients live in ``benchmarks/hostile_clients.py`` (shared with ``benchmarks/hostile.py``; conftest puts
``benchmarks/`` on the path) and are re-exported here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_clients import StalledStreams, session_client, streams_in_flight, wait_until

from ciphergrad.client.local import ServerProcess
from ciphergrad.core.data import load_ames
from ciphergrad.server.app import CipherGradServer
from ciphergrad.server.config import ServerConfig
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

ROOT = Path(__file__).resolve().parent.parent


def ames() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Ames with the intercept column of ones first (LinearRegressionConfig.intercept_column=0)."""
    data = load_ames()
    X = np.hstack([np.ones((len(data.X), 1)), data.X])
    return X, data.y, ["intercept", *data.feature_names]


def leave_mid_job(client: Any, dataset_id: str, config: Any, at_refresh: int = 3) -> Any:
    """Train until the key holder's ``at_refresh``-th refresh, then leave as a closed laptop would; the job
    once the server has paused it (its last checkpoint kept, resumable with ``client.train(job_id=...)``)."""
    seen: list[np.ndarray] = []

    def leave(values: np.ndarray) -> None:
        seen.append(values)
        if len(seen) == at_refresh:
            raise KeyboardInterrupt("the data owner closed the laptop")

    before = {job.job_id for job in client.list_jobs()}
    with pytest.raises(KeyboardInterrupt):
        client.train(dataset_id, config, on_refresh=leave)
    job = next(job for job in client.list_jobs() if job.job_id not in before)
    paused = training_service_pb2.JOB_STATE_PAUSED
    wait_until(lambda: client.get_job(job.job_id).state == paused, 30, "the job's pause")
    return client.get_job(job.job_id)


@contextmanager
def local_server(data_dir: Path, **settings: object) -> Iterator[CipherGradServer]:
    server = CipherGradServer(ServerConfig(listen="127.0.0.1:0", data_dir=str(data_dir), **settings)).start()
    try:
        yield server
    finally:
        server.stop(grace=1.0)


__all__ = ["ROOT", "ServerProcess", "StalledStreams", "ames", "local_server", "session_client", "streams_in_flight",
           "wait_until"]
