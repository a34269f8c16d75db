"""A gradient step split over row-block shards: partial sums on the shards, the update on the driver.

A full-batch step of the per-row trainers (``core.linear``, ``core.logistic``) is, per row block,
``residual = f(X_block, w)`` (row-local: the row-sum masks of ``(X * w).sum(axis=1)`` depend only on which
rows of a block are valid) and then two column sums, ``sum(residual**2)`` and ``(Xg * residual).sum(axis=0)``.
``sum(axis=0)`` first adds the tile rows of every block, then rotates once. A shard therefore returns the
*pending* sums of its blocks (``StepPartial``: ciphertexts at scale Delta^2, not yet rotated or rescaled);
the driver adds the shards' partials and finishes the sums with the rotations, exactly as one shard would.
Ciphertext addition is exact modular arithmetic, so the sum over shards equals the sum over the whole table
up to the fresh encryptions of the masked refreshes; levels, rotation counts on the driver and scales are
those of the one-process step. Each shard spends per block what the one-process step spends per block.

Between the per-row operations a step may need the key holder's refresh of a per-row value (the logistic
logit at depth 3). ``RowStep.partial`` is a generator: it yields the matrix to refresh and receives the
fresh one. ``drive`` runs it in-process (one shard: the local executor); a distributed executor stacks the
shards' requests into one matrix (``stack_blocks``), refreshes once and hands each shard its rows back
(``split_blocks``), so the key holder sees one round trip per refresh whatever the number of shards.

Invariants: shards hold consecutive row blocks, every shard but the last holds whole blocks, and a shard
never holds a single row of a table with more (``block_ranges``), so each shard's blocks are exactly the
whole table's. Every value crossing a process boundary is an ``EncryptedMatrix`` (``to_bytes``): two
polynomials, never a secret key.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.errors import ShapeError
from ciphergrad.core.layout import Tile
from ciphergrad.core.tensor import EncryptedMatrix

# What a shard's step yields (a matrix for the key holder to refresh), receives back, and returns.
StepProgram = Generator[EncryptedMatrix, EncryptedMatrix, "StepPartial"]


@dataclass
class Batch:
    X: EncryptedMatrix
    Xg: EncryptedMatrix  # X times the step's constant factor / rows: the gradient's copy
    y: EncryptedMatrix  # the target, pre-scaled as the algorithm needs
    rows: int


@dataclass
class StepPartial:
    """One shard's unfinished sums: ``sum(residual**2)`` and ``(Xg * residual).sum(axis=0)`` before the
    rotations, each one tile row (shape ``(min(rows, tile.rows), columns)``). Partials over disjoint row
    blocks add up (``+``); ``finish`` rotates and rescales once."""

    loss: EncryptedMatrix
    gradient: EncryptedMatrix
    counts: OpCounts | None = None  # the shard's operations, for the driver's report

    def __add__(self, other: StepPartial) -> StepPartial:
        counts = None
        if self.counts is not None and other.counts is not None:
            counts = self.counts + other.counts
        return StepPartial(add_pending(self.loss, other.loss), add_pending(self.gradient, other.gradient), counts)

    def finish(self, rows: int) -> tuple[EncryptedMatrix, EncryptedMatrix]:
        """``(loss (1, 1), gradient step (1, d))`` for a batch of ``rows`` rows."""
        return finish_pending(self.loss, rows), finish_pending(self.gradient, rows)

    def to_state(self) -> dict[str, Any]:
        return {"loss": self.loss.to_bytes(), "gradient": self.gradient.to_bytes(),
                "counts": None if self.counts is None else self.counts.to_dict()}

    @classmethod
    def from_state(cls, engine: Engine, state: dict[str, Any]) -> StepPartial:
        counts = None if state.get("counts") is None else OpCounts(**state["counts"])
        return cls(EncryptedMatrix.from_bytes(engine, state["loss"]),
                   EncryptedMatrix.from_bytes(engine, state["gradient"]), counts)


def step_partial(residual: EncryptedMatrix, Xg: EncryptedMatrix) -> StepPartial:
    """The pending sums of one shard's step from its residual ``(rows, 1)``."""
    return StepPartial(pending_row_sum(residual * residual), pending_row_sum(Xg * residual))


@dataclass(frozen=True)
class RowStep:
    """The per-row part of a trainer's step; frozen and picklable, so it ships to shard processes.

    ``rows`` is the batch's row count (the whole table's in full-batch training): the gradient factor is
    divided by it, never by a shard's own rows.
    """

    rows: int
    gradient_factor: float
    target_scale: float

    def prepare(self, X: EncryptedMatrix, y: EncryptedMatrix) -> Batch:
        """The pre-scaled copies of one shard's rows (computed once, not per step)."""
        return Batch(X, X * (self.gradient_factor / self.rows), y * self.target_scale, X.shape[0])

    def residuals(self, batch: Batch, weights: EncryptedMatrix) -> Generator[EncryptedMatrix, EncryptedMatrix,
                                                                                EncryptedMatrix]:
        raise NotImplementedError

    def partial(self, batch: Batch, weights: EncryptedMatrix) -> StepProgram:
        residual = yield from self.residuals(batch, weights)
        return step_partial(residual, batch.Xg)


def drive(program: StepProgram, refresh: Any) -> StepPartial:
    """Run a shard's step in this process, answering its refresh requests with ``refresh``."""
    try:
        request = next(program)
        while True:
            request = program.send(refresh(request))
    except StopIteration as done:
        return done.value


