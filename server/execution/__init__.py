"""Where a job's homomorphic work runs: in this process (``local``) or in Ray workers (``ray_shards``).

One small interface, ``Executor``, over a ``StoredTable`` (paths into the blob store or a request's scratch
directory, never bytes; the Ray executor reads them in the server and sends their blocks through Ray's object
store, or with ``--ray-blocks path`` lets its workers read them on a shared disk: ``ray_blocks``):

- ``shards(table, engine)``: a context manager giving the ``core.shards.ShardSource`` that a
  ``GradientTrainer(engine, None, None, config, refresh, shards=...)`` runs full-batch steps on. Ray: the
  job's row blocks held by long-lived pool workers (``ray_workers``) for the job, each worker loading a
  session's public context once for all the jobs it serves.
- ``gram_partial(table, engine)``: the one-pass Gram statistics of ``core.gram`` summed over shards.
- ``map_blocks(table, function, engine, ...)``: a row-local function (prediction, per-row metrics terms)
  over ranges of row blocks, results stacked back in row order.
- ``map_batches(context, batches, function, engine, ...)``: ``function`` of each matrix of a stream (each
  whole, already checked), several in flight at once, results parsed back in input order. The servicers'
  request streams use ``run_files`` instead, which also parses and checks each batch where it runs; they keep
  ``parallelism`` such calls in flight (``server.rpc.work.Work.ordered``).
- ``warm(context)``: load a session's public context where the work will run, ahead of its first job.
- ``inspect_context(context, final)``: load a received public context where the work runs (refusing a
  secret key or garbage, as ``Engine.from_public_context``) and return its parameters; Ray keeps it loaded
  on that worker under the path it will be ``final``-ly stored at.
- ``check_files(context, paths, check, engine)``: ``check(engine, file, index)`` of each file where the
  session's context is loaded: in this process (with ``engine()``), or on Ray on one pool worker holding it
  (the files' bytes through the object store, whole, or their paths): an upload's checks parse every
  ciphertext, so with Ray the server process loads no context and parses no ciphertext for them. ``check``
  returns something small and picklable (not a matrix); what it raises reaches the caller as raised.
- ``run_files(context, paths, function, engine, operands=..., counts=...)``: ``function(engine, [open files],
  **operands)`` of a request's spooled files (a prediction or query batch; the metrics input) where the
  session's context is loaded: in this process (with ``engine()``), or on Ray on one pool worker (a holder of
  the context first), the files' and operands' bytes through the object store or their paths. ``function``
  parses and checks the files itself (``server.rpc.uploads.answer_batch``) and returns something picklable,
  serialized results as bytes, which the server streams back unparsed: with Ray the server process loads no
  context and parses no ciphertext for the request. Operands are parsed where ``function`` runs; ``counts``
  gets a remote call's operations (in this process ``engine()``'s counters have them already).
- ``column_sums(table, engine, squares, ...)``: ``X.sum(axis=0)`` (of ``X * X``, or of any row-local
  ``function`` of the rows), added up over ranges (Metrics' sums of squared residuals and of targets).
- ``finish_sums(table, finish, engine, sums=..., files=..., counts=...)``: ``finish(engine, [open files],
  [column sums])`` where the session's context is loaded: the column sums of ``X`` (``None``) or of a row-local
  function of it (``square``) for each of ``sums``, over ranges of row blocks as ``column_sums``, then added up
  and passed to ``finish`` with ``files`` (the stored table itself, for work on every row at once) on one
  worker, a holder of the context (Describe: ``core.stats.*_from_sums`` and the covariance). ``finish``
  returns something picklable (serialized results); with Ray this process relays the ranges' partial sums as
  bytes and parses none of them, and ``engine`` is not called; ``counts`` gets the workers' operations.

``map_blocks`` and ``column_sums`` call ``function(X_rows)``, or ``function(X_rows, y_rows)`` with
``with_targets=True`` (the table's second matrix split into the same row blocks: predictions and targets),
plus ``**operands``: whole matrices every range needs (a model's encrypted weights, an encrypted reference
set), each a ``MatrixSource`` (a path, ``EncryptedMatrix.to_bytes`` bytes, or a matrix the caller already
parsed and checked: used as is in this process, serialized once per call for Ray's workers). Functions must be picklable
(module-level, or ``functools.partial`` of one) and row-local: row i of the result depends on row i of the
inputs only. The secret key never exists here: workers load the session's public context, which the server
refused to store if it carried one. Every wait on a worker has a timeout; a worker or cluster that goes away
is an ``ExecutionError`` naming the Ray address, never a hang.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.gram import GramPartial
from ciphergrad.core.params import CKKSParameters
from ciphergrad.core.shards import ShardSource
from ciphergrad.core.tensor import EncryptedMatrix

BlockFunction = Callable[..., EncryptedMatrix]  # f(X_rows[, y_rows], **operands), row-local
MatrixSource = Path | bytes | EncryptedMatrix  # a stored or scratch matrix file, its bytes, or the matrix itself
NO_OPERANDS: Mapping[str, MatrixSource] = {}
FileCheck = Callable[[Engine, BinaryIO, int], Any]  # check(engine, an open file, its index) -> a small result
FilesFunction = Callable[..., Any]  # f(engine, [open files], **operands) -> picklable (serialized results)
SumsFunction = Callable[..., Any]  # f(engine, [open files], [column sums]) -> picklable (serialized results)


@dataclass
class Tally:
    """Where the operation counts of a call go when this process loads no engine for it (a Ray server's
    one-pass jobs, ``RayExecutor.gram_finish``): ``counts`` as an ``Engine``'s."""

    counts: OpCounts


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
    copies: tuple[Path, ...] = ()  # the key holder's shuffled copies, X and y of each in turn (minibatches)


