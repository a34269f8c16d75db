"""Linear regression by gradient descent on encrypted data, and its plaintext torch twin.

The encrypted model is kept multiplied by ``weight_scale`` (a public constant): that keeps the summed
squared residuals inside what the last CKKS level can hold, so the training loss can be computed
encrypted every epoch. ``decode_weights`` divides it out after decryption.

One step costs three levels: X*w (1), the row-sum mask (1), X^T r (1); learning rate / batch size is folded
into a copy of X once, and y into a pre-scaled copy, so no level is spent on constants per step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from core.engine import Engine, OpCounts
from core.errors import ParameterError, ShapeError
from core.refresh import MaskedRefresh, Refresh
from core.tensor import EncryptedMatrix

LEVELS_PER_STEP = 3


@dataclass(frozen=True)
class LinearRegressionConfig:
    learning_rate: float = 0.5
    epochs: int = 50
    l2: float = 0.0
    batch_size: int | None = None  # None: full batch; else the row-block size of the encrypted shuffles
    momentum: float = 0.0  # heavy-ball momentum (0 = plain gradient descent, as in the original)
    seed: int = 0  # initial weights ~ N(0, 1) from this seed (shuffle orders use it too)
    init: str = "normal"  # "normal" (the original's N(0, 1)) or "zeros"
    intercept_column: int | None = 0  # column of ones (not penalized by l2), or None

    def __post_init__(self) -> None:
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ParameterError(f"learning_rate={self.learning_rate} must be a positive number (e.g. 0.5)")
        if self.epochs < 1:
            raise ParameterError(f"epochs={self.epochs} must be at least 1")
        if self.l2 < 0:
            raise ParameterError(f"l2={self.l2} must be >= 0")
        if self.init not in ("normal", "zeros"):
            raise ParameterError(f"init={self.init!r} must be 'normal' or 'zeros'")
        if not 0 <= self.momentum < 1:
            raise ParameterError(f"momentum={self.momentum} must lie in [0, 1)")
        if self.batch_size is not None and (self.batch_size < 1 or self.batch_size & (self.batch_size - 1)):
            raise ParameterError(f"batch_size={self.batch_size} must be a power of two (e.g. 128) or None")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearRegressionConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        unknown = set(data) - set(known)
        if unknown:
            raise ParameterError(f"unknown linear-regression settings: {sorted(unknown)}")
        return cls(**known)


def initial_weights(features: int, config: LinearRegressionConfig) -> np.ndarray:
    if config.init == "zeros":
        return np.zeros(features)
    return np.random.default_rng(config.seed).normal(size=features)


def shuffle_orders(rows: int, count: int, seed: int) -> list[np.ndarray]:
    """Row orders of the key holder's encrypted shuffles (the original's dataset provider)."""
    rng = np.random.default_rng([seed, 1])
    return [rng.permutation(rows) for _ in range(count)]


def weight_scale(rows: int) -> float:
    """Keeps sum(r^2) ~ 16 * MSE: comfortably inside a 9-bit integer range, yet far above the noise."""
    return math.sqrt(16.0 / rows)


def decode_weights(values: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1) / scale


@dataclass
class EpochResult:
    epoch: int
    loss: EncryptedMatrix  # (1, 1); decrypted value * loss_scale is the epoch's mean squared error
    loss_scale: float
    counts: OpCounts
    refreshes: int


@dataclass
class _Batch:
    X: EncryptedMatrix
    Xg: EncryptedMatrix  # X * (learning_rate / rows): the gradient's copy
    y: EncryptedMatrix  # y * weight_scale
    rows: int


class LinearTrainer:
    """Encrypted gradient descent, one epoch at a time (so a server can checkpoint between epochs)."""

    def __init__(
        self,
        engine: Engine,
        X: EncryptedMatrix,
        y: EncryptedMatrix,
        config: LinearRegressionConfig,
        refresh: Refresh,
        shuffles: tuple[tuple[EncryptedMatrix, EncryptedMatrix], ...] = (),
        *,
        weights: EncryptedMatrix | None = None,
        velocity: EncryptedMatrix | None = None,
        epoch: int = 0,
        mask_refreshes: bool = True,
    ) -> None:
        _check_data(X, y)
        self.engine, self.config = engine, config
        self.rows, self.features = X.shape
        self.weight_scale = weight_scale(self.rows)
        self.refresh = MaskedRefresh(refresh, seed=None) if mask_refreshes else refresh
        self.epoch = epoch
        self._epochs_data = self._prepare(X, y, shuffles)
        if weights is None:
            start = initial_weights(self.features, config) * self.weight_scale
            weights = EncryptedMatrix.encrypt(engine, start[None, :], tile=X.tile)
        self.weights = weights
        self.velocity = velocity
        self.counts = OpCounts()

    def _prepare(self, X, y, shuffles) -> list[list[_Batch]]:
        """Per shuffle, the batches with their pre-scaled copies (computed once, not per epoch)."""
        sources = [(X, y)] if not shuffles else list(shuffles)
        for Xs, ys in sources:
            _check_data(Xs, ys)
            if Xs.shape != X.shape or Xs.tile != X.tile:
                raise ShapeError(f"shuffle of shape {Xs.shape} differs from the data's {X.shape}")
        lr = self.config.learning_rate
        prepared = []
        for Xs, ys in sources:
            blocks = [(Xs, ys)]
            if self.config.batch_size is not None:
                if Xs.tile.rows != self.config.batch_size:
                    raise ShapeError(
                        f"batch_size={self.config.batch_size} needs data encrypted in tiles of "
                        f"{self.config.batch_size} rows (got {Xs.tile.rows})"
                    )
                blocks = [(Xs.row_block(i), ys.row_block(i)) for i in range(Xs.grid[0])]
            prepared.append(
                [_Batch(bx, bx * (lr / bx.shape[0]), by * self.weight_scale, bx.shape[0]) for bx, by in blocks]
            )
        return prepared

    @classmethod
    def resume(cls, engine, X, y, config, refresh, state: dict[str, Any], shuffles=()) -> LinearTrainer:
        weights = EncryptedMatrix.from_bytes(engine, state["weights"])
        velocity = EncryptedMatrix.from_bytes(engine, state["velocity"]) if state.get("velocity") else None
        return cls(
            engine, X, y, config, refresh, shuffles, weights=weights, velocity=velocity, epoch=int(state["epoch"])
        )

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "weights": self.weights.to_bytes(),
            "velocity": self.velocity.to_bytes() if self.velocity is not None else None,
        }

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    def run_epoch(self) -> EpochResult:
        before = self.engine.counts.snapshot()
        refreshes_before = self.engine.counts.refreshes
        batches = self._epochs_data[self.epoch % len(self._epochs_data)]
        loss = None
        for batch in batches:
            step_loss = self._step(batch)
            loss = step_loss if loss is None else loss + step_loss
        self.epoch += 1
        delta = self.engine.counts.since(before)
        self.counts = OpCounts(**{k: getattr(self.counts, k) + v for k, v in vars(delta).items()})
        return EpochResult(
            epoch=self.epoch,
            loss=loss,
            loss_scale=1.0 / (self.weight_scale**2 * self.rows),
            counts=delta,
            refreshes=self.engine.counts.refreshes - refreshes_before,
        )

    def _step(self, batch: _Batch) -> EncryptedMatrix:
        if self.weights.level < LEVELS_PER_STEP:
            self.weights = self.refresh(self.weights)
        if self.velocity is not None and self.velocity.level < 1:
            self.velocity = self.refresh(self.velocity)
        residual = (batch.X * self.weights).sum(axis=1) - batch.y
        loss = (residual * residual).sum()
        step = (batch.Xg * residual).sum(axis=0)
        config = self.config
        if config.l2:
            shrink = np.full((1, self.features), 1.0 - config.learning_rate * config.l2)
            if config.intercept_column is not None:
                shrink[0, config.intercept_column] = 1.0
            step = step - self.weights * (shrink - 1.0)
        if config.momentum:
            self.velocity = step if self.velocity is None else self.velocity * config.momentum + step
            step = self.velocity
        self.weights = self.weights - step
        return loss


def _check_data(X: EncryptedMatrix, y: EncryptedMatrix) -> None:
    if y.shape != (X.shape[0], 1):
        raise ShapeError(f"y has shape {y.shape}; expected ({X.shape[0]}, 1) to match X {X.shape}")
    if y.tile != X.tile:
        raise ShapeError("X and y must be encrypted with the same tile (pass tile=X.tile)")


# -- the plaintext twin ----------------------------------------------------------------------------
@dataclass
class TorchFit:
    weights: np.ndarray
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def fit_torch(
    X: np.ndarray,
    y: np.ndarray,
    config: LinearRegressionConfig,
    orders: list[np.ndarray] | None = None,
) -> TorchFit:
    """The same algorithm in float64: same initial weights, shuffle order, batches and updates."""
    import time

    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    rows, features = Xt.shape
    w = torch.as_tensor(initial_weights(features, config)).reshape(1, -1)
    velocity = None
    shrink = torch.full((1, features), 1.0 - config.learning_rate * config.l2, dtype=torch.float64)
    if config.intercept_column is not None:
        shrink[0, config.intercept_column] = 1.0
    orders = orders or [np.arange(rows)]
    fit = TorchFit(weights=np.empty(0))
    for epoch in range(config.epochs):
        start = time.perf_counter()
        order = torch.as_tensor(orders[epoch % len(orders)])
        size = config.batch_size or rows
        total = 0.0
        for begin in range(0, rows, size):
            index = order[begin : begin + size]
            xb, yb = Xt[index], yt[index]
            residual = xb @ w.T - yb
            total += float((residual**2).sum())
            step = (config.learning_rate / len(index)) * (residual.T @ xb)
            if config.l2:
                step = step - w * (shrink - 1.0)
            if config.momentum:
                velocity = step if velocity is None else velocity * config.momentum + step
                step = velocity
            w = w - step
        fit.losses.append(total / rows)
        fit.epoch_seconds.append(time.perf_counter() - start)
    fit.weights = w.numpy().reshape(-1)
    return fit
