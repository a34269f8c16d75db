"""Batched encrypted inference: linear and logistic models, and small MLPs with polynomial activations.

Many rows share each ciphertext (SIMD). The fast layout is column packing (``packing='columns'``, tile
``(R, 1)``): every feature of R rows is one ciphertext, so ``X @ W`` is plaintext multiplications and
additions only — no rotations, no masks, one level per linear layer. Row packing works too (2 levels and
rotations per layer), e.g. for data already encrypted that way.

The model is either plaintext on the server (the server owns it: ``predict_linear``, ``predict_mlp``) or
encrypted by the client (``predict_linear_encrypted``: weights as a ``(1, d)`` matrix in the data's tile).
Logistic models return the encrypted logit by default (the client applies sigmoid or a threshold after
decryption, exactly); pass a polynomial to get an approximate probability computed on the server.

Each function has a torch twin (``*_torch``) used by the tests and the benchmark. torch is imported only by
the twins and the torch-facing names (``Square``, ``PolynomialActivation``, ``mlp_from_torch``, ``mlp_torch``,
from ``core.torch_models`` on first use), so a server evaluates models without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.polynomial import Polynomial, evaluate
from ciphergrad.core.tensor import EncryptedMatrix

_TORCH_NAMES = ("PolynomialActivation", "Square", "mlp_from_torch", "mlp_torch", "train_square_mlp")
__all__ = [
    "MLP",
    "linear_torch",
    "predict_linear",
    "predict_linear_encrypted",
    "predict_logistic",
    "predict_logistic_encrypted",
    "predict_mlp",
    *_TORCH_NAMES,
]


# -- linear and logistic ----------------------------------------------------------------------------
def _weights(weights: np.ndarray, d: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    if w.ndim != 2 or w.shape[0] != d:
        raise ShapeError(f"weights of shape {np.shape(weights)} do not match {d} features")
    return w


def predict_linear(X: EncryptedMatrix, weights: np.ndarray, bias: float | np.ndarray = 0.0) -> EncryptedMatrix:
    """``X @ weights + bias`` with a plaintext model: ``(n, k)`` (1 level column-packed, 2 row-packed)."""
    w = _weights(weights, X.shape[1])
    out = X @ w
    b = np.broadcast_to(np.asarray(bias, dtype=np.float64).reshape(1, -1), (1, w.shape[1]))
    return out + b if np.any(b) else out


def predict_linear_encrypted(
    X: EncryptedMatrix, weights: EncryptedMatrix, bias: EncryptedMatrix | None = None
) -> EncryptedMatrix:
    """``X @ w.T + b`` with an encrypted ``(1, d)`` model (and ``(1, 1)`` bias) in X's tile: ``(n, 1)``."""
    if weights.shape != (1, X.shape[1]):
        raise ShapeError(f"encrypted weights have shape {weights.shape}; expected (1, {X.shape[1]})")
    out = (X * weights).sum(axis=1)
    return out if bias is None else out + bias


def predict_logistic(
    X: EncryptedMatrix,
    weights: np.ndarray,
    bias: float = 0.0,
    sigmoid: Polynomial | None = None,
) -> EncryptedMatrix:
    """The logit ``X @ w + b`` or, given a sigmoid polynomial, its approximate probability.

    With a polynomial the model is divided by ``sigmoid.bound`` inside the plaintext product (free), so
    the polynomial runs on inputs in [-1, 1] (see ``core.polynomial.evaluate``); levels: 1 + its depth
    column-packed (degree 3: 3 levels in all, which a depth-3 plan holds).
    """
    if sigmoid is None:
        return predict_linear(X, weights, bias)
    scale = 1.0 / sigmoid.bound
    z = predict_linear(X, np.asarray(weights, dtype=np.float64) * scale, float(bias) * scale)
    return evaluate(sigmoid, z, input_scale=scale)


def predict_logistic_encrypted(
    X: EncryptedMatrix,
    weights: EncryptedMatrix,
    bias: EncryptedMatrix | None = None,
    sigmoid: Polynomial | None = None,
    input_scale: float = 1.0,
) -> EncryptedMatrix:
    """Encrypted-model logistic inference; ``input_scale``: the client encrypted ``w * input_scale``."""
    z = predict_linear_encrypted(X, weights, bias)
    return z if sigmoid is None else evaluate(sigmoid, z, input_scale=input_scale)


def linear_torch(X: np.ndarray, weights: np.ndarray, bias: float | np.ndarray = 0.0) -> np.ndarray:
    """Torch twin of ``predict_linear`` (float64)."""
    import torch

    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    w = torch.as_tensor(_weights(weights, Xt.shape[1]))
    b = torch.as_tensor(np.asarray(bias, dtype=np.float64).reshape(1, -1))
    return (Xt @ w + b).numpy()


# -- MLP with polynomial activations ------------------------------------------------------------------
@dataclass(frozen=True)
class MLP:
    """A plaintext network the server evaluates on ciphertexts: linear layers and activations in order."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights (d_in, d_out), bias (d_out,))
    activations: tuple[Polynomial | None, ...]  # after each layer but the last; None = x**2

    @property
    def depth(self) -> int:
        """Levels on column-packed input: one per linear layer plus each activation's."""
        return len(self.layers) + sum(1 if a is None else a.depth for a in self.activations)


def predict_mlp(X: EncryptedMatrix, mlp: MLP) -> EncryptedMatrix:
    """The network's output ``(n, k)``; column packing is the layout it is built for (no rotations)."""
    if X.level < mlp.depth and X.tile.cols == 1:
        raise ParameterError(
            f"the network needs {mlp.depth} levels and the input has {X.level}: plan(depth={mlp.depth})"
        )
    h = X
    for index, (w, b) in enumerate(mlp.layers):
        h = predict_linear(h, w, b)
        if index < len(mlp.activations):
            act = mlp.activations[index]
            h = h * h if act is None else evaluate(act, h)
    return h


def __getattr__(name: str) -> Any:
    # The torch-facing names load torch on first use only (see the module docstring).
    if name in _TORCH_NAMES:
        from ciphergrad.core import torch_models

        return getattr(torch_models, name)
    raise AttributeError(f"module 'ciphergrad.core.inference' has no attribute {name!r}")
