"""Shared helpers for the service tests: servers (in-process or as a subprocess) and Ames data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from client.sdk import Client, default_parameters
from core.data import load_ames
from core.layout import choose_tile
from server.app import CipherGradServer
from server.config import ServerConfig

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

    def __init__(self, data_dir: Path) -> None:
        env = {**os.environ, "CIPHERGRAD_DATA_DIR": str(data_dir), "CIPHERGRAD_LISTEN": "127.0.0.1:0"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from server.main import main; sys.exit(main())"],
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
