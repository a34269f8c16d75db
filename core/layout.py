"""Tiled packing of a 2-D matrix into CKKS slot vectors.

A matrix is cut into tiles of ``rows x cols`` (both powers of two); a tile is laid out row-major in the
slots and repeated until the slot vector is full, so every ciphertext is periodic with period
``rows * cols``. That periodicity is what lets a rotate-and-sum leave a column sum in *every* slot.

Two layouts fall out of the tile shape:
- ``Tile(n, 1)`` is the original write-up's transposed packing: one ciphertext per column block.
- ``Tile(slots // w, w)`` with ``w`` the padded column count puts whole rows side by side, so one
  rotation serves every column at once (the fast default).

Invariants: a dimension of size 1 is replicated across the tile (broadcasting it costs nothing);
positions past the end of a longer dimension hold zero unless a flag says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ciphergrad.core.errors import ShapeError


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


@dataclass(frozen=True)
class Tile:
    rows: int
    cols: int

    def check(self, slots: int) -> None:
        for name, size in (("rows", self.rows), ("cols", self.cols)):
            if size < 1 or size & (size - 1):
                raise ShapeError(f"tile {name}={size} must be a power of two")
        if self.rows * self.cols > slots:
            raise ShapeError(f"tile {self.rows}x{self.cols} exceeds the {slots} slots of a ciphertext")

    @property
    def size(self) -> int:
        return self.rows * self.cols


def choose_tile(shape: tuple[int, int], slots: int, packing: str = "rows", block_rows: int | None = None) -> Tile:
    """The tile for a matrix: ``packing='rows'`` (rows side by side) or ``'columns'`` (the original)."""
    n, d = shape
    if packing == "columns":
        return Tile(min(slots, next_pow2(block_rows or n)), 1)
    if packing != "rows":
        raise ShapeError(f"packing={packing!r}: use 'rows' or 'columns'")
    width = min(next_pow2(d), slots)
    height = min(slots // width, next_pow2(block_rows or n))
    return Tile(height, width)


def grid(shape: tuple[int, int], tile: Tile) -> tuple[int, int]:
    """Number of tiles along each dimension (a size-1 dimension needs one)."""
    return math.ceil(shape[0] / tile.rows), math.ceil(shape[1] / tile.cols)


def pack(array: np.ndarray, tile: Tile, slots: int) -> list[list[np.ndarray]]:
    """Slot vectors of ``array`` (2-D) tile by tile: ``result[i][j]`` is tile (i, j)."""
    rows, cols = array.shape
    grid_rows, grid_cols = grid(array.shape, tile)
    repeats = slots // tile.size
    out: list[list[np.ndarray]] = []
    for i in range(grid_rows):
        line = []
        for j in range(grid_cols):
            block = np.zeros((tile.rows, tile.cols))
            part = array[i * tile.rows : (i + 1) * tile.rows, j * tile.cols : (j + 1) * tile.cols]
            if rows == 1 and cols == 1:
                block[:, :] = part[0, 0]
            elif rows == 1:
                block[:, : part.shape[1]] = part[0]
            elif cols == 1:
                block[: part.shape[0], :] = part[:, :1]
            else:
                block[: part.shape[0], : part.shape[1]] = part
            line.append(np.tile(block.reshape(-1), repeats))
        out.append(line)
    return out


def unpack(vectors: list[list[np.ndarray]], shape: tuple[int, int], tile: Tile) -> np.ndarray:
    rows, cols = shape
    out = np.empty(shape)
    for i, line in enumerate(vectors):
        for j, vector in enumerate(line):
            block = np.asarray(vector[: tile.size]).reshape(tile.rows, tile.cols)
            r0, c0 = i * tile.rows, j * tile.cols
            r1, c1 = min(rows, r0 + tile.rows), min(cols, c0 + tile.cols)
            out[r0:r1, c0:c1] = block[: r1 - r0, : c1 - c0]
    return out


def row_mask(shape: tuple[int, int], tile: Tile, slots: int, column: int = 0, value: float = 1.0) -> list[np.ndarray]:
    """Per row-block slot vectors holding ``value`` at tile column ``column`` of every valid row."""
    rows = shape[0]
    vectors = []
    for i in range(grid(shape, tile)[0]):
        block = np.zeros((tile.rows, tile.cols))
        block[: min(tile.rows, rows - i * tile.rows), column] = value
        vectors.append(np.tile(block.reshape(-1), slots // tile.size))
    return vectors


def rotation_steps(tile: Tile) -> list[int]:
    """Rotation steps the matrix operations on this tile use (for generating only those Galois keys)."""
    # Up to and including tile.cols: SEAL splits a rotation by -offset (offset < cols) into signed powers of two.
    inner = [1 << k for k in range(int(math.log2(tile.cols)) + 1)] if tile.cols > 1 else []
    outer = [tile.cols << k for k in range(int(math.log2(tile.rows)))]
    return sorted({*inner, *(-s for s in inner), *outer})
