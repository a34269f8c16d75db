"""A throwaway ciphergrad server for one process: ``local_server()`` starts ``python -m ciphergrad.server.main`` as a
child process (``ServerProcess``) on 127.0.0.1 with a free port and a temporary data directory, waits until its
health service reports SERVING, and stops it (SIGTERM, then SIGKILL) when the block ends. The client never imports the
server: the two talk over gRPC only, as they would across machines.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_SECONDS = 120.0


class ServerProcess:
    """``ciphergrad-server`` as a child process: ``flags`` as on its command line, data in ``data_dir`` (a
    temporary directory when None, removed by ``stop``), the port the OS picked and the log in a file.

    The one child-server launcher: ``local_server`` (the SDK, the demo, the compare report, benchmarks) and
    the tests' restart, memory and hostile-client checks all start servers with it. ``stop(sig)`` sends
    ``sig`` (SIGTERM: graceful, jobs pause at their checkpoints; SIGKILL: a crash) and returns the exit code.
    """

    def __init__(self, data_dir: str | Path | None = None, *flags: str,
                 startup_seconds: float = STARTUP_SECONDS) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="ciphergrad-")
        folder = Path(self._scratch.name)
        self.data_dir = Path(data_dir) if data_dir is not None else folder / "data"
        port_file, self.log_path = folder / "address", folder / "server.log"
        command = [
            sys.executable, "-m", "ciphergrad.server.main",
            "--listen", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            "--port-file", str(port_file),
            "--grace-seconds", "1",
            *flags,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self.address = _wait_until_serving(self.process, port_file, self.log_path, startup_seconds)
        except BaseException:
            self._scratch.cleanup()
            raise
        found = re.search(r"metrics on http://\S+:(\d+)/metrics", self.log)
        self.metrics_port: int | None = int(found.group(1)) if found else None  # with --metrics-port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._scratch.cleanup()
        return self.process.returncode


@contextmanager
def local_server(*, startup_seconds: float = STARTUP_SECONDS) -> Iterator[str]:
    """Yield the ``HOST:PORT`` of a fresh server that lives as long as the ``with`` block."""
    with local_server_process(startup_seconds=startup_seconds) as server:
        yield server.address


@contextmanager
def local_server_process(*flags: str, data_dir: str | Path | None = None,
                         startup_seconds: float = STARTUP_SECONDS) -> Iterator[ServerProcess]:
    """Like ``local_server``, yielding the ``ServerProcess`` (address, pid, log); ``flags`` as for
    ``ciphergrad-server``."""
    server = ServerProcess(data_dir, *flags, startup_seconds=startup_seconds)
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM, timeout=15)


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
