"""Receiving client streams under a size limit (``Budget``, naming the flag that sets it).

Invariant: no stream is ever held in memory as bytes. Uploads go to disk as their chunks arrive (and are
checked from there, ``server.validation.scan_file``); prediction, query and metrics batches are spooled to a
scratch file one matrix at a time and parsed from it one ciphertext at a time. The chunk protocol itself is
``wire.chunks``."""

from __future__ import annotations

import itertools
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
    """Bytes a single upload (or prediction batch) may still send; ``flag`` is the server flag that sets it."""

    def __init__(self, limit_bytes: int, flag: str = "--max-upload-mb") -> None:
        self.limit = limit_bytes
        self.flag = flag
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
            f"{what} of {size / 2**20:.1f} MiB exceeds the server's limit of {self.limit / 2**20:.0f} MiB "
            f"(server flag {self.flag}): send it in smaller batches",
        )


def receive_matrix(requests: Iterator[Any], field: str, path: Path, budget: Budget, what: str) -> int:
    """Write one matrix's chunks (``request.<field>``) to ``path``; returns its size in bytes."""
    with open(path, "wb") as handle:
        return chunks.receive_into(requests, field, handle, what, lambda size: budget.spend(size, what))


def receive_matrices(
    requests: Iterator[Any], field: str, engine: Engine, budget: Budget, what: str, scratch: Path
) -> Iterator[EncryptedMatrix]:
    """Encrypted matrices sent as chunk streams (``request.<field>``), one at a time: each is spooled to a file
    in ``scratch`` as its chunks arrive and parsed from there one ciphertext at a time, so a batch is held
    only as parsed ciphertexts, never also as bytes. ``budget`` applies per matrix, not per stream."""
    requests = iter(requests)
    path = scratch / "batch.bin"
    while (first := next(requests, None)) is not None:
        budget.used = 0
        with open(path, "w+b") as handle:
            stream = itertools.chain([first], requests)
            chunks.receive_into(stream, field, handle, what, lambda size: budget.spend(size, what))
            handle.seek(0)
            matrix = EncryptedMatrix.from_file(engine, handle)
        yield validation.inbound(matrix, what)
