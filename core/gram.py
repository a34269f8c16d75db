"""Least squares on encrypted sufficient statistics: one pass over the rows, then epochs whose cost does
not depend on the number of rows.

The least-squares gradient needs only ``G = X^T X / n``, ``b = X^T y / n`` (and ``y^T y / n`` for the loss).
Both are blocks of the Gram matrix of the augmented table ``A = [X | y]`` (``m = d + 1`` columns), so one
pass accumulates ``A^T A`` and the trainer works on the ``m x m`` system from then on.

**The pass** (``accumulate``) takes any iterable of ``(X, y)`` row blocks, so a server can stream blocks
from disk and a distributed executor can give each shard a range of blocks: ``GramPartial`` objects add up
(``+``), and ``n`` divides only once, when the statistics are finalized. Products are summed *before*
relinearization (three-polynomial ciphertexts add like any other), so key switching, the expensive half
of a product, runs once per sum instead of once per block. Cost per block of rows:

- column packing (``Tile(slots, 1)``, one ciphertext per column): ``m(m+1)/2`` products per ``slots``
  rows, no rotation (66 products per 4,096 rows for 10 features and an intercept).
- row packing (``Tile(slots/w, w)``, as uploaded for gradient descent): ``d - 1`` rotations and ``d + 2``
  products per ``slots/w`` rows (10 rotations, 13 products per 256 rows). Needs ``d < w`` (``y`` takes
  column ``d`` of the period).

Measured (``benchmarks/million.py --rows 100000 --skip-gd --packing rows|columns``, 11 columns, one run
each on a shared 2-core machine): the pass takes 19.2 s row-packed and 1.6 s column-packed (12x), the key
holder encrypts in 7.2 s vs 2.4 s and uploads 323 MB vs 124 MB. Column packing is the one to upload.

**Finalizing** (``finalize``) relinearizes each sum once, multiplies it by a mask that keeps the slots of
one matrix position and divides by ``n`` (times a public factor, the learning rate for training: that
saves the trainer a level), and folds all row positions together with one shared rotate-and-sum per
diagonal: ``p * log2(slots / p)`` rotations, ``p = next_pow2(m)``, whatever ``n`` is. Column packing first
sums windows of ``p`` slots of each pair (``log2 p`` rotations per pair, so that every slot class sees
every row); row packing adds ``d - 1`` rotations for the lower triangle. All these rotations act on
unrescaled products, so their key-switching noise is divided away. About 400 rotations, 1.5-3 s, once.
Statistics only the key holder reads (``core.normal``) need no diagonal the trainer can rotate against:
row-packed, they are folded once per pass product into upper diagonals (form UPPER), about half the
rotations (Ames 88 against 184, breast cancer 224 against 495).
The one plaintext factor ``1/n`` carries ~40 bits, so for ``n`` rows the statistics keep roughly
``40 - log2 n`` bits (relative error ~1e-5 at a million rows, ~1e-8 on Ames): harmless for R^2 (quadratic
in the weight error), visible in the last digits of the weights. The result is the generalized-diagonal form of rows
``0..d-1`` of ``A^T A`` (``diag_s[k] = G[k, (k+s) mod p]``, period ``p`` in the slots) and its last
column ``[b, y^T y / n]``, at level ``top - 2``: data at the top level of ``plan(3)`` leave level 1.

**An epoch** (``GramTrainer``) on the augmented weights ``w' = [w, -1]`` (period ``p``, one ciphertext):
``g = sum_s diag_s * rot(w', s) (+ lr * l2 * w')`` with baby-step/giant-step rotations
(``2 (sqrt(p) - 1)`` rotations: 6 at ``p = 16``), ``sqrt(p)`` relinearizations, ``p`` products; then
``w' <- w' - g`` (heavy-ball: ``(1 + mu) w' - mu w'_prev - g``). The diagonals sit at level 1, so ``g``
lands at level 0 and the weights are refreshed (masked, ``core.refresh``) once per epoch. The loss
``w^T G w - 2 b^T w + y^T y / n`` of the epoch's starting weights comes at no extra refresh: the refreshed
weights give ``g`` back at a fresh level, and ``w'^T (g - lr [b, yy]) = lr * loss`` (minus the ridge
term) costs one product and ``log2 p`` rotations.

**The normal solver** (``core.normal``) skips the iterations: the key holder decrypts the finalized
``G + l2 I'`` and ``b`` and solves exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ciphergrad.core.engine import Ciphertext, Engine, OpCounts
from ciphergrad.core.errors import LevelError, ShapeError
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import Tile, next_pow2
from ciphergrad.core.layout import rotation_steps as layout_steps
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.core.training import check_data

__all__ = [
    "GramPartial",
    "GramStatistics",
    "accumulate",
    "baby_steps",
    "finalize",
    "one_pass_tile",
    "pass_cost",
    "pass_steps",
    "rotation_steps",
    "row_blocks",
    "weight_period",
]

Block = tuple[EncryptedMatrix, EncryptedMatrix]
# The forms of GramStatistics.diagonals: the trainer's generalized diagonals, or the key holder's upper ones.
WRAPPED, UPPER = "wrapped", "upper"
# Levels the data must have: one for the products, one for the masks that finalize, one for the step.
DATA_LEVELS = 3


def row_blocks(X: EncryptedMatrix, y: EncryptedMatrix) -> Iterator[Block]:
    """The row blocks of an encrypted table, one ciphertext row at a time."""
    check_data(X, y)
    if X.shape[0] == 1:
        yield X, y
        return
    for i in range(X.grid[0]):
        yield X.row_block(i), y.row_block(i)


@dataclass
class GramPartial:
    """Unnormalized running sums of products over some rows; partials over disjoint rows add up."""

    engine: Engine
    tile: Tile
    features: int
    rows: int
    sums: dict[tuple[str, int, int], Ciphertext]
    counts: OpCounts = field(default_factory=OpCounts)  # the operations that made these sums, wherever they ran

    def __add__(self, other: GramPartial) -> GramPartial:
        if (other.tile, other.features) != (self.tile, self.features):
            raise ShapeError(
                f"cannot add Gram partials of {self.features} features in {self.tile} and "
                f"{other.features} in {other.tile}: accumulate every block with the same layout"
            )
        sums = {key: self.engine.add(ct, other.sums[key]) for key, ct in self.sums.items()}
        return GramPartial(self.engine, self.tile, self.features, self.rows + other.rows, sums,
                           self.counts + other.counts)

    def absorb(self, other: GramPartial) -> GramPartial:
        """``self + other`` in place on ``self`` (whose sums must be its own: a running total), no new sums."""
        if (other.tile, other.features) != (self.tile, self.features):
            return self + other  # raises, naming both layouts
        for key, ct in other.sums.items():
            self.sums[key] = self.engine.add_into(self.sums[key], ct)
        self.rows += other.rows
        self.counts += other.counts
        return self

    @property
    def columns(self) -> bool:
        return self.tile.cols == 1

    def to_state(self) -> dict[str, Any]:
        """Plain data for another process: each sum relinearized first (three-polynomial ciphertexts do not
        load back), which costs one key switch per sum and leaves ``finalize`` nothing to relinearize."""
        engine = self.engine
        return {"tile": (self.tile.rows, self.tile.cols), "features": self.features, "rows": self.rows,
                "sums": [(key, engine.ciphertext_to_bytes(engine.relinearize(ct))) for key, ct in self.sums.items()],
                "counts": self.counts.to_dict()}

    @classmethod
    def from_state(cls, engine: Engine, state: dict[str, Any]) -> GramPartial:
        sums = {tuple(key): engine.ciphertext_from_bytes(blob) for key, blob in state["sums"]}
        return cls(engine, Tile(*state["tile"]), int(state["features"]), int(state["rows"]), sums,  # type: ignore[misc]
                   OpCounts(**state.get("counts", {})))


def accumulate(engine: Engine, blocks: Iterable[Block], into: GramPartial | None = None) -> GramPartial:
    """One pass: the products of every ``(X, y)`` row block, summed (see the module docstring for costs), onto
    ``into`` (in place: a running total of earlier blocks) when given. Each product goes into the running sums
    in place as soon as it is made: the pass holds one set of sums and one product, not a block's worth of
    products (595 ciphertexts, ~470 MB, for 32 features and an intercept)."""
    total = into
    for X, y in blocks:
        total = _block_products(engine, X, y, total)
    if total is None:
        raise ShapeError("no row blocks to accumulate: the table is empty")
    return total


def _block_products(engine: Engine, X: EncryptedMatrix, y: EncryptedMatrix,
                    total: GramPartial | None = None) -> GramPartial:
    """The block's products, added into ``total`` (in place) or as a new partial when None."""
    check_data(X, y)
    if X.grid[0] != 1:
        raise ShapeError(f"a row block is one ciphertext row; got {X.grid[0]} (use row_blocks(X, y))")
    if not (all(X.zero_padding) and all(y.zero_padding)):
        raise ShapeError("Gram accumulation needs zero padding: pass the blocks as the key holder encrypted them")
    if X.level < DATA_LEVELS:
        raise LevelError(
            f"the Gram pass needs data with {DATA_LEVELS} levels (product, normalization, step); got "
            f"{X.level}: encrypt at the top level of plan({DATA_LEVELS})"
        )
    d, tile = X.shape[1], X.tile
    if tile.cols != 1 and (X.grid[1] != 1 or d >= tile.cols):
        raise ShapeError(
            f"row-packed Gram accumulation needs the {d} features plus y inside one tile row of width "
            f"{tile.cols}: encrypt with packing='columns' (faster) or a tile wider than {d}"
        )
    if total is not None and (tile, d) != (total.tile, total.features):
        raise ShapeError(
            f"cannot add Gram partials of {total.features} features in {total.tile} and {d} in {tile}: "
            "accumulate every block with the same layout"
        )

    before = engine.counts.snapshot()

    def product(a: Ciphertext, b: Ciphertext) -> Ciphertext:
        return engine.multiply(a, b, rescale=False, relinearize=False)

    def products() -> Iterator[tuple[tuple[str, int, int], Ciphertext]]:
        if tile.cols == 1:
            columns = [*X.ciphertexts, y.ciphertexts[0]]
            for j in range(d + 1):
                for k in range(j, d + 1):
                    yield ("pair", j, k), product(columns[j], columns[k])
            return
        (xb,), (yb,) = X.ciphertexts, y.ciphertexts
        for s in range(d):
            yield ("diag", s, 0), product(xb, xb if s == 0 else engine.rotate(xb, s))
        yield ("xy", 0, 0), product(xb, yb)
        yield ("yy", 0, 0), product(yb, yb)

    if total is None:
        total = GramPartial(engine, tile, d, X.shape[0], dict(products()))
    else:
        for key, ct in products():
            total.sums[key] = engine.add_into(total.sums[key], ct)
        total.rows += X.shape[0]
    total.counts += engine.counts.since(before)
    return total


