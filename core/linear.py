"""Linear regression by gradient descent on encrypted data, and its plaintext torch twin.

The encrypted model is kept multiplied by ``weight_scale`` (a public constant): that keeps the summed
squared residuals inside what the last CKKS level can hold, so the training loss can be computed
encrypted every epoch. ``decode_weights`` divides it out after decryption.

One step costs three levels: X*w (1), the row-sum mask (1), X^T r (1); learning rate / batch size is folded
into a copy of X once, and y into a pre-scaled copy, so no level is spent on constants per step.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ciphergrad.core import standardize
from ciphergrad.core.errors import ParameterError
from ciphergrad.core.shards import Batch, RowStep
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.core.training import EpochResult, GradientDescentConfig, GradientTrainer, TorchFit, torch_epochs

__all__ = [
    "LEVELS_PER_STEP",
    "SOLVERS",
    "EpochResult",
    "LinearRegressionConfig",
    "LinearRowStep",
    "LinearTrainer",
    "TorchFit",
    "decode_weights",
    "fit_torch",
    "initial_weights",
    "service_solver",
    "weight_scale",
]

LEVELS_PER_STEP = 3
# "gd": per-row gradient descent (minibatches, encrypted shuffles); "gram": gradient descent on encrypted
# X^T X / n and X^T y / n (core.gram, epochs independent of the rows); "normal": the key holder decrypts
# those aggregates and solves exactly in one round trip.
SOLVERS = ("gd", "gram", "normal")


@dataclass(frozen=True)
class LinearRegressionConfig(GradientDescentConfig):
    """Least squares by gradient descent; momentum is heavy-ball."""

    init: str = "normal"  # "normal" (the original's N(0, 1) from ``init_seed``) or "zeros"
    # Reproducible on purpose: the starting point protects nothing (the server encrypts it itself).
    init_seed: int = 0
    solver: str = "gd"  # one of SOLVERS
    # (scale, shift) per column of [X | y], applied inside the Gram solvers' statistics (core.standardize)
    standardization: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in ("normal", "zeros"):
            raise ParameterError(f"init={self.init!r} must be 'normal' or 'zeros'")
        if self.solver not in SOLVERS:
            raise ParameterError(f"solver={self.solver!r} is not one of {', '.join(map(repr, SOLVERS))}")
        if self.standardization is not None:
            if self.solver == "gd":
                raise ParameterError(
                    "standardization is applied inside the Gram statistics: use solver='gram' or 'normal', or "
                    "standardize the features before encrypting them for solver='gd'"
                )
            standardize.check(self.standardization, self.intercept_column)
        if self.solver != "gd" and self.batch_size is not None:
            raise ParameterError(
                f"solver={self.solver!r} works on the whole table, so batch_size={self.batch_size} does not fit: "
                f"use solver='gd' for minibatches, or batch_size=None (valid solvers: {', '.join(map(repr, SOLVERS))})"
            )


def service_solver(batch_size: int | None) -> str:
    """The solver the service (server, SDK, estimators, CLI) runs when none is named: "gram" for full-batch
    training (epochs independent of the rows), "gd" for minibatches. Core's own default stays "gd"."""
    return "gd" if batch_size is not None else "gram"


def initial_weights(features: int, config: LinearRegressionConfig) -> np.ndarray:
    if config.init == "zeros":
        return np.zeros(features)
    return np.random.default_rng(config.init_seed).normal(size=features)


def weight_scale(rows: int) -> float:
    """Keeps sum(r^2) ~ 16 * MSE: comfortably inside a 9-bit integer range, yet far above the noise."""
    return math.sqrt(16.0 / rows)


def decode_weights(values: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1) / scale


class LinearTrainer(GradientTrainer):
    """Encrypted gradient descent for least squares (optionally ridge and heavy-ball momentum)."""

    def _setup(self) -> None:
        if self.config.solver != "gd":
            raise ParameterError(
                f"LinearTrainer is the 'gd' solver, not {self.config.solver!r}: train 'gram' with "
                "ciphergrad.core.gram_training.GramTrainer, 'normal' with core.normal.normal_system and solve_normal"
            )
        self.weight_scale = weight_scale(self.rows)
        self._decay = self.config.shrink(self.features, self.config.learning_rate) - 1.0 if self.config.l2 else None

    def _initial_weights(self) -> np.ndarray:
        return initial_weights(self.features, self.config) * self.weight_scale

    def row_step(self, rows: int) -> RowStep:
        return LinearRowStep(rows, self.config.learning_rate, self.weight_scale)

    def _loss_scale(self) -> float:
        return 1.0 / (self.weight_scale**2 * self.rows)

    def _before_step(self) -> None:
        if self.weights.level < LEVELS_PER_STEP:
            self.weights = self.refresh(self.weights)
        if self.velocity is not None and self.velocity.level < 1:
            self.velocity = self.refresh(self.velocity)

    def _update(self, step: EncryptedMatrix) -> None:
        config = self.config
        if self._decay is not None:
            step = step - self.weights * self._decay
        if config.momentum:
            self.velocity = step if self.velocity is None else self.velocity * config.momentum + step
            step = self.velocity
        self.weights = self.weights - step


@dataclass(frozen=True)
class LinearRowStep(RowStep):
    """Per row: the residual ``X w - y`` (the weights and y carry ``weight_scale``); no refresh."""

    def residuals(self, batch: Batch, weights: EncryptedMatrix) -> Generator[EncryptedMatrix, EncryptedMatrix,
                                                                                EncryptedMatrix]:
        yield from ()
        return (batch.X * weights).sum(axis=1) - batch.y


# -- the plaintext twin ----------------------------------------------------------------------------
def fit_torch(
    X: np.ndarray,
    y: np.ndarray,
    config: LinearRegressionConfig,
    orders: list[np.ndarray] | None = None,
) -> TorchFit:
    """The same algorithm in float64: same initial weights, shuffle order, batches and updates."""
    import torch  # only the twin needs torch; the encrypted path runs without it

    features = np.shape(X)[1]
    shrink = torch.as_tensor(config.shrink(features, config.learning_rate))
    velocity = None

    def update(xb: Any, yb: Any, w: Any) -> tuple[Any, float]:
        nonlocal velocity
        residual = xb @ w.T - yb
        step = (config.learning_rate / len(xb)) * (residual.T @ xb)
        if config.l2:
            step = step - w * (shrink - 1.0)
        if config.momentum:
            velocity = step if velocity is None else velocity * config.momentum + step
            step = velocity
        return w - step, float((residual**2).sum())

    w = torch.as_tensor(initial_weights(features, config)).reshape(1, -1)
    return torch_epochs(X, y, config, orders, w, update)
