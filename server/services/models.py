"""ModelService: encrypted (client-owned) and plaintext (server-owned) models, batched encrypted inference
(async shells, sync bodies: ``server.rpc.work``). Each prediction batch is checked and computed on the
server's executor (``server.execution``: in this process, or on the Ray pool, up to one batch per worker in
flight), answers in the order of the batches. Invariant: with Ray this process loads no context and parses no
ciphertext for Predict (the batch, the model's weights and their checks all go to the worker,
``Executor.run_files``); it parses protobuf, spools, routes and streams bytes."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ciphergrad.core.errors import LevelError, ShapeError
from ciphergrad.core.flat import FlatMatrix
from ciphergrad.core.inference import (
    predict_linear,
    predict_linear_encrypted,
    predict_logistic,
    predict_logistic_encrypted,
    predict_mlp,
)
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import BlockFunction, Executor
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import invalid, precondition, rpc
from ciphergrad.server.rpc.uploads import BatchWork, answer_batches
from ciphergrad.server.rpc.work import Work
from ciphergrad.server.store import plainmodels
from ciphergrad.server.store.records import ModelRecord, SessionRecord
from ciphergrad.server.store.store import Store, new_id
from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2_grpc as pb_grpc
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2


def _column_packed(rows: EncryptedMatrix, inputs: int) -> None:
    if rows.shape[1] != inputs:
        raise ShapeError(f"rows have {rows.shape[1]} columns; the model takes {inputs}")
    if rows.tile.cols != 1:
        raise ShapeError(
            f"a server-owned model takes column-packed rows: encrypt them with packing='columns' "
            f"(tile (R, 1)); got tile {rows.tile.rows}x{rows.tile.cols}"
        )


class ModelServicer(pb_grpc.ModelServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, max_batch: int, work: Work,
                 executor: Executor) -> None:
        self.store, self.access, self.engines, self.max_batch = store, access, engines, max_batch
        self.work, self.executor = work, executor
        self.counts = engines.tally()  # operations of the batches the executor ran elsewhere (Ray's workers)

    def _weights(self, model: ModelRecord) -> FlatMatrix | None:
        """The stored encrypted weights as flat bytes (never parsed: no context loaded for them)."""
        if model.server_owned:
            return None  # the server's plaintext model is never sent out
        return FlatMatrix(self.store.model_blob(model))

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.GetModelResponse:
        return await self.work.io(self.get_model, request, context.invocation_metadata())

    def get_model(self, request: pb.GetModelRequest, metadata: Metadata) -> pb.GetModelResponse:
        model = self.access.model(request.model_id, self.access.session(metadata))
        return pb.GetModelResponse(model=model.to_proto(self._weights(model)))

    @rpc
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return await self.work.io(self.list_models, context.invocation_metadata())

    def list_models(self, metadata: Metadata) -> pb.ListModelsResponse:
        session = self.access.session(metadata)
        return pb.ListModelsResponse(models=[model.to_proto() for model in self.store.models(session.id)])

    @rpc
    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteModelResponse:
        return await self.work.io(self.delete_model, request, context.invocation_metadata())

    def delete_model(self, request: pb.DeleteModelRequest, metadata: Metadata) -> pb.DeleteModelResponse:
        self.store.delete_model(self.access.model(request.model_id, self.access.session(metadata)))
        return pb.DeleteModelResponse()

    @rpc
    async def UploadModel(
        self, request: pb.UploadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadModelResponse:
        return await self.work.io(self.upload_model, request, context.invocation_metadata())

    def upload_model(self, request: pb.UploadModelRequest, metadata: Metadata) -> pb.UploadModelResponse:
        session = self.access.session(metadata)
        plain = plainmodels.from_request(request)
        model = ModelRecord(
            id=new_id(),
            session_id=session.id,
            job_id="",
            dataset_id="",
            algorithm=plainmodels.KINDS[plain["kind"]],
            weight_scale=1.0,
            metadata={
                "server_owned": True,
                "kind": plain["kind"],
                "inputs": plain["inputs"],
                "outputs": plain["outputs"],
                "display_name": request.display_name,
            },
            column_names=(),
            created=time.time(),
        )
        self.store.add_model(model, plainmodels.dumps(plain))
        return pb.UploadModelResponse(model=model.to_proto())

    @rpc
    async def Predict(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictResponse]:
        async with self.work.open_stream(
            request_iterator, context, "Predict", self.access.session, kinds=("model_id", "options"),
            refusal="Predict: send the model_id (or options) first, then batches of encrypted rows",
        ) as (session, requests, first):
            options = first.options if first.HasField("options") else pb.PredictOptions(model_id=first.model_id)
            predictor = await self.work.he(self.predictor, options, session)
            replies = answer_batches(
                self.work, requests, self.store.staging, self.max_batch, field="rows", what="a prediction batch",
                answer=functools.partial(self.predict_batch, predictor), width=self.executor.parallelism,
                response=pb.PredictResponse, response_field="predictions",
            )
            async with contextlib.aclosing(replies):
                async for message in replies:
                    yield message

    def predict_batch(self, predictor: Predictor, path: Path) -> bytes:
        """The serialized predictions for the batch of rows spooled at ``path``: parsed, checked and computed
        where the executor keeps the session's context (``uploads.answer_batch``); this process streams the
        bytes back (with Ray it parses none of them)."""
        try:
            return predictor.answer(self.executor, self.work.limits, self.counts, "a prediction batch", path)
        except LevelError as exc:
            if not predictor.sigmoid_depth:
                raise
            raise precondition(
                f"the server-side sigmoid needs {predictor.sigmoid_depth} levels after the encrypted-model "
                f"logit and these parameters leave fewer ({exc}); apply the sigmoid on the client after "
                "decryption (Client.predict_proba) or use a deeper plan"
            ) from exc

    def predictor(self, options: pb.PredictOptions, session: SessionRecord) -> Predictor:
        """What the batches of a Predict stream run: the model's function of an encrypted batch of rows. An
        encrypted model's weights go to the executor as the stored file, parsed only where the batches are."""
        model = self.access.model(options.model_id, session)
        logistic = model.algorithm == types_pb2.ALGORITHM_LOGISTIC_REGRESSION
        if options.server_sigmoid and not logistic:
            raise invalid("server_sigmoid applies to logistic models only")
        engine = functools.partial(self.engines.get, model.session_id)
        context = self.store.context_path(model.session_id)
        if model.server_owned:
            function, check = _plain_model(plainmodels.loads(self.store.model_blob(model)), options)
            return Predictor(engine, context, function, check)
        if model.metadata.get("classes", 2) > 2:
            raise precondition(
                f"model {model.id} is one-vs-rest over {model.metadata['classes']} classes: decrypt it and predict "
                "on the key holder's side (EncryptedLogisticRegression.predict); encrypted Predict serves one output"
            )
        weights = {"weights": self.store.model_path(model.session_id, model.id)}
        if not options.server_sigmoid:  # the linear prediction or logit, still times the model's weight_scale
            return Predictor(engine, context, predict_linear_encrypted, _fits, weights)
        sigmoid = plainmodels.polynomial(model.metadata["sigmoid"])
        function = functools.partial(predict_logistic_encrypted, sigmoid=sigmoid, input_scale=model.weight_scale)
        return Predictor(engine, context, function, _fits, weights, sigmoid.depth)


