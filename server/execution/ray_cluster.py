"""Joining a Ray cluster, or starting a local one, for the Ray executor (``ray_shards.RayExecutor``): an address
where nothing answers fails within seconds, never a hang, and every failure is an ``ExecutionError`` naming
the address."""

from __future__ import annotations

import socket

import ray

from ciphergrad.server.execution import ExecutionError


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Joins ``address`` or starts a local Ray. A local start is tried twice: Ray gives a new node a fixed 30 s
    to register (``ray._private.node``), which a loaded machine can miss once, and says so with a bare
    ``Exception``; a second miss is an ``ExecutionError`` naming it."""
    for attempt in (1, 2):
        try:
            ray.init(address=address or None, num_cpus=None if address else num_cpus, include_dashboard=False,
                     logging_level="ERROR", log_to_driver=False, ignore_reinit_error=True)
            return
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutionError(f"cannot join the Ray cluster at {address or 'local'}: {exc}") from exc
        except Exception as exc:  # Ray's own start-up timeout is a bare Exception
            if address or attempt == 2 or "timed out during startup" not in str(exc):
                raise ExecutionError(f"cannot start Ray ({address or 'local'}): {exc}") from exc
            ray.shutdown()


def check_reachable(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutionError(f"Ray address {address!r} is not 'auto' or host:port (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutionError(f"no Ray cluster answers at {address}: {exc}") from exc