def center_columns(partial: GramPartial, center: np.ndarray, intercept_column: int) -> GramPartial:
    """The pair sums of ``Z - center * z_c`` (``z_c`` the intercept column of ones, ``center`` integers, one per
    column of ``Z = [X | y]``) from those of ``Z``: ``S'ab = Sab - u_b Sac - u_a Scb + u_a u_b Scc``. Integer
    multiples of pending sums are exact and spend nothing, so centering here loses no precision, unlike the
    same subtraction after the division by n (``core.standardize``). Column packing only."""
    if not partial.columns:
        raise ShapeError("centering inside the Gram statistics needs column-packed data (packing='columns')")
    engine, c, m = partial.engine, intercept_column, partial.features + 1
    u = [0 if j == c else int(center[j]) for j in range(m)]

    def pair(j: int, k: int) -> tuple[str, int, int]:
        return ("pair", min(j, k), max(j, k))

    def times(value: int, key: tuple[str, int, int]) -> Ciphertext | None:
        return engine.multiply_integer(partial.sums[key], -value) if value else None

    sums = {}
    for (kind, a, b), total in partial.sums.items():
        terms = [times(u[b], pair(a, c)), times(u[a], pair(c, b))]
        if u[a] and u[b]:
            terms.append(engine.multiply_integer(partial.sums[pair(c, c)], u[a] * u[b]))
        for term in (t for t in terms if t is not None):
            total = engine.add(total, term)
        sums[(kind, a, b)] = total
    return replace(partial, sums=sums)


