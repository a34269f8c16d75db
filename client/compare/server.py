"""The server a comparison talks to: one given by address, or a child process this module starts.

A child process (``client.local_server_process``: a free loopback port, data in a temporary directory) keeps
the server's memory apart from the client's, so its peak resident memory can be read from the kernel:
``VmHWM`` in ``/proc/PID/status``, reset to the current resident size before each task by writing ``5``
to ``/proc/PID/clear_refs``. A server given by ``--server`` is another machine's process: its memory is
not measured (``peak_mb`` returns None). Running the server apart also gives client and server a GIL
each, as in a real deployment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc

from ciphergrad.client.local import local_server_process

READY_SECONDS = 5.0


class ServerUnreachable(Exception):
    """No ciphergrad server answers at the address."""


def check_reachable(address: str, timeout: float = READY_SECONDS) -> None:
    """Raise ServerUnreachable unless a gRPC channel to ``address`` becomes ready within ``timeout``."""
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError as error:
        raise ServerUnreachable(f"no ciphergrad server reachable at {address} (waited {timeout:.0f} s)") from error
    finally:
        channel.close()


class ServerHandle:
    """Where the server listens, and (when this process started it) its peak memory."""

    def __init__(self, address: str, pid: int | None = None) -> None:
        self.address, self.pid = address, pid

    @property
    def measured(self) -> bool:
        return self.pid is not None

    def reset_peak(self) -> float | None:
        """Start a new peak; returns the resident memory now (MiB), where the new peak starts from."""
        if self.pid is None:
            return None
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:  # no clear_refs here (kernel option, sandbox): a per-task peak cannot be taken
            self.pid = None
            return None
        return self._status_mb("VmRSS")

    def peak_mb(self) -> float | None:
        """Peak resident memory (VmHWM) since the last ``reset_peak``, in MiB; None when not measured."""
        return None if self.pid is None else self._status_mb("VmHWM")

    def _status_mb(self, field: str) -> float | None:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
        return None


@contextlib.contextmanager
def running_server(address: str | None) -> Iterator[ServerHandle]:
    """The server at ``address`` (checked reachable), or a child-process server stopped on exit."""
    if address:
        check_reachable(address)
        yield ServerHandle(address)
        return
    with local_server_process() as server:
        yield ServerHandle(server.address, server.pid)
