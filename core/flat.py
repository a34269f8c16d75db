"""The flat form of an encrypted matrix (``EncryptedMatrix.to_bytes``), which blob stores and chunk streams
carry: ``b"CGEM"``, a little-endian u32 header length, the JSON header, then per ciphertext (row-major
tiles) a u64 length and SEAL's serialization. Written and read piece by piece here, so that neither side
needs a whole table in memory."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from ciphergrad.core.errors import MalformedInputError

MAGIC = b"CGEM"
# N=32768 with a full chain serializes to ~13 MB; a larger length prefix is corrupt, not a ciphertext.
MAX_CIPHERTEXT_BYTES = 1 << 28


def pieces(header: dict[str, Any], blobs: Iterable[bytes]) -> Iterator[bytes]:
    """``to_bytes``' format piece by piece, so a matrix can be sent while its tiles are still being encrypted."""
    head = json.dumps(header).encode()
    yield MAGIC + struct.pack("<I", len(head)) + head
    for blob in blobs:
        yield struct.pack("<Q", len(blob)) + blob


def read(stream: BinaryIO) -> tuple[Any, Iterator[bytes]]:
    """The header of ``to_bytes``' format and an iterator over its ciphertext blobs (read lazily)."""
    try:
        if stream.read(4) != MAGIC:
            raise MalformedInputError("not a serialized EncryptedMatrix (bad magic)")
        (size,) = struct.unpack("<I", stream.read(4))
        header = json.loads(stream.read(size))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedInputError(f"malformed EncryptedMatrix bytes: {exc}") from exc

    def blobs() -> Iterator[bytes]:
        while prefix := stream.read(8):
            yield _blob(stream, prefix)

    return header, blobs()


def blob_range(stream: BinaryIO, skip: int, take: int) -> Iterator[bytes]:
    """After ``read``'s header: ``take`` blobs following the first ``skip``, seeking past those unread."""
    try:
        for _ in range(skip):
            (length,) = struct.unpack("<Q", stream.read(8))
            stream.seek(length, 1)
        for _ in range(take):
            yield _blob(stream, stream.read(8))
    except struct.error as exc:
        raise MalformedInputError(f"truncated EncryptedMatrix: {exc}") from exc


def _blob(stream: BinaryIO, prefix: bytes) -> bytes:
    """The ciphertext after its u64 length ``prefix``, checked for truncation and an impossible length."""
    if len(prefix) < 8:
        raise MalformedInputError("truncated EncryptedMatrix")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_CIPHERTEXT_BYTES:
        raise MalformedInputError(f"a ciphertext length of {length} bytes is corrupt (at most {MAX_CIPHERTEXT_BYTES})")
    blob = stream.read(length)
    if len(blob) != length:
        raise MalformedInputError("truncated EncryptedMatrix")
    return blob


class FlatMatrix:
    """An ``EncryptedMatrix`` kept in its flat form, its ciphertexts never parsed (so no context is needed):
    what a process that only routes matrices (a Ray server's one-pass jobs: ``server.execution.ray_trainers``)
    checkpoints, stores and sends. ``header()``, ``blobs()`` and ``to_bytes()`` are ``EncryptedMatrix``'s;
    ``shape`` and ``level`` come from the header, written by the party that parsed the ciphertexts."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._header, _ = read(io.BytesIO(data))

    def header(self) -> dict[str, Any]:
        return dict(self._header)

    def blobs(self) -> list[bytes]:
        return list(read(io.BytesIO(self.data))[1])

    def to_bytes(self) -> bytes:
        return self.data

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self._header["shape"]
        return int(rows), int(cols)

    @property
    def level(self) -> int:
        return int(self._header["level"])
