"""Receiving client streams under a size limit: uploads go to disk (never whole in memory), prediction
and query batches are parsed one matrix at a time. The chunk protocol itself is ``wire.chunks``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from core.engine import Engine
from core.tensor import EncryptedMatrix
from server import validation
from server.errors import ServiceError
from wire import chunks


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
    """Write one matrix's chunks (``request.<field>``) to ``path``; returns its size in bytes."""
    with open(path, "wb") as handle:
        return chunks.receive_into(requests, field, handle, what, lambda size: budget.spend(size, what))


def receive_matrices(
    requests: Iterator[Any], field: str, engine: Engine, max_upload: int, what: str
) -> Iterator[EncryptedMatrix]:
    """Encrypted matrices sent as chunk streams (``request.<field>``), parsed one at a time; the limit
    applies per matrix, not per stream."""
    budget = Budget(max_upload)
    for data in chunks.receive(requests, field, what, lambda size: budget.spend(size, what)):
        budget.used = 0
        yield validation.inbound(EncryptedMatrix.from_bytes(engine, data), what)
