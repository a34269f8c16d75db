"""What the encrypted gradient-descent trainers share: batches over the key holder's encrypted shuffles,
gradient copies of X pre-scaled once, masked refreshes, checkpoints and the epoch loop.

A trainer subclass says how its weights start, the per-row part of a step (``row_step``: a picklable
``core.shards.RowStep`` that pre-scales the data and yields the batch's pending sums), what the driver
refreshes before a step (``_before_step``) and how it applies the finished gradient (``_update``);
everything a server needs to run, checkpoint and resume it lives here. Each batch is a shard set
(``core.shards``): one in-process shard, or, for full-batch training with ``shards=``, an executor's
shards in other processes; the step is the same code either way.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import numpy as np

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.refresh import MaskedRefresh, Refresh
from ciphergrad.core.shards import LocalShards, RowStep, ShardSet, ShardSource
from ciphergrad.core.tensor import EncryptedMatrix

Shuffles = tuple[tuple[EncryptedMatrix, EncryptedMatrix], ...]


@dataclass(frozen=True)
class GradientDescentConfig:
    """Hyperparameters every gradient-descent trainer takes; algorithms add their own fields."""

    learning_rate: float = 0.5
    epochs: int = 50
    l2: float = 0.0  # ridge penalty (the intercept column is not penalized)
    batch_size: int | None = None  # None: full batch; else the row-block size of the encrypted shuffles
    momentum: float = 0.0  # 0 = plain gradient descent, as in the original
    intercept_column: int | None = 0  # column of ones, or None

    def __post_init__(self) -> None:
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ParameterError(f"learning_rate={self.learning_rate} must be a positive number (e.g. 0.5)")
        if self.epochs < 1:
            raise ParameterError(f"epochs={self.epochs} must be at least 1")
        if self.l2 < 0:
            raise ParameterError(f"l2={self.l2} must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ParameterError(f"momentum={self.momentum} must lie in [0, 1)")
        if self.batch_size is not None and (self.batch_size < 1 or self.batch_size & (self.batch_size - 1)):
            raise ParameterError(f"batch_size={self.batch_size} must be a power of two (e.g. 128) or None")

    def shrink(self, features: int, rate: float) -> np.ndarray:
        """``(1, features)`` weight decay factors ``1 - rate * l2``; the intercept column is not penalized."""
        factors = np.full((1, features), 1.0 - rate * self.l2)
        if self.intercept_column is not None:
            factors[0, self.intercept_column] = 1.0
        return factors

    def batches(self, orders: list[np.ndarray], epoch: int, rows: int) -> Iterator[np.ndarray]:
        """Row indices of each batch of ``epoch``, in the order the encrypted shuffles present them."""
        order = orders[epoch % len(orders)]
        size = self.batch_size or rows
        for begin in range(0, rows, size):
            yield order[begin : begin + size]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if "seed" in data:
            # The old shared seed also ordered the shuffles, so a server holding it could recompute them.
            raise ParameterError(
                "seed is no hyperparameter: the key holder draws shuffle orders from a CSPRNG and keeps them "
                "(core.randomness); linear regression's N(0, 1) initial weights take init_seed"
            )
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        unknown = set(data) - set(known)
        if unknown:
            raise ParameterError(f"unknown {cls.__name__} settings: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**known)


@dataclass
class EpochResult:
    epoch: int
    counts: OpCounts
    refreshes: int
    seconds: float
    loss: EncryptedMatrix | None = None  # (1, 1) when the algorithm computes one; decrypted * loss_scale
    loss_scale: float = 0.0


class GradientTrainer(ABC):
    """One epoch at a time over encrypted data, so a server can checkpoint between epochs."""

    weight_scale: float  # decrypted weights / weight_scale = the model's weights

    def __init__(
        self,
        engine: Engine,
        X: EncryptedMatrix,
        y: EncryptedMatrix,
        config: Any,
        refresh: Refresh,
        shuffles: Shuffles = (),
        *,
        weights: EncryptedMatrix | None = None,
        velocity: EncryptedMatrix | None = None,
        epoch: int = 0,
        mask_refreshes: bool = True,
        shards: ShardSource | None = None,
    ) -> None:
        """``shards`` (full batch only, an executor's): where the table's row blocks live for the job; ``X``
        and ``y`` are then None (the driver never loads the table)."""
        if shards is None:
            check_data(X, y)
        self.engine, self.config = engine, config
        self.rows, self.features = shards.shape if shards is not None else X.shape
        tile = shards.tile if shards is not None else X.tile
        self._setup()
        self.refresh = MaskedRefresh(refresh) if mask_refreshes else refresh
        self.epoch = epoch
        if shards is not None and (shuffles or config.batch_size is not None):
            raise ParameterError(
                "sharded training is full batch over the stored table: batch_size=None and no shuffles "
                "(minibatches and shuffles run on one shard, the local executor)"
            )
        self._epochs_data = [[shards(self.row_step(self.rows))]] if shards else self._prepare(X, y, shuffles)
        if weights is None:
            weights = EncryptedMatrix.encrypt(engine, self._initial_weights()[None, :], tile=tile)
        self.weights = weights
        self.velocity = velocity
        self.counts = OpCounts()

    # -- what a subclass defines ----------------------------------------------------------------------
    def _setup(self) -> None:
        """Derived constants (scales, polynomials), before the data is pre-scaled. Optional: none by default."""
        return None

    @abstractmethod
    def _initial_weights(self) -> np.ndarray:
        """The model's starting weights, ``(features,)``, before any scaling the trainer keeps."""

    @abstractmethod
    def row_step(self, rows: int) -> RowStep:
        """The per-row part of a step over a batch of ``rows`` rows (runs on the shards)."""

    def _before_step(self) -> None:
        """Refresh the weights (and velocity) that lack the levels the step needs (on the driver). Optional:
        a trainer whose step fits the weights' levels refreshes nothing."""
        return None

    @abstractmethod
    def _update(self, step: EncryptedMatrix) -> None:
        """Apply the finished gradient step to ``self.weights`` (momentum, l2: on the driver)."""

    def _loss_scale(self) -> float:
        return 0.0

    # -- shared machinery ---------------------------------------------------------------------------------
    def _prepare(self, X: EncryptedMatrix, y: EncryptedMatrix, shuffles: Shuffles) -> list[list[ShardSet]]:
        """Per shuffle, its batches with their pre-scaled copies (computed once, not per epoch)."""
        sources = [(X, y)] if not shuffles else list(shuffles)
        for Xs, ys in sources:
            check_data(Xs, ys)
            if Xs.shape != X.shape or Xs.tile != X.tile:
                raise ShapeError(f"shuffle of shape {Xs.shape} differs from the data's {X.shape}")
        batch_size = self.config.batch_size
        prepared: list[list[ShardSet]] = []
        for Xs, ys in sources:
            blocks = [(Xs, ys)]
            if batch_size is not None:
                if Xs.tile.rows != batch_size:
                    raise ShapeError(
                        f"batch_size={batch_size} needs data encrypted in tiles of {batch_size} rows "
                        f"(got {Xs.tile.rows})"
                    )
                blocks = [(Xs.row_block(i), ys.row_block(i)) for i in range(Xs.grid[0])]
            prepared.append([LocalShards(self.row_step(bx.shape[0]), self.row_step(bx.shape[0]).prepare(bx, by))
                             for bx, by in blocks])
        return prepared

    def _step(self, shards: ShardSet) -> EncryptedMatrix:
        """One step over a batch: the shards' partial sums, finished and applied here; the batch's loss."""
        self._before_step()
        partial = shards.step(self.weights, self.refresh)
        if partial.counts is not None:  # operations that ran in other processes
            self.engine.counts.absorb(partial.counts)
        loss, step = partial.finish(shards.shape[0])
        self._update(step)
        return loss

    @classmethod
    def resume(
        cls, engine: Engine, X, y, config, refresh: Refresh, state: dict[str, Any], shuffles: Shuffles = (),
        *, shards: ShardSource | None = None,
    ) -> Self:
        return cls(
            engine,
            X,
            y,
            config,
            refresh,
            shuffles,
            weights=state["weights"],
            velocity=state.get("velocity"),
            epoch=int(state["epoch"]),
            shards=shards,
        )

    def metadata(self) -> dict[str, Any]:
        """What a stored model records about its training (the server keeps it beside the weights)."""
        return {"intercept_column": self.config.intercept_column, "features": self.features}

    def state(self) -> dict[str, Any]:
        """What ``resume`` needs: the epoch and the encrypted weights and velocity (immutable, so shared)."""
        return {
            "epoch": self.epoch,
            "weights": self.weights,
            "velocity": self.velocity,
        }

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    def run_epoch(self) -> EpochResult:
        start = time.perf_counter()
        before = self.engine.counts.snapshot()
        loss = None
        for shards in self._epochs_data[self.epoch % len(self._epochs_data)]:
            part = self._step(shards)
            if part is not None:
                loss = part if loss is None else loss + part
        self.epoch += 1
        delta = self.engine.counts.since(before)
        self.counts = OpCounts(**{k: getattr(self.counts, k) + v for k, v in vars(delta).items()})
        scale = self._loss_scale() if loss is not None else 0.0
        return EpochResult(self.epoch, delta, delta.refreshes, time.perf_counter() - start, loss, scale)


def check_data(X: EncryptedMatrix, y: EncryptedMatrix) -> None:
    if y.shape != (X.shape[0], 1):
        raise ShapeError(f"y has shape {y.shape}; expected ({X.shape[0]}, 1) to match X {X.shape}")
    if y.tile != X.tile:
        raise ShapeError("X and y must be encrypted with the same tile (pass tile=X.tile)")


# -- the plaintext twins' shared loop ---------------------------------------------------------------------
@dataclass
class TorchFit:
    """A twin's result: final weights, the training loss of each epoch (at the weights it started from, summed
    over its batches and divided by the rows) and each epoch's seconds."""

    weights: np.ndarray
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def torch_epochs(X: np.ndarray, y: np.ndarray, config: GradientDescentConfig, orders: list[np.ndarray] | None,
                 w: Any, update: Callable[[Any, Any, Any], tuple[Any, float]]) -> TorchFit:
    """The epochs of a float64 twin: ``config.batches`` over ``orders`` (the key holder's shuffles; one identity
    order without), ``w, loss_sum = update(xb, yb, w)`` per batch. Each algorithm brings its own ``update``
    (gradient and momentum exactly as its encrypted trainer applies them) and initial ``w`` (a (1, d) tensor)."""
    import torch  # only the twins need torch; the encrypted path runs without it

    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    rows = Xt.shape[0]
    orders = orders or [np.arange(rows)]
    fit = TorchFit(weights=np.empty(0))
    for epoch in range(config.epochs):
        start = time.perf_counter()
        total = 0.0
        for batch in config.batches(orders, epoch, rows):
            index = torch.as_tensor(batch)
            w, loss = update(Xt[index], yt[index], w)
            total += loss
        fit.losses.append(total / rows)
        fit.epoch_seconds.append(time.perf_counter() - start)
    fit.weights = w.numpy().reshape(-1)
    return fit
