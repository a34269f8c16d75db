"""Matrices too large for one gRPC message travel as ``MatrixChunk`` streams; this is the one sender and
the one receiver.

Invariant: a matrix is ``core.tensor.EncryptedMatrix.to_bytes()`` cut into chunks of at most ``CHUNK_BYTES``
bytes; the last chunk of each matrix carries ``last=True`` (an empty payload still sends one chunk). Each
stream message holds its chunk in one named field (``field``); anything else in its place is refused with
``MalformedInputError``, which the server answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, BinaryIO

from ciphergrad.core.errors import MalformedInputError
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

# Well under gRPC's 4 MB default so that chunks pass any proxy with default limits.
CHUNK_BYTES = 1 << 20
# Single messages carry at most one EncryptedMatrix (weights, a loss, a refresh operand): a few
# ciphertexts of up to ~13 MB each at N=32768. Bulk data is chunked.
MAX_MESSAGE_BYTES = 64 * 2**20
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


def chunks(data: bytes | Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[types_pb2.MatrixChunk]:
    """One matrix's bytes (or its pieces, as they are produced) as MatrixChunks, the last one flagged."""
    buffer = bytearray()
    for piece in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
        buffer += piece
        while len(buffer) > size:
            yield types_pb2.MatrixChunk(data=bytes(buffer[:size]), last=False)
            del buffer[:size]
    yield types_pb2.MatrixChunk(data=bytes(buffer), last=True)


def send(
    message_type: type, field: str, blobs: Iterable[bytes | Iterable[bytes]], sent: Callable[[int], None] | None = None
):
    """Stream messages of ``message_type`` whose ``field`` holds the chunks of each blob in turn (a blob may
    be an iterable of pieces: ``core.tensor.flat_pieces``); ``sent(size)`` is told each chunk's payload size
    (progress bars, transfer counts)."""
    for blob in blobs:
        for chunk in chunks(blob):
            yield message_type(**{field: chunk})
            if sent is not None:
                sent(len(chunk.data))


def _chunk_of(message: Any, field: str, what: str) -> types_pb2.MatrixChunk:
    oneof = message.DESCRIPTOR.oneofs_by_name.get("kind")
    kind = message.WhichOneof("kind") if oneof is not None else field
    if kind != field:
        raise MalformedInputError(f"{what}: expected a `{field}` message, got `{kind}`")
    return getattr(message, field)


def receive(
    messages: Iterator[Any], field: str, what: str, spend: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The matrices of a chunk stream, one ``bytes`` each, as their last chunk arrives.

    ``spend(size)`` is called with every chunk's size before it is kept (an upload limit raises there).
    """
    buffer = bytearray()
    for message in messages:
        chunk = _chunk_of(message, field, what)
        if spend is not None:
            spend(len(chunk.data))
        buffer += chunk.data
        if chunk.last:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        raise MalformedInputError(f"{what}: the stream ended before the chunk marked `last`")


def receive_into(
    messages: Iterator[Any], field: str, handle: BinaryIO, what: str, spend: Callable[[int], None] | None = None
) -> int:
    """Write one matrix's chunks to ``handle`` (never the whole upload in memory); returns its size."""
    size = 0
    for message in messages:
        written, last = _write_chunk(message, field, handle, what, spend)
        size += written
        if last:
            return size
    raise MalformedInputError(f"{what}: the stream ended before the chunk marked `last`")


async def receive_into_async(
    messages: AsyncIterator[Any], field: str, handle: BinaryIO, what: str, spend: Callable[[int], None] | None = None
) -> int:
    """``receive_into`` for an asynchronous stream (the ``grpc.aio`` server's request iterator)."""
    size = 0
    async for message in messages:
        written, last = _write_chunk(message, field, handle, what, spend)
        size += written
        if last:
            return size
    raise MalformedInputError(f"{what}: the stream ended before the chunk marked `last`")


def _write_chunk(
    message: Any, field: str, handle: BinaryIO, what: str, spend: Callable[[int], None] | None
) -> tuple[int, bool]:
    chunk = _chunk_of(message, field, what)
    if spend is not None:
        spend(len(chunk.data))  # before it is kept: an upload limit raises here
    handle.write(chunk.data)
    return len(chunk.data), chunk.last