@dataclass(frozen=True)
class GramStatistics:
    """``factor / n`` times rows ``0..d-1`` of ``[X|y]^T [X|y]`` in diagonal form, and its last column:
    ``diagonals`` in ``form`` WRAPPED (the Gram trainer's) is ``(1, p*p)``: entry ``s*p + k`` is ``G[k, (k+s)
    mod p]`` (zero for ``k >= d``), each diagonal moved right by its giant step; in form UPPER (only for the key
    holder: ``finalize(for_decryption=True)``, row-packed) ``(1, d*p)``: ``G[k, k+s]`` for ``k + s < d``.
    ``column`` is ``(1, d+1)``: ``[b, y^T y / n]``. All are rows of period ``p`` (tile ``slots/p x p``).
    """

    diagonals: EncryptedMatrix
    column: EncryptedMatrix
    rows: int
    features: int
    factor: float
    form: str = WRAPPED
    # The pass's and the finalization's operations (reported with a job's first epoch; not checkpointed).
    counts: OpCounts = field(default_factory=OpCounts, compare=False)

    @property
    def period(self) -> int:
        return self.diagonals.tile.cols

    def diagonal(self, s: int) -> Ciphertext:
        return self.diagonals.ciphertexts[s]

    def state(self) -> dict[str, Any]:
        """Checkpoint entries (``wire.codec.checkpoint_to_bytes`` holds them)."""
        return {"gram_diagonals": self.diagonals, "gram_column": self.column, "gram_rows": self.rows,
                "gram_features": self.features, "gram_factor": self.factor, "gram_form": self.form}

    @classmethod
    def from_state(cls, engine: Engine, state: dict[str, Any]) -> GramStatistics:
        def matrix(value: EncryptedMatrix | bytes) -> EncryptedMatrix:
            return value if isinstance(value, EncryptedMatrix) else EncryptedMatrix.from_bytes(engine, value)

        return cls(matrix(state["gram_diagonals"]), matrix(state["gram_column"]), int(state["gram_rows"]),
                   int(state["gram_features"]), float(state["gram_factor"]), str(state.get("gram_form", WRAPPED)))

    def dense(self, holder: KeyHolder) -> tuple[np.ndarray, np.ndarray, float]:
        """Key holder only: ``(G, b, y^T y / n)`` in plaintext, the factor divided out."""
        p, d = self.period, self.features
        stored = holder.decrypt(self.diagonals).reshape(-1, p) / self.factor
        G = np.zeros((d, d))
        if self.form == UPPER:
            for s in range(d):
                for k in range(d - s):
                    G[k, k + s] = G[k + s, k] = stored[s, k]
        else:
            baby = baby_steps(p)
            diagonals = np.array([np.roll(row, -(s - s % baby)) for s, row in enumerate(stored)])
            for s in range(p):
                for k in range(d):
                    if (k + s) % p < d:
                        G[k, (k + s) % p] = diagonals[s, k]
        column = holder.decrypt(self.column).reshape(-1) / self.factor
        return G, column[:d], float(column[d])


