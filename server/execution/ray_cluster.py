"""Joining a Ray cluster, or starting a local one, for the Ray executor (``ray_shards.RayExecutor``), and waiting
on its workers: an address where nothing answers fails within seconds, never a hang; every failure of Ray's
own is an ``ExecutionError`` naming the address, and what a worker's function raised reaches the caller as
raised (``wait``: in the server process, and in a job driver waiting on its shards)."""

from __future__ import annotations

import socket
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from ciphergrad.server.execution import ExecutionError


class WorkerLost(ExecutionError):
    """A worker died during a call (killed, its node gone): the pool must replace it before the next job."""


def wait(refs: list[Any], what: str, timeout: float, address: str) -> list[Any]:
    """``ray.get(refs)`` within ``timeout`` seconds. A function that raised (bad input: core's ValueErrors,
    SEAL's refusals) re-raises its own exception, as the local executor would; Ray's failures become an
    ``ExecutionError`` (``WorkerLost`` for a dead worker) naming ``address`` and ``what`` was running."""
    try:
        return ray.get(refs, timeout=timeout)
    except GetTimeoutError as exc:
        raise ExecutionError(
            f"Ray at {address}: no answer from the workers within {timeout:g} s during {what}; "
            "is the cluster overloaded or gone? (raise the executor's timeout for very large shards)"
        ) from exc
    except RayTaskError as exc:
        if isinstance(exc.cause, Exception) and not isinstance(exc.cause, RayError):
            raise exc.cause from None
        raise _failed(exc, what, address) from exc
    except RayError as exc:
        raise _failed(exc, what, address) from exc


def _failed(exc: RayError, what: str, address: str) -> ExecutionError:
    kind = WorkerLost if isinstance(exc, RayActorError) else ExecutionError
    return kind(f"Ray at {address}: a worker failed during {what} ({type(exc).__name__}): "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}")


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
