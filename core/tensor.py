"""``EncryptedMatrix``: a 2-D CKKS-encrypted matrix with numpy semantics.

Arithmetic broadcasts like numpy (shapes ``(n, d)``, ``(1, d)``, ``(n, 1)``, ``(1, 1)``, plain scalars and
arrays); ``sum`` reduces an axis with rotations; ``@`` multiplies by a plaintext matrix. Each operation
checks shapes and remaining levels first and never changes its operands.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np

from ciphergrad.core import flat, layout
from ciphergrad.core.engine import Ciphertext, Engine
from ciphergrad.core.errors import MalformedInputError, ShapeError
from ciphergrad.core.layout import Tile

_FORMAT = "ciphergrad.EncryptedMatrix/1"
Grid = list[list[Ciphertext]]


class EncryptedMatrix:
    """Ciphertext tiles of a matrix, plus what is needed to compute on them without the secret key."""

    __slots__ = ("_tiles", "engine", "shape", "tile", "zero_padding")
    # Make `ndarray <op> EncryptedMatrix` call our reflected operators instead of looping element-wise.
    __array_ufunc__ = None

    def __init__(
        self,
        engine: Engine,
        tiles: Grid,
        shape: tuple[int, int],
        tile: Tile,
        zero_padding: tuple[bool, bool] = (True, True),
    ) -> None:
        self.engine = engine
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile = tile
        self._tiles = tiles
        # Whether slots past the last row / column of the matrix hold zero (sums rely on it).
        self.zero_padding = zero_padding

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def encrypt(
        cls,
        engine: Engine,
        array: Any,
        *,
        tile: Tile | None = None,
        packing: str = "rows",
        level: int | None = None,
    ) -> EncryptedMatrix:
        """Encrypt a plaintext array with the public key (1-D input becomes a ``(n, 1)`` column)."""
        values = _as_2d(array, "array", column=True)
        tile = tile or layout.choose_tile(values.shape, engine.slots, packing)
        tile.check(engine.slots)
        vectors = layout.pack(values, tile, engine.slots)
        tiles = [[engine.encrypt(v, level) for v in line] for line in vectors]
        return cls(engine, tiles, values.shape, tile)

    # -- properties ------------------------------------------------------------------------------
    @property
    def level(self) -> int:
        """Multiplicative levels left (the minimum over tiles)."""
        return min(self.engine.level(ct) for line in self._tiles for ct in line)

    @property
    def grid(self) -> tuple[int, int]:
        return len(self._tiles), len(self._tiles[0])

    @property
    def ciphertexts(self) -> list[Ciphertext]:
        return [ct for line in self._tiles for ct in line]

    def __repr__(self) -> str:
        return (
            f"EncryptedMatrix(shape={self.shape}, tile={self.tile.rows}x{self.tile.cols}, "
            f"ciphertexts={len(self.ciphertexts)}, level={self.level})"
        )

    def _like(self, tiles: Grid, shape: tuple[int, int] | None = None, zero_padding=None) -> EncryptedMatrix:
        return EncryptedMatrix(self.engine, tiles, shape or self.shape, self.tile, zero_padding or self.zero_padding)

    # -- elementwise arithmetic ------------------------------------------------------------------
    def __add__(self, other: Any) -> EncryptedMatrix:
        return self._elementwise(other, "add")

    __radd__ = __add__

    def __sub__(self, other: Any) -> EncryptedMatrix:
        return self._elementwise(other, "sub")

    def __rsub__(self, other: Any) -> EncryptedMatrix:
        return (-self)._elementwise(other, "add")

    def __mul__(self, other: Any) -> EncryptedMatrix:
        return self._elementwise(other, "mul")

    __rmul__ = __mul__

    def __neg__(self) -> EncryptedMatrix:
        return self._like([[self.engine.negate(ct) for ct in line] for line in self._tiles])

    def _elementwise(self, other: Any, op: str) -> EncryptedMatrix:
        if isinstance(other, EncryptedMatrix):
            return self._with_encrypted(other, op)
        values = _as_2d(other, "operand")
        shape = _broadcast(self.shape, values.shape)
        # Plain operands are packed at the result's shape, so their padding is zero.
        plain = layout.pack(np.broadcast_to(values, shape), self.tile, self.engine.slots)
        engine = self.engine
        tiles = []
        for i, line in enumerate(plain):
            out = []
            for j, vector in enumerate(line):
                ct = self._at(i, j)
                if op == "add":
                    out.append(engine.add_plain(ct, vector))
                elif op == "sub":
                    out.append(engine.add_plain(ct, -vector))
                else:
                    out.append(engine.multiply_plain(ct, vector, rescale=False))
            tiles.append(out)
        pads = self._pads_into(shape)
        if op == "mul":
            pads = (True, True)
        return self._like(tiles, shape, pads)

    def _with_encrypted(self, other: EncryptedMatrix, op: str) -> EncryptedMatrix:
        if other.tile != self.tile:
            raise ShapeError(
                f"operands are packed differently (tile {self.tile.rows}x{self.tile.cols} vs "
                f"{other.tile.rows}x{other.tile.cols}); encrypt them with the same tile"
            )
        shape = _broadcast(self.shape, other.shape)
        rows, cols = layout.grid(shape, self.tile)
        method: Callable[[Ciphertext, Ciphertext], Ciphertext] = {
            "add": self.engine.add,
            "sub": self.engine.sub,
            "mul": lambda a, b: self.engine.multiply(a, b, rescale=False),
        }[op]
        tiles = [[method(self._at(i, j), other._at(i, j)) for j in range(cols)] for i in range(rows)]
        mine, theirs = self._pads_into(shape), other._pads_into(shape)
        if op == "mul":  # a zero on either side makes the product zero
            pads = (mine[0] or theirs[0], mine[1] or theirs[1])
        else:
            pads = (mine[0] and theirs[0], mine[1] and theirs[1])
        return self._like(tiles, shape, pads)

    def _at(self, i: int, j: int) -> Ciphertext:
        """Tile (i, j) of this matrix broadcast over a larger grid."""
        return self._tiles[i if len(self._tiles) > 1 else 0][j if len(self._tiles[0]) > 1 else 0]

    def _pads_into(self, shape: tuple[int, int]) -> tuple[bool, bool]:
        """Whether this operand has zeros in the padding of a result of ``shape``."""
        return tuple(  # type: ignore[return-value]
            (mine == theirs and pad) or theirs % size == 0
            for mine, theirs, pad, size in zip(
                self.shape, shape, self.zero_padding, (self.tile.rows, self.tile.cols), strict=True
            )
        )

    # -- reductions --------------------------------------------------------------------------------
    def sum(self, axis: int | None = None) -> EncryptedMatrix:
        """Sum over ``axis`` keeping two dimensions (numpy's ``keepdims=True``); ``None`` sums all."""
        if axis is None:
            return self.sum(axis=0).sum(axis=1)
        if axis not in (0, 1, -1, -2):
            raise ShapeError(f"axis {axis} is out of bounds for a 2-D matrix")
        return self._sum_rows() if axis % 2 == 0 else self._sum_cols()

    def _sum_rows(self) -> EncryptedMatrix:
        if self.shape[0] == 1:
            return self
        source = self if self.zero_padding[0] else self._zero_padding()
        engine, tile = self.engine, self.tile
        tiles = []
        for j in range(source.grid[1]):
            column = [line[j] for line in source._tiles]
            total = column[0]
            for ct in column[1:]:
                total = engine.add(total, ct)
            tiles.append(engine.rescale(engine.rotate_sum(total, tile.cols, tile.rows)))
        return self._like([tiles], (1, self.shape[1]), (True, source.zero_padding[1]))

    def _sum_cols(self) -> EncryptedMatrix:
        if self.shape[1] == 1:
            return self
        source = self if self.zero_padding[1] else self._zero_padding()
        engine, tile = self.engine, self.tile
        tiles = []
        for line in source._tiles:
            total = line[0]
            for ct in line[1:]:
                total = engine.add(total, ct)
            tiles.append(engine.rotate_sum(total, 1, tile.cols))
        if tile.cols > 1 and self.shape[0] > 1:
            # Only the first slot of each tile row holds the row sum; the others mix neighbouring rows.
            masks = layout.row_mask(self.shape, tile, engine.slots)
            tiles = [
                _replicate(engine, engine.multiply_plain(ct, mask, rescale=False), tile.cols)
                for ct, mask in zip(tiles, masks, strict=True)
            ]
            pads = (True, True)
        else:  # nothing was masked: padding rows hold whatever the source had there
            pads = (source.zero_padding[0], True)
        tiles = [engine.rescale(ct) for ct in tiles]
        return self._like([[ct] for ct in tiles], (self.shape[0], 1), pads)

    def _zero_padding(self) -> EncryptedMatrix:
        """Multiply by the validity mask (one level) so padding slots hold zero."""
        return self * np.ones(self.shape)

    # -- products with plaintext matrices ---------------------------------------------------------------
    def __matmul__(self, other: Any) -> EncryptedMatrix:
        if isinstance(other, EncryptedMatrix):
            raise TypeError(
                "encrypted @ encrypted is not supported; for encrypted weights w of shape (1, d) "
                "write (X * w).sum(axis=1), which is what X @ w.T computes"
            )
        weights = np.asarray(other, dtype=np.float64)
        if weights.ndim == 1:
            weights = weights[:, None]
        if weights.ndim != 2 or weights.shape[0] != self.shape[1]:
            raise ShapeError(
                f"matmul: input operand 1 has a mismatch in its core dimension 0 "
                f"(size {weights.shape[0] if weights.ndim else 0} is different from {self.shape[1]})"
            )
        if weights.shape[1] == 1:
            return (self * weights.T).sum(axis=1)
        if self.shape[1] == 1:  # an outer product: broadcasting does it without rotations
            return self * weights
        if self.shape[0] == 1:  # keep the (1, k) result replicated over tile rows, as broadcasting expects
            result = None
            for k in range(weights.shape[1]):
                one_hot = np.zeros((1, weights.shape[1]))
                one_hot[0, k] = 1.0
                column = (self * weights[:, k][None, :]).sum(axis=1) * one_hot
                result = column if result is None else result + column
            return result
        outputs = weights.shape[1]
        engine, tile = self.engine, self.tile
        shape = (self.shape[0], outputs)
        rows, cols = layout.grid(shape, tile)
        tiles: Grid = [[None] * cols for _ in range(rows)]  # type: ignore[list-item]
        for k in range(outputs):
            product = self * weights[:, k][None, :]
            j, offset = divmod(k, tile.cols)
            for i, line in enumerate(product._tiles):
                total = line[0]
                for ct in line[1:]:
                    total = engine.add(total, ct)
                total = engine.rotate_sum(total, 1, tile.cols)
                if tile.cols > 1:
                    mask = layout.row_mask(self.shape, tile, engine.slots)[i]
                    total = engine.multiply_plain(total, mask)
                    if offset:
                        total = engine.rotate(total, -offset)
                tiles[i][j] = total if tiles[i][j] is None else engine.add(tiles[i][j], total)
        return self._like(tiles, shape, (True, True))

    # -- views (no homomorphic work where the layout allows it) ------------------------------------
    def column(self, j: int) -> EncryptedMatrix:
        """Column ``j`` as an ``(n, 1)`` matrix: free in column packing, one masked row sum otherwise."""
        if not -self.shape[1] <= j < self.shape[1]:
            raise ShapeError(f"index {j} is out of bounds for axis 1 with size {self.shape[1]}")
        j %= self.shape[1]
        if self.shape[1] == 1:
            return self
        if self.tile.cols == 1:  # tile column j *is* matrix column j, replicated as (n, 1) requires
            return self._like([[line[j]] for line in self._tiles], (self.shape[0], 1), (self.zero_padding[0], True))
        one_hot = np.zeros((1, self.shape[1]))
        one_hot[0, j] = 1.0
        return (self * one_hot).sum(axis=1)

    @property
    def T(self) -> EncryptedMatrix:
        """Transpose of a vector held in one tile: the same ciphertexts read as a row instead of a column.

        An ``(n, 1)`` column in tile ``(h, 1)`` and an ``(1, n)`` row in tile ``(slots/h, h)`` have identical
        slots (the values repeated with period h), so this costs nothing.
        """
        rows, cols = self.shape
        if cols == 1 and self.grid[0] == 1 and self.tile.cols == 1:
            tile = Tile(self.engine.slots // self.tile.rows, self.tile.rows)
            return EncryptedMatrix(self.engine, [[self._tiles[0][0]]], (1, rows), tile, (True, self.zero_padding[0]))
        if rows == 1 and self.grid[1] == 1 and self.tile.rows * self.tile.cols == self.engine.slots:
            tile = Tile(self.tile.cols, 1)
            return EncryptedMatrix(self.engine, [[self._tiles[0][0]]], (cols, 1), tile, (self.zero_padding[1], True))
        raise ShapeError(
            f"transpose of a {rows}x{cols} matrix in {self.tile.rows}x{self.tile.cols} tiles is not supported: "
            "only a vector held in a single tile transposes for free"
        )

    # -- row blocks (minibatches) ---------------------------------------------------------------------
    def row_block(self, index: int) -> EncryptedMatrix:
        """Rows ``[index*tile.rows, (index+1)*tile.rows)`` as a matrix of their own."""
        if not 0 <= index < self.grid[0] or self.shape[0] == 1:
            raise ShapeError(f"row block {index} out of range for {self.grid[0]} blocks")
        rows = min(self.tile.rows, self.shape[0] - index * self.tile.rows)
        return self._like([self._tiles[index]], (rows, self.shape[1]))

    # -- serialization ------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "shape": list(self.shape),
            "tile": [self.tile.rows, self.tile.cols],
            "grid": list(self.grid),
            "zero_padding": list(self.zero_padding),
            "level": self.level,
        }

    def blobs(self) -> list[bytes]:
        return [self.engine.ciphertext_to_bytes(ct) for ct in self.ciphertexts]

    @classmethod
    def from_parts(cls, engine: Engine, header: dict[str, Any], blobs: Iterable[bytes]) -> EncryptedMatrix:
        """From a header and its ciphertexts' bytes (``blobs`` may be lazy: each is parsed as it comes)."""
        shape, tile, pads, (rows, cols) = parse_header(engine, header)
        cts = [engine.ciphertext_from_bytes(blob) for blob in blobs]
        if len(cts) != rows * cols:
            raise ShapeError(
                f"a {shape[0]}x{shape[1]} matrix in {tile.rows}x{tile.cols} tiles needs {rows * cols} "
                f"ciphertexts, got {len(cts)}"
            )
        tiles = [cts[i * cols : (i + 1) * cols] for i in range(rows)]
        return cls(engine, tiles, shape, tile, pads)

    def to_bytes(self) -> bytes:
        return b"".join(flat.pieces(self.header(), self.blobs()))

    @classmethod
    def from_bytes(cls, engine: Engine, data: bytes) -> EncryptedMatrix:
        return cls.from_file(engine, io.BytesIO(data))

    @classmethod
    def from_file(cls, engine: Engine, handle: BinaryIO) -> EncryptedMatrix:
        """``to_bytes()`` output read from a file, one ciphertext at a time."""
        header, blobs = flat.read(handle)
        return cls.from_parts(engine, header, blobs)

    @classmethod
    def read_row_blocks(cls, engine: Engine, stream: BinaryIO) -> Iterator[EncryptedMatrix]:
        """The row blocks (``row_block``) of a matrix ``to_bytes`` wrote to ``stream``, parsed one at a time."""
        header, blobs = flat.read(stream)
        shape, tile, pads, (rows, cols) = parse_header(engine, header)
        for i in range(rows):
            tiles = [[engine.ciphertext_from_bytes(blob) for blob in itertools.islice(blobs, cols)]]
            if len(tiles[0]) != cols:
                raise MalformedInputError(f"truncated EncryptedMatrix: row block {i} of {rows} is incomplete")
            yield cls(engine, tiles, (min(tile.rows, shape[0] - i * tile.rows), shape[1]), tile, pads)
        if next(blobs, None) is not None:
            raise ShapeError(f"a {shape[0]}x{shape[1]} matrix in {tile.rows}x{tile.cols} tiles has extra ciphertexts")


def parse_header(engine: Engine, header: Any) -> tuple[tuple[int, int], Tile, tuple[bool, bool], tuple[int, int]]:
    """Shape, tile, zero padding and grid of a serialized matrix's header, checked against ``engine``."""
    if not isinstance(header, dict):
        raise MalformedInputError(f"EncryptedMatrix header must be a JSON object, got {type(header).__name__}")
    try:
        if header.get("format") != _FORMAT:
            raise MalformedInputError(f"header format {header.get('format')!r} is not {_FORMAT!r}")
        shape = (int(header["shape"][0]), int(header["shape"][1]))
        tile = Tile(int(header["tile"][0]), int(header["tile"][1]))
        pads = (bool(header["zero_padding"][0]), bool(header["zero_padding"][1]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MalformedInputError(f"malformed EncryptedMatrix header: {exc}") from exc
    if min(shape) < 1:
        raise ShapeError(f"shape {shape} must have positive dimensions")
    tile.check(engine.slots)
    return shape, tile, pads, layout.grid(shape, tile)


def hstack(columns: list[EncryptedMatrix]) -> EncryptedMatrix:
    """Side by side, like ``np.hstack``, for column-packed matrices (tile width 1): no homomorphic work."""
    if not columns:
        raise ShapeError("need at least one matrix to stack")
    first = columns[0]
    for other in columns:
        if other.tile.cols != 1 or other.tile != first.tile:
            raise ShapeError("hstack needs column-packed matrices with the same tile (packing='columns')")
        if other.shape[0] != first.shape[0]:
            raise ShapeError(
                f"all the input array dimensions except for the concatenation axis must match exactly, "
                f"but along dimension 0 the arrays have sizes {first.shape[0]} and {other.shape[0]}"
            )
    tiles = [[ct for matrix in columns for ct in matrix._tiles[i]] for i in range(first.grid[0])]
    pads = (all(m.zero_padding[0] for m in columns), True)
    return EncryptedMatrix(first.engine, tiles, (first.shape[0], sum(m.shape[1] for m in columns)), first.tile, pads)


def _replicate(engine: Engine, ct: Ciphertext, width: int) -> Ciphertext:
    """Copy the first slot of each ``width``-wide group across the group (others must be zero)."""
    step = 1
    while step < width:
        ct = engine.add(ct, engine.rotate(ct, -step))
        step *= 2
    return ct


def _as_2d(value: Any, name: str, column: bool = False) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number or a numeric array, got {type(value).__name__}") from exc
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity")
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array[:, None] if column else array[None, :]
    if array.ndim != 2:
        raise ShapeError(f"{name} has {array.ndim} dimensions; EncryptedMatrix is 2-D")
    return array


def _broadcast(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    try:
        return tuple(np.broadcast_shapes(a, b))  # type: ignore[return-value]
    except ValueError as exc:
        raise ShapeError(f"operands could not be broadcast together with shapes {a} {b}") from exc
