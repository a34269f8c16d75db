"""ModelService calls: trained (encrypted) and uploaded (plaintext, server-owned) models, their weights, and
encrypted predictions streamed in batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from ciphergrad.client.session import Connection, as_matrix
from ciphergrad.core.inference import MLP
from ciphergrad.core.layout import Tile, next_pow2
from ciphergrad.core.polynomial import Polynomial
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2


class ModelCalls(Connection):
    # -- models -------------------------------------------------------------------------------------
    def get_model(self, model_id: str) -> model_service_pb2.Model:
        request = model_service_pb2.GetModelRequest(model_id=model_id)
        model = self.models.GetModel(request, metadata=self.metadata).model
        self.transfer.add("received", "model", model.ByteSize())
        return model

    def list_models(self) -> list[model_service_pb2.Model]:
        return list(self.models.ListModels(model_service_pb2.ListModelsRequest(), metadata=self.metadata).models)

    def weights(self, model: model_service_pb2.Model) -> np.ndarray:
        """The model's decrypted coefficients (one per feature column, the intercept column included)."""
        entry = codec.algorithm_from_proto(model.algorithm)
        if entry is None or model.server_owned:
            raise ValueError(f"model {model.model_id} is server-owned: its plaintext weights stay on the server")
        return entry.decode(self._holder().decrypt(self._matrix(model.weights)), model.weight_scale)

    def upload_model(
        self,
        model: Any,
        bias: Any = None,
        *,
        logistic: bool = False,
        sigmoid_degree: int = 3,
        sigmoid_bound: float = 8.0,
        display_name: str = "",
    ) -> model_service_pb2.Model:
        """Register a plaintext model the server owns; predictions then take column-packed encrypted rows.

        ``model``: weights ``(d,)`` or ``(d, k)`` (with ``bias``; ``logistic=True`` for a binary logistic
        model, whose server-side sigmoid, when asked, is the degree-``sigmoid_degree`` polynomial on
        ``[-sigmoid_bound, sigmoid_bound]``), a torch ``nn.Linear``, an ``nn.Sequential`` of linear layers and
        polynomial activations (exported with ``core.inference.mlp_from_torch``) or a ``core.inference.MLP``.
        """
        request = model_service_pb2.UploadModelRequest(display_name=display_name)
        if _is_torch_module(model):
            from torch import nn

            from ciphergrad.core.inference import mlp_from_torch

            if isinstance(model, nn.Linear):
                weights = model.weight.detach().double().numpy().T
                bias = model.bias.detach().double().numpy() if model.bias is not None else None
                return self.upload_model(
                    weights,
                    bias,
                    logistic=logistic,
                    display_name=display_name,
                    sigmoid_degree=sigmoid_degree,
                    sigmoid_bound=sigmoid_bound,
                )
            model = mlp_from_torch(model)
        if isinstance(model, MLP):
            layers = [
                model_service_pb2.MlpLayer(weights=codec.plain_to_proto(w), bias=np.asarray(b).reshape(-1).tolist())
                for w, b in model.layers
            ]
            activations = [
                model_service_pb2.MlpActivation(polynomial=_polynomial(a) if a is not None else None)
                for a in model.activations
            ]
            request.mlp.CopyFrom(model_service_pb2.MlpModel(layers=layers, activations=activations))
        elif logistic:
            weights = np.asarray(model, dtype=np.float64).reshape(-1)
            request.logistic.CopyFrom(
                model_service_pb2.LogisticModel(
                    weights=weights.tolist(),
                    bias=float(0.0 if bias is None else np.asarray(bias).reshape(-1)[0]),
                    sigmoid_degree=sigmoid_degree,
                    sigmoid_bound=sigmoid_bound,
                )
            )
        else:
            weights = np.asarray(model, dtype=np.float64)
            weights = weights[:, None] if weights.ndim == 1 else weights
            values = [] if bias is None else np.broadcast_to(np.asarray(bias, float), (weights.shape[1],)).tolist()
            request.linear.CopyFrom(model_service_pb2.LinearModel(weights=codec.plain_to_proto(weights), bias=values))
        return self.models.UploadModel(request, metadata=self.metadata).model

    def upload_reference(self, reference: Any, projection: Any = None, *, display_name: str = "") -> Any:
        """Store a plaintext nearest-neighbour reference set (server-owned) with an optional ``(d, c)``
        projection applied to queries and references; ``distances`` then scores encrypted queries."""
        neighbors = model_service_pb2.NeighborsModel(reference=codec.plain_to_proto(as_matrix(reference)))
        if projection is not None:
            neighbors.projection.CopyFrom(codec.plain_to_proto(as_matrix(projection)))
        request = model_service_pb2.UploadModelRequest(display_name=display_name, neighbors=neighbors)
        return self.models.UploadModel(request, metadata=self.metadata).model

    def _input_tile(self, model: model_service_pb2.Model, batch_rows: int | None) -> Tile:
        """Client-owned models take rows in their weights' tile; server-owned ones column-packed rows."""
        if model.server_owned:
            return Tile(min(self._holder().params.slots, next_pow2(batch_rows or self._holder().params.slots)), 1)
        return self._matrix(model.weights).tile

    def predict(
        self,
        model: model_service_pb2.Model,
        X: Any,
        *,
        server_sigmoid: bool = False,
        batch_rows: int | None = None,
    ) -> np.ndarray:
        """Encrypted inference: rows go out encrypted, predictions come back encrypted and are decrypted.

        Returns ``(n,)`` for one output (the logit for logistic models, or with ``server_sigmoid`` the
        server's polynomial sigmoid of it), ``(n, k)`` for several (an MLP).
        """
        X = as_matrix(X)
        tile = self._input_tile(model, batch_rows)
        batch_rows = batch_rows or (tile.rows if model.server_owned else max(tile.rows * 16, 1))
        options = model_service_pb2.PredictOptions(model_id=model.model_id, server_sigmoid=server_sigmoid)
        first = model_service_pb2.PredictRequest(options=options)
        scale = 1.0 if (server_sigmoid or model.server_owned or not model.weight_scale) else model.weight_scale
        out = [
            r / scale
            for r in self._stream_batches(self.models.Predict, first, "rows", X, tile, batch_rows, "predict rows")
        ]
        if not out:
            return np.empty(0)
        result = np.concatenate(out, axis=0)
        return result.reshape(-1) if result.shape[1] == 1 else result

    def predict_proba(
        self, model: model_service_pb2.Model, X: Any, *, server_sigmoid: bool = False, **kw: Any
    ) -> np.ndarray:
        """Positive-class probabilities of a logistic model: the exact sigmoid of the decrypted logit, or
        (``server_sigmoid``) the server's polynomial approximation, decrypted."""
        if server_sigmoid:
            return self.predict(model, X, server_sigmoid=True, **kw)
        return 1.0 / (1.0 + np.exp(-self.predict(model, X, **kw)))



def _is_torch_module(value: Any) -> bool:
    return type(value).__module__.startswith("torch") or hasattr(value, "named_parameters")


def _polynomial(poly: Polynomial) -> model_service_pb2.Polynomial:
    return model_service_pb2.Polynomial(
        coefficients=list(poly.coefficients), bound=poly.bound, name=poly.name, max_error=poly.max_error
    )


