"""A training job on the Ray pool: where its trainer runs, its shards, and the driver's side of its steps.

Where a job's trainer runs (``job_trainer``, ``RayExecutor.trainer``), so that the server process only relays
the key holder's round trips and stores checkpoints; it loads no context and parses no ciphertext for a job:

- a one-pass trainer (``core.gram_training``, its pass ``RayExecutor.gram_finish``'s): on a worker holding
  the session's context;
- a per-row trainer on one worker's whole table (X, y and the key holder's shuffled copies, loaded in row
  blocks): minibatches and shuffles (each batch a row block of one copy), refinement (``core.refine``), and
  full batch on a table of one shard (``RayExecutor.whole``);
- a full-batch trainer on a table of several shards: the shards on pool workers (``RayShards``), the
  trainer on the pool's *driver* (``WorkerPool.driver``), which runs the steps' ``ShardGroup.step``. The
  driver is a ``BlockWorker`` that serves no shard: a driver waits on its shards, and were it a shard too,
  two jobs could wait on each other for ever (A driving on W0 with a shard on W1, B driving on W1 with a
  shard on W0). It runs the jobs it drives on threads of its own, which share its GIL as they shared the
  server process's; its share of a step is the update and the sums' rotations, a few per cent of the step.

``ShardGroup`` is the driver's side of a step: the weights put into the object store once for every shard;
a refresh a step asks for mid-way (the logistic logit) stacked over the shards, refreshed once through
``refresh`` (the key holder's masked round trip: one per refresh whatever the number of shards) and split
back; the shards' partial sums added (``core.shards``). It is picklable (actor handles, keys, the table's
shape), so it runs on the driver or, for code that drives a ``GradientTrainer`` itself
(``RayExecutor.shards``: tests, benchmarks), in the calling process.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.layout import Tile
from ciphergrad.core.refresh import Refresh
from ciphergrad.core.shards import RowStep, StepPartial, split_blocks, stack_blocks
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import ExecutionError, StoredTable
from ciphergrad.server.execution.ray_cluster import WorkerLost, wait
from ciphergrad.server.execution.ray_trainers import RemoteTrainer

if TYPE_CHECKING:
    from ciphergrad.server.execution.ray_shards import RayExecutor


@dataclass
class ShardGroup:
    """The ``core.shards.ShardSet`` of one job's shards, seen from wherever its driver runs."""

    actors: list[Any]
    keys: list[str]
    rows: list[int]
    shape: tuple[int, int]
    tile: Tile
    timeout: float
    address: str

    def __call__(self, program: RowStep) -> ShardGroup:
        self._get([a.prepare.remote(key, program) for a, key in self._shards()], "preparing the shards")
        return self

    def step(self, weights: EncryptedMatrix, refresh: Refresh) -> StepPartial:
        engine = weights.engine
        weights_ref = ray.put(weights.to_bytes())
        replies = self._get([a.begin.remote(key, weights_ref) for a, key in self._shards()], "a training step")
        while replies[0][0] == "refresh":
            if any(kind != "refresh" for kind, _ in replies):
                raise ExecutionError("shards disagree about a refresh: were they loaded at different levels?")
            stacked = stack_blocks([EncryptedMatrix.from_bytes(engine, data) for _, data in replies])
            fresh = split_blocks(refresh(stacked), self.rows)
            replies = self._get([a.resume.remote(key, part.to_bytes())
                                 for (a, key), part in zip(self._shards(), fresh, strict=True)],
                                "a training step after a refresh")
        partials = [StepPartial.from_state(engine, state) for _, state in replies]
        return functools.reduce(lambda a, b: a + b, partials)

    def _get(self, refs: list[Any], what: str) -> list[Any]:
        return wait(refs, what, self.timeout, self.address)

    def _shards(self) -> list[tuple[Any, str]]:
        return list(zip(self.actors, self.keys, strict=True))


