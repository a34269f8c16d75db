"""TrainingService calls: run or resume a job over the bidirectional stream, answering the server's masked
refresh requests with fresh encryptions (``KeyHolder.refresh``) and decrypting each epoch's loss."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from ciphergrad.client.pools import PoolRelease
from ciphergrad.client.session import Connection
from ciphergrad.core import algorithms, layout, refine
from ciphergrad.core.convergence import DivergenceError, LossWatch, check_magnitude
from ciphergrad.core.gram import (
    UPPER,
    WRAPPED,
    GramStatistics,
    one_pass_tile,
    pass_steps,
    rotation_steps,
    weight_period,
)
from ciphergrad.core.layout import Tile, choose_tile
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.core.logistic import LogisticRegressionConfig
from ciphergrad.core.normal import RightHandSide, solve_normal
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

JobState = training_service_pb2.JobState
# Solvers that make one pass over the whole table (core.gram): column packing, no minibatches or shuffles.
ONE_PASS_SOLVERS = ("gram", "normal", "quadratic")
# The one-round-trip solvers: their statistics go to the key holder once, so the cheaper packing may serve.
EXACT_SOLVERS = ("normal", "quadratic")


def training_layout(shape: tuple[int, int], slots: int, config: Any, *,
                    serving: bool = True) -> tuple[Tile, list[int]]:
    """The tile to upload ``(X, y)`` with for ``config`` and the extra rotation steps its training needs
    (for ``create_session(tiles=[tile], rotations=steps)``): for the exact solvers the packing whose pass
    costs less (``core.gram.one_pass_tile``), column packing for "gram" (and for statistics standardized on
    the server), each with the Gram steps; row packing for gradient descent.

    ``serving=False``: a session that only trains and is deleted after it (the estimators without
    ``keep_session``): the steps are exactly the training's, the tile's included (create the session with
    ``tiles=[]``), so the public context carries no key for Predict, Describe or Metrics."""
    solver = getattr(config, "solver", "gd")
    if getattr(config, "refine_steps", 0):  # core.refine: the pass and the per-row steps on one row-packed table
        tile = choose_tile(shape, slots, "rows")
        steps = rotation_steps(weight_period(shape[1], tile), slots)
        return tile, steps if serving else sorted({*steps, *layout.rotation_steps(tile)})
    if solver in EXACT_SOLVERS and getattr(config, "standardization", None) is None:
        tile = one_pass_tile(shape, slots)  # rows for small tables, columns for large (core.gram.pass_cost)
    elif solver in ONE_PASS_SOLVERS:
        tile = choose_tile(shape, slots, "columns")
    else:
        tile = choose_tile(shape, slots, "rows", block_rows=getattr(config, "batch_size", None))
        return tile, [] if serving else layout.rotation_steps(tile)
    period = weight_period(shape[1], tile)
    return tile, rotation_steps(period, slots) if serving else pass_steps(shape[1], period, slots)


@dataclass
class TrainingRun:
    """What a Train stream produced, decrypted where the key holder may decrypt."""

    job: Any = None
    model: Any = None
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    refreshes: int = 0
    refresh_seconds: float = 0.0
    operation_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0



class TrainingCalls(Connection):
    # -- training -----------------------------------------------------------------------------------
    def train(
        self,
        dataset_id: str = "",
        config: LinearRegressionConfig | LogisticRegressionConfig | dict | None = None,
        *,
        algorithm: str | None = None,
        job_id: str = "",
        pool_id: str = "",
        on_epoch: Callable[[int, float], None] | None = None,
        on_refresh: Callable[[np.ndarray], None] | None = None,
        watch: LossWatch | None = None,
    ) -> TrainingRun:
        """Run (or with ``job_id``, resume) a training job, answering refreshes until it ends.

        ``pool_id`` instead of ``dataset_id`` trains on a sealed pool (``client.pools``): the server sends its
        release, this key holder solves it (linear: ridge, solver 'normal'; logistic: the quadratic surrogate,
        one-vs-rest) and answers with freshly encrypted weights; the same ``TrainingRun``.
        ``algorithm``: 'linear' or 'logistic' (by default the kind of ``config``, else linear).
        ``on_epoch(epoch, loss)`` gets each decrypted training loss (MSE for linear, the Brier score of the
        polynomial probabilities for logistic); ``on_refresh(values)`` the (masked) values the key holder
        decrypted.

        Every decrypted loss goes through ``watch`` (a fresh ``core.convergence.LossWatch`` by default) and
        every refresh's values are checked against the plaintext bound: on a loss that is not finite, negative
        or rising, or a value near the bound, the job is cancelled and ``DivergenceError`` says what to change.
        """
        watch = watch if watch is not None else LossWatch()
        self._holder()  # no session: an error before anything is sent
        if job_id:
            first = training_service_pb2.TrainRequest(attach=training_service_pb2.AttachJob(job_id=job_id))
        else:
            known = algorithms.for_config(config)
            entry = algorithms.get(algorithm or (known.name if known else "linear"))
            if known is not None:
                config = config.to_dict()  # tuples (standardization) become Struct lists
            if bool(dataset_id) == bool(pool_id):
                raise ValueError("train: give exactly one of dataset_id and pool_id")
            spec = training_service_pb2.JobSpec(
                dataset_id=dataset_id, pool_id=pool_id, algorithm=codec.algorithm_to_proto(entry)
            )
            spec.hyperparameters.update(dict(config or {}))
            first = training_service_pb2.TrainRequest(start=spec)
        outbox: queue.Queue = queue.Queue()
        outbox.put(first)

        def requests() -> Iterator[training_service_pb2.TrainRequest]:
            # The request stream stays open until training ends: closing it means "client gone".
            while (item := outbox.get()) is not None:
                yield item

        run = TrainingRun()
        start = time.perf_counter()
        responses = self.training.Train(requests(), metadata=self.metadata)
        try:
            self._follow(responses, run, outbox, watch, on_epoch, on_refresh)
        except DivergenceError:
            if run.job is not None:  # the server learns that this job stopped, nothing more (threat model)
                with contextlib.suppress(grpc.RpcError):
                    self.cancel_job(run.job.job_id)
            raise
        finally:
            outbox.put(None)
            if run.model is None:
                responses.cancel()  # we are leaving early: the server pauses the job at its checkpoint
        run.seconds = time.perf_counter() - start
        return run

    def _follow(self, responses: Any, run: TrainingRun, outbox: queue.Queue, watch: LossWatch,
                on_epoch: Callable[[int, float], None] | None,
                on_refresh: Callable[[np.ndarray], None] | None) -> None:
        """Answer the Train stream's events into ``run`` until the result arrives."""
        holder = self._holder()
        kept: dict[str, np.ndarray] = {}  # refinement: the preconditioner this key holder computed (core.refine)
        for response in responses:
            kind = response.WhichOneof("event")
            if kind == "job":
                run.job = response.job
            elif kind == "epoch":
                event = response.epoch
                self.transfer.add("received", "losses", event.ByteSize())
                loss = None
                if codec.has_matrix(event.loss):
                    loss = float(holder.decrypt(self._matrix(event.loss))[0, 0]) * event.loss_scale
                    watch.observe(event.epoch, loss)
                    run.losses.append(loss)
                run.epoch_seconds.append(event.seconds)
                for key, value in event.operation_counts.items():
                    run.operation_counts[key] = run.operation_counts.get(key, 0) + value
                if on_epoch:
                    on_epoch(event.epoch, loss)
            elif kind == "refresh_request":
                tick = time.perf_counter()
                reply = self._refresh(response.refresh_request, on_refresh, kept)
                outbox.put(training_service_pb2.TrainRequest(refresh_reply=reply))
                run.refreshes += 1
                run.refresh_seconds += time.perf_counter() - tick
            elif kind == "normal_system":
                tick = time.perf_counter()
                solution = self._solve_normal(response.normal_system, kept)
                outbox.put(training_service_pb2.TrainRequest(normal_solution=solution))
                run.refresh_seconds += time.perf_counter() - tick
            elif kind == "pool_release":
                tick = time.perf_counter()
                solution = self._solve_release(response.pool_release, run.job)
                outbox.put(training_service_pb2.TrainRequest(normal_solution=solution))
                run.refresh_seconds += time.perf_counter() - tick
            elif kind == "result":
                run.job, run.model = response.result.job, response.result.model
                self.transfer.add("received", "model", response.result.model.ByteSize())

    def _refresh(
        self, request: training_service_pb2.RefreshRequest, observe: Callable[[np.ndarray], None] | None,
        kept: dict[str, np.ndarray] | None = None,
    ) -> training_service_pb2.RefreshReply:
        holder = self._holder()
        masked = self._matrix(request.masked)
        values = holder.decrypt(masked)
        # Masks are uniform in +-max_abs_value/4 (core.refresh): past 3/4 the value itself is past half.
        check_magnitude(values, 0.75 * holder.params.max_abs_value, "a refreshed (masked) value",
                        "the weights are leaving the range CKKS holds; lower learning_rate or scale the data")
        if observe:
            observe(values)
        if request.precondition:
            if not kept or "preconditioner" not in kept:
                raise ValueError(
                    "the server asks for a preconditioned refresh, but this process did not answer the job's "
                    "normal_system round trip (refine_steps jobs resume only in the process that started them): "
                    "start the job again"
                )
            values = refine.apply(kept["preconditioner"], values, holder.params.max_abs_value)
        fresh = codec.matrix_to_proto(holder.encrypt(values, tile=masked.tile))
        self.transfer.add("received", "refreshes", request.ByteSize())
        self.transfer.add("sent", "refreshes", fresh.ByteSize())
        return training_service_pb2.RefreshReply(refresh_id=request.refresh_id, refreshed=fresh)

    def _solve_normal(self, request: training_service_pb2.NormalSystemRequest,
                      kept: dict[str, np.ndarray] | None = None) -> training_service_pb2.NormalSolution:
        """solver='normal': decrypt the aggregates, solve, answer with a FRESH encryption (never a plaintext)."""
        holder = self._holder()
        form = UPPER if request.diagonal_form == training_service_pb2.DIAGONAL_FORM_UPPER else WRAPPED
        system = GramStatistics(
            self._matrix(request.gram_diagonals), self._matrix(request.gram_column), request.rows,
            request.features, request.factor, form,
        )
        rhs = None
        if request.HasField("right_hand_side"):
            spec = request.right_hand_side
            rhs = RightHandSide(spec.target_scale, spec.ones_scale, spec.ones_column, max(spec.targets, 1))
        if request.HasField("preconditioner"):
            return self._solve_refined(request, system, rhs or RightHandSide(), kept if kept is not None else {})
        weights = solve_normal(holder, system, rhs)[None, :]
        fresh = codec.matrix_to_proto(holder.encrypt(weights, tile=system.column.tile))
        self.transfer.add("received", "normal system", request.ByteSize())
        self.transfer.add("sent", "normal solution", fresh.ByteSize())
        return training_service_pb2.NormalSolution(request_id=request.request_id, weights=fresh)

    def _solve_refined(self, request: training_service_pb2.NormalSystemRequest, system: GramStatistics,
                       rhs: RightHandSide, kept: dict[str, np.ndarray]) -> training_service_pb2.NormalSolution:
        """Refinement (core.refine): the warm start and P's rows, fresh encryptions; P stays here for the steps."""
        spec = request.preconditioner
        pre = refine.Preconditioner(spec.system_ridge, spec.l2, spec.intercept_column, spec.weight_scale,
                                    Tile(spec.tile_rows, spec.tile_cols))
        _, kept["preconditioner"], start, rows = refine.answer(self._holder(), system, rhs, pre)
        solution = training_service_pb2.NormalSolution(request_id=request.request_id,
                                                       weights=codec.matrix_to_proto(start))
        solution.preconditioner.extend(codec.matrix_to_proto(row) for row in rows)
        self.transfer.add("received", "normal system", request.ByteSize())
        self.transfer.add("sent", "normal solution", solution.ByteSize())
        return solution

    def _solve_release(self, request: training_service_pb2.PoolReleaseRequest,
                       job: training_service_pb2.Job | None) -> training_service_pb2.NormalSolution:
        """A pool job: decrypt the sealed release, solve it here, answer with a FRESH encryption of the weights
        (intercept first, data units; one-vs-rest blocks side by side for more than two classes)."""
        holder = self._holder()
        release = PoolRelease.decrypt(request.release, holder, self._matrix(request.release.moments))
        settings = json_format.MessageToDict(job.hyperparameters) if job is not None else {}
        if release.classes:
            weights = release.moments.logistic(float(settings.get("l2", 0.1)), settings.get("bound"))
        else:
            weights = release.moments.ridge(float(settings.get("l2", 0.0)))
        tile = Tile(request.weight_tile_rows, request.weight_tile_cols)
        fresh = codec.matrix_to_proto(holder.encrypt(np.asarray(weights).reshape(1, -1), tile=tile))
        self.transfer.add("received", "pool release", request.ByteSize())
        self.transfer.add("sent", "normal solution", fresh.ByteSize())
        return training_service_pb2.NormalSolution(request_id=request.request_id, weights=fresh)

    def get_job(self, job_id: str) -> training_service_pb2.Job:
        request = training_service_pb2.GetJobRequest(job_id=job_id)
        return self.training.GetJob(request, metadata=self.metadata).job

    def list_jobs(self) -> list[training_service_pb2.Job]:
        return list(self.training.ListJobs(training_service_pb2.ListJobsRequest(), metadata=self.metadata).jobs)

    def cancel_job(self, job_id: str) -> training_service_pb2.Job:
        request = training_service_pb2.CancelJobRequest(job_id=job_id)
        return self.training.CancelJob(request, metadata=self.metadata).job

