"""ModelService: encrypted models and batched encrypted inference."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from core.errors import ShapeError
from core.tensor import EncryptedMatrix
from server import convert
from server.access import Access
from server.engines import EngineCache
from server.errors import invalid, rpc
from server.jobs import model_to_proto
from server.proto_gen.ciphergrad.v1 import model_service_pb2 as pb
from server.proto_gen.ciphergrad.v1 import model_service_pb2_grpc as pb_grpc
from server.storage import Store
from server.uploads import Budget


class ModelServicer(pb_grpc.ModelServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, max_upload: int) -> None:
        self.store, self.access, self.engines, self.max_upload = store, access, engines, max_upload

    def _weights(self, row: dict[str, Any]) -> EncryptedMatrix:
        engine = self.engines.get(row["session_id"])
        return EncryptedMatrix.from_bytes(engine, self.store.model_path(row["session_id"], row["id"]).read_bytes())

    @rpc
    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.GetModelResponse:
        row = self.access.owned("models", request.model_id, self.access.session(context))
        return pb.GetModelResponse(model=model_to_proto(row, self._weights(row)))

    @rpc
    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        session = self.access.session(context)
        return pb.ListModelsResponse(models=[model_to_proto(r) for r in self.store.list("models", session["id"])])

    @rpc
    def DeleteModel(self, request: pb.DeleteModelRequest, context: grpc.ServicerContext) -> pb.DeleteModelResponse:
        row = self.access.owned("models", request.model_id, self.access.session(context))
        self.store.delete("models", row["id"])
        self.store.remove(self.store.model_path(row["session_id"], row["id"]))
        return pb.DeleteModelResponse()

    @rpc
    def Predict(
        self, request_iterator: Iterator[pb.PredictRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.PredictResponse]:
        session = self.access.session(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "model_id":
            raise invalid("Predict: send the model_id first, then batches of encrypted rows")
        row = self.access.owned("models", first.model_id, session)
        weights = self._weights(row)
        engine = weights.engine
        budget = Budget(self.max_upload)
        buffer = bytearray()
        for request in request_iterator:
            if request.WhichOneof("kind") != "rows":
                raise invalid("Predict: only `rows` chunks may follow the model_id")
            budget.spend(len(request.rows.data), "the prediction input")
            buffer += request.rows.data
            if not request.rows.last:
                continue
            rows = EncryptedMatrix.from_bytes(engine, bytes(buffer))
            buffer.clear()
            budget = Budget(self.max_upload)  # the limit applies per batch, not per stream
            if rows.shape[1] != weights.shape[1] or rows.tile != weights.tile:
                raise ShapeError(
                    f"rows of shape {rows.shape} in tile {rows.tile.rows}x{rows.tile.cols} do not fit the "
                    f"model: expected {weights.shape[1]} columns in tile {weights.tile.rows}x{weights.tile.cols}"
                )
            # The linear model's prediction, still multiplied by the model's weight_scale.
            predictions = (rows * weights).sum(axis=1)
            for chunk in convert.chunks(predictions.to_bytes()):
                yield pb.PredictResponse(predictions=chunk)
        if buffer:
            raise invalid("Predict: the stream ended inside a batch (no chunk marked `last`)")