class RayShards:
    """A job's shards, opened on pool workers from the server: each range's row blocks read from the blob
    store once and sent to its worker (``ray_blocks``), kept there until ``close``; ``group`` drives them."""

    def __init__(self, executor: RayExecutor, table: StoredTable) -> None:
        self.executor = executor
        self.ranges = ranges = executor.ranges(table)
        keys = [f"{uuid.uuid4().hex}-{index}" for index in range(len(ranges))]
        self.indices = executor.pool.acquire(len(ranges), executor.holders(table.context))
        actors = [executor.pool.workers[index] for index in self.indices]
        self._opened = list(zip(actors, keys, strict=True))
        executor.hold(table.context, actors)
        try:
            context = executor.contexts.handle(table.context)
            executor.feeder.feed(
                [table.features, targets(table)], ranges,
                lambda index, sources: actors[index].load_blocks.remote(keys[index], context, *sources),
                executor.get, "loading the shards", one_row_last(table))
            placement = executor.get([a.open_shard.remote(key) for a, key in self._opened], "opening the shards")
        except BaseException:
            self.close()
            raise
        self.placement = placement
        self.group = ShardGroup(actors, keys, [place["rows"] for place in placement],
                                (table.rows, placement[0]["columns"]), Tile(*placement[0]["tile"]),
                                executor.timeout, executor.address)
        self.shape, self.tile, self.actors = self.group.shape, self.group.tile, actors

    def __call__(self, program: RowStep) -> RayShards:
        self._replacing_dead(self.group, program)
        return self

    def step(self, weights: EncryptedMatrix, refresh: Refresh) -> StepPartial:
        return self._replacing_dead(self.group.step, weights, refresh)

    def _replacing_dead(self, call: Any, *args: Any) -> Any:
        """``call(*args)``; a worker that died meanwhile is replaced before the pool's next job."""
        try:
            return call(*args)
        except WorkerLost:
            self.executor.pool.suspect()
            raise

    def usage(self) -> list[dict[str, float]]:
        return self.executor.get([a.usage.remote() for a in self.actors], "reading worker usage")

    def close(self) -> None:
        # Fire and forget: a worker that died with the job has nothing to release.
        for actor, key in self._opened:
            actor.release.remote(key)
        self.executor.pool.release(self.indices)


@contextmanager
def job_shards(executor: RayExecutor, table: StoredTable, engine: Engine | None = None) -> Iterator[RayShards]:
    """``Executor.shards``: the table's shards for a trainer this process drives (``engine`` unused)."""
    shards = RayShards(executor, table)
    try:
        yield shards
    finally:
        shards.close()


@contextmanager
def job_trainer(executor: RayExecutor, context: Path, trainer_type: Any, config: Any, checkpoints: list[bytes],
                relay: Any, counts: OpCounts, table: StoredTable | None = None, *, sharded: bool = False
                ) -> Iterator[RemoteTrainer]:
    """A job's trainer on the pool (see the module's docstring for where), from the job's ``checkpoints`` (a
    one-pass job's statistics, then the last epoch's) and, for a per-row trainer, on ``table``: whole on one
    worker, or over its shards (``sharded``: a full-batch trainer, ``table`` larger than one shard) with the
    trainer on the driver. ``relay`` carries its questions to the key holder, ``counts`` gets its epochs'
    operations. A whole table's worker counts one busy shard meanwhile, as a shard would; a one-pass trainer's
    (light: an update per epoch) goes to a holder of the context."""
    pool, key, handle = executor.pool, uuid.uuid4().hex, executor.contexts.handle(context)
    with ExitStack() as stack:
        group = None
        if sharded:
            assert table is not None, "a sharded trainer needs its table"
            group = stack.enter_context(executor.shards(table, None)).group
            worker = pool.driver()
        elif table is None:
            worker = executor.holder(context)
        else:
            indices = pool.acquire(1, executor.holders(context))
            stack.callback(pool.release, indices)
            worker = pool.workers[indices[0]]
            ranges = executor.ranges(table)  # one range: the pieces reach the one worker in row order
            executor.feeder.feed([table.features, targets(table), *table.copies], [(ranges[0][0], ranges[-1][1])],
                                 lambda _, sources: worker.load_blocks.remote(key, handle, *sources), executor.get,
                                 "loading a job's blocks", one_row_last(table))
        executor.hold(context, [worker])
        stack.callback(lambda: worker.release.remote(key))  # fire and forget, as a job's shards

        def call(method: str, *args: Any) -> Any:
            return executor.get([getattr(worker, method).remote(key, *args)], f"a training job's {method}")[0]

        yield RemoteTrainer(call, relay, counts, handle, trainer_type, config, checkpoints, group)


def one_row_last(table: StoredTable) -> bool:
    return table.rows > 1 and table.rows % table.tile_rows == 1


def targets(table: StoredTable) -> Path:
    if table.targets is None:
        raise ExecutionError("this table has no second matrix: training, the Gram pass and with_targets need y")
    return table.targets
