"""Ranges of row blocks of a stored ``EncryptedMatrix`` (the ``to_bytes`` file format), read without the rest.

Shards of the executors read only their own blocks: ``read_block_range`` parses them into a matrix (needs the
session's engine), ``block_range_bytes`` copies their bytes unparsed into a file of their own (file I/O only:
no CKKS work, no keys, so a process without the session's context can cut a table into pieces).
Invariant: row block ``i`` holds rows ``[i * tile.rows, (i + 1) * tile.rows)``; only the last may be short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ciphergrad.core import flat, layout
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import MalformedInputError, ShapeError
from ciphergrad.core.layout import Tile
from ciphergrad.core.tensor import EncryptedMatrix, parse_header


def _blobs(handle: Any, path: str | Path, shape: tuple[int, int], tile: Tile, start: int, stop: int
           ) -> tuple[list[bytes], int, int]:
    """The ciphertext bytes of blocks ``[start, stop)``, the grid's column count and the range's row count."""
    blocks, cols = layout.grid(shape, tile)
    if not 0 <= start < stop <= blocks:
        raise ShapeError(f"row blocks [{start}, {stop}) out of range for the {blocks} blocks of {path}")
    blobs = list(flat.blob_range(handle, start * cols, (stop - start) * cols))
    return blobs, cols, min(stop * tile.rows, shape[0]) - start * tile.rows


def read_block_range(engine: Engine, path: str | Path, start: int, stop: int) -> EncryptedMatrix:
    """Row blocks ``[start, stop)`` of a matrix stored with ``to_bytes``, reading only their ciphertexts."""
    with open(path, "rb") as handle:
        header, _ = flat.read(handle)
        shape, tile, pads, _ = parse_header(engine, header)
        blobs, cols, rows = _blobs(handle, path, shape, tile, start, stop)
    tiles = [[engine.ciphertext_from_bytes(b) for b in blobs[i * cols : (i + 1) * cols]] for i in range(stop - start)]
    return EncryptedMatrix(engine, tiles, (rows, shape[1]), tile, pads)


def block_range_bytes(path: str | Path, start: int, stop: int) -> bytes:
    """Row blocks ``[start, stop)`` of a matrix stored with ``to_bytes``, as ``to_bytes`` of a matrix of their
    own: the header rewritten, the ciphertexts' bytes copied unparsed."""
    with open(path, "rb") as handle:
        header, _ = flat.read(handle)
        try:
            shape = (int(header["shape"][0]), int(header["shape"][1]))
            tile = Tile(int(header["tile"][0]), int(header["tile"][1]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MalformedInputError(f"malformed EncryptedMatrix header in {path}: {exc}") from exc
        blobs, cols, rows = _blobs(handle, path, shape, tile, start, stop)
    part = dict(header, shape=[rows, shape[1]], grid=[stop - start, cols])
    return b"".join(flat.pieces(part, blobs))
