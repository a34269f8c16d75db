"""Training jobs: a worker thread per running job, linked to the Train stream attached to it.

The trainer (core) masks a ciphertext before calling its refresh callable; ours sends the masked
ciphertext down the attached stream and blocks until the client's fresh encryption comes back. After
every epoch the trainer's state is checkpointed, so a job whose client goes away (or whose server is
stopped) pauses there and resumes when a client of the same session attaches again.

A one-pass trainer (``streams_rows``: the "gram" and "normal" solvers) never loads the dataset: its row
blocks stream from disk into ``core.gram.accumulate``, and the statistics (``fixed_state``) are written once
beside the checkpoint, so a resumed job skips the pass and per-epoch checkpoints hold only the weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from core.algorithms import ALGORITHMS
from core.gram import DATA_LEVELS, GramStatistics, accumulate
from core.tensor import EncryptedMatrix
from core.training import GradientTrainer
from server import validation
from server.engines import EngineCache
from server.errors import ServiceError, invalid, precondition, status_for
from server.execution import ExecutionError, Executor, StoredTable, pooled_gram_partial, pooled_shards
from server.execution.local import LocalExecutor
from server.pool_training import PoolView, pool_view
from server.records import DatasetRecord, JobRecord, ModelRecord, SessionRecord
from server.storage import Store, matrix_file, new_id
from wire import codec
from wire.proto_gen.ciphergrad.v1 import training_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import types_pb2

log = logging.getLogger("ciphergrad.server")

S = pb.JobState
# A linear prediction, (X * w).sum(axis=1), spends one level on the product and one on the row-sum mask.
PREDICT_LEVELS = 2


class Detached(Exception):
    """The client went away: pause at the last checkpoint."""


class Cancelled(Exception):
    """CancelJob (or the session's deletion) stopped the job."""


@dataclass
class End:
    """Last item on a link's event queue; ``code`` None means nobody is listening any more."""

    code: grpc.StatusCode | None = grpc.StatusCode.OK
    message: str = ""


@dataclass
class Link:
    """A running job's connection to the Train stream attached to it."""

    events: queue.Queue = field(default_factory=queue.Queue)
    replies: queue.Queue = field(default_factory=queue.Queue)
    detached: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def detach(self) -> None:
        self.detached.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled
        if self.detached.is_set():
            raise Detached


class StreamRefresh:
    """The trainer's line to the key holder (``core.gram_training.KeyHolderLink``): round trips to the
    attached client, masked refreshes and the normal solver's system."""

    def __init__(self, link: Link, engine: Any, timeout: float) -> None:
        self.link, self.engine, self.timeout = link, engine, timeout
        self._next_id = 0

    def __call__(self, masked: EncryptedMatrix) -> EncryptedMatrix:
        self._next_id += 1
        request = pb.RefreshRequest(refresh_id=self._next_id, masked=codec.matrix_to_proto(masked))
        reply = self._round_trip(pb.TrainResponse(refresh_request=request), pb.RefreshReply)
        if reply.refresh_id != self._next_id:
            raise invalid(f"refresh_reply answers request {reply.refresh_id}; expected {self._next_id}")
        fresh = validation.inbound(codec.matrix_from_proto(self.engine, reply.refreshed), "the refreshed matrix")
        if fresh.shape != masked.shape or fresh.tile != masked.tile:
            raise invalid(f"refreshed matrix has shape {fresh.shape}; expected {masked.shape} in the same tile")
        return fresh

    def solve_normal(self, system: GramStatistics) -> EncryptedMatrix:
        self._next_id += 1
        request = pb.NormalSystemRequest(
            request_id=self._next_id,
            gram_diagonals=codec.matrix_to_proto(system.diagonals),
            gram_column=codec.matrix_to_proto(system.column),
            rows=system.rows,
            features=system.features,
            factor=system.factor,
        )
        reply = self._round_trip(pb.TrainResponse(normal_system=request), pb.NormalSolution)
        if reply.request_id != self._next_id:
            raise invalid(f"normal_solution answers request {reply.request_id}; expected {self._next_id}")
        if not codec.has_matrix(reply.weights):
            raise invalid("normal_solution.weights is empty: send a fresh encryption of the solved weights")
        return validation.inbound(codec.matrix_from_proto(self.engine, reply.weights), "the solved weights")

    def _round_trip(self, event: pb.TrainResponse, expected: type) -> Any:
        self.link.check()
        self.link.events.put(event)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                reply = self.link.replies.get(timeout=0.2)
                break
            except queue.Empty:
                self.link.check()
                if time.monotonic() > deadline:
                    log.warning("no reply from the key holder within %.0f s; pausing the job", self.timeout)
                    raise Detached from None
        if isinstance(reply, ServiceError):
            raise reply
        if not isinstance(reply, expected):
            raise invalid(f"the server asked for a {expected.__name__}; the client sent a {type(reply).__name__}")
        return reply


def streaming_problem(dataset: DatasetRecord, solver: str) -> str | None:
    """Why the stored dataset cannot feed a one-pass solver ("gram", "normal"), or None if it can."""
    if dataset.shuffle_count:
        return (
            f"solver={solver!r} makes one pass over the rows, but dataset {dataset.id} carries "
            f"{dataset.shuffle_count} shuffled copies (for minibatches): upload it without shuffle_orders, "
            "or train with solver='gd'"
        )
    if dataset.level < DATA_LEVELS:
        return (
            f"solver={solver!r} needs data with {DATA_LEVELS} levels; dataset {dataset.id} has "
            f"{dataset.level}: encrypt at the top level of plan({DATA_LEVELS}) or deeper, or use solver='gd'"
        )
    _, tile_cols = dataset.layout.tile
    if tile_cols > 1 and dataset.columns >= tile_cols:
        return (
            f"solver={solver!r} on row-packed data needs the {dataset.columns} features plus y inside one tile "
            f"row of width {tile_cols}: upload with packing='columns' (also the faster pass), or use solver='gd'"
        )
    return None


def _row_blocks(store: Store, dataset: DatasetRecord, engine: Any, link: Link) -> Iterator[tuple[Any, Any]]:
    """The dataset's (X, y) row blocks read from disk one at a time: memory for one block, whatever the rows."""
    folder = store.dataset_dir(dataset.session_id, dataset.id)
    with open(folder / matrix_file(0), "rb") as features, open(folder / matrix_file(1), "rb") as targets:
        X = EncryptedMatrix.read_row_blocks(engine, features)
        y = EncryptedMatrix.read_row_blocks(engine, targets)
        for block in zip(X, y, strict=True):
            link.check()
            yield block


def _algorithm_name(value: int) -> str:
    try:
        return types_pb2.Algorithm.Name(value)
    except ValueError:
        return str(value)


class JobRunner:
    def __init__(self, store: Store, engines: EngineCache, workers: int, refresh_timeout: float = 600.0,
                 executor: Executor | None = None) -> None:
        self.store, self.engines, self.refresh_timeout = store, engines, refresh_timeout
        self.executor = executor or LocalExecutor()
        self._slots = threading.BoundedSemaphore(max(1, workers))
        self._links: dict[str, Link] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def recover(self) -> None:
        """After a restart (or crash) nothing is attached: running and queued jobs are paused."""
        for job in self.store.jobs_in_states((S.JOB_STATE_RUNNING, S.JOB_STATE_QUEUED)):
            self.store.update_job(job.id, state=S.JOB_STATE_PAUSED)

    # -- lifecycle ------------------------------------------------------------------------------
    def create(self, session: SessionRecord, dataset: DatasetRecord, spec: pb.JobSpec) -> JobRecord:
        algorithm = codec.algorithm_from_proto(spec.algorithm)
        if algorithm is None:
            names = " or ".join(entry.wire_name for entry in ALGORITHMS.values())
            raise invalid(f"algorithm {_algorithm_name(spec.algorithm)} cannot be trained; use {names}")
        if dataset.layout.features_only:
            raise invalid(f"dataset {dataset.id} has no targets (uploaded features_only); upload X and y to train")
        config = validation.job_config(spec.hyperparameters, algorithm.config, dataset, build=algorithm.service_config)
        trainer_type = algorithm.trainer_for(config)
        if getattr(trainer_type, "streams_rows", False):
            problem = streaming_problem(dataset, config.solver)
            if problem and "solver" in spec.hyperparameters.fields:
                raise invalid(problem)
            if problem:  # the default solver, not one the user named: data uploaded for gradient descent
                config = dataclasses.replace(config, solver="gd")
                trainer_type = algorithm.trainer_for(config)
        epochs_of = getattr(trainer_type, "epochs_of", None)
        now = time.time()
        job = JobRecord(
            id=new_id(),
            session_id=session.id,
            dataset_id="" if isinstance(dataset, PoolView) else dataset.id,
            pool_id=dataset.id if isinstance(dataset, PoolView) else "",
            algorithm=spec.algorithm,
            config=config.to_dict(),
            state=S.JOB_STATE_QUEUED,
            epochs=epochs_of(config) if epochs_of else config.epochs,
            created=now,
            updated=now,
        )
        self.store.add_job(job)
        return job

    def prepare_attach(self, job: JobRecord, wait: float = 10.0) -> None:
        """Check that ``job`` can be resumed, waiting briefly for a just-detached run to let go."""
        thread = self._threads.get(job.id)
        link = self._links.get(job.id)
        if thread is not None and link is not None and link.detached.is_set():
            thread.join(wait)
        if job.id in self._threads:
            raise precondition(f"job {job.id} is attached to another stream; close it first")
        current = self.store.job(job.id)
        if current is not None and current.finished:
            raise precondition(f"job {job.id} already ended ({pb.JobState.Name(current.state)}); nothing to resume")

    def launch(self, job_id: str, link: Link) -> None:
        thread = threading.Thread(target=self._run, args=(job_id, link), name=f"job-{job_id[:8]}", daemon=True)
        with self._lock:
            if job_id in self._threads:
                raise precondition(f"job {job_id} is attached to another stream")
            self._links[job_id], self._threads[job_id] = link, thread
        thread.start()

    def cancel(self, job_id: str) -> JobRecord:
        with self._lock:
            link, thread = self._links.get(job_id), self._threads.get(job_id)
        if link is not None and thread is not None:
            link.cancelled.set()
            thread.join(30)
        job = self.store.job(job_id)
        assert job is not None
        if not job.finished:
            job = self._set(job_id, S.JOB_STATE_CANCELLED, error="cancelled by CancelJob")
        return job

    def stop(self, job_id: str) -> None:
        """Stop a job's thread without recording anything (its session is being deleted)."""
        with self._lock:
            link, thread = self._links.get(job_id), self._threads.get(job_id)
        if link is not None and thread is not None:
            link.cancelled.set()
            thread.join(30)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Detach every running job so it pauses at its checkpoint (graceful server stop)."""
        with self._lock:
            items = list(self._threads.items())
            for link in self._links.values():
                link.detach()
        deadline = time.monotonic() + timeout
        for _, thread in items:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- the worker ----------------------------------------------------------------------------------
    def _run(self, job_id: str, link: Link) -> None:
        end = End()
        try:
            self._acquire_slot(job_id, link)
            try:
                self._train(job_id, link)
            finally:
                self._slots.release()
        # A job whose session was deleted meanwhile has no row left: these updates then change nothing.
        except Detached:
            self.store.update_job(job_id, state=S.JOB_STATE_PAUSED)
            end = End(None)
        except Cancelled:
            self.store.update_job(job_id, state=S.JOB_STATE_CANCELLED, error="cancelled by CancelJob")
            end = End(grpc.StatusCode.CANCELLED, f"job {job_id} was cancelled")
        except Exception as exc:
            code, message = status_for(exc)
            self.store.update_job(job_id, state=S.JOB_STATE_FAILED, error=message)
            end = End(code, message)
        finally:
            with self._lock:
                self._links.pop(job_id, None)
                self._threads.pop(job_id, None)
            link.events.put(end)

    def _acquire_slot(self, job_id: str, link: Link) -> None:
        if self._slots.acquire(blocking=False):
            return
        self._emit_job(link, self._set(job_id, S.JOB_STATE_QUEUED))
        while not self._slots.acquire(timeout=0.2):
            link.check()

    def _set(self, job_id: str, state: int, **values: Any) -> JobRecord:
        """Record a state change of a running job; if its session was deleted meanwhile, stop it."""
        job = self.store.update_job(job_id, state=state, **values)
        if job is None:
            raise Cancelled
        return job

    def _emit_job(self, link: Link, job: JobRecord) -> None:
        link.events.put(pb.TrainResponse(job=job.to_proto()))

    def _train(self, job_id: str, link: Link) -> None:
        try:
            self._train_job(job_id, link)
        except ExecutionError as exc:  # the cluster (named in the message) failed or went away: job FAILED
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc

    def _distributed(self, trainer_type: type, config: Any, dataset: DatasetRecord) -> bool:
        """Whether the executor runs this job: full-batch gradient trainers and the one-pass Gram statistics.
        Minibatches and shuffled copies stay in this process (and everything with the local executor)."""
        if isinstance(dataset, PoolView):  # one table per contribution: always through the executor
            return True
        if isinstance(self.executor, LocalExecutor):
            return False
        if getattr(trainer_type, "streams_rows", False):
            return True
        full_batch = getattr(config, "batch_size", None) is None and not dataset.shuffle_count
        return issubclass(trainer_type, GradientTrainer) and full_batch

    def _tables(self, dataset: DatasetRecord) -> list[StoredTable]:
        """The stored tables a job reads: the dataset's, or one per contribution of a pool."""
        if isinstance(dataset, PoolView):
            return list(dataset.tables)
        folder = self.store.dataset_dir(dataset.session_id, dataset.id)
        return [StoredTable(self.store.context_path(dataset.session_id), folder / matrix_file(0),
                            folder / matrix_file(1), dataset.rows, dataset.layout.tile[0])]

    def _train_job(self, job_id: str, link: Link) -> None:
        job = self.store.job(job_id)
        assert job is not None
        dataset = pool_view(self.store, job.pool_id, job.created) if job.pool_id else self.store.dataset(job.dataset_id)
        if dataset is None:
            what = f"pool {job.pool_id}" if job.pool_id else f"dataset {job.dataset_id}"
            raise precondition(f"{what} of job {job_id} was deleted; start a new job")
        engine = self.engines.load(job.session_id)  # its own: per-epoch operation counts stay exact
        algorithm = codec.algorithm_from_proto(job.algorithm)
        assert algorithm is not None  # create() admitted only trainable algorithms
        config = algorithm.config.from_dict(job.config)
        refresh = StreamRefresh(link, engine, self.refresh_timeout)
        trainer_type = algorithm.trainer_for(config)
        streams = getattr(trainer_type, "streams_rows", False)
        distributed = self._distributed(trainer_type, config, dataset)
        with contextlib.ExitStack() as stack:
            # The executor's shards (Ray actors holding their row blocks) live for the job, closed on any exit.
            shards = stack.enter_context(pooled_shards(self.executor, self._tables(dataset), engine)) \
                if distributed and not streams else None
            self._run_trainer(job, dataset, engine, config, trainer_type, refresh, link, shards)

    def _run_trainer(self, job: JobRecord, dataset: DatasetRecord, engine: Any, config: Any, trainer_type: Any,
                     refresh: StreamRefresh, link: Link, shards: Any) -> None:
        job_id = job.id
        streams = getattr(trainer_type, "streams_rows", False)
        X = y = None
        shuffles: tuple = ()
        if not streams and shards is None:
            matrices = self.store.read_matrices(dataset, engine)
            X, y = matrices[0], matrices[1]
            shuffles = tuple((matrices[k], matrices[k + 1]) for k in range(2, len(matrices), 2))
        checkpoint = self.store.checkpoint_path(job.session_id, job_id)
        fixed = self.store.fixed_checkpoint_path(job.session_id, job_id)
        state: dict[str, Any] = {}
        for path in (fixed, checkpoint):  # the pass's statistics (written once), then the last epoch's state
            if path.exists():
                state |= codec.checkpoint_from_bytes(engine, path.read_bytes())
        sharded = {"shards": shards} if shards is not None else {}
        if state:
            trainer = trainer_type.resume(engine, X, y, config, refresh, state, shuffles, **sharded)
        elif streams:
            self._emit_job(link, self._set(job_id, S.JOB_STATE_RUNNING, epoch=0))
            if self._distributed(trainer_type, config, dataset):
                partial = pooled_gram_partial(self.executor, self._tables(dataset), engine)
            else:
                partial = accumulate(engine, _row_blocks(self.store, dataset, engine, link))
            trainer = trainer_type.from_partial(engine, partial, config, refresh)
            self.store.write_blob(fixed, codec.checkpoint_to_bytes(trainer.fixed_state()))
        else:
            trainer = trainer_type(engine, X, y, config, refresh, shuffles, **sharded)
        constant = set(trainer.fixed_state()) if streams else set()
        self._emit_job(link, self._set(job_id, S.JOB_STATE_RUNNING, epoch=trainer.epoch))
        refreshes = job.refreshes
        while not trainer.done:
            link.check()
            start = time.perf_counter()
            result = trainer.run_epoch()
            seconds = time.perf_counter() - start
            refreshes += result.refreshes
            changing = {key: value for key, value in trainer.state().items() if key not in constant}
            self.store.write_blob(checkpoint, codec.checkpoint_to_bytes(changing))
            self.store.update_job(job_id, epoch=trainer.epoch, refreshes=refreshes)
            loss = result.loss
            link.events.put(
                pb.TrainResponse(
                    epoch=pb.EpochProgress(
                        epoch=result.epoch,
                        loss=codec.matrix_to_proto(loss) if loss is not None else None,
                        refreshes=result.refreshes,
                        seconds=seconds,
                        operation_counts=result.counts.to_dict(),
                        loss_scale=result.loss_scale,
                    )
                )
            )
        weights = trainer.weights
        if weights.level < PREDICT_LEVELS:
            # One more (masked) refresh so the stored model can serve predictions.
            weights = trainer.refresh(weights)
            refreshes += 1
        self._finish(job, dataset, weights, trainer, refreshes, link)
        self.store.remove(checkpoint)
        self.store.remove(fixed)

    def _finish(
        self, job: JobRecord, dataset: DatasetRecord, weights: EncryptedMatrix, trainer: Any, refreshes: int, link: Link
    ) -> None:
        model = ModelRecord(
            id=new_id(),
            session_id=job.session_id,
            job_id=job.id,
            dataset_id=dataset.id,
            algorithm=job.algorithm,
            weight_scale=trainer.weight_scale,
            metadata=trainer.metadata(),
            column_names=dataset.column_names,
            created=time.time(),
        )
        self.store.add_model(model, weights.to_bytes())
        done = self._set(job.id, S.JOB_STATE_SUCCEEDED, model_id=model.id, refreshes=refreshes)
        link.events.put(pb.TrainResponse(result=pb.TrainingResult(job=done.to_proto(), model=model.to_proto(weights))))
