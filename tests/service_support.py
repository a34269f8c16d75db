"""Shared helpers for the service tests: servers (in-process or as a subprocess) and Ames data. The hostile
clients live in ``benchmarks/hostile_clients.py`` (shared with ``benchmarks/hostile.py``; conftest puts
``benchmarks/`` on the path) and are re-exported here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hostile_clients import StalledStreams, session_client, streams_in_flight, wait_until

from ciphergrad.client.local import ServerProcess
from ciphergrad.core.data import load_ames
from ciphergrad.server.app import CipherGradServer
from ciphergrad.server.config import ServerConfig

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


__all__ = ["ROOT", "ServerProcess", "StalledStreams", "ames", "local_server", "session_client", "streams_in_flight",
           "wait_until"]
