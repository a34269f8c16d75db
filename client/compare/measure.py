"""Timing and byte accounting shared by every task: one place that turns a ``Client`` session into the
figures a ``TaskResult`` carries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ciphergrad.client.sdk import Client

T = TypeVar("T")


class Stopwatch:
    """Seconds spent inside ``with watch:`` blocks, summed."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._start


def timed(function: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """The value and seconds of the fastest of three calls: the plaintext twins take milliseconds, so the
    first call's one-time set-up (torch, scikit-learn) and other processes' noise would dominate one timing."""
    best: tuple[T, float] | None = None
    for _ in range(3):
        start = time.perf_counter()
        value = function(*args, **kwargs)
        seconds = time.perf_counter() - start
        if best is None or seconds < best[1]:
            best = (value, seconds)
    assert best is not None
    return best


@contextmanager
def session(address: str, *args: Any, **kwargs: Any) -> Iterator[Client]:
    """A client with a fresh session (``create_session(*args, **kwargs)``), deleted on exit: the server
    keeps nothing of a comparison."""
    with Client(address) as client:
        client.create_session(*args, **kwargs)
        try:
            yield client
        finally:
            client.delete_session()


def figures(watch: Stopwatch, client: Client) -> dict[str, float]:
    """The encrypted side's wall time, and bytes up (client to server) and down from the client's count."""
    return {
        "encrypted_seconds": watch.seconds,
        "bytes_up": sum(client.transfer.sent.values()),
        "bytes_down": sum(client.transfer.received.values()),
    }
