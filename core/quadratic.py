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
``d(d+1)/2 + d + 1`` numbers), forms the right-hand side (``core.normal.RightHandSide``), solves and answers
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
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.gram import GramPartial, GramStatistics
from ciphergrad.core.gram_training import KeyHolderLink, NormalSolver
from ciphergrad.core.linear import TorchFit
from ciphergrad.core.normal import RightHandSide, normal_system, ridge_vector
from ciphergrad.core.polynomial import Polynomial, fit_log_loss
from ciphergrad.core.tensor import EncryptedMatrix

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


class QuadraticSolver(NormalSolver):
    """``solver='quadratic'``: ``core.gram_training.NormalSolver``'s one round trip on the surrogate's system
    (the ridge scaled by ``1 / (2 c2)``, the right-hand side of ``system_terms``)."""

    solver = "quadratic"

    def __init__(self, engine: Engine, statistics: GramStatistics, config: Any, link: KeyHolderLink, *,
                 solved: EncryptedMatrix | None = None) -> None:
        super().__init__(engine, statistics, config, link, solved=solved)
        self.ridge, self.rhs = system_terms(config)
        # One-vs-rest: the last K - 1 uploaded columns are class indicators, not features.
        self.features = statistics.features - (self.rhs.targets - 1)
        if self.features < 1:
            raise ShapeError(f"classes={config.classes} needs {config.classes - 1} indicator columns after the "
                             f"features; the table has {statistics.features} columns")

    @classmethod
    def from_partial(cls, engine: Engine, partial: GramPartial, config: Any, link: KeyHolderLink) -> Self:
        ridge, _ = system_terms(config)
        return cls(engine, normal_system(partial, ridge, config.intercept_column), config, link)

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
