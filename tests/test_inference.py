"""Batched encrypted inference against its torch twins.

Tolerance: outputs within 1e-5 absolute of torch float64 (the issue's target is 1e-3; CKKS at 2**40 gives
~1e-7 here), polynomial-sigmoid probabilities within 1e-5 of the same polynomial in torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from torch import nn

from ciphergrad.core import Engine, KeyHolder, Tile, plan
from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.inference import (
    PolynomialActivation,
    Square,
    linear_torch,
    mlp_from_torch,
    mlp_torch,
    predict_linear,
    predict_linear_encrypted,
    predict_logistic,
    predict_logistic_encrypted,
    predict_mlp,
)
from ciphergrad.core.polynomial import fit_sigmoid
from ciphergrad.core.tensor import EncryptedMatrix

TOL = 1e-5


@pytest.fixture(scope="module")
def kh() -> KeyHolder:
    return KeyHolder(plan(3))


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    X = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    w = np.random.default_rng(1).normal(0, 0.3, size=X.shape[1])
    return X[:300], data.target[:300], w


_ENGINES: dict[int, Engine] = {}


def _server(kh: KeyHolder, m: EncryptedMatrix) -> EncryptedMatrix:
    """The matrix as the computing party holds it: bound to an engine with the public context only."""
    engine = _ENGINES.setdefault(id(kh), Engine.from_public_context(kh.public_context()))
    return EncryptedMatrix.from_bytes(engine, m.to_bytes())


def _back(kh: KeyHolder, m: EncryptedMatrix) -> np.ndarray:
    return kh.decrypt(EncryptedMatrix.from_bytes(kh.engine, m.to_bytes()))


@pytest.mark.parametrize("packing", ["columns", "rows"])
def test_linear_plain_model(kh: KeyHolder, cancer, packing: str) -> None:
    X, _, w = cancer
    E = _server(kh, kh.encrypt(X, packing=packing))
    out = predict_linear(E, w, 0.25)
    assert out.shape == (300, 1)
    assert out.level == (2 if packing == "columns" else 1)  # 1 level column-packed, 2 row-packed
    np.testing.assert_allclose(_back(kh, out), linear_torch(X, w, 0.25), atol=TOL)


def test_linear_multi_output(kh: KeyHolder, cancer) -> None:
    X, _, w = cancer
    W = np.stack([w, -w, 0.5 * w], axis=1)
    out = predict_linear(kh.encrypt(X, packing="columns"), W, np.array([0.0, 1.0, -1.0]))
    np.testing.assert_allclose(kh.decrypt(out), linear_torch(X, W, np.array([0.0, 1.0, -1.0])), atol=TOL)


def test_linear_encrypted_model(kh: KeyHolder, cancer) -> None:
    X, _, w = cancer
    E = kh.encrypt(X, packing="columns")
    W = kh.encrypt(w[None, :], tile=E.tile)
    B = kh.encrypt(np.array([[0.5]]), tile=E.tile)
    out = predict_linear_encrypted(E, W, B)
    np.testing.assert_allclose(kh.decrypt(out), linear_torch(X, w, 0.5), atol=TOL)
    with pytest.raises(ShapeError):
        predict_linear_encrypted(E, kh.encrypt(w[None, :5], tile=E.tile))


def test_logistic_logit_and_polynomial_probability(kh: KeyHolder, cancer) -> None:
    X, _, w = cancer
    E = kh.encrypt(X, packing="columns")
    logit = kh.decrypt(predict_logistic(E, w, 0.1))[:, 0]
    want = linear_torch(X, w, 0.1)[:, 0]
    np.testing.assert_allclose(logit, want, atol=TOL)
    bound = float(np.max(np.abs(want))) + 1.0
    poly = fit_sigmoid(3, bound)
    prob = predict_logistic(E, w, 0.1, sigmoid=poly)
    assert prob.level == 0  # 1 (linear) + 2 (degree 3)
    np.testing.assert_allclose(kh.decrypt(prob)[:, 0], poly(torch.as_tensor(want)).numpy(), atol=TOL)
    # Encrypted model, client pre-divides the weights by the polynomial's range.
    W = kh.encrypt((w / bound)[None, :], tile=E.tile)
    prob2 = predict_logistic_encrypted(E, W, sigmoid=poly, input_scale=1 / bound)
    np.testing.assert_allclose(kh.decrypt(prob2)[:, 0], poly(linear_torch(X, w)[:, 0]), atol=TOL)


def test_mlp_square_activation_matches_torch(kh: KeyHolder) -> None:
    digits = load_digits()
    X = (digits.data[:200] - digits.data.mean(axis=0)) / np.maximum(digits.data.std(axis=0), 1e-9)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 8), Square(), nn.Linear(8, 10)).to(torch.float64)
    with torch.no_grad():
        net[0].weight.mul_(0.5)  # keep hidden squares modest, like a trained net's
    mlp = mlp_from_torch(net)
    assert mlp.depth == 3
    out = predict_mlp(_server(kh, kh.encrypt(X, packing="columns")), mlp)
    assert out.shape == (200, 10)
    np.testing.assert_allclose(_back(kh, out), mlp_torch(net, X), atol=TOL)


def test_mlp_polynomial_activation(kh: KeyHolder) -> None:
    X = np.random.default_rng(0).normal(size=(50, 6))
    torch.manual_seed(1)
    act = fit_sigmoid(3, 8.0)
    net = nn.Sequential(nn.Linear(6, 4), PolynomialActivation(act), nn.Linear(4, 2)).to(torch.float64)
    mlp = mlp_from_torch(net)
    assert mlp.depth == 4  # 1 + 2 + 1
    with pytest.raises(ParameterError, match="plan\\(depth=4\\)"):
        predict_mlp(kh.encrypt(X, packing="columns"), mlp)
    deep = KeyHolder(plan(4), rotations=[1])  # column packing needs no rotations: skip most Galois keys
    out = predict_mlp(deep.encrypt(X, packing="columns"), mlp)
    np.testing.assert_allclose(deep.decrypt(out), mlp_torch(net, X), atol=TOL)


def test_mlp_export_rejects_unsupported_layers() -> None:
    with pytest.raises(ParameterError, match="ReLU"):
        mlp_from_torch(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)))
    with pytest.raises(ParameterError, match="end with"):
        mlp_from_torch(nn.Sequential(nn.Linear(3, 3), Square()))


def test_row_tiles_other_than_default(kh: KeyHolder, cancer) -> None:
    X, _, w = cancer
    E = kh.encrypt(X, tile=Tile(128, 1))  # several row blocks per feature
    assert E.grid == (3, 30)
    np.testing.assert_allclose(kh.decrypt(predict_linear(E, w)), linear_torch(X, w), atol=TOL)
