"""Receiving client streams to disk under a size limit (never whole uploads in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from server.errors import ServiceError, invalid


class Budget:
    """Bytes a single upload may still send (``--max-upload-mb``)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0

    def announce(self, total: int, what: str) -> None:
        if total > self.limit:
            raise self._exhausted(what, total)

    def spend(self, size: int, what: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise self._exhausted(what, self.used)

    def _exhausted(self, what: str, size: int) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{what} of {size / 2**20:.1f} MiB exceeds the server's upload limit of "
            f"{self.limit / 2**20:.0f} MiB (server flag --max-upload-mb)",
        )


def receive_matrix(requests: Iterator[Any], field: str, path: Path, budget: Budget, what: str) -> int:
    """Write MatrixChunks (``request.<field>``) to ``path`` up to the one flagged last; returns bytes."""
    size = 0
    with open(path, "wb") as handle:
        for request in requests:
            if request.WhichOneof("kind") != field:
                raise invalid(f"{what}: expected a `{field}` message, got `{request.WhichOneof('kind')}`")
            chunk = getattr(request, field)
            budget.spend(len(chunk.data), what)
            handle.write(chunk.data)
            size += len(chunk.data)
            if chunk.last:
                return size
    raise invalid(f"{what}: the stream ended before the chunk marked `last`")
