"""The Ray executor: a job's table split by row blocks over a fixed pool of long-lived Ray workers.

- Workers (``ray_workers.WorkerPool``): one ``BlockWorker`` actor per CPU of the cluster (or ``shards``),
  spread over its nodes, started with the executor and alive as long as it. Each keeps the public contexts it
  loaded (LRU), so a session's context is loaded once per worker, not once per job, and no job pays for
  starting a worker process.
- Training (``trainer``, ``shards``: ``ray_jobs``): the job's row blocks (``core.shards.block_ranges``) go to
  the least busy workers, one range each, read from the blob store once per job and sent through Ray's object
  store (by default; within a memory budget, in pieces past it; or, with ``blocks="path"``, read by the
  workers from a data directory every node mounts: ``ray_blocks``), with their pre-scaled copies prepared
  once per job; per step each returns its pending sums. A table is split only into shards of
  ``min_shard_rows`` rows or more: a small table's fan-out costs more in round trips and driver work than it
  saves, and jobs running at once already keep the workers busy. The job's trainer runs on the pool too
  (``ray_jobs.job_trainer``: on a worker, or on the pool's driver for a table of several shards), so the
  server process computes nothing for it.
- Fan-out (``map_blocks``, ``column_sums``, ``gram_partial``): one call per range of row blocks on the pool's
  workers (one per piece past the budget; the Gram pass adds its pieces up on the worker); whole-matrix
  operands go into the object store once per call.

Every ``ray.get`` has a timeout. A dead worker or a cluster that goes away raises ``ExecutionError`` naming
the address and what was running (the pool then replaces dead workers before the next job); an address where
nothing answers fails at construction, within seconds.
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from ciphergrad.core.context_bytes import carries_secret_key
from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.errors import SecretKeyError
from ciphergrad.core.gram import GramPartial
from ciphergrad.core.params import CKKSParameters
from ciphergrad.core.shards import (
    add_pending,
    block_ranges,
    finish_pending,
    pending_row_sum,
    stack_blocks,
)
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import (
    NO_OPERANDS,
    BlockFunction,
    FileCheck,
    FilesFunction,
    MatrixSource,
    StoredTable,
    SumsFunction,
    Tally,
    rows_function,
)
from ciphergrad.server.execution.ray_blocks import BUDGET_MB, BlockFeeder, ContextRefs
from ciphergrad.server.execution.ray_cluster import WorkerLost, check_reachable, start_ray, wait
from ciphergrad.server.execution.ray_jobs import job_shards, job_trainer, one_row_last, targets
from ciphergrad.server.execution.ray_workers import WorkerPool

HOLDERS_KEPT = 1024  # contexts whose holders the executor remembers (oldest forgotten: a load on demand)
MIN_SHARD_ROWS = 1024  # a table is split only into shards of at least this many rows (see ray_jobs)


class RayExecutor:
    """Connects to Ray (``address`` None: a local Ray on this machine's cores, capped by ``num_cpus``;
    ``"auto"`` or ``host:port``: an existing cluster) and starts the worker pool. ``shards``: the pool's
    workers, so the most shards per table (default: the cluster's CPUs); ``min_shard_rows``: a table is split
    only into shards of at least this many rows; ``contexts``: the public contexts each worker keeps;
    ``timeout`` bounds every wait on a worker, in seconds."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, shards: int | None = None,
                 min_shard_rows: int = MIN_SHARD_ROWS, contexts: int | None = None, timeout: float = 600.0,
                 connect_timeout: float = 10.0, blocks: str = "object-store",
                 object_store_mb: float = BUDGET_MB) -> None:
        self.set_blocks(blocks, object_store_mb)  # first: a bad mode or budget fails before any Ray starts
        self.address, self.timeout, self.min_shard_rows = address or "local", timeout, max(1, min_shard_rows)
        if address and address != "auto":
            check_reachable(address, connect_timeout)
        start_ray(address, num_cpus)
        self.max_shards = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.pool = WorkerPool(self.max_shards, **({"contexts": contexts} if contexts else {}))
        self.parallelism = len(self.pool)
        # Which workers loaded which context (by stored path): a session's calls go to them first, so that a
        # small session's context is loaded on one worker, not all. May be stale (a worker's LRU evicted it,
        # a worker was replaced): then the worker loads it again on demand, nothing fails.
        self._holders: dict[str, set[int]] = {}
        self._holders_lock = threading.Lock()

    def holders(self, context: Path) -> set[int]:
        with self._holders_lock:
            return set(self._holders.get(str(context), ()))

    def holder(self, context: Path) -> Any:
        """One worker for a call on ``context``: the least busy, a holder of the context among equals (a worker
        without it loads it once, and holds it from then on)."""
        (worker,) = self.pool.least_busy(1, self.holders(context))
        self.hold(context, [worker])
        return worker

    def hold(self, context: Path, workers: Iterable[Any]) -> None:
        indices = {self.pool.workers.index(worker) for worker in workers if worker in self.pool.workers}
        with self._holders_lock:
            self._holders.setdefault(str(context), set()).update(indices)
            while len(self._holders) > HOLDERS_KEPT:
                self._holders.pop(next(iter(self._holders)))

    def set_blocks(self, blocks: str, object_store_mb: float | None = None) -> None:
        """Switch how blocks reach the workers from the next call on (a running job's shards keep theirs)."""
        budget = self.feeder.budget if object_store_mb is None else int(object_store_mb * 2**20)
        self.feeder, self.blocks, self.contexts = BlockFeeder(blocks, budget), blocks, ContextRefs(blocks)

    def get(self, refs: list[Any], what: str) -> list[Any]:
        """``ray_cluster.wait``: a function's own exception as raised, Ray's failures an ``ExecutionError``; a
        dead worker (here or under a job's driver) has the pool replace it before the next job."""
        try:
            return wait(refs, what, self.timeout, self.address)
        except WorkerLost:
            self.pool.suspect()
            raise

    def ranges(self, table: StoredTable) -> list[tuple[int, int]]:
        """Ranges of row blocks, one per shard (or fan-out call): at most the pool's size, and each of at
        least ``min_shard_rows`` rows."""
        count = max(1, min(self.max_shards, table.rows // self.min_shard_rows))
        return block_ranges(table.rows, table.tile_rows, count)

    shards = job_shards
    trainer = job_trainer

    def warm(self, context: Path) -> None:
        """Load a session's public context on one worker now (the least busy) unless one holds it already,
        without waiting: the session's calls go to that worker first, and a job of several shards loads it
        on the others as it opens them (one load per worker that serves the session, not per worker)."""
        if self.holders(context):
            return
        (worker,) = self.pool.least_busy(1)
        worker.warm.remote(self.contexts.handle(context))
        self.hold(context, [worker])

    def inspect_context(self, context: Path, final: Path | None = None) -> CKKSParameters:
        """Load a received context on one worker (which keeps it, cached under ``final``'s path: the session's
        first job there finds it) and return its parameters; a bad context raises as locally. A context that
        carries a secret key is refused here, before it could reach the object store or a worker."""
        data = Path(context).read_bytes()  # read once here: the check and the object store share it
        if carries_secret_key(data):
            raise SecretKeyError("the context carries a secret key: the computing party must never hold it; "
                                 "export it with KeyHolder.public_context()")
        (worker,) = self.pool.least_busy(1, self.holders(final or context))
        try:
            params = self.get([worker.inspect.remote(self.contexts.handle(context, final, data))],
                              "checking a public context")
        except BaseException:
            self.contexts.forget(final or context)
            raise
        self.hold(final or context, [worker])
        return params[0]

    def check_files(self, context: Path, paths: Sequence[Path], check: FileCheck,
                    engine: Callable[[], Engine]) -> list[Any]:
        """``check`` of each file on one worker holding the session's context (calls to one worker run in
        order): this process loads no context and parses no ciphertext (``engine`` is not called)."""
        worker, handle = self.holder(context), self.contexts.handle(context)
        return self.feeder.feed_files(
            paths, lambda index, source: worker.check_file.remote(handle, source, check, index), self.get,
            "checking an upload")

    def run_files(self, context: Path, paths: Sequence[Path], function: FilesFunction, engine: Callable[[], Engine],
                  *, operands: Mapping[str, MatrixSource] = NO_OPERANDS, counts: OpCounts | None = None) -> Any:
        """``function`` on one worker, a holder of the session's context first (``engine`` is not called: this
        process loads no context and parses no ciphertext); its operations added to ``counts``."""
        worker, sources = self.holder(context), [self._source(path) for path in paths]
        ref = worker.run_files.remote(self.contexts.handle(context), function, self._sources(operands), *sources)
        result, done = self.get([ref], "a request's batch")[0]
        if counts is not None:
            _count(Tally(counts), [done])
        return result

    def finish_sums(self, table: StoredTable, finish: SumsFunction, engine: Callable[[], Engine], *,
                    sums: Sequence[BlockFunction | None] = (None,), files: Sequence[Path] = (),
                    counts: OpCounts | None = None) -> Any:
        """Each of ``sums``' partial column sums over the table's ranges (``column_sums``' fan-out), relayed as
        bytes to one worker, a holder of the context, which adds them up and runs ``finish`` on them and on
        ``files`` (``BlockWorker.finish_sums``): ``engine`` is not called, this process parses nothing."""
        tally = Tally(OpCounts() if counts is None else counts)
        parts = [[ray.put(data) for data in self._replies(table, functools.partial(_column_sum, function=function),
                                                          tally, False, NO_OPERANDS, "column sums")]
                 for function in sums]
        sources = [self._source(path) for path in files]
        ref = self.holder(table.context).finish_sums.remote(self.contexts.handle(table.context), finish, parts,
                                                            table.rows, *sources)
        result, done = self.get([ref], "finishing column sums")[0]
        _count(tally, [done])
        return result

    def gram_partial(self, table: StoredTable, engine: Engine) -> GramPartial:
        """Each range's pieces added up on its worker (``gram_add``), one partial per worker back."""
        replies = self.get(self._gram_states(table), "the Gram pass")
        _count(engine, [counts for _, counts in replies])
        partials = [GramPartial.from_state(engine, state) for state, _ in replies]
        return functools.reduce(lambda a, b: a + b, partials)

    def whole(self, table: StoredTable) -> bool:
        """Whether ``table`` is one shard (``ranges``): a per-row job on it can run its trainer on that shard's
        worker (``trainer(..., table=table)``) instead of driving the shard from this process."""
        return len(self.ranges(table)) == 1

    def gram_finish(self, table: StoredTable, engine: Engine | Tally,
                    finish: Callable[[GramPartial], dict[str, Any]]) -> dict[str, Any]:
        """``finish`` of the table's Gram partial (its ranges' summed) on a worker holding the context, e.g. a
        one-pass trainer's statistics (``one_pass_state``: ``core.gram.finalize``'s rotations, ~1.5 s on Ames):
        the ranges' partials stay in the object store and go to that worker by reference; only ``finish``'s
        result (matrices as bytes) comes back, its operations added to ``engine``'s counts."""
        states = self._gram_states(table)
        ref = self.holder(table.context).gram_finish.remote(self.contexts.handle(table.context), states, finish)
        state, counts = self.get([ref], "the Gram statistics")[0]
        _count(engine, [counts])
        return state

    def _gram_states(self, table: StoredTable) -> list[Any]:
        """Refs of each range's ``(GramPartial.to_state(), counts)``, still on the workers' nodes."""
        ranges, context = self.ranges(table), self.contexts.handle(table.context)
        workers = self.pool.least_busy(len(ranges), self.holders(table.context))
        self.hold(table.context, workers)
        key = uuid.uuid4().hex
        try:
            self.feeder.feed([table.features, targets(table)], ranges,
                             lambda index, sources: workers[index].gram_add.remote(f"{key}-{index}", context, *sources),
                             self.get, "the Gram pass", one_row_last(table))
        except BaseException:
            for index, worker in enumerate(workers):
                worker.release.remote(f"{key}-{index}")
            raise
        return [w.gram_take.remote(f"{key}-{index}") for index, w in enumerate(workers)]

    def map_blocks(self, table: StoredTable, function: BlockFunction, engine: Engine, *, with_targets: bool = False,
                   operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> EncryptedMatrix:
        """``function`` of every range of row blocks, stacked back in row order."""
        return stack_blocks(self._map(table, function, engine, with_targets, operands, "a fan-out over row blocks"))

    def column_sums(self, table: StoredTable, engine: Engine, squares: bool = False, *,
                    function: BlockFunction | None = None, with_targets: bool = False,
                    operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> EncryptedMatrix:
        summed = functools.partial(_column_sum, function=rows_function(function, squares))
        parts = self._map(table, summed, engine, with_targets, operands, "column sums")
        return finish_pending(functools.reduce(add_pending, parts), table.rows)

    def map_batches(self, context: Path, batches: Iterable[MatrixSource], function: BlockFunction, engine: Engine, *,
                    operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> Iterator[EncryptedMatrix]:
        """``function`` of each batch whole, on the pool's workers in turn with up to one batch per worker in
        flight (the next batches are read from ``batches`` meanwhile), yielded in input order."""
        handle, whole = self.contexts.handle(context), self._sources(operands)
        workers = itertools.cycle(self.pool.least_busy(len(self.pool), self.holders(context)))
        in_flight: collections.deque[Any] = collections.deque()
        for batch in batches:
            worker = next(workers)
            self.hold(context, [worker])
            in_flight.append(worker.map_range.remote(handle, [self._source(batch)], function, whole))
            if len(in_flight) >= len(self.pool):
                yield self._result(in_flight.popleft(), engine)
        while in_flight:
            yield self._result(in_flight.popleft(), engine)

    def _result(self, ref: Any, engine: Engine) -> EncryptedMatrix:
        data, counts = self.get([ref], "a batch")[0]
        _count(engine, [counts])
        return EncryptedMatrix.from_bytes(engine, data)

    def _map(self, table: StoredTable, function: BlockFunction, engine: Engine, with_targets: bool,
             operands: Mapping[str, MatrixSource], what: str) -> list[EncryptedMatrix]:
        """``function`` of every piece of every range (a range: one worker's; its pieces, several when the
        table passes the object-store budget, run there in order), results in row order."""
        replies = self._replies(table, function, engine, with_targets, operands, what)
        return [EncryptedMatrix.from_bytes(engine, data) for data in replies]

    def _replies(self, table: StoredTable, function: BlockFunction, engine: Engine | Tally, with_targets: bool,
                 operands: Mapping[str, MatrixSource], what: str) -> list[bytes]:
        """``_map``'s results serialized, unparsed; their operations added to ``engine``'s counts."""
        paths = [table.features] + ([targets(table)] if with_targets else [])
        ranges, context, whole = self.ranges(table), self.contexts.handle(table.context), self._sources(operands)
        workers = self.pool.least_busy(len(ranges), self.holders(table.context))
        self.hold(table.context, workers)
        replies = self.feeder.feed(
            paths, ranges, lambda index, sources: workers[index].map_range.remote(context, sources, function, whole),
            self.get, what, one_row_last(table))
        flat = [reply for per_range in replies for reply in per_range]
        _count(engine, [counts for _, counts in flat])
        return [data for data, _ in flat]

    def _source(self, source: MatrixSource) -> Any:
        """What a worker reads: bytes (a matrix serialized, or a file's contents in object-store mode) through
        the object store (put once, read by reference), or in path mode a file's path."""
        if isinstance(source, EncryptedMatrix):
            source = source.to_bytes()
        if isinstance(source, bytes):
            return ray.put(source)
        return str(source) if self.blocks == "path" else ray.put(Path(source).read_bytes())

    def _sources(self, operands: Mapping[str, MatrixSource]) -> dict[str, Any]:
        return {name: self._source(source) for name, source in operands.items()}

    def close(self) -> None:
        self.pool.shutdown()
        ray.shutdown()


def _column_sum(*inputs: EncryptedMatrix, function: BlockFunction | None, **operands: EncryptedMatrix
                ) -> EncryptedMatrix:
    rows = inputs[0] if function is None else function(*inputs, **operands)
    return pending_row_sum(rows)


def _count(engine: Engine | Tally, deltas: list[dict[str, int]]) -> None:
    """Add workers' operation counts (``OpCounts.absorb``: a servicer's tally is shared by its threads)."""
    for delta in deltas:
        engine.counts.absorb(OpCounts(**delta))
