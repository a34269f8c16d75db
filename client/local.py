"""A throwaway ciphergrad server for one process: ``local_server()`` starts ``python -m ciphergrad.server.main`` as a
child process on 127.0.0.1 with a free port and a temporary data directory, waits until its health service
reports SERVING, and stops it (SIGTERM, then SIGKILL) when the block ends. The client never imports the
server: the two talk over gRPC only, as they would across machines.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_SECONDS = 120.0


@dataclass(frozen=True)
class LocalServer:
    """A running child server: where it listens and its process id (for reading its memory)."""

    address: str
    pid: int


@contextmanager
def local_server(*, startup_seconds: float = STARTUP_SECONDS) -> Iterator[str]:
    """Yield the ``HOST:PORT`` of a fresh server that lives as long as the ``with`` block."""
    with local_server_process(startup_seconds=startup_seconds) as server:
        yield server.address


@contextmanager
def local_server_process(*, startup_seconds: float = STARTUP_SECONDS) -> Iterator[LocalServer]:
    """Like ``local_server``, yielding the child's address and process id."""
    with tempfile.TemporaryDirectory(prefix="ciphergrad-") as scratch:
        folder = Path(scratch)
        port_file, log_path = folder / "address", folder / "server.log"
        command = [
            sys.executable, "-m", "ciphergrad.server.main",
            "--listen", "127.0.0.1:0",
            "--data-dir", str(folder / "data"),
            "--port-file", str(port_file),
            "--grace-seconds", "1",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            address = _wait_until_serving(process, port_file, log_path, startup_seconds)
            yield LocalServer(address, process.pid)
        finally:
            _stop(process)


def _wait_until_serving(process: subprocess.Popen, port_file: Path, log_path: Path, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while not port_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the local ciphergrad server exited with {process.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"the local ciphergrad server did not start within {seconds:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.05)
    address = port_file.read_text().strip()
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        response = health.Check(request, timeout=max(1.0, deadline - time.monotonic()), wait_for_ready=True)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        _stop(process)
        raise RuntimeError(f"the local ciphergrad server at {address} reports {response.status}, not SERVING")
    return address


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # graceful: jobs pause at their checkpoints
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
