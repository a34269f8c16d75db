"""Receiving client streams under a size limit (``Budget``, naming the flag that sets it).

Invariant: no stream is ever held in memory as bytes. Uploads go to disk as their chunks arrive (and are
checked from there, ``server.rpc.validation.scan``); prediction, query and metrics batches are spooled to a
scratch file one matrix at a time, under the server-wide memory cap (``server.rpc.work.Limits.memory``,
--max-inflight-mb) while they are answered, and parsed one ciphertext's bytes at a time (``read_matrix``) where
the executor keeps the session's context (``Executor.run_files`` with ``answer_batch``): in this process, or
on a Ray worker, in which case this process only spools, routes and streams bytes. The chunk protocol itself
is ``wire.chunks``.

The ``grpc.aio`` servicers read on the event loop with the async twins (``receive_matrix_async``,
``spool_matrices``) and answer in a sync body on the HE pool; ``receive_matrix`` reads a plain iterator (a
servicer not yet converted to that pattern)."""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import grpc

from ciphergrad.core.engine import Engine
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.errors import ServiceError
from ciphergrad.server.rpc.work import Inbound, Limits, Work
from ciphergrad.wire import chunks


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


async def receive_matrix_async(requests: AsyncIterator[Any], field: str, path: Path, budget: Budget, what: str) -> int:
    """``receive_matrix`` on the event loop: chunks are written to ``path`` as they arrive."""
    with open(path, "wb") as handle:
        return await chunks.receive_into_async(requests, field, handle, what, lambda size: budget.spend(size, what))


async def spool_matrices(
    requests: Inbound, field: str, budget: Budget, what: str, scratch: Path
) -> AsyncIterator[Path]:
    """Matrices sent as chunk streams (``request.<field>``), each spooled to its own file in ``scratch`` as its
    chunks arrive and yielded as the path of that file once complete (the caller parses and removes it).
    ``budget`` applies per matrix, not per stream."""
    for index in itertools.count():
        first = await requests.next()
        if first is None:
            return
        budget.used = 0
        path = scratch / f"batch-{index}.bin"
        requests.unread(first)
        await receive_matrix_async(requests, field, path, budget, what)
        yield path


def read_matrix(engine: Engine, handle: BinaryIO, what: str) -> EncryptedMatrix:
    """A client's serialized matrix from an open file (or bytes in a ``BytesIO``), read one ciphertext's bytes
    at a time, every ciphertext checked (``validation.inbound``)."""
    return validation.inbound(EncryptedMatrix.from_file(engine, handle), what)


def answer_batch(engine: Engine, files: list[BinaryIO], *, what: str, function: Callable[..., EncryptedMatrix],
                 check: Callable[..., None], **operands: EncryptedMatrix) -> bytes:
    """A request batch's answer, serialized (``Executor.run_files``'s function for Predict and Distances: where
    the session's context is loaded): the one spooled matrix in ``files`` parsed and checked (``read_matrix``),
    ``check(batch, **operands)`` (the layout the model or reference set takes: ShapeError naming the fix), then
    ``function(batch, **operands)``. Module-level and picklable (``functools.partial`` of it ships to a worker)."""
    (handle,) = files
    batch = read_matrix(engine, handle, what)
    check(batch, **operands)
    return function(batch, **operands).to_bytes()


@dataclass(frozen=True)
class BatchWork:
    """What every batch of a Predict or Distances stream runs where the executor keeps the session's context:
    ``check(batch, **operands)`` (the layout the model or reference set takes: INVALID_ARGUMENT), then
    ``function(batch, **operands)`` (picklable, row-local). ``engine()`` loads that context in this process,
    for the local executor only; operands go as their stored files, parsed only where the batches are."""

    engine: Callable[[], Engine]
    context: Path
    function: Callable[..., EncryptedMatrix]
    check: Callable[..., None]
    operands: Mapping[str, Any] = field(default_factory=dict)

    def answer(self, executor: Any, limits: Limits, counts: Any, what: str, path: Path) -> bytes:
        """The serialized answer for the batch spooled at ``path`` (removed afterwards), under the memory cap:
        parsed, checked and computed by ``answer_batch`` through ``executor.run_files`` (with Ray this process
        parses none of it)."""
        answer = functools.partial(answer_batch, what=what, function=self.function, check=self.check)
        try:
            with limits.memory(path.stat().st_size, what):
                return executor.run_files(self.context, [path], answer, self.engine, operands=self.operands,
                                          counts=counts)
        finally:
            path.unlink(missing_ok=True)


async def answer_batches(
    work: Work, requests: Inbound, staging: Callable[[], contextlib.AbstractContextManager[Path]], max_batch: int, *,
    field: str, what: str, answer: Callable[[Path], bytes], width: int, response: type, response_field: str,
) -> AsyncIterator[Any]:
    """Predict's and Distances' body: each matrix of the stream (``request.<field>``, at most ``max_batch``
    bytes: --max-batch-mb) spooled to a ``staging()`` directory, answered by ``answer(path)`` (serialized) on
    the HE pool, up to ``width`` at once (``Work.ordered``; the executor's parallelism), and sent back in
    order as ``response`` messages whose ``response_field`` holds the answer's chunks. The stream is never
    buffered whole; on an early exit the calls not yet started are cancelled and the staging directory
    removed."""
    budget = Budget(max_batch, "--max-batch-mb")
    with staging() as scratch:
        answers = work.ordered(spool_matrices(requests, field, budget, what, scratch), answer, width)
        async with contextlib.aclosing(answers):
            async for blob in answers:
                for message in chunks.send(response, response_field, [blob]):
                    yield message