@dataclass(frozen=True)
class Predictor(BatchWork):
    """A Predict stream's model (``BatchWork``: its check of the rows' layout, then its function of them)."""

    sigmoid_depth: int = 0  # levels a server-side sigmoid takes after an encrypted model's logit (0: none)


def _fits(rows: EncryptedMatrix, weights: EncryptedMatrix) -> None:
    """Rows an encrypted model takes: its columns, in its tile."""
    if rows.shape[1] != weights.shape[1] or rows.tile != weights.tile:
        raise ShapeError(
            f"rows of shape {rows.shape} in tile {rows.tile.rows}x{rows.tile.cols} do not fit the "
            f"model: expected {weights.shape[1]} columns in tile {weights.tile.rows}x{weights.tile.cols}"
        )


def _plain_model(model: dict[str, Any], options: pb.PredictOptions
                 ) -> tuple[BlockFunction, Callable[[EncryptedMatrix], None]]:
    """A server-owned model's function of a column-packed batch, and the check of that layout."""
    kind = model["kind"]
    if kind == "neighbors":
        raise invalid("a nearest-neighbour reference set has no predictions: use ComputeService.Distances")
    check = functools.partial(_column_packed, inputs=model["inputs"])
    if kind == "mlp":
        return functools.partial(predict_mlp, mlp=plainmodels.to_mlp(model)), check
    weights = np.asarray(model["weights"], dtype=np.float64)
    if kind == "logistic":
        sigmoid = plainmodels.polynomial(model["sigmoid"]) if options.server_sigmoid else None
        return functools.partial(predict_logistic, weights=weights, bias=model["bias"], sigmoid=sigmoid), check
    return functools.partial(predict_linear, weights=weights, bias=np.asarray(model["bias"])), check
