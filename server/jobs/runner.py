"""Training jobs: a thread per started job, linked to the Train stream attached to it (``server.jobs.links``).

A job waits for one of --workers HE slots on the event loop (QUEUED: no thread), then runs on a thread of
its own. The trainer (core) masks a ciphertext before calling its refresh callable; ours sends the masked
ciphertext down the attached stream and waits (without its HE slot, at most --refresh-timeout) until the
client's fresh encryption comes back. After every epoch the trainer's state is checkpointed, so a job whose
client goes away, whose key holder is too slow, or whose server is stopped pauses there and resumes when a
client of the same session attaches again. A session has at most --max-jobs-per-session jobs attached.

A one-pass trainer (``streams_rows``: the "gram" and "normal" solvers) never loads the dataset: its row
blocks stream from disk into ``core.gram.accumulate``, and the statistics (``fixed_state``) are written once
beside the checkpoint, so a resumed job skips the pass and per-epoch checkpoints hold only the weights. Any
trainer's ``fixed_state`` is written once when it appears (refinement: the ``d`` rows of ``Enc(P)`` after its
first epoch, 13 MB on breast cancer, 0.13 s to serialize), not with every epoch's checkpoint. Where a
job's trainer is made (here or on a pool worker) is ``server.jobs.trainers``'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from ciphergrad.core.algorithms import ALGORITHMS
from ciphergrad.core.flat import FlatMatrix
from ciphergrad.core.gram import DATA_LEVELS
from ciphergrad.core.release import moment_tile
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import Executor
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.execution.local import LocalExecutor
from ciphergrad.server.jobs.links import POLL_SECONDS, Cancelled, Detached, End, JobSlot, Link, StreamRefresh
from ciphergrad.server.jobs.pool_view import PoolView, ReleaseFit, pool_view, release_proto, release_weights
from ciphergrad.server.jobs.trainers import JobTrainers
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.errors import invalid, precondition, status_for
from ciphergrad.server.rpc.work import Work, exhausted
from ciphergrad.server.store.records import DatasetRecord, JobRecord, ModelRecord, SessionRecord
from ciphergrad.server.store.store import Store, new_id
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

log = logging.getLogger("ciphergrad.server")

S = pb.JobState
# A linear prediction, (X * w).sum(axis=1), spends one level on the product and one on the row-sum mask.
PREDICT_LEVELS = 2


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


def _algorithm_name(value: int) -> str:
    try:
        return types_pb2.Algorithm.Name(value)
    except ValueError:
        return str(value)


class JobRunner:
    def __init__(self, store: Store, engines: EngineCache, workers: int, work: Work, refresh_timeout: float = 600.0,
                 executor: Executor | None = None, max_jobs_per_session: int = 8) -> None:
        self.store, self.engines, self.work, self.refresh_timeout = store, engines, work, refresh_timeout
        self.executor = executor or LocalExecutor()
        self.max_jobs_per_session = max_jobs_per_session
        self.trainers = JobTrainers(store, engines, self.executor)
        self._slots = threading.BoundedSemaphore(max(1, workers))
        self._links: dict[str, Link] = {}  # every attached job, queued or running
        self._owners: dict[str, str] = {}  # job id -> session id, for the per-session limit
        self._threads: dict[str, threading.Thread] = {}  # started jobs only
        self._lock = threading.Lock()
        self._admission = threading.Lock()

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
        if getattr(trainer_type, "streams_rows", False) and not isinstance(dataset, PoolView):
            problem = streaming_problem(dataset, config.solver)
            if problem and "solver" in spec.hyperparameters.fields:
                raise invalid(problem)
            if problem:  # the default solver, not one the user named: data uploaded for gradient descent
                config = dataclasses.replace(config, solver="gd")
                trainer_type = algorithm.trainer_for(config)
        if getattr(trainer_type, "needs_pass", False) and not isinstance(dataset, PoolView):
            problem = streaming_problem(dataset, config.solver)
            if problem:  # refinement runs the one-pass solve first, on the table it then steps over
                raise invalid(problem.replace("or use solver='gd'", "or use refine_steps=0 / solver='gd'"))
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
        deadline = time.monotonic() + wait
        while (link := self._links.get(job.id)) is not None and link.detached.is_set():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if job.id in self._links:
            raise precondition(f"job {job.id} is attached to another stream; close it first")
        current = self.store.job(job.id)
        if current is not None and current.finished:
            raise precondition(f"job {job.id} already ended ({pb.JobState.Name(current.state)}); nothing to resume")

    def admit(self, session_id: str, link: Link, job: Callable[[], JobRecord]) -> JobRecord:
        """Attach ``link`` to the job ``job()`` makes (or finds), within the session's job limit."""
        with self._admission:  # the room check and the new row go together
            with self._lock:
                attached = sum(1 for owner in self._owners.values() if owner == session_id)
            if attached >= self.max_jobs_per_session:
                raise exhausted(
                    f"this session already has {attached} jobs attached (running or queued), the server's limit "
                    f"(server flag --max-jobs-per-session={self.max_jobs_per_session}): wait for one to end, or "
                    "cancel one (CancelJob)"
                )
            record = job()
            with self._lock:
                if record.id in self._links:
                    raise precondition(f"job {record.id} is attached to another stream")
                self._links[record.id], self._owners[record.id] = link, session_id
        return record

    async def run(self, job_id: str, link: Link) -> None:
        """Start the admitted job once an HE slot is free; until then it waits here on the loop (QUEUED),
        holding no thread."""
        slot = JobSlot(self._slots)
        try:
            link.check()
            if not slot.try_take():
                link.emit(pb.TrainResponse(job=(await self.work.io(self._set, job_id, S.JOB_STATE_QUEUED)).to_proto()))
                while not slot.try_take():
                    link.check()
                    await asyncio.sleep(POLL_SECONDS)
        except Exception as exc:  # Detached or Cancelled while queued, or storage failing
            await self.work.io(self._end, job_id, link, exc)
            return
        thread = threading.Thread(target=self._run, args=(job_id, link, slot), name=f"job-{job_id[:8]}", daemon=True)
        with self._lock:
            self._threads[job_id] = thread
        thread.start()

    def cancel(self, job_id: str) -> JobRecord:
        self.stop(job_id)
        job = self.store.job(job_id)
        assert job is not None
        if not job.finished:
            job = self._set(job_id, S.JOB_STATE_CANCELLED, error="cancelled by CancelJob")
        return job

    def stop(self, job_id: str, wait: float = 30.0) -> None:
        """Stop a job (queued or running) without recording anything; returns once it has let go."""
        with self._lock:
            link = self._links.get(job_id)
        if link is not None:
            link.cancelled.set()
            self._wait_until_gone([job_id], time.monotonic() + wait)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Detach every attached job so it pauses at its checkpoint (graceful server stop)."""
        with self._lock:
            jobs = list(self._links)
            for link in self._links.values():
                link.detach()
        self._wait_until_gone(jobs, time.monotonic() + timeout)

    def _wait_until_gone(self, jobs: list[str], deadline: float) -> None:
        for job_id in jobs:
            thread = self._threads.get(job_id)
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
            while job_id in self._links and time.monotonic() < deadline:
                time.sleep(0.05)  # a queued job notices within POLL_SECONDS

    # -- the worker ----------------------------------------------------------------------------------
    def _run(self, job_id: str, link: Link, slot: JobSlot) -> None:
        failure: Exception | None = None
        try:
            self._train_job(job_id, link, slot)
        except Exception as exc:  # recorded FAILED with status_for's code (ExecutionError: UNAVAILABLE)
            failure = exc
        finally:
            slot.give()
        self._end(job_id, link, failure)

    def _end(self, job_id: str, link: Link, failure: Exception | None) -> None:
        """Record how the job ended (a job whose session was deleted meanwhile has no row left: these updates
        then change nothing), let go of it and tell the stream."""
        end = End()
        try:
            if isinstance(failure, Detached):
                self.store.update_job(job_id, state=S.JOB_STATE_PAUSED)
                end = End(grpc.StatusCode.DEADLINE_EXCEEDED, str(failure)) if failure.args else End(None)
            elif isinstance(failure, Cancelled):
                self.store.update_job(job_id, state=S.JOB_STATE_CANCELLED, error="cancelled by CancelJob")
                end = End(grpc.StatusCode.CANCELLED, f"job {job_id} was cancelled")
            elif failure is not None:
                code, message = status_for(failure)
                self.store.update_job(job_id, state=S.JOB_STATE_FAILED, error=message)
                end = End(code, message)
        except Exception as exc:  # storage failing too: the stream still hears why
            end = End(*status_for(exc))
        finally:
            with self._lock:
                self._links.pop(job_id, None)
                self._owners.pop(job_id, None)
                self._threads.pop(job_id, None)
            link.emit(end)

    def _set(self, job_id: str, state: int, **values: Any) -> JobRecord:
        """Record a state change of a running job; if its session was deleted meanwhile, stop it."""
        job = self.store.update_job(job_id, state=state, **values)
        if job is None:
            raise Cancelled
        return job

    def _emit_job(self, link: Link, job: JobRecord) -> None:
        link.emit(pb.TrainResponse(job=job.to_proto()))

    def _train_job(self, job_id: str, link: Link, slot: JobSlot) -> None:
        job = self.store.job(job_id)
        assert job is not None
        if job.pool_id:
            self._train_pool(job, link, slot)
            return
        dataset = self.store.dataset(job.dataset_id)
        if dataset is None:
            raise precondition(f"dataset {job.dataset_id} of job {job_id} was deleted; start a new job")
        algorithm = codec.algorithm_from_proto(job.algorithm)
        assert algorithm is not None  # create() admitted only trainable algorithms
        config = algorithm.config.from_dict(job.config)
        trainer_type = algorithm.trainer_for(config)
        streams = getattr(trainer_type, "streams_rows", False)
        remote = self.trainers.hosted()
        engine = None if remote else self.engines.fork(job.session_id)  # own counters: exact per-epoch counts
        refresh = StreamRefresh(link, engine, self.refresh_timeout, slot)

        def started() -> None:
            self._emit_job(link, self._set(job.id, S.JOB_STATE_RUNNING, epoch=0))

        with contextlib.ExitStack() as stack:
            # A remote trainer (and its shards: Ray actors holding their row blocks) lives for the job, closed
            # on any exit.
            made = self.trainers
            if remote:
                trainer = stack.enter_context(made.remote(job, dataset, config, trainer_type, refresh, started))
            else:
                trainer = made.local(job, dataset, engine, config, trainer_type, refresh, link, started)
            self._run_trainer(job, dataset, trainer, streams, link)

    def _run_trainer(self, job: JobRecord, dataset: DatasetRecord, trainer: Any, streams: bool, link: Link) -> None:
        """Run the trainer's epochs (in this process or remote), a checkpoint after each, and store the model."""
        job_id = job.id
        checkpoint = self.store.checkpoint_path(job.session_id, job_id)
        fixed = self.store.fixed_checkpoint_path(job.session_id, job_id)
        constant = set(trainer.fixed_state()) if streams else set()
        self._emit_job(link, self._set(job_id, S.JOB_STATE_RUNNING, epoch=trainer.epoch))
        refreshes = job.refreshes
        while not trainer.done:
            link.check()
            start = time.perf_counter()
            result = trainer.run_epoch()
            seconds = time.perf_counter() - start
            refreshes += result.refreshes
            constant = self._write_fixed(trainer, fixed, constant)
            changing = {key: value for key, value in trainer.state().items() if key not in constant}
            self.store.write_blob(checkpoint, codec.checkpoint_to_bytes(changing))
            self.store.update_job(job_id, epoch=trainer.epoch, refreshes=refreshes)
            loss = result.loss
            link.emit(
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

    def _write_fixed(self, trainer: Any, path: Any, written: set[str]) -> set[str]:
        """A trainer's part that stops changing once made (``fixed_state``; refinement: ``Enc(P)``'s rows, after
        its first epoch) is written once beside the checkpoint, before the checkpoint that leaves it out."""
        fixed = trainer.fixed_state() if hasattr(trainer, "fixed_state") else {}
        if set(fixed) <= written:
            return written
        self.store.write_blob(path, codec.checkpoint_to_bytes(fixed))
        return set(fixed)

    def _train_pool(self, job: JobRecord, link: Link, slot: JobSlot) -> None:
        """A pool's job: its release to the key holder, the solved weights back (``server.jobs.pool_view``)."""
        pool = self.store.pools.get(job.pool_id)
        if pool is None:
            raise precondition(f"pool {job.pool_id} of job {job.id} was deleted; start a new job")
        algorithm = codec.algorithm_from_proto(job.algorithm)
        assert algorithm is not None
        config = algorithm.config.from_dict(job.config)
        self._emit_job(link, self._set(job.id, S.JOB_STATE_RUNNING, epoch=0))
        release = release_proto(self.store, pool)
        outputs, tile = len(pool.classes) if len(pool.classes) > 2 else 1, moment_tile(pool.params.slots)
        view = pool_view(pool)
        reply = StreamRefresh(link, None, self.refresh_timeout, slot).release_reply(release, tile)
        # The reply checked where the session's context is loaded (a pool worker with the Ray executor).
        check = functools.partial(release_weights, reply=reply.SerializeToString(),
                                  shape=(1, outputs * pool.columns), tile=tile)
        weights = FlatMatrix(self.executor.run_files(self.store.context_path(job.session_id), [], check,
                                                     lambda: self.engines.fork(job.session_id)))
        self.store.update_job(job.id, epoch=1)
        self._finish(job, view, weights, ReleaseFit(config, pool.columns), 0, link)

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
        link.emit(pb.TrainResponse(result=pb.TrainingResult(job=done.to_proto(), model=model.to_proto(weights))))
