"""Plaintext models the server owns (ModelService.UploadModel): protobuf <-> JSON blob <-> core objects.

The blob is the server's own plaintext model (linear, logistic, MLP, nearest-neighbour reference set);
it is stored beside the encrypted models and never sent back to the client.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ciphergrad.core.algorithms import ALGORITHMS
from ciphergrad.core.errors import MalformedInputError, ShapeError
from ciphergrad.core.inference import MLP
from ciphergrad.core.polynomial import Polynomial, fit_sigmoid
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.errors import invalid
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

# Plaintext linear and logistic models share the trainable algorithms' enum values (the registry's).
KINDS = {
    **{entry.name: codec.algorithm_to_proto(entry) for entry in ALGORITHMS.values()},
    "mlp": types_pb2.ALGORITHM_MLP,
    "neighbors": types_pb2.ALGORITHM_NEAREST_NEIGHBORS,
}


def _bias(values: Any, outputs: int, what: str) -> list[float]:
    bias = validation.finite(values, f"{what} bias") or [0.0] * outputs
    if len(bias) != outputs:
        raise ShapeError(f"{what}: {len(bias)} bias values for {outputs} outputs")
    return bias


def from_request(request: pb.UploadModelRequest) -> dict[str, Any]:
    """The request's model as a JSON-ready dict with ``kind``, ``inputs`` and ``outputs``; checks shapes."""
    kind = request.WhichOneof("kind")
    if kind == "linear":
        W = codec.plain_from_proto(request.linear.weights, "linear weights")
        bias = _bias(request.linear.bias, W.shape[1], "linear model")
        return {"kind": kind, "inputs": W.shape[0], "outputs": W.shape[1], "weights": W.tolist(), "bias": bias}
    if kind == "logistic":
        message = request.logistic
        w = validation.finite(message.weights, "logistic weights")
        if not w:
            raise ShapeError("logistic model: weights are empty")
        (bias,) = validation.finite([message.bias], "logistic bias")
        (bound,) = validation.finite([message.sigmoid_bound], "sigmoid_bound")
        low, high = validation.SIGMOID_BOUNDS
        if bound and not low <= bound <= high:
            raise invalid(f"sigmoid_bound={bound:g} must lie in [{low:g}, {high:g}] (0: the default 8)")
        if message.sigmoid_degree not in (0, 3, 5, 7):
            raise invalid(f"sigmoid_degree={message.sigmoid_degree} must be 3, 5 or 7 (0: the default 3)")
        sigmoid = fit_sigmoid(message.sigmoid_degree or 3, bound or 8.0)
        return {
            "kind": kind,
            "inputs": len(w),
            "outputs": 1,
            "weights": w,
            "bias": bias,
            "sigmoid": sigmoid.to_dict(),
        }
    if kind == "mlp":
        layers = []
        for index, layer in enumerate(request.mlp.layers):
            W = codec.plain_from_proto(layer.weights, f"layer {index} weights")
            layers.append({"weights": W.tolist(), "bias": _bias(layer.bias, W.shape[1], f"layer {index}")})
        activations = [
            _polynomial_from_proto(a.polynomial).to_dict() if a.HasField("polynomial") else None
            for a in request.mlp.activations
        ]
        model = {"kind": kind, "layers": layers, "activations": activations}
        mlp = to_mlp(model)  # checks the layer chain
        model.update(inputs=mlp.layers[0][0].shape[0], outputs=mlp.layers[-1][0].shape[1])
        return model
    if kind == "neighbors":
        R = codec.plain_from_proto(request.neighbors.reference, "reference set")
        model = {"kind": kind, "inputs": R.shape[1], "outputs": R.shape[0], "reference": R.tolist()}
        if request.neighbors.HasField("projection") and request.neighbors.projection.rows:
            P = codec.plain_from_proto(request.neighbors.projection, "projection")
            if P.shape[0] != R.shape[1]:
                raise ShapeError(f"projection of shape {P.shape} does not match {R.shape[1]} reference features")
            model["projection"] = P.tolist()
        return model
    raise MalformedInputError("UploadModel: set one of linear, logistic, mlp or neighbors")


def _polynomial_from_proto(message: pb.Polynomial) -> Polynomial:
    coefficients = validation.finite(message.coefficients, "activation polynomial coefficients")
    (bound,) = validation.finite([message.bound], "activation polynomial bound")
    if not coefficients or not bound > 0:
        raise MalformedInputError("an activation polynomial needs coefficients and a positive bound")
    (max_error,) = validation.finite([message.max_error], "activation polynomial max_error")
    return Polynomial(tuple(coefficients), bound, message.name or "custom", max_error)


def polynomial(data: dict[str, Any]) -> Polynomial:
    return Polynomial(tuple(data["coefficients"]), data["bound"], data["name"], data["max_error"])


def to_mlp(model: dict[str, Any]) -> MLP:
    layers = tuple((np.asarray(x["weights"]), np.asarray(x["bias"])) for x in model["layers"])
    activations = tuple(None if a is None else polynomial(a) for a in model["activations"])
    if not layers or len(activations) != len(layers) - 1:
        raise ShapeError(
            f"an MLP needs one activation between consecutive layers: {len(layers)} layers, "
            f"{len(activations)} activations"
        )
    for index in range(1, len(layers)):
        if layers[index][0].shape[0] != layers[index - 1][0].shape[1]:
            raise ShapeError(
                f"layer {index} takes {layers[index][0].shape[0]} inputs but layer {index - 1} gives "
                f"{layers[index - 1][0].shape[1]}"
            )
    return MLP(layers, activations)


def dumps(model: dict[str, Any]) -> bytes:
    return json.dumps(model).encode()


def loads(data: bytes) -> dict[str, Any]:
    return json.loads(data)
