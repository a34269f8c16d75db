"""ComputeService: encrypted statistics (core.stats) and nearest-neighbour distances (core.neighbors).

Results stay encrypted; the client decrypts them and finishes square roots, divisions and the top-k.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from core import stats
from core.engine import Engine
from core.errors import ShapeError
from core.neighbors import check_reference, squared_distances
from core.tensor import EncryptedMatrix
from server import plainmodels, validation
from server.access import Access
from server.engines import EngineCache
from server.errors import invalid, rpc
from server.records import DatasetRecord, SessionRecord
from server.storage import Store
from server.uploads import Budget, receive_matrices
from wire import chunks, codec
from wire.proto_gen.ciphergrad.v1 import compute_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import compute_service_pb2_grpc as pb_grpc
from wire.proto_gen.ciphergrad.v1 import types_pb2


class ComputeServicer(pb_grpc.ComputeServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, max_upload: int, max_batch: int) -> None:
        self.store, self.access, self.engines = store, access, engines
        self.max_upload, self.max_batch = max_upload, max_batch

    @rpc
    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> Iterator[pb.DescribeResponse]:
        dataset = self.access.dataset(request.dataset_id, self.access.session(context))
        validation.ddof(request.ddof, dataset.rows)
        X = self.store.read_matrix(dataset, 0, self.engines.get(dataset.session_id))
        if request.covariance and X.tile.cols != 1:
            raise ShapeError(
                f"the covariance needs a dataset uploaded with packing='columns' (one ciphertext per column); "
                f"dataset {dataset.id} is packed by rows (tile {X.tile.rows}x{X.tile.cols}): upload it again "
                "with Client.upload(X, packing='columns')"
            )
        mean, variance = stats.standardization_params(X, ddof=request.ddof)
        yield pb.DescribeResponse(statistic="mean", value=codec.matrix_to_proto(mean))
        yield pb.DescribeResponse(statistic="variance", value=codec.matrix_to_proto(variance))
        if request.covariance:
            cov = stats.covariance(X, ddof=request.ddof)
            yield pb.DescribeResponse(statistic="covariance", value=codec.matrix_to_proto(cov))

    @rpc
    def Metrics(
        self, request_iterator: Iterator[pb.MetricsRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.MetricsResponse]:
        session = self.access.session(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "spec":
            raise invalid("Metrics: send a MetricsSpec first, then the predictions (and targets) as chunks")
        spec = first.spec
        validation.mae_spec(spec.mae_bound, spec.mae_degree)
        dataset = self.access.dataset(spec.dataset_id, session) if spec.dataset_id else None
        if dataset is not None and dataset.layout.features_only:
            raise invalid(f"dataset {dataset.id} has no targets (uploaded features_only)")
        engine = self.engines.get(session.id)
        with self.store.staging() as scratch:
            yield from self._metrics(request_iterator, spec, dataset, engine, scratch)

    def _metrics(
        self,
        request_iterator: Iterator[pb.MetricsRequest],
        spec: pb.MetricsSpec,
        dataset: DatasetRecord | None,
        engine: Engine,
        scratch: Path,
    ) -> Iterator[pb.MetricsResponse]:
        # Predictions and targets are each one matrix (a metric needs all rows): limited by --max-upload-mb.
        budget = Budget(self.max_upload)
        matrices = receive_matrices(request_iterator, "chunk", engine, budget, "the metrics input", scratch)
        predictions = next(matrices, None)
        if predictions is None:
            raise invalid("Metrics: the predictions are missing")
        if dataset is not None:
            targets = self.store.read_matrix(dataset, 1, engine)
            what = f"the targets of dataset {dataset.id}"
        else:
            targets = next(matrices, None)
            if targets is None:
                raise invalid("Metrics: without a dataset_id the targets must follow the predictions")
            what = "the targets"
        if next(matrices, None) is not None:
            raise invalid("Metrics: more matrices than the predictions and targets")
        if predictions.shape != targets.shape or predictions.tile != targets.tile:
            raise ShapeError(
                f"predictions of shape {predictions.shape} in tile {predictions.tile.rows}x{predictions.tile.cols} "
                f"do not match {what}: shape {targets.shape} in tile {targets.tile.rows}x{targets.tile.cols}; "
                "encrypt the predictions with that shape and tile"
            )
        try:
            mse, target_variance = stats.r2_parts(predictions, targets)
        except RuntimeError as exc:
            if "transparent" not in str(exc):
                raise
            # SEAL refuses a difference of identical ciphertexts (an all-zero "transparent" result).
            raise invalid(
                f"the predictions are the very ciphertexts of {what}, so their difference is not a ciphertext: "
                "encrypt the predictions afresh (KeyHolder.encrypt) and send those"
            ) from exc
        yield pb.MetricsResponse(metric="mse", value=codec.matrix_to_proto(mse))
        yield pb.MetricsResponse(metric="target_variance", value=codec.matrix_to_proto(target_variance))
        if spec.mae_bound:
            value, poly = stats.mae(predictions, targets, bound=spec.mae_bound, degree=spec.mae_degree or 6)
            yield pb.MetricsResponse(metric="mae", value=codec.matrix_to_proto(value), max_error=poly.max_error)

    @rpc
    def Distances(
        self, request_iterator: Iterator[pb.DistancesRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DistancesResponse]:
        session = self.access.session(context)
        first = next(request_iterator, None)
        kind = first.WhichOneof("kind") if first is not None else None
        if kind == "reference_dataset_id":
            reference, projection = self._encrypted_reference(first.reference_dataset_id, session), None
        elif kind == "model_id":
            reference, projection = self._plain_reference(first.model_id, session)
        else:
            raise invalid(
                "Distances: send the reference set first (model_id of a plaintext one, or reference_dataset_id "
                "of one the client encrypted), then batches of encrypted queries"
            )
        engine = self.engines.get(session.id)
        budget = Budget(self.max_batch, "--max-batch-mb")
        with self.store.staging() as scratch:
            for queries in receive_matrices(request_iterator, "queries", engine, budget, "a query batch", scratch):
                if queries.tile.cols != 1:
                    raise ShapeError(
                        f"queries must be column-packed: encrypt them with packing='columns' (tile=Tile(q, 1)); "
                        f"got tile {queries.tile.rows}x{queries.tile.cols}"
                    )
                distances = squared_distances(queries, reference, projection)
                del queries
                yield from chunks.send(pb.DistancesResponse, "distances", [distances.to_bytes()])

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
