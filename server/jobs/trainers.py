"""Where a training job's trainer comes from: in the server process (the local executor: from its checkpoints,
after the one-pass statistics, or new) or hosted on the executor's pool (Ray: every job, on a worker or the
pool's driver, ``server.execution.ray_jobs``; this process then loads no context for it).

The runner (``server.jobs.runner``) decides nothing about placement: it asks ``hosted``, gets the trainer from
``remote`` or ``local``, and runs its epochs. A one-pass trainer's statistics are written once
(``fixed_state``) beside the checkpoint, so a resumed job skips the pass; ``started`` tells the runner the job
is RUNNING before a pass begins.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from ciphergrad.core.gram import accumulate
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.core.training import GradientTrainer
from ciphergrad.server.execution import Executor, StoredTable, Tally, one_pass_state
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.execution.local import LocalExecutor
from ciphergrad.server.execution.ray_trainers import flat_state
from ciphergrad.server.jobs.links import Link, StreamRefresh
from ciphergrad.server.store.records import DatasetRecord, JobRecord
from ciphergrad.server.store.store import Store, matrix_file
from ciphergrad.wire import codec


def row_blocks(store: Store, dataset: DatasetRecord, engine: Any, link: Link) -> Iterator[tuple[Any, Any]]:
    """The dataset's (X, y) row blocks read from disk one at a time: memory for one block, whatever the rows."""
    folder = store.dataset_dir(dataset.session_id, dataset.id)
    with open(folder / matrix_file(0), "rb") as features, open(folder / matrix_file(1), "rb") as targets:
        X = EncryptedMatrix.read_row_blocks(engine, features)
        y = EncryptedMatrix.read_row_blocks(engine, targets)
        for block in zip(X, y, strict=True):
            link.check()
            yield block


class JobTrainers:
    """The trainers of the jobs of one server: its store (data, checkpoints), engines and executor."""

    def __init__(self, store: Store, engines: EngineCache, executor: Executor) -> None:
        self.store, self.engines, self.executor = store, engines, executor

    def hosted(self) -> bool:
        """Whether jobs' trainers run on the executor's pool (an executor that hosts trainers: Ray), so that
        this process loads no engine for them."""
        return not isinstance(self.executor, LocalExecutor) and hasattr(self.executor, "trainer")

    def sharded(self, trainer_type: type, config: Any, table: StoredTable) -> bool:
        """Whether a hosted per-row job runs over its table's shards (its trainer on the pool's driver): a
        full-batch gradient trainer on a table of several shards. Minibatches and shuffled copies, refinement
        (its pass and steps on the whole table) and a table of one shard run whole on one worker."""
        full_batch = getattr(config, "batch_size", None) is None and not table.copies
        return (issubclass(trainer_type, GradientTrainer) and getattr(trainer_type, "shardable", True)
                and full_batch and not self.executor.whole(table))  # type: ignore[attr-defined]

    def remote(self, job: JobRecord, dataset: DatasetRecord, config: Any, trainer_type: Any,
               refresh: StreamRefresh, started: Callable[[], None]) -> contextlib.AbstractContextManager[Any]:
        """The job's trainer on the executor, from its checkpoints (and a per-row trainer on its table's
        blocks); a one-pass job's pass first (on the workers, its statistics checkpointed here as bytes) when
        none was made yet."""
        fixed = self.store.fixed_checkpoint_path(job.session_id, job.id)
        checkpoint = self.store.checkpoint_path(job.session_id, job.id)
        tally = Tally(self.engines.tally())
        streams = getattr(trainer_type, "streams_rows", False)
        if streams and not fixed.exists():
            started()
            finish = functools.partial(one_pass_state, trainer_type=trainer_type, config=config)
            state = self.executor.gram_finish(self.store.table(dataset), tally, finish)  # type: ignore[attr-defined]
            self.store.write_blob(fixed, codec.checkpoint_to_bytes(flat_state(state)))
        checkpoints = [path.read_bytes() for path in (fixed, checkpoint) if path.exists()]
        table = None if streams else self.store.table(dataset)
        sharded = table is not None and self.sharded(trainer_type, config, table)
        return self.executor.trainer(self.store.context_path(job.session_id), trainer_type,  # type: ignore[attr-defined]
                                     config, checkpoints, refresh, tally.counts, table, sharded=sharded)

    def local(self, job: JobRecord, dataset: DatasetRecord, engine: Any, config: Any, trainer_type: Any,
              refresh: StreamRefresh, link: Link, started: Callable[[], None]) -> Any:
        """The job's trainer in this process: from its checkpoints, after the one-pass statistics, or new."""
        streams = getattr(trainer_type, "streams_rows", False)
        X = y = None
        shuffles: tuple = ()
        if not streams:
            matrices = self.store.read_matrices(dataset, engine)
            X, y = matrices[0], matrices[1]
            shuffles = tuple((matrices[k], matrices[k + 1]) for k in range(2, len(matrices), 2))
        checkpoint = self.store.checkpoint_path(job.session_id, job.id)
        fixed = self.store.fixed_checkpoint_path(job.session_id, job.id)
        state: dict[str, Any] = {}
        for path in (fixed, checkpoint):  # the pass's statistics (written once), then the last epoch's state
            if path.exists():
                state |= codec.checkpoint_from_bytes(engine, path.read_bytes())
        if state:
            return trainer_type.resume(engine, X, y, config, refresh, state, shuffles)
        if not streams:
            return trainer_type(engine, X, y, config, refresh, shuffles)
        started()
        partial = accumulate(engine, row_blocks(self.store, dataset, engine, link))
        trainer = trainer_type.from_partial(engine, partial, config, refresh)
        self.store.write_blob(fixed, codec.checkpoint_to_bytes(trainer.fixed_state()))
        return trainer
