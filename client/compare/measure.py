"""Timing and byte accounting shared by every task: one place that turns a ``Client`` session into the
figures a ``TaskResult`` carries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from client.sdk import Client

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
    """The value and seconds of a second call: the first pays torch's and scikit-learn's one-time set-up,
    which would otherwise dominate millisecond plaintext twins."""
    function(*args, **kwargs)
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


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
