"""ComputeService: encrypted statistics (core.stats) and nearest-neighbour distances (core.neighbors).

Results stay encrypted; the client decrypts them and finishes square roots, divisions and the top-k.
Async shells, sync bodies (``server.rpc.work``); the homomorphic work runs on the server's executor
(``server.execution``: in this process, or on the Ray pool): each query batch a call of its own, Describe's
column sums over row blocks, finished with its covariance on one worker, and Metrics whole on one; with Ray
this process parses no ciphertext and loads no context for them (it relays serialized results,
``core.flat.FlatMatrix``). The tables and batches a call parses count against --max-inflight-mb.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import grpc
import numpy as np

from ciphergrad.core import stats
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import ShapeError
from ciphergrad.core.flat import FlatMatrix
from ciphergrad.core.neighbors import check_reference, squared_distances
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import Executor, square
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import invalid, rpc
from ciphergrad.server.rpc.uploads import BatchWork, Budget, answer_batches, spool_matrices
from ciphergrad.server.rpc.work import Work
from ciphergrad.server.store import plainmodels
from ciphergrad.server.store.records import SessionRecord
from ciphergrad.server.store.store import Store
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import compute_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import compute_service_pb2_grpc as pb_grpc
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2


class ComputeServicer(pb_grpc.ComputeServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, max_upload: int, max_batch: int,
                 work: Work, executor: Executor) -> None:
        self.store, self.access, self.engines = store, access, engines
        self.max_upload, self.max_batch, self.work, self.executor = max_upload, max_batch, work, executor
        self.counts = engines.tally()  # operations of the calls the executor ran elsewhere (Ray's workers)

    @rpc
    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DescribeResponse]:
        for response in await self.work.he(self.describe, request, context.invocation_metadata()):
            yield response

    def describe(self, request: pb.DescribeRequest, metadata: Metadata) -> list[pb.DescribeResponse]:
        dataset = self.access.dataset(request.dataset_id, self.access.session(metadata))
        validation.ddof(request.ddof, dataset.rows)
        if request.covariance and dataset.layout.tile[1] != 1:
            tile = dataset.layout.tile
            raise ShapeError(
                f"the covariance needs a dataset uploaded with packing='columns' (one ciphertext per column); "
                f"dataset {dataset.id} is packed by rows (tile {tile[0]}x{tile[1]}): upload it again "
                "with Client.upload(X, packing='columns')"
            )
        table = self.store.table(dataset, targets=False)
        # Column sums of X and of X * X over row blocks, finished (and the covariance computed on the whole
        # table) where the executor keeps the session's context: this process relays the results' bytes.
        finish = functools.partial(describe_of, rows=dataset.rows, ddof=request.ddof, covariance=request.covariance)
        with self.work.limits.memory(self.store.matrix_size(dataset, 0), f"dataset {dataset.id}"):
            engine = functools.partial(self.engines.get, dataset.session_id)
            values = self.executor.finish_sums(table, finish, engine, sums=(None, square),
                                               files=[table.features] if request.covariance else [],
                                               counts=self.counts)
        return [pb.DescribeResponse(statistic=name, value=codec.matrix_to_proto(FlatMatrix(data)))
                for name, data in values]

    @rpc
    async def Metrics(
        self, request_iterator: AsyncIterator[pb.MetricsRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.MetricsResponse]:
        async with self.work.open_stream(
            request_iterator, context, "Metrics", self.access.session,
            kinds=("spec",), refusal="Metrics: send a MetricsSpec first, then the predictions (and targets) as chunks",
        ) as (session, requests, first):
            spec = first.spec
            validation.mae_spec(spec.mae_bound, spec.mae_degree)
            # Predictions and targets are each one matrix (a metric needs all rows): limited by --max-upload-mb.
            budget = Budget(self.max_upload)
            with self.store.staging() as scratch:
                paths = [path async for path in spool_matrices(requests, "chunk", budget, "the metrics input", scratch)]
                for response in await self.work.he(self.metrics, spec, session, paths):
                    yield response

    def metrics(self, spec: pb.MetricsSpec, session: SessionRecord, paths: list[Path]) -> list[pb.MetricsResponse]:
        """The encrypted metrics of the predictions (and targets) spooled at ``paths``: checked and computed
        where the executor keeps the session's context (``metrics_of``); this process relays their bytes."""
        dataset = self.access.dataset(spec.dataset_id, session) if spec.dataset_id else None
        if dataset is not None and dataset.layout.features_only:
            raise invalid(f"dataset {dataset.id} has no targets (uploaded features_only)")
        if not paths:
            raise invalid("Metrics: the predictions are missing")
        if dataset is None and len(paths) < 2:
            raise invalid("Metrics: without a dataset_id the targets must follow the predictions")
        if len(paths) > (1 if dataset is not None else 2):
            raise invalid("Metrics: more matrices than the predictions and targets")
        if dataset is not None:
            targets, what = self.store.matrix_path(dataset, 1), f"the targets of dataset {dataset.id}"
        else:
            targets, what = paths[1], "the targets"
        compute = functools.partial(metrics_of, what=what, mae_bound=spec.mae_bound, mae_degree=spec.mae_degree)
        with self.work.limits.memory(paths[0].stat().st_size + targets.stat().st_size, "the metrics input"):
            try:
                values = self.executor.run_files(self.store.context_path(session.id), [paths[0], targets], compute,
                                                 functools.partial(self.engines.get, session.id), counts=self.counts)
            except RuntimeError as exc:
                if "transparent" not in str(exc):
                    raise
                # SEAL refuses a difference of identical ciphertexts (an all-zero "transparent" result).
                raise invalid(
                    f"the predictions are the very ciphertexts of {what}, so their difference is not a "
                    "ciphertext: encrypt the predictions afresh (KeyHolder.encrypt) and send those"
                ) from exc
        return [pb.MetricsResponse(metric=name, value=codec.matrix_to_proto(FlatMatrix(data)), max_error=max_error)
                for name, data, max_error in values]

    @rpc
    async def Distances(
        self, request_iterator: AsyncIterator[pb.DistancesRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DistancesResponse]:
        async with self.work.open_stream(
            request_iterator, context, "Distances", self.access.session, kinds=("reference_dataset_id", "model_id"),
            refusal="Distances: send the reference set first (model_id of a plaintext one, or reference_dataset_id "
                    "of one the client encrypted), then batches of encrypted queries",
        ) as (session, requests, first):
            queries = await self.work.he(self.reference, first, session)
            replies = answer_batches(
                self.work, requests, self.store.staging, self.max_batch, field="queries", what="a query batch",
                answer=functools.partial(self.distances, queries), width=self.executor.parallelism,
                response=pb.DistancesResponse, response_field="distances",
            )
            async with contextlib.aclosing(replies):
                async for message in replies:
                    yield message

    def reference(self, first: pb.DistancesRequest, session: SessionRecord) -> BatchWork:
        """What every query batch of the stream runs: the distances to the reference set the first message
        names (an encrypted one is an operand: its stored file, parsed only where the batches are)."""
        engine, context = functools.partial(self.engines.get, session.id), self.store.context_path(session.id)
        if first.WhichOneof("kind") == "reference_dataset_id":
            reference = self._encrypted_reference(first.reference_dataset_id, session)
            return BatchWork(engine, context, functools.partial(squared_distances, projection=None),
                             _queries_and_reference, {"reference": reference})
        plain, projection = self._plain_reference(first.model_id, session)
        distances = functools.partial(squared_distances, reference=plain, projection=projection)
        return BatchWork(engine, context, distances, _column_packed)

    def distances(self, queries: BatchWork, path: Path) -> bytes:
        """The serialized squared distances of the query batch spooled at ``path``, parsed, checked and computed
        where the executor keeps the session's context (``uploads.answer_batch``)."""
        return queries.answer(self.executor, self.work.limits, self.counts, "a query batch", path)

    def _plain_reference(self, model_id: str, session: SessionRecord) -> tuple[np.ndarray, np.ndarray | None]:
        model = self.access.model(model_id, session)
        if model.algorithm != types_pb2.ALGORITHM_NEAREST_NEIGHBORS:
            raise invalid(f"model {model.id} is not a nearest-neighbour reference set (ModelService.UploadModel)")
        plain = plainmodels.loads(self.store.model_blob(model))
        reference = np.asarray(plain["reference"], dtype=np.float64)
        projection = np.asarray(plain["projection"], dtype=np.float64) if "projection" in plain else None
        return reference, projection

    def _encrypted_reference(self, dataset_id: str, session: SessionRecord) -> Path:
        dataset = self.access.dataset(dataset_id, session)
        if not dataset.layout.reference_set:
            raise invalid(
                f"dataset {dataset.id} is not an encrypted reference set: upload one with "
                "Client.upload_encrypted_reference (DatasetManifest.reference_set, core.neighbors.encrypt_reference)"
            )
        return self.store.matrix_path(dataset, 0)  # its layout is checked with each batch (_queries_and_reference)


def _column_packed(batch: EncryptedMatrix, **operands: EncryptedMatrix) -> None:
    if batch.tile.cols != 1:
        raise ShapeError(
            f"queries must be column-packed: encrypt them with packing='columns' (tile=Tile(q, 1)); "
            f"got tile {batch.tile.rows}x{batch.tile.cols}"
        )


def _queries_and_reference(batch: EncryptedMatrix, reference: EncryptedMatrix) -> None:
    _column_packed(batch)
    check_reference(reference)


def describe_of(engine: Engine, files: list[BinaryIO], sums: list[EncryptedMatrix], *, rows: int, ddof: int,
                covariance: bool) -> list[tuple[str, bytes]]:
    """Describe's body where the session's context is (``Executor.finish_sums``): the means and variances from
    the column sums of X and of X * X over ``rows`` rows (``core.stats.*_from_sums``) and, with ``covariance``,
    every pair of columns' covariance of the stored table in ``files`` (checked at its upload, so parsed as
    is): ``(statistic, serialized matrix)`` each."""
    total, squares = sums
    values = [("mean", stats.mean_from_sums(total, rows).to_bytes()),
              ("variance", stats.variance_from_sums(total, squares, rows, ddof).to_bytes())]
    if covariance:
        (handle,) = files
        cov = stats.covariance(EncryptedMatrix.from_file(engine, handle), ddof=ddof)
        values.append(("covariance", cov.to_bytes()))
    return values


def metrics_of(engine: Engine, files: list[BinaryIO], *, what: str, mae_bound: float, mae_degree: int
               ) -> list[tuple[str, bytes, float]]:
    """Metrics' body where the session's context is (``Executor.run_files``): the predictions and targets in
    ``files`` each checked one ciphertext at a time (``validation.scan``) and against each other, then parsed
    and reduced to the MSE, the targets' variance (R² = 1 - their ratio) and, with ``mae_bound``, the MAE:
    ``(metric, serialized matrix, max_error)`` each."""
    predictions_file, targets_file = files
    predictions = validation.scan(engine, predictions_file, "the metrics input")
    targets = validation.scan(engine, targets_file, what)
    if predictions.shape != targets.shape or predictions.tile != targets.tile:
        raise ShapeError(
            f"predictions of shape {predictions.shape} in tile {predictions.tile.rows}x{predictions.tile.cols} "
            f"do not match {what}: shape {targets.shape} in tile {targets.tile.rows}x{targets.tile.cols}; "
            "encrypt the predictions with that shape and tile"
        )
    if targets.shape[1] != 1:
        raise ShapeError(f"R² takes one target column, got {targets.shape[1]}")
    (n, cols), matrices = targets.shape, []
    for handle in files:
        handle.seek(0)
        matrices.append(EncryptedMatrix.from_file(engine, handle))
    P, y = matrices
    mse = stats.mse_from_sums(stats.squared_residuals(P, y).sum(axis=0), n)
    target_variance = stats.variance_from_sums(y.sum(axis=0), (y * y).sum(axis=0), n)
    values = [("mse", mse.to_bytes(), 0.0), ("target_variance", target_variance.to_bytes(), 0.0)]
    if mae_bound:
        poly, averaged = stats.mae_polynomials(n * cols, bound=mae_bound, degree=mae_degree or 6)
        mae = stats.absolute_residuals(P, y, polynomial=averaged).sum(axis=0).sum(axis=1)
        values.append(("mae", mae.to_bytes(), poly.max_error))
    return values
