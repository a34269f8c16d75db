"""``GramTrainer``: gradient descent on the encrypted statistics of ``core.gram``, and its torch twin.

Per epoch, whatever the number of rows (``p = next_pow2(d + 1)``, 16 for up to 15 features):
``g = lr * (G w - b + l2 w)`` from the level-1 diagonals by baby-step/giant-step, ``2 (sqrt(p) - 1)``
rotations (6), ``sqrt(p)`` relinearizations and ``p + 1`` products; ``w' <- w' - g`` (heavy-ball:
``(1 + mu) w' - mu w'_prev - g``). ``g`` lands at level 0, so the weights take one masked refresh per
epoch (``core.refresh``). The loss ``w^T G w - 2 b^T w + y^T y / n`` of the epoch's starting weights costs
no refresh: the refreshed weights give ``g`` back at a fresh level and
``w' . (g - lr [b, y^T y / n]) - lr l2 |w|^2 = lr * loss``: one or two products and ``log2 p`` rotations.
The weights carry ``w' = [w, -1]`` (period ``p``, one ciphertext); ``weights`` shows the model's ``d``.
Checkpoints hold the statistics, so a resume never repeats the pass (``fixed_state`` is that part, which a
job runner writes once). ``NormalSolver`` (``solver='normal'``) has the same runner interface with one
round trip to the key holder instead of epochs; ``fit_torch_normal`` is its twin.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol, Self

import numpy as np

from ciphergrad.core import randomness, standardize
from ciphergrad.core.engine import Ciphertext, Engine, OpCounts
from ciphergrad.core.errors import LevelError, ParameterError, ShapeError
from ciphergrad.core.gram import GramPartial, GramStatistics, accumulate, baby_steps, finalize, row_blocks
from ciphergrad.core.linear import LinearRegressionConfig, TorchFit, initial_weights
from ciphergrad.core.normal import RightHandSide, normal_system, ridge_vector
from ciphergrad.core.refresh import MaskedRefresh, Refresh
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.core.training import EpochResult, Shuffles

__all__ = ["GramTrainer", "KeyHolderLink", "NormalSolver", "fit_torch_gram", "fit_torch_normal"]


class GramTrainer:
    """Gradient descent (ridge, heavy-ball momentum) on encrypted ``G`` and ``b``: the job-runner interface
    of ``core.training.GradientTrainer``, with epochs that cost the same for any number of rows."""

    weight_scale = 1.0  # G and b are averages: the weights need no scaling to keep the loss in range
    streams_rows = True  # a server builds it with from_partial over blocks streamed from disk

    def __init__(
        self,
        engine: Engine,
        X: EncryptedMatrix | None,
        y: EncryptedMatrix | None,
        config: LinearRegressionConfig,
        refresh: Refresh,
        shuffles: Shuffles = (),
        *,
        statistics: GramStatistics | None = None,
        weights: EncryptedMatrix | None = None,
        previous: EncryptedMatrix | None = None,
        epoch: int = 0,
        mask_refreshes: bool = True,
    ) -> None:
        if config.solver != "gram":
            raise ParameterError(f"GramTrainer runs solver='gram', got solver={config.solver!r}")
        if config.batch_size is not None or shuffles:
            raise ParameterError(
                "the Gram solver trains on the whole table: minibatches and encrypted shuffles need "
                "solver='gd' (valid solvers: 'gd', 'gram', 'normal')"
            )
        if statistics is None:
            if X is None or y is None:
                raise ShapeError("pass the encrypted X and y, or statistics=finalize(partial, learning_rate)")
            statistics = finalize(accumulate(engine, row_blocks(X, y)), config.learning_rate)
        if not math.isclose(statistics.factor, config.learning_rate):
            raise ParameterError(
                f"statistics finalized with factor {statistics.factor}, but learning_rate={config.learning_rate}: "
                "finalize(partial, config.learning_rate)"
            )
        if statistics.diagonals.level < 1:
            raise LevelError("the Gram statistics have no level left for the step: encrypt the data at the top level")
        self.engine, self.config, self.stats = engine, config, statistics
        self.features, self.rows, self.epoch = statistics.features, statistics.rows, epoch
        self.refresh = MaskedRefresh(refresh) if mask_refreshes else refresh
        self.counts = OpCounts()
        self._unreported = statistics.counts  # the pass and its finalization: told with the next epoch
        self._setup()
        if weights is None:
            start = np.r_[initial_weights(self.features, config), -1.0][None, :]
            weights = EncryptedMatrix.encrypt(engine, start, tile=self._tile)
        self._weights, self._previous = weights, previous

    @classmethod
    def from_partial(cls, engine: Engine, partial: GramPartial, config: LinearRegressionConfig, refresh: Refresh,
                     **kwargs: Any) -> Self:
        """A trainer on statistics a server accumulated itself (e.g. streaming blocks from disk)."""
        partial, transform = standardize.prepare(config, partial)
        statistics = finalize(partial, config.learning_rate, transform)
        return cls(engine, None, None, config, refresh, statistics=statistics, **kwargs)

    @classmethod
    def resume(
        cls,
        engine: Engine,
        X: EncryptedMatrix | None,
        y: EncryptedMatrix | None,
        config: LinearRegressionConfig,
        refresh: Refresh,
        state: dict[str, Any],
        shuffles: Shuffles = (),
    ) -> Self:
        """Back from a checkpoint: the statistics come from the state, the pass is not repeated."""
        """A state with the statistics only (``fixed_state``, no epoch done yet) starts from fresh weights."""

        def matrix(key: str) -> EncryptedMatrix | None:
            value = state.get(key)
            if value is None or isinstance(value, EncryptedMatrix):
                return value
            return EncryptedMatrix.from_bytes(engine, value)

        return cls(engine, None, None, config, refresh, shuffles, statistics=GramStatistics.from_state(engine, state),
                   weights=matrix("weights"), previous=matrix("previous"), epoch=int(state.get("epoch", 0)))

    def state(self) -> dict[str, Any]:
        """Everything ``resume`` needs; the part that never changes is also ``fixed_state()``."""
        return {"epoch": self.epoch, "weights": self._weights, "previous": self._previous, **self.fixed_state()}

    def fixed_state(self) -> dict[str, Any]:
        """The statistics: a job runner writes them once, not with every epoch's checkpoint."""
        return self.stats.state()

    def metadata(self) -> dict[str, Any]:
        return {"intercept_column": self.config.intercept_column, "features": self.features, "solver": "gram"}

    def _setup(self) -> None:
        engine, p, d = self.engine, self.stats.period, self.features
        self._tile = self.stats.column.tile
        self._baby = baby_steps(p)
        self._ridge = None
        if self.config.l2:
            config = self.config
            ridge = config.learning_rate * ridge_vector(d, p, config.l2, config.intercept_column)
            lr_ridge = np.tile(ridge, engine.slots // p)
            # Encrypted (by the server, public key) at the diagonals' level and exact scale, so that the
            # ridge term joins their sum of products without relabelling a scale.
            self._ridge = engine.encrypt(lr_ridge, engine.level(self.stats.diagonal(0)))
        self._reset = np.r_[np.zeros(d), -1.0][None, :]

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    @property
    def weights(self) -> EncryptedMatrix:
        """The model ``(1, d)``; the slot after it holds the -1 of the augmented system."""
        (ct,) = self._weights.ciphertexts
        return EncryptedMatrix(self.engine, [[ct]], (1, self.features), self._tile, (True, False))

    def _matvec(self, w: Ciphertext) -> Ciphertext:
        """``lr * (G w - b + l2 w)`` (rows < d; row d is zero) by baby-step/giant-step, before rescaling."""
        engine, p, baby = self.engine, self.stats.period, self._baby
        # Rotate a pending product (w times one, one level above the diagonals: fewer primes, cheaper) so
        # that the key-switching noise is divided away by the rescale.
        w = engine.lower(w, self.stats.diagonals.level + 1)
        lifted = engine.multiply_plain(w, np.ones(engine.slots), rescale=False)
        rotated = [w] + [engine.rescale(engine.rotate(lifted, b)) for b in range(1, baby)]
        total = None
        for giant in range(0, p, baby):
            inner = None
            for b in range(baby):
                term = engine.multiply(self.stats.diagonal(giant + b), rotated[b], rescale=False, relinearize=False)
                inner = term if inner is None else engine.add(inner, term)
            if giant == 0 and self._ridge is not None:
                inner = engine.add(inner, engine.multiply(self._ridge, w, rescale=False, relinearize=False))
            if giant:
                inner = engine.rotate(engine.relinearize(inner), giant)
            total = inner if total is None else engine.add(total, inner)
        return engine.relinearize(total)

    def run_epoch(self) -> EpochResult:
        start = time.perf_counter()
        before = self.engine.counts.snapshot()
        engine, mu, w = self.engine, self.config.momentum, self._weights
        step = EncryptedMatrix(engine, [[engine.rescale(self._matvec(w.ciphertexts[0]))]], w.shape, self._tile)
        base = w if not mu or self._previous is None else w * (1.0 + mu) - self._previous * mu
        fresh = self._refreshed(base - step)
        loss = self._loss(w, base - fresh)  # base - fresh is the step again, now at a fresh level
        self._previous, self._weights = w, fresh
        self.epoch += 1
        delta, self._unreported = engine.counts.since(before) + self._unreported, OpCounts()
        self.counts += delta
        return EpochResult(self.epoch, delta, delta.refreshes, time.perf_counter() - start, loss,
                           1.0 / self.config.learning_rate)

    def _refreshed(self, weights: EncryptedMatrix) -> EncryptedMatrix:
        """Masked refresh of the model part; the key holder re-encrypts zeros after it, then -1 goes back in."""
        (ct,) = weights.ciphertexts
        p, d = self.stats.period, self.features
        noise = np.zeros(p)  # hide the padding slots too (the masked refresh covers the model's d slots)
        noise[d:] = randomness.uniform(self.engine.params.max_abs_value / 4, p - d)  # CSPRNG, like the mask
        ct = self.engine.add_plain(ct, np.tile(noise, self.engine.slots // p))
        fresh = self.refresh(EncryptedMatrix(self.engine, [[ct]], (1, d), self._tile, (True, False)))
        (new,) = fresh.ciphertexts
        return EncryptedMatrix(self.engine, [[new]], (1, d + 1), self._tile) + self._reset

    def _loss(self, w: EncryptedMatrix, step: EncryptedMatrix) -> EncryptedMatrix:
        """``lr * (w^T G w - 2 b^T w + y^T y / n)`` as a (1, 1) matrix: ``w' . (step - lr [b, yy] - lr l2 w)``."""
        engine = self.engine
        (wct,), (residual,) = w.ciphertexts, (step - self.stats.column).ciphertexts
        total = engine.multiply(wct, residual, rescale=False, relinearize=False)
        if self._ridge is not None:
            square = engine.multiply(wct, wct)
            total = engine.sub(total, engine.multiply(square, self._ridge, rescale=False, relinearize=False))
        total = engine.rotate_sum(engine.relinearize(total), 1, self.stats.period)
        return EncryptedMatrix(engine, [[engine.rescale(total)]], (1, 1), self._tile)


class KeyHolderLink(Protocol):
    """The computing party's line to the key holder: masked refreshes, and the normal solver's one question."""

    def __call__(self, masked: EncryptedMatrix) -> EncryptedMatrix: ...

    def solve_normal(self, system: GramStatistics, rhs: RightHandSide | None = None) -> EncryptedMatrix:
        """Decrypt ``G + l2 I'`` and ``b``, solve against ``rhs(G, b)`` (``b`` when None), and answer with a
        FRESH encryption of the ``(1, d)`` weights in ``system.column``'s tile (never a plaintext: IND-CPA-D)."""
        ...


class NormalSolver:
    """``solver='normal'``: one round trip instead of epochs. The server sends ``normal_system`` (encrypted
    ``G + l2 I'``, ``b`` and ``y^T y / n``) to the key holder, who solves and answers with freshly encrypted
    weights; what that reveals to the key holder is in ``core.gram``'s docstring. Job-runner interface of
    ``GramTrainer`` with a single "epoch" (no loss: the key holder computes it from what it decrypted)."""

    weight_scale = 1.0
    streams_rows = True
    solver = "normal"

    def __init__(self, engine: Engine, statistics: GramStatistics, config: Any, link: KeyHolderLink, *,
                 solved: EncryptedMatrix | None = None) -> None:
        if config.solver != self.solver or config.batch_size is not None:
            raise ParameterError(f"{type(self).__name__} runs solver={self.solver!r} on the whole table, got "
                                 f"solver={config.solver!r} and batch_size={config.batch_size}")
        self.engine, self.stats, self.config, self.link = engine, statistics, config, link
        self.refresh = link  # a runner may refresh the final weights; fresh ones never need it
        self.features, self.rows = statistics.features, statistics.rows
        self.rhs: RightHandSide | None = None  # what the key holder solves against: b (least squares)
        self.counts = OpCounts()
        self._weights = solved

    @staticmethod
    def epochs_of(config: LinearRegressionConfig) -> int:
        return 1

    @classmethod
    def from_partial(cls, engine: Engine, partial: GramPartial, config: LinearRegressionConfig,
                     link: KeyHolderLink) -> Self:
        partial, transform = standardize.prepare(config, partial)
        return cls(engine, normal_system(partial, config.l2, config.intercept_column, transform), config, link)

    @classmethod
    def resume(cls, engine: Engine, X: Any, y: Any, config: LinearRegressionConfig, link: KeyHolderLink,
               state: dict[str, Any], shuffles: Shuffles = ()) -> Self:
        return cls(engine, GramStatistics.from_state(engine, state), config, link, solved=state.get("weights"))

    @property
    def epoch(self) -> int:
        return int(self._weights is not None)

    @property
    def done(self) -> bool:
        return self._weights is not None

    @property
    def weights(self) -> EncryptedMatrix:
        if self._weights is None:
            raise LevelError(f"the {self.solver} system has not been solved yet: run_epoch() asks the key holder")
        return self._weights

    def run_epoch(self) -> EpochResult:
        start = time.perf_counter()
        solved = self.link.solve_normal(self.stats, self.rhs)
        tile, width = self.stats.column.tile, self.features * (self.rhs.targets if self.rhs else 1)
        if solved.shape != (1, width) or solved.tile != tile:
            raise ShapeError(
                f"the key holder's solution has shape {solved.shape} in tile {solved.tile.rows}x{solved.tile.cols}; "
                f"expected (1, {width}) in tile {tile.rows}x{tile.cols}"
            )
        self._weights = solved
        self.counts = self.stats.counts  # the pass and the normal system: the server's whole part
        return EpochResult(1, self.counts, 0, time.perf_counter() - start, None, 0.0)

    def state(self) -> dict[str, Any]:
        return {"weights": self._weights, **self.fixed_state()}

    def fixed_state(self) -> dict[str, Any]:
        return self.stats.state()

    def metadata(self) -> dict[str, Any]:
        return {"intercept_column": self.config.intercept_column, "features": self.features, "solver": "normal"}


def fit_torch_gram(X: np.ndarray, y: np.ndarray, config: LinearRegressionConfig) -> TorchFit:
    """The plaintext twin: the same updates on the same (float64) G and b from the same initial weights."""
    import torch  # only the twin needs torch; the encrypted path runs without it

    X, y = standardize.twin_data(X, y, config)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(-1))
    rows, features = Xt.shape
    G, b, yy = Xt.T @ Xt / rows, Xt.T @ yt / rows, float(yt @ yt) / rows
    ridge = torch.as_tensor(ridge_vector(features, features, config.l2, config.intercept_column))
    w = torch.as_tensor(initial_weights(features, config))
    velocity = None
    fit = TorchFit(weights=np.empty(0))
    for _ in range(config.epochs):
        start = time.perf_counter()
        Gw = G @ w
        fit.losses.append(float(w @ Gw - 2 * b @ w) + yy)
        step = config.learning_rate * (Gw - b + ridge * w)
        if config.momentum:
            velocity = step if velocity is None else velocity * config.momentum + step
            step = velocity
        w = w - step
        fit.epoch_seconds.append(time.perf_counter() - start)
    fit.weights = w.numpy()
    return fit


def fit_torch_normal(X: np.ndarray, y: np.ndarray, config: LinearRegressionConfig) -> TorchFit:
    """The normal solver's twin: ``(G + l2 I') w = b`` solved in float64 (no epochs, so no losses)."""
    import torch

    X, y = standardize.twin_data(X, y, config)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(-1))
    rows, features = Xt.shape
    ridge = torch.as_tensor(ridge_vector(features, features, config.l2, config.intercept_column))
    start = time.perf_counter()
    system = Xt.T @ Xt / rows + torch.diag(ridge)
    weights = torch.linalg.lstsq(system, (Xt.T @ yt / rows)[:, None]).solution[:, 0]
    return TorchFit(weights=weights.numpy(), epoch_seconds=[time.perf_counter() - start])