class Executor(Protocol):
    parallelism: int  # independent calls that run at once (1 in this process: TenSEAL holds the GIL)

    def shards(self, table: StoredTable, engine: Engine) -> AbstractContextManager[ShardSource]: ...

    def gram_partial(self, table: StoredTable, engine: Engine) -> GramPartial: ...

    def map_blocks(self, table: StoredTable, function: BlockFunction, engine: Engine, *, with_targets: bool = False,
                   operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> EncryptedMatrix: ...

    def column_sums(self, table: StoredTable, engine: Engine, squares: bool = False, *,
                    function: BlockFunction | None = None, with_targets: bool = False,
                    operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> EncryptedMatrix: ...

    def map_batches(self, context: Path, batches: Iterable[MatrixSource], function: BlockFunction, engine: Engine, *,
                    operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> Iterator[EncryptedMatrix]: ...

    def warm(self, context: Path) -> None: ...

    def inspect_context(self, context: Path, final: Path | None = None) -> CKKSParameters: ...

    def check_files(self, context: Path, paths: Sequence[Path], check: FileCheck,
                    engine: Callable[[], Engine]) -> list[Any]: ...

    def run_files(self, context: Path, paths: Sequence[Path], function: FilesFunction, engine: Callable[[], Engine],
                  *, operands: Mapping[str, MatrixSource] = NO_OPERANDS, counts: OpCounts | None = None) -> Any: ...

    def finish_sums(self, table: StoredTable, finish: SumsFunction, engine: Callable[[], Engine], *,
                    sums: Sequence[BlockFunction | None] = (None,), files: Sequence[Path] = (),
                    counts: OpCounts | None = None) -> Any: ...

    def close(self) -> None: ...


def open_executor(kind: str, address: str = "", num_cpus: int | None = None, *, blocks: str = "object-store",
                  object_store_mb: float = 256) -> Executor:
    """The executor the server's settings name: ``local``, or ``ray`` at ``address`` (empty: a local Ray on
    ``num_cpus`` cores) with blocks sent through the object store (within ``object_store_mb``) or by path
    (``blocks``, see ``ray_blocks``). Ray is imported only here, so the local executor needs no ``ray`` extra."""
    if kind == "local":
        from ciphergrad.server.execution.local import LocalExecutor

        return LocalExecutor()
    if kind != "ray":
        raise ExecutionError(f"executor {kind!r} is not local or ray")
    try:
        from ciphergrad.server.execution.ray_shards import RayExecutor
    except ImportError as exc:
        raise ExecutionError(
            f"--executor ray needs the ray extra (pip install 'ciphergrad[ray]'): {exc}"
        ) from exc
    return RayExecutor(address or None, num_cpus=num_cpus, blocks=blocks, object_store_mb=object_store_mb)


def square(X: EncryptedMatrix) -> EncryptedMatrix:
    """``X * X`` (``column_sums(..., squares=True)``), module-level so that it ships to workers."""
    return X * X


def rows_function(function: BlockFunction | None, squares: bool) -> BlockFunction | None:
    """The row-local function ``column_sums`` sums: ``function``, or ``square`` for ``squares``."""
    if function is not None and squares:
        raise ValueError("column_sums takes squares=True or a function, not both: square inside the function")
    return square if squares else function


def one_pass_state(partial: GramPartial, *, trainer_type: Any, config: Any) -> dict[str, Any]:
    """The statistics ``trainer_type.from_partial`` derives from ``partial`` (``fixed_state``): a function that
    ships to a worker; ``trainer_type.resume(engine, None, None, config, refresh, state)`` starts from them."""
    return trainer_type.from_partial(partial.engine, partial, config, None).fixed_state()
