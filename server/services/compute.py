"""ComputeService: encrypted statistics (core.stats) and nearest-neighbour distances (core.neighbors).

Results stay encrypted; the client decrypts them and finishes square roots, divisions and the top-k.
Async shells, sync bodies (``server.rpc.work``); the homomorphic work runs on the server's executor
(``server.execution``: in this process, or on the Ray pool): each query batch a call of its own, Describe's
and Metrics' column sums over row blocks. The tables and batches a call parses count against
--max-inflight-mb.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from ciphergrad.core import stats
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import ShapeError
from ciphergrad.core.neighbors import check_reference, squared_distances
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import BlockFunction, Executor, StoredTable, apply
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import invalid, rpc
from ciphergrad.server.rpc.uploads import Budget, answer_batches, load_matrix, spool_matrices
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
        engine = self.engines.get(dataset.session_id)
        with self.work.limits.memory(self.store.matrix_size(dataset, 0), f"dataset {dataset.id}"):
            # Column sums of X and of X * X over row blocks (on the executor's workers), finished here.
            table = self.store.table(dataset, targets=False)
            total = self.executor.column_sums(table, engine)
            squares = self.executor.column_sums(table, engine, squares=True)
            mean = stats.mean_from_sums(total, dataset.rows)
            variance = stats.variance_from_sums(total, squares, dataset.rows, request.ddof)
            responses = [
                pb.DescribeResponse(statistic="mean", value=codec.matrix_to_proto(mean)),
                pb.DescribeResponse(statistic="variance", value=codec.matrix_to_proto(variance)),
            ]
            if request.covariance:  # every pair of columns: in this process, on the whole table
                cov = stats.covariance(self.store.read_matrix(dataset, 0, engine), ddof=request.ddof)
                responses.append(pb.DescribeResponse(statistic="covariance", value=codec.matrix_to_proto(cov)))
        return responses

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
        """The encrypted metrics of the predictions (and targets) spooled at ``paths``."""
        dataset = self.access.dataset(spec.dataset_id, session) if spec.dataset_id else None
        if dataset is not None and dataset.layout.features_only:
            raise invalid(f"dataset {dataset.id} has no targets (uploaded features_only)")
        if not paths:
            raise invalid("Metrics: the predictions are missing")
        if dataset is None and len(paths) < 2:
            raise invalid("Metrics: without a dataset_id the targets must follow the predictions")
        if len(paths) > (1 if dataset is not None else 2):
            raise invalid("Metrics: more matrices than the predictions and targets")
        engine = self.engines.get(session.id)
        # Checked one ciphertext at a time (validation.scan_file); the executor reads them where it runs.
        predictions = validation.scan_file(engine, paths[0], "the metrics input")
        if dataset is not None:
            targets_path, what = self.store.matrix_path(dataset, 1), f"the targets of dataset {dataset.id}"
        else:
            targets_path, what = paths[1], "the targets"
        targets = validation.scan_file(engine, targets_path, what)
        if predictions.shape != targets.shape or predictions.tile != targets.tile:
            raise ShapeError(
                f"predictions of shape {predictions.shape} in tile {predictions.tile.rows}x{predictions.tile.cols} "
                f"do not match {what}: shape {targets.shape} in tile {targets.tile.rows}x{targets.tile.cols}; "
                "encrypt the predictions with that shape and tile"
            )
        if targets.shape[1] != 1:
            raise ShapeError(f"R² takes one target column, got {targets.shape[1]}")
        size = paths[0].stat().st_size + targets_path.stat().st_size
        with self.work.limits.memory(size, "the metrics input"):
            try:
                return self._metrics(spec, engine, session.id, paths[0], targets_path, targets)
            except RuntimeError as exc:
                if "transparent" not in str(exc):
                    raise
                # SEAL refuses a difference of identical ciphertexts (an all-zero "transparent" result).
                raise invalid(
                    f"the predictions are the very ciphertexts of {what}, so their difference is not a "
                    "ciphertext: encrypt the predictions afresh (KeyHolder.encrypt) and send those"
                ) from exc

    def _metrics(self, spec: pb.MetricsSpec, engine: Engine, session_id: str, predictions: Path, targets: Path,
                 shape: validation.ScannedMatrix) -> list[pb.MetricsResponse]:
        """MSE, the targets' variance (R² = 1 - their ratio) and the MAE as column sums over row blocks on the
        executor, finished here (``core.stats.*_from_sums``)."""
        (n, cols), tile_rows = shape.shape, shape.tile.rows
        context, sums = self.store.context_path(session_id), self.executor.column_sums
        pair = StoredTable(context, predictions, targets, n, tile_rows)
        target = StoredTable(context, targets, None, n, tile_rows)
        mse = stats.mse_from_sums(sums(pair, engine, function=stats.squared_residuals, with_targets=True), n)
        target_variance = stats.variance_from_sums(sums(target, engine), sums(target, engine, squares=True), n)
        responses = [
            pb.MetricsResponse(metric="mse", value=codec.matrix_to_proto(mse)),
            pb.MetricsResponse(metric="target_variance", value=codec.matrix_to_proto(target_variance)),
        ]
        if spec.mae_bound:
            poly, averaged = stats.mae_polynomials(n * cols, bound=spec.mae_bound, degree=spec.mae_degree or 6)
            absolute = functools.partial(stats.absolute_residuals, polynomial=averaged)
            mae = sums(pair, engine, function=absolute, with_targets=True).sum(axis=1)
            responses.append(pb.MetricsResponse(metric="mae", value=codec.matrix_to_proto(mae),
                                                max_error=poly.max_error))
        return responses

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

    def reference(self, first: pb.DistancesRequest, session: SessionRecord) -> Queries:
        """What every query batch of the stream runs: the distances to the reference set the first message
        names (an encrypted one is an operand, read and checked here once)."""
        engine, context = self.engines.get(session.id), self.store.context_path(session.id)
        if first.WhichOneof("kind") == "reference_dataset_id":
            reference = self._encrypted_reference(first.reference_dataset_id, session)
            return Queries(engine, context, functools.partial(squared_distances, projection=None),
                           {"reference": reference})
        plain, projection = self._plain_reference(first.model_id, session)
        return Queries(engine, context, functools.partial(squared_distances, reference=plain, projection=projection))

    def distances(self, queries: Queries, path: Path) -> bytes:
        """The serialized squared distances of the query batch spooled at ``path``."""
        with load_matrix(queries.engine, path, "a query batch", self.work.limits) as batch:
            if batch.tile.cols != 1:
                raise ShapeError(
                    f"queries must be column-packed: encrypt them with packing='columns' (tile=Tile(q, 1)); "
                    f"got tile {batch.tile.rows}x{batch.tile.cols}"
                )
            return apply(self.executor, queries.context, batch, queries.function, queries.engine,
                         queries.operands).to_bytes()

    def _plain_reference(self, model_id: str, session: SessionRecord) -> tuple[np.ndarray, np.ndarray | None]:
        model = self.access.model(model_id, session)
        if model.algorithm != types_pb2.ALGORITHM_NEAREST_NEIGHBORS:
            raise invalid(f"model {model.id} is not a nearest-neighbour reference set (ModelService.UploadModel)")
        plain = plainmodels.loads(self.store.model_blob(model))
        reference = np.asarray(plain["reference"], dtype=np.float64)
        projection = np.asarray(plain["projection"], dtype=np.float64) if "projection" in plain else None
        return reference, projection

    def _encrypted_reference(self, dataset_id: str, session: SessionRecord) -> EncryptedMatrix:
        dataset = self.access.dataset(dataset_id, session)
        if not dataset.layout.reference_set:
            raise invalid(
                f"dataset {dataset.id} is not an encrypted reference set: upload one with "
                "Client.upload_encrypted_reference (DatasetManifest.reference_set, core.neighbors.encrypt_reference)"
            )
        reference = self.store.read_matrix(dataset, 0, self.engines.get(dataset.session_id))
        check_reference(reference)
        return reference


@dataclass(frozen=True)
class Queries:
    """A Distances stream's work: ``function(queries, **operands)`` on the executor for each batch."""

    engine: Engine
    context: Path
    function: BlockFunction
    operands: Mapping[str, EncryptedMatrix] = field(default_factory=dict)
