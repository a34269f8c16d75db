"""Batched encrypted inference through ModelService over 127.0.0.1: server-owned plaintext models (linear,
logistic, an MLP exported from torch) and client-owned encrypted models, against torch.

Tolerance: 1e-3 absolute (the issue's target; CKKS at 2**40 gives ~1e-6 here); the server-side polynomial
sigmoid is compared with the same polynomial in torch, the client-side one is exact.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from service_support import local_server
from sklearn.datasets import load_breast_cancer, load_digits
from torch import nn

from ciphergrad.client import Client
from ciphergrad.core import Tile, plan
from ciphergrad.core.inference import Square, linear_torch, mlp_torch
from ciphergrad.core.polynomial import fit_sigmoid

TOL = 1e-3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with local_server(Path(tmp_path_factory.mktemp("data"))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    """Column-packed inputs need no rotations: the session's context carries almost no Galois keys."""
    with Client(server.address) as connected:
        connected.create_session(plan(3), tiles=[Tile(2, 1)])
        yield connected


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    X = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    return X[:300], np.random.default_rng(1).normal(0, 0.3, size=X.shape[1])


def test_server_owned_linear(client, cancer) -> None:
    X, w = cancer
    W = np.stack([w, -0.5 * w], axis=1)
    model = client.upload_model(W, [0.25, -1.0], display_name="two outputs")
    assert model.server_owned and model.input_columns == 30 and model.output_columns == 2
    assert not model.weights.ciphertexts  # the server's model never leaves it
    got = client.predict(model, X, batch_rows=128)  # three batches, the last one partial
    np.testing.assert_allclose(got, linear_torch(X, W, np.array([0.25, -1.0])), atol=TOL)
    # A torch nn.Linear uploads the same way.
    layer = nn.Linear(30, 1).to(torch.float64)
    single = client.upload_model(layer)
    want = layer(torch.as_tensor(X)).detach().numpy()[:, 0]
    np.testing.assert_allclose(client.predict(single, X), want, atol=TOL)


def test_server_owned_logistic_logit_and_sigmoids(client, cancer) -> None:
    X, w = cancer
    model = client.upload_model(w, 0.1, logistic=True, sigmoid_bound=8.0)
    logit = linear_torch(X, w, 0.1)[:, 0]
    assert np.max(np.abs(logit)) < 8.0
    np.testing.assert_allclose(client.predict(model, X), logit, atol=TOL)
    np.testing.assert_allclose(client.predict_proba(model, X), 1 / (1 + np.exp(-logit)), atol=TOL)
    poly = fit_sigmoid(3, 8.0)
    np.testing.assert_allclose(client.predict_proba(model, X, server_sigmoid=True), poly(logit), atol=TOL)


def test_server_owned_mlp_from_torch(client) -> None:
    digits = load_digits()
    X = (digits.data[:200] - digits.data.mean(axis=0)) / np.maximum(digits.data.std(axis=0), 1e-9)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 8), Square(), nn.Linear(8, 10))
    with torch.no_grad():
        net[0].weight.mul_(0.5)
    model = client.upload_model(net)
    assert model.algorithm == 3 and model.output_columns == 10
    got = client.predict(model, X)
    assert got.shape == (200, 10)
    np.testing.assert_allclose(got, mlp_torch(net, X), atol=TOL)


def test_wrong_layout_and_other_sessions(server, client, cancer) -> None:
    X, w = cancer
    model = client.upload_model(w)
    with pytest.raises(grpc.RpcError) as caught:
        _row_packed_predict(client, model, X[:8])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "packing='columns'" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        client.predict(model, X[:8], server_sigmoid=True)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "logistic" in caught.value.details()
    with Client(server.address) as other:
        other.create_session(plan(3), tiles=[Tile(2, 1)])
        with pytest.raises(grpc.RpcError) as caught:
            other.predict(model, X[:8])
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as caught:
            other.get_model(model.model_id)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _row_packed_predict(client: Client, model, X: np.ndarray) -> None:
    """Rows encrypted side by side (the training layout) sent to a server-owned model."""
    from ciphergrad.wire.chunks import chunks as _chunks
    from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2

    data = client.key_holder.encrypt(X, tile=Tile(8, 32)).to_bytes()

    def requests():
        yield model_service_pb2.PredictRequest(model_id=model.model_id)
        for chunk in _chunks(data):
            yield model_service_pb2.PredictRequest(rows=chunk)

    list(client.models.Predict(requests(), metadata=client.metadata))