class ShardSet(Protocol):
    """A table's row blocks split over shards that keep their prepared copies between steps."""

    shape: tuple[int, int]

    def step(self, weights: EncryptedMatrix, refresh: Any) -> StepPartial:
        """The summed partials of every shard (refreshes answered through ``refresh``, one per request)."""
        ...


class ShardSource(Protocol):
    """What a trainer needs before its first step: the table's shape and layout, and its shard set for the
    trainer's ``RowStep`` (an executor's; the shards may live in other processes)."""

    shape: tuple[int, int]
    tile: Tile

    def __call__(self, program: RowStep) -> ShardSet: ...


class InMemoryShards:
    """A ``ShardSource`` over matrices already in this process: one shard."""

    def __init__(self, X: EncryptedMatrix, y: EncryptedMatrix) -> None:
        self.X, self.y, self.shape, self.tile = X, y, X.shape, X.tile

    def __call__(self, program: RowStep) -> ShardSet:
        return LocalShards(program, program.prepare(self.X, self.y))


class LocalShards:
    """One shard in this process: the local executor, and what minibatches and shuffles always use."""

    def __init__(self, program: RowStep, batch: Batch) -> None:
        self.program, self.batch, self.shape = program, batch, (batch.rows, batch.X.shape[1])

    def step(self, weights: EncryptedMatrix, refresh: Any) -> StepPartial:
        return drive(self.program.partial(self.batch, weights), refresh)


# -- row blocks --------------------------------------------------------------------------------------------
def block_ranges(rows: int, block_rows: int, shards: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` ranges of row blocks, as even as possible, for at most ``shards`` shards.

    A last block of one row is never a shard of its own (a one-row matrix sums its columns without masks)."""
    if shards < 1:
        raise ShapeError(f"shards={shards} must be at least 1")
    blocks = -(-rows // block_rows)
    # A one-row last block rides with the block before it.
    blocks_usable = blocks - 1 if blocks > 1 and rows % block_rows == 1 else blocks
    count = min(shards, blocks_usable)
    bounds = [round(i * blocks_usable / count) for i in range(count + 1)]
    bounds[-1] = blocks
    return [(bounds[i], bounds[i + 1]) for i in range(count)]


def row_blocks_of(matrix: EncryptedMatrix, start: int, stop: int) -> EncryptedMatrix:
    """Row blocks ``[start, stop)`` of ``matrix`` as a matrix of their own (no homomorphic work)."""
    tiles = _tiles(matrix)
    if not 0 <= start < stop <= len(tiles):
        raise ShapeError(f"row blocks [{start}, {stop}) out of range for {len(tiles)} blocks")
    rows = min(stop * matrix.tile.rows, matrix.shape[0]) - start * matrix.tile.rows
    return EncryptedMatrix(matrix.engine, tiles[start:stop], (rows, matrix.shape[1]), matrix.tile,
                           matrix.zero_padding)


def stack_blocks(parts: list[EncryptedMatrix]) -> EncryptedMatrix:
    """Shards' row blocks one below the other, in order (no homomorphic work)."""
    first = parts[0]
    tiles = [line for part in parts for line in _tiles(part)]
    pads = (parts[-1].zero_padding[0], all(p.zero_padding[1] for p in parts))
    return EncryptedMatrix(first.engine, tiles, (sum(p.shape[0] for p in parts), first.shape[1]), first.tile, pads)


def split_blocks(matrix: EncryptedMatrix, rows: list[int]) -> list[EncryptedMatrix]:
    """The inverse of ``stack_blocks`` for parts of ``rows`` rows each."""
    parts, start = [], 0
    for count in rows:
        blocks = -(-count // matrix.tile.rows)
        parts.append(row_blocks_of(matrix, start, start + blocks))
        start += blocks
    return parts


def _tiles(matrix: EncryptedMatrix) -> list[list[Any]]:
    cts, cols = matrix.ciphertexts, matrix.grid[1]
    return [cts[i : i + cols] for i in range(0, len(cts), cols)]


def pending_row_sum(matrix: EncryptedMatrix) -> EncryptedMatrix:
    """``matrix.sum(axis=0)`` before its rotations: the tile rows added, one tile row left."""
    source = matrix if matrix.zero_padding[0] else matrix * np.ones(matrix.shape)
    engine, tiles = matrix.engine, _tiles(source)
    line = []
    for column in zip(*tiles, strict=True):
        total = column[0]
        for ct in column[1:]:
            total = engine.add(total, ct)
        line.append(total)
    shape = (min(matrix.shape[0], matrix.tile.rows), matrix.shape[1])
    return EncryptedMatrix(engine, [line], shape, matrix.tile, (True, source.zero_padding[1]))


def add_pending(a: EncryptedMatrix, b: EncryptedMatrix) -> EncryptedMatrix:
    if (a.tile, a.shape[1]) != (b.tile, b.shape[1]):
        raise ShapeError(f"cannot add step partials of shapes {a.shape} and {b.shape} in different layouts")
    line = [a.engine.add(x, y) for x, y in zip(a.ciphertexts, b.ciphertexts, strict=True)]
    shape = (max(a.shape[0], b.shape[0]), a.shape[1])
    return EncryptedMatrix(a.engine, [line], shape, a.tile, (True, a.zero_padding[1] and b.zero_padding[1]))


def finish_pending(pending: EncryptedMatrix, rows: int) -> EncryptedMatrix:
    shape = (min(rows, pending.tile.rows), pending.shape[1])
    whole = EncryptedMatrix(pending.engine, [pending.ciphertexts], shape, pending.tile, pending.zero_padding)
    return whole.sum(axis=0).sum(axis=1) if shape[1] == 1 else whole.sum(axis=0)
