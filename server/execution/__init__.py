"""Where a job's homomorphic work runs: in this process (``local``) or in Ray workers (``ray_shards``).

One small interface, ``Executor``, over a ``StoredTable`` (paths into the blob store, never bytes):

- ``shards(table, engine)``: a context manager giving the ``core.shards.ShardSource`` that a
  ``GradientTrainer(engine, None, None, config, refresh, shards=...)`` runs full-batch steps on. Ray: one actor per
  range of row blocks, alive for the job, each loading its own blocks and the public context once.
- ``gram_partial(table, engine)``: the one-pass Gram statistics of ``core.gram`` summed over shards.
- ``map_blocks(table, function, engine)``: a row-local function (prediction, distances) over ranges of
  row blocks, results stacked back in row order.
- ``column_sums(table, engine, squares)``: ``X.sum(axis=0)`` (of ``X * X``), added up over ranges
  (Describe's means and variances come from these, ``core.stats.*_from_sums``).

Several tables with one layout (a pool's contributions) combine generically over any executor:
``pooled_shards`` adds the step partials of each table's shards, ``pooled_gram_partial`` the Gram partials.

Functions handed to ``map_blocks`` must be picklable (module-level, or ``functools.partial`` of one). The
secret key never exists here: workers load the session's public context, which the server refused to store
if it carried one. Every wait on a worker has a timeout; a worker or cluster that goes away is an
``ExecutionError`` naming the Ray address, never a hang.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.engine import Engine
from core.gram import GramPartial
from core.shards import PooledShards, ShardSource
from core.tensor import EncryptedMatrix

BlockFunction = Callable[[EncryptedMatrix], EncryptedMatrix]


class ExecutionError(RuntimeError):
    """The execution layer could not run the work: which cluster, which worker, and what happened."""


@dataclass(frozen=True)
class StoredTable:
    """A stored dataset as the executors see it: where its public context and matrices live."""

    context: Path  # the session's public context
    features: Path  # X, as EncryptedMatrix.to_bytes wrote it
    targets: Path | None  # y (None for prediction and statistics)
    rows: int
    tile_rows: int


class Executor(Protocol):
    def shards(self, table: StoredTable, engine: Engine) -> AbstractContextManager[ShardSource]: ...

    def gram_partial(self, table: StoredTable, engine: Engine) -> GramPartial: ...

    def map_blocks(self, table: StoredTable, function: BlockFunction, engine: Engine) -> EncryptedMatrix: ...

    def column_sums(self, table: StoredTable, engine: Engine, squares: bool = False) -> EncryptedMatrix: ...

    def close(self) -> None: ...


def open_executor(kind: str, address: str = "", num_cpus: int | None = None) -> Executor:
    """The executor the server's settings name: ``local``, or ``ray`` at ``address`` (empty: a local Ray on
    ``num_cpus`` cores). Ray is imported only here, so the local executor needs no ``ray`` extra."""
    if kind == "local":
        from server.execution.local import LocalExecutor

        return LocalExecutor()
    if kind != "ray":
        raise ExecutionError(f"executor {kind!r} is not local or ray")
    try:
        from server.execution.ray_shards import RayExecutor
    except ImportError as exc:
        raise ExecutionError(
            f"--executor ray needs the ray extra (pip install 'ciphergrad[ray]'): {exc}"
        ) from exc
    return RayExecutor(address or None, num_cpus=num_cpus)


@contextmanager
def pooled_shards(executor: Executor, tables: Sequence[StoredTable], engine: Engine) -> Iterator[ShardSource]:
    """One ``ShardSource`` over several tables with one layout (a pool's contributions): each table's shards
    from ``executor``, their step partials added (``core.shards.PooledShards``); all closed on exit."""
    with ExitStack() as stack:
        sources = [stack.enter_context(executor.shards(table, engine)) for table in tables]
        yield sources[0] if len(sources) == 1 else PooledShards(sources)


def pooled_gram_partial(executor: Executor, tables: Sequence[StoredTable], engine: Engine) -> GramPartial:
    """The Gram statistics' partial sums of several tables with one layout, added (rows add up too)."""
    partials = [executor.gram_partial(table, engine) for table in tables]
    return functools.reduce(operator.add, partials)