def finalize(partial: GramPartial, factor: float = 1.0, transform: np.ndarray | None = None, *,
             for_decryption: bool = False) -> GramStatistics:
    """Divide by ``n`` (times ``factor``) and fold the sums into diagonal form (costs in the module docstring).

    ``transform`` (column packing only): the statistics of ``[X | y] A^T`` instead, ``A`` from
    ``core.standardize.transform_matrix``: each entry a combination of up to four pair sums, folded into the
    plaintext masks (no extra level or rotation).

    ``for_decryption``: statistics only the key holder reads (``core.normal``); row-packed, in form UPPER
    (module docstring: half the rotations, the same precision and aggregates)."""
    engine, d = partial.engine, partial.features
    before = engine.counts.snapshot()
    if transform is not None and not partial.columns:
        raise ShapeError("standardization inside the Gram statistics needs column-packed data: upload with "
                         "packing='columns', or standardize the features before encrypting them")
    m, slots = d + 1, engine.slots
    p = weight_period(d, partial.tile)
    # A tile smaller than the slots repeats; the fold below adds every copy.
    scale = factor / partial.rows / (slots // partial.tile.size)
    ready: dict[tuple[str, int, int], Ciphertext] = {}

    def summed(key: tuple[str, int, int]) -> Ciphertext:
        if key not in ready:
            ct = engine.relinearize(partial.sums[key])
            if partial.columns:  # every slot is a row: window sums of p slots, so that each slot class holds them all
                ct = engine.rotate_sum(ct, 1, p)
            ready[key] = engine.rescale(ct)
        return ready[key]

    def fold(terms: list[tuple[tuple[str, int, int], int]]) -> Ciphertext | None:
        """Sum of the masked terms, every slot position folded onto its residue mod p (pending rescale). A term
        ``(key, position)`` or ``(key, position, coefficient)``; one mask per key holds all its positions."""
        masks: dict[tuple[str, int, int], np.ndarray] = {}
        for key, position, *coefficient in terms:
            masks.setdefault(key, np.zeros(p))[position] += scale * (coefficient[0] if coefficient else 1.0)
        total = None
        for key, period in masks.items():
            term = engine.multiply_plain(summed(key), np.tile(period, slots // p), rescale=False)
            total = term if total is None else engine.add(total, term)
        return None if total is None else engine.rotate_sum(total, p, slots // p)

    def pair(j: int, k: int) -> tuple[str, int, int]:
        return ("pair", min(j, k), max(j, k))

    def cells(entries: list[tuple[int, int, int]]) -> list[Any]:
        """Terms for entries ``(position, k, l)`` of the (transformed) Gram matrix of the columns."""
        if transform is None:
            return [(pair(row, col), position) for position, row, col in entries]
        return [(pair(a, b), position, transform[row, a] * transform[col, b]) for position, row, col in entries
                for a in np.flatnonzero(transform[row]) for b in np.flatnonzero(transform[col])]

    if partial.columns:
        column = fold(cells([(k, k, d) for k in range(m)]))
    else:
        column = fold([(("xy", 0, 0), k) for k in range(d)] + [(("yy", 0, 0), d)])
    tile = Tile(slots // p, p)
    if for_decryption and not partial.columns:
        upper = [engine.rescale(fold([(("diag", s, 0), k) for k in range(d - s)])) for s in range(d)]
        return GramStatistics(EncryptedMatrix(engine, [upper], (1, d * p), tile),  # type: ignore[arg-type]
                              EncryptedMatrix(engine, [[engine.rescale(column)]], (1, m), tile),  # type: ignore[arg-type]
                              partial.rows, d, factor, UPPER, partial.counts + engine.counts.since(before))
    baby = baby_steps(p)
    diagonals = []
    for s in range(p):
        giant = s - s % baby  # stored moved right by the giant step, as the trainer's baby-step/giant-step wants
        if partial.columns:
            upper = fold(cells([(k, k, (k + s) % p) for k in range(d) if (k + s) % p < m]))
            lower = None
        else:  # row packing: G[k, k+s] sits at position k of the s-th product; the lower part is rotated in
            terms = [(("diag", s, 0), k) for k in range(d) if k + s < d]
            if 1 <= s <= d:
                terms.append((("xy", 0, 0), d - s))
            upper = fold(terms)
            lower = fold([(("diag", p - s, 0), j) for j in range(d) if j + p - s < d]) if s > p - d else None
            if lower is not None:
                lower = engine.rotate(lower, (s - giant) % p)
        if upper is not None and giant:
            # Rotated while the product is pending: the key-switching noise is rescaled away.
            upper = engine.rotate(upper, p - giant)
        parts = [ct for ct in (upper, lower) if ct is not None]
        if not parts:
            diagonals.append(engine.encrypt(np.zeros(slots), engine.level(summed(next(iter(partial.sums)))) - 1))
            continue
        total = parts[0] if len(parts) == 1 else engine.add(*parts)
        diagonals.append(engine.rescale(total))
    return GramStatistics(
        EncryptedMatrix(engine, [diagonals], (1, p * p), tile),
        EncryptedMatrix(engine, [[engine.rescale(column)]], (1, m), tile),  # type: ignore[arg-type]
        partial.rows, d, factor, WRAPPED, partial.counts + engine.counts.since(before),
    )


def pass_cost(rows: int, features: int, slots: int, packing: str) -> float:
    """The pass and ``finalize`` for ``features`` columns (intercept included) and y, in rotations (a product
    or a relinearization counted as half of one; measured at N = 8192: rotation 3.6 ms, product ~2 ms).

    Column packing: ``m(m+1)/2`` products per ``slots`` rows, then per pair a relinearization and ``log2 p``
    window rotations, and ``p`` diagonals folded with ``log2(slots / p)`` rotations each. Row packing:
    ``d - 1`` rotations and ``d + 2`` products per ``slots / p`` rows, then (statistics for the key holder,
    form UPPER) ``m`` folds. Row packing wins while the table is small (breast cancer, 455 x 31: ~410
    against ~3,400), column packing once the rows dominate (1M x 33: ~77k against ~500k)."""
    m = features + 1
    p = next_pow2(m)
    per_fold = math.log2(max(slots // p, 1))
    pairs = m * (m + 1) / 2
    if packing == "columns":
        blocks = math.ceil(rows / slots)
        return blocks * pairs * 0.5 + pairs * (math.log2(p) + 0.5) + p * per_fold + 2 * p
    blocks = math.ceil(rows / max(slots // p, 1))
    return blocks * ((features - 1) + (features + 2) * 0.5) + m * per_fold


def one_pass_tile(shape: tuple[int, int], slots: int) -> Tile:
    """The cheaper tile (``pass_cost``) for the one-pass statistics of an ``(n, d)`` design and y: a full-height
    row tile with room for y (``Tile(slots / p, p)``, ``p = next_pow2(d + 1)``) or ``Tile(slots, 1)``."""
    rows, features = shape
    width = next_pow2(features + 1)
    columns = Tile(min(slots, next_pow2(rows)), 1)
    if width > slots:
        return columns
    if pass_cost(rows, features, slots, "rows") < pass_cost(rows, features, slots, "columns"):
        return Tile(slots // width, width)
    return columns


def weight_period(features: int, tile: Tile) -> int:
    """Slot period of the statistics and weights for data in ``tile``: room for the features and y."""
    return next_pow2(features + 1) if tile.cols == 1 else tile.cols


def rotation_steps(period: int, slots: int) -> list[int]:
    """Galois keys the Gram pass, its finalization and the trainer use for weights of this period: every
    left rotation below the period (the pass's diagonal products, the baby and giant steps), the powers of
    two (the slot sums), and the matrix operations' on the weights' tile (Predict with the trained model)."""
    powers = [1 << k for k in range(int(math.log2(slots)))]
    return sorted({*range(1, period), *powers, *layout_steps(Tile(slots // period, period))})


def pass_steps(features: int, period: int, slots: int) -> list[int]:
    """Exactly the Galois keys of the one-pass statistics of ``features`` encrypted columns and y, for weights
    of this period (the pass's products, the folds, the trainer's baby and giant steps): all a fit that keeps
    no session needs. ``rotation_steps`` adds what serving the data and the model takes."""
    baby = baby_steps(period)
    powers = [1 << k for k in range(int(math.log2(slots)))]
    return sorted({*range(1, features), *range(1, baby), *range(baby, period, baby), *powers})


def baby_steps(period: int) -> int:
    return 1 << math.ceil(math.log2(period) / 2)
