"""Logistic regression from one pass of encrypted statistics: the quadratic surrogate (``solver='quadratic'``).

For labels ``t = 2y - 1`` in {-1, +1} and logits ``z = x . w`` the logistic loss is ``log(1 + exp(-t z))``.
Replacing it by its least-squares quadratic ``c0 + c1 u + c2 u^2`` on ``u`` in ``[-R, R]``
(``core.polynomial.fit_log_loss``; polynomial approximate sufficient statistics, Huggins, Adams & Broderick,
NeurIPS 2017) and using ``t^2 = 1``, the mean loss plus ``l2/2 |w|^2`` (intercept unpenalized) becomes

    c0 + c1 (X^T t / n) . w + c2 w^T G w + l2/2 |w|^2,        G = X^T X / n,

whose minimizer solves ``(G + l2/(2 c2) I') w = -c1/(2 c2) X^T t / n``. With an intercept column ``c``,
``X^T t / n = 2 b - G[:, c]`` (``b = X^T y / n``), so the server runs exactly the least-squares pass of
``core.gram`` on the dataset as uploaded (labels 0/1, any packing), adds the scaled ridge, and asks the key
holder once, as the normal solver does: the key holder decrypts ``G + l2' I'`` and ``b`` (aggregates,
``d(d+1)/2 + d + 1`` numbers), forms the right-hand side (``core.gram.RightHandSide``), solves and answers
with a fresh encryption of the weights. Costs: the Gram pass and one round trip; no refresh, no epoch.

What it is worth: with ``l2 = 0`` the weights are the least-squares fit to ``-c1/c2 * t`` (``R`` scales them
and leaves the decision boundary where it is), so accuracy matches an exact logistic fit where classes are
roughly linearly separable and the surrogate's calibration depends on ``R`` (``bound``, default 4 for
standardized features: the logits of most rows of a fitted model lie within it). ``LogisticTrainer``
(``solver='gd'``) refines from there at per-row cost.
"""

from __future__ import annotations

import time
from typing import Any, Self

import numpy as np

from ciphergrad.core import standardize
from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.errors import LevelError, ParameterError, ShapeError
from ciphergrad.core.gram import GramPartial, GramStatistics, RightHandSide, normal_system, ridge_vector
from ciphergrad.core.gram_training import KeyHolderLink
from ciphergrad.core.linear import TorchFit
from ciphergrad.core.polynomial import Polynomial, fit_log_loss
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.core.training import EpochResult

__all__ = ["DEFAULT_BOUND", "QuadraticSolver", "fit_torch_quadratic", "surrogate", "system_terms"]

DEFAULT_BOUND = 4.0


def surrogate(config: Any) -> Polynomial:
    """The quadratic of ``config.bound`` (``DEFAULT_BOUND`` when None)."""
    return fit_log_loss(config.bound if config.bound is not None else DEFAULT_BOUND)


def system_terms(config: Any) -> tuple[float, RightHandSide]:
    """``(ridge added to G, right-hand side)`` of the surrogate's normal equations for ``config``."""
    if config.intercept_column is None:
        raise ParameterError(
            "solver='quadratic' forms X^T t from the intercept column (t = 2y - 1): keep fit_intercept=True "
            "(intercept_column=0), or use solver='gd'"
        )
    _, c1, c2 = surrogate(config).coefficients
    scale = -c1 / (2.0 * c2)
    targets = config.classes if config.classes > 2 else 1
    return config.l2 / (2.0 * c2), RightHandSide(2.0 * scale, -scale, config.intercept_column, targets)


class QuadraticSolver:
    """``solver='quadratic'``: the job-runner interface of ``core.gram_training.NormalSolver`` (one "epoch":
    the key holder's round trip; no loss, which the key holder computes from what it decrypted)."""

    weight_scale = 1.0
    streams_rows = True  # a server builds it with from_partial over blocks streamed from disk

    def __init__(self, engine: Engine, statistics: GramStatistics, config: Any, link: KeyHolderLink, *,
                 solved: EncryptedMatrix | None = None) -> None:
        if config.solver != "quadratic" or config.batch_size is not None:
            raise ParameterError(f"QuadraticSolver runs solver='quadratic' on the whole table, got solver="
                                 f"{config.solver!r} and batch_size={config.batch_size}")
        self.engine, self.stats, self.config, self.link = engine, statistics, config, link
        self.refresh = link  # a runner may refresh the final weights; fresh ones never need it
        self.rows = statistics.rows
        self.counts = OpCounts()
        self.ridge, self.rhs = system_terms(config)
        # One-vs-rest: the last K - 1 uploaded columns are class indicators, not features.
        self.features = statistics.features - (self.rhs.targets - 1)
        if self.features < 1:
            raise ShapeError(f"classes={config.classes} needs {config.classes - 1} indicator columns after the "
                             f"features; the table has {statistics.features} columns")
        self._weights = solved

    @staticmethod
    def epochs_of(config: Any) -> int:
        return 1

    @classmethod
    def from_partial(cls, engine: Engine, partial: GramPartial, config: Any, link: KeyHolderLink) -> Self:
        ridge, _ = system_terms(config)
        return cls(engine, normal_system(partial, ridge, config.intercept_column), config, link)

    @classmethod
    def resume(cls, engine: Engine, X: Any, y: Any, config: Any, link: KeyHolderLink, state: dict[str, Any],
               shuffles: Any = ()) -> Self:
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
            raise LevelError("the surrogate's system has not been solved yet: run_epoch() asks the key holder")
        return self._weights

    def run_epoch(self) -> EpochResult:
        start = time.perf_counter()
        solved = self.link.solve_normal(self.stats, self.rhs)
        tile, width = self.stats.column.tile, self.features * self.rhs.targets
        if solved.shape != (1, width) or solved.tile != tile:
            raise ShapeError(
                f"the key holder's solution has shape {solved.shape} in tile {solved.tile.rows}x{solved.tile.cols}; "
                f"expected (1, {width}) in tile {tile.rows}x{tile.cols}"
            )
        self._weights = solved
        return EpochResult(1, OpCounts(), 0, time.perf_counter() - start, None, 0.0)

    def state(self) -> dict[str, Any]:
        return {"weights": self._weights, **self.fixed_state()}

    def fixed_state(self) -> dict[str, Any]:
        return self.stats.state()

    def metadata(self) -> dict[str, Any]:
        poly = self.config.polynomial(self.features)
        return {"intercept_column": self.config.intercept_column, "features": self.features, "solver": "quadratic",
                "classes": self.config.classes, "surrogate": surrogate(self.config).to_dict(), "bound": poly.bound,
                "degree": poly.degree, "sigmoid": poly.to_dict()}


def fit_torch_quadratic(X: np.ndarray, y: np.ndarray, config: Any) -> TorchFit:
    """The twin: the same surrogate's normal equations solved in float64 from the plaintext rows."""
    import torch  # only the twin needs torch

    X, y = standardize.twin_data(X, y, config)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(-1))
    rows, features = Xt.shape
    ridge, rhs = system_terms(config)
    start = time.perf_counter()
    G = Xt.T @ Xt / rows + torch.diag(torch.as_tensor(ridge_vector(features, features, ridge, config.intercept_column)))
    weights = rhs.solve(G.numpy(), (Xt.T @ yt / rows).numpy())  # float64 LAPACK, as the key holder's
    return TorchFit(weights=weights, epoch_seconds=[time.perf_counter() - start])
