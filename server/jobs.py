"""Training jobs: a worker thread per running job, linked to the Train stream attached to it.

The trainer (core) masks a ciphertext before calling its refresh callable; ours sends the masked
ciphertext down the attached stream and blocks until the client's fresh encryption comes back. After
every epoch the trainer's state is checkpointed, so a job whose client goes away (or whose server is
stopped) pauses there and resumes when a client of the same session attaches again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from core.algorithms import ALGORITHMS
from core.tensor import EncryptedMatrix
from server.datasets import load_matrices
from server.engines import EngineCache
from server.errors import ServiceError, invalid, precondition, status_for
from server.storage import Store, dumps, new_id
from wire import codec
from wire.proto_gen.ciphergrad.v1 import model_service_pb2 as model_pb
from wire.proto_gen.ciphergrad.v1 import training_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import types_pb2

log = logging.getLogger("ciphergrad.server")

S = pb.JobState
FINISHED = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
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
    """The refresh callable handed to the trainer: a round trip to the attached client."""

    def __init__(self, link: Link, engine: Any, timeout: float) -> None:
        self.link, self.engine, self.timeout = link, engine, timeout
        self._next_id = 0

    def __call__(self, masked: EncryptedMatrix) -> EncryptedMatrix:
        self.link.check()
        self._next_id += 1
        request = pb.RefreshRequest(refresh_id=self._next_id, masked=codec.matrix_to_proto(masked))
        self.link.events.put(pb.TrainResponse(refresh_request=request))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                reply = self.link.replies.get(timeout=0.2)
                break
            except queue.Empty:
                self.link.check()
                if time.monotonic() > deadline:
                    log.warning("no refresh reply within %.0f s; pausing the job", self.timeout)
                    raise Detached from None
        if isinstance(reply, ServiceError):
            raise reply
        if reply.refresh_id != self._next_id:
            raise invalid(f"refresh_reply answers request {reply.refresh_id}; expected {self._next_id}")
        fresh = codec.matrix_from_proto(self.engine, reply.refreshed)
        if fresh.shape != masked.shape or fresh.tile != masked.tile:
            raise invalid(f"refreshed matrix has shape {fresh.shape}; expected {masked.shape} in the same tile")
        return fresh


def job_to_proto(row: dict[str, Any]) -> pb.Job:
    return pb.Job(
        job_id=row["id"],
        dataset_id=row["dataset_id"],
        algorithm=row["algorithm"],
        state=row["state"],
        epoch=row["epoch"],
        epochs=row["epochs"],
        model_id=row["model_id"],
        error_message=row["error"],
        hyperparameters=codec.struct_from_dict(json.loads(row["config_json"])),
        refreshes=row["refreshes"],
        create_time=codec.timestamp(row["created"]),
        update_time=codec.timestamp(row["updated"]),
    )


def _algorithm_name(value: int) -> str:
    try:
        return types_pb2.Algorithm.Name(value)
    except ValueError:
        return str(value)


def model_to_proto(row: dict[str, Any], weights: EncryptedMatrix | None = None) -> model_pb.Model:
    meta = json.loads(row["metadata_json"] or "{}")
    return model_pb.Model(
        model_id=row["id"],
        job_id=row["job_id"],
        dataset_id=row["dataset_id"],
        algorithm=row["algorithm"],
        weights=codec.matrix_to_proto(weights) if weights is not None else None,
        weight_scale=row["weight_scale"],
        column_names=json.loads(row["column_names_json"]),
        create_time=codec.timestamp(row["created"]),
        metadata_json=row["metadata_json"],
        server_owned=bool(meta.get("server_owned")),
        input_columns=int(meta.get("inputs", meta.get("features", 0))),
        output_columns=int(meta.get("outputs", 1)),
        display_name=str(meta.get("display_name", "")),
    )


class JobRunner:
    def __init__(self, store: Store, engines: EngineCache, workers: int, refresh_timeout: float = 600.0) -> None:
        self.store, self.engines, self.refresh_timeout = store, engines, refresh_timeout
        self._slots = threading.BoundedSemaphore(max(1, workers))
        self._links: dict[str, Link] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def recover(self) -> None:
        """After a restart (or crash) nothing is attached: running and queued jobs are paused."""
        for row in self.store.jobs_in_states((S.JOB_STATE_RUNNING, S.JOB_STATE_QUEUED)):
            self.store.update("jobs", row["id"], state=S.JOB_STATE_PAUSED)

    # -- lifecycle ------------------------------------------------------------------------------
    def create(self, session: dict[str, Any], dataset: dict[str, Any], spec: pb.JobSpec) -> dict[str, Any]:
        algorithm = codec.algorithm_from_proto(spec.algorithm)
        if algorithm is None:
            names = " or ".join(entry.wire_name for entry in ALGORITHMS.values())
            raise invalid(f"algorithm {_algorithm_name(spec.algorithm)} cannot be trained; use {names}")
        if json.loads(dataset.get("layout_json") or "{}").get("features_only"):
            raise invalid(f"dataset {dataset['id']} has no targets (uploaded features_only); upload X and y to train")
        config = codec.config_from_struct(spec.hyperparameters, algorithm.config)
        now = time.time()
        row = {
            "id": new_id(),
            "session_id": session["id"],
            "dataset_id": dataset["id"],
            "algorithm": spec.algorithm,
            "config_json": dumps(config.to_dict()),
            "state": S.JOB_STATE_QUEUED,
            "epochs": config.epochs,
            "created": now,
            "updated": now,
        }
        self.store.insert("jobs", row)
        return self.store.get("jobs", row["id"])  # type: ignore[return-value]

    def prepare_attach(self, job: dict[str, Any], wait: float = 10.0) -> None:
        """Check that ``job`` can be resumed, waiting briefly for a just-detached run to let go."""
        thread = self._threads.get(job["id"])
        link = self._links.get(job["id"])
        if thread is not None and link is not None and link.detached.is_set():
            thread.join(wait)
        if job["id"] in self._threads:
            raise precondition(f"job {job['id']} is attached to another stream; close it first")
        state = self.store.get("jobs", job["id"])["state"]  # type: ignore[index]
        if state in FINISHED:
            raise precondition(f"job {job['id']} already ended ({pb.JobState.Name(state)}); nothing to resume")

    def launch(self, job_id: str, link: Link) -> None:
        thread = threading.Thread(target=self._run, args=(job_id, link), name=f"job-{job_id[:8]}", daemon=True)
        with self._lock:
            if job_id in self._threads:
                raise precondition(f"job {job_id} is attached to another stream")
            self._links[job_id], self._threads[job_id] = link, thread
        thread.start()

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            link, thread = self._links.get(job_id), self._threads.get(job_id)
        if link is not None and thread is not None:
            link.cancelled.set()
            thread.join(30)
        row = self.store.get("jobs", job_id)
        assert row is not None
        if row["state"] not in FINISHED:
            self.store.update("jobs", job_id, state=S.JOB_STATE_CANCELLED, error="cancelled by CancelJob")
        return self.store.get("jobs", job_id)  # type: ignore[return-value]

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
        except Detached:
            self._set(job_id, S.JOB_STATE_PAUSED)
            end = End(None)
        except Cancelled:
            if self.store.get("jobs", job_id) is not None:
                self._set(job_id, S.JOB_STATE_CANCELLED, error="cancelled by CancelJob")
            end = End(grpc.StatusCode.CANCELLED, f"job {job_id} was cancelled")
        except Exception as exc:
            code, message = status_for(exc)
            if self.store.get("jobs", job_id) is not None:
                self._set(job_id, S.JOB_STATE_FAILED, error=message)
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

    def _set(self, job_id: str, state: int, **values: Any) -> dict[str, Any]:
        self.store.update("jobs", job_id, state=state, **values)
        return self.store.get("jobs", job_id)  # type: ignore[return-value]

    def _emit_job(self, link: Link, row: dict[str, Any]) -> None:
        link.events.put(pb.TrainResponse(job=job_to_proto(row)))

    def _train(self, job_id: str, link: Link) -> None:
        job = self.store.get("jobs", job_id)
        assert job is not None
        dataset = self.store.get("datasets", job["dataset_id"])
        if dataset is None:
            raise precondition(f"dataset {job['dataset_id']} of job {job_id} was deleted; start a new job")
        engine = self.engines.load(job["session_id"])  # its own: per-epoch operation counts stay exact
        matrices = load_matrices(self.store, dataset, engine)
        X, y = matrices[0], matrices[1]
        shuffles = tuple((matrices[k], matrices[k + 1]) for k in range(2, len(matrices), 2))
        algorithm = codec.algorithm_from_proto(job["algorithm"])
        assert algorithm is not None  # create() admitted only trainable algorithms
        config = algorithm.config.from_dict(json.loads(job["config_json"]))
        refresh = StreamRefresh(link, engine, self.refresh_timeout)
        checkpoint = self.store.checkpoint_path(job["session_id"], job_id)
        if checkpoint.exists():
            state = codec.checkpoint_from_bytes(engine, checkpoint.read_bytes())
            trainer = algorithm.trainer_for(config).resume(engine, X, y, config, refresh, state, shuffles)
        else:
            trainer = algorithm.trainer_for(config)(engine, X, y, config, refresh, shuffles)
        self._emit_job(link, self._set(job_id, S.JOB_STATE_RUNNING, epoch=trainer.epoch))
        refreshes = job["refreshes"]
        while not trainer.done:
            link.check()
            start = time.perf_counter()
            result = trainer.run_epoch()
            seconds = time.perf_counter() - start
            refreshes += result.refreshes
            self.store.write_blob(checkpoint, codec.checkpoint_to_bytes(trainer.state()))
            self.store.update("jobs", job_id, epoch=trainer.epoch, refreshes=refreshes)
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

    def _finish(self, job, dataset, weights, trainer, refreshes, link) -> None:
        model = {
            "id": new_id(),
            "session_id": job["session_id"],
            "job_id": job["id"],
            "dataset_id": dataset["id"],
            "algorithm": job["algorithm"],
            "weight_scale": trainer.weight_scale,
            "metadata_json": dumps(trainer.metadata()),
            "column_names_json": dataset["column_names_json"],
            "created": time.time(),
        }
        # Blob before row: a crash in between leaves an orphan file, swept at the next start.
        self.store.write_blob(self.store.model_path(job["session_id"], model["id"]), weights.to_bytes())
        self.store.insert("models", model)
        row = self._set(job["id"], S.JOB_STATE_SUCCEEDED, model_id=model["id"], refreshes=refreshes)
        link.events.put(
            pb.TrainResponse(result=pb.TrainingResult(job=job_to_proto(row), model=model_to_proto(model, weights)))
        )
