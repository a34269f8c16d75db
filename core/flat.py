"""The flat form of an encrypted matrix (``EncryptedMatrix.to_bytes``), which blob stores and chunk streams
carry: ``b"CGEM"``, a little-endian u32 header length, the JSON header, then per ciphertext (row-major
tiles) a u64 length and SEAL's serialization. Written and read piece by piece here, so that neither side
needs a whole table in memory."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from core.errors import MalformedInputError

MAGIC = b"CGEM"


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
            blob = stream.read(struct.unpack("<Q", prefix)[0]) if len(prefix) == 8 else b""
            if len(prefix) < 8 or len(blob) != struct.unpack("<Q", prefix)[0]:
                raise MalformedInputError("truncated EncryptedMatrix")
            yield blob

    return header, blobs()


def blob_range(stream: BinaryIO, skip: int, take: int) -> Iterator[bytes]:
    """After ``read``'s header: ``take`` blobs following the first ``skip``, seeking past those unread."""
    try:
        for _ in range(skip):
            (length,) = struct.unpack("<Q", stream.read(8))
            stream.seek(length, 1)
        for _ in range(take):
            (length,) = struct.unpack("<Q", stream.read(8))
            blob = stream.read(length)
            if len(blob) != length:
                raise MalformedInputError("truncated EncryptedMatrix")
            yield blob
    except struct.error as exc:
        raise MalformedInputError(f"truncated EncryptedMatrix: {exc}") from exc
