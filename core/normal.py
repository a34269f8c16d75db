"""The normal solver: least squares (or the quadratic logistic surrogate) in one round trip.

The server finalizes the one-pass statistics (``core.gram.finalize``) into ``G + l2 I'`` (the intercept's
entry unpenalized) and ``b`` (``normal_system``); the key holder decrypts them, forms the right-hand side
(``RightHandSide``: ``b`` for least squares, one or several label columns for the logistic surrogate),
solves exactly (``solve_normal``) and answers with a fresh encryption of the weights. That reveals these
aggregates (``d(d+1)/2 + d`` numbers, and ``y^T y / n``) to the key holder, who owns the rows anyway; no
row-level value, and nothing decrypted reaches the server. Cost on the server: ``finalize`` and, with a
ridge, one plaintext addition; no level beyond ``finalize``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ciphergrad.core.errors import ShapeError
from ciphergrad.core.gram import GramPartial, GramStatistics, finalize
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.tensor import EncryptedMatrix

__all__ = ["RightHandSide", "normal_system", "ridge_vector", "solve_normal"]


def normal_system(partial: GramPartial, l2: float = 0.0, intercept_column: int | None = 0,
                  transform: np.ndarray | None = None) -> GramStatistics:
    """Server side of the normal solver: encrypted ``G + l2 I'`` (intercept unpenalized) and ``b``."""
    stats = finalize(partial, 1.0, transform, for_decryption=True)
    if l2:
        engine, diagonals = partial.engine, stats.diagonals
        ridge = np.tile(ridge_vector(stats.features, stats.period, l2, intercept_column), engine.slots // stats.period)
        first = engine.add_plain(stats.diagonal(0), ridge)
        tiles = [[first, *diagonals.ciphertexts[1:]]]
        stats = replace(stats, diagonals=EncryptedMatrix(engine, tiles, diagonals.shape, diagonals.tile))
    return stats


@dataclass(frozen=True)
class RightHandSide:
    """What the key holder solves against: ``target_scale * b + ones_scale * G[:, ones_column]``.

    Least squares takes ``b`` as it is (the default). The quadratic logistic surrogate (``core.quadratic``)
    needs ``X^T t / n`` for labels ``t = 2y - 1``: with an intercept column that is ``2b - G[:, c]``, formed
    after decryption, so the server's pass is the least-squares one and any packing works."""

    target_scale: float = 1.0
    ones_scale: float = 0.0
    ones_column: int = 0
    # K > 1: the system's last K - 1 columns are further targets (one-vs-rest class indicators uploaded as
    # features, y the K-th): each is solved against the first d = features - (K - 1) columns, which share
    # one X^T X. The solution is K blocks of d weights.
    targets: int = 1

    def __call__(self, G: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The right-hand side(s): ``(d,)``, or ``(d, K)`` with several targets."""
        d = len(b) - (self.targets - 1)
        if d < 1:
            raise ShapeError(f"a system of {len(b)} columns cannot hold {self.targets} targets")
        if not 0 <= self.ones_column < d:
            raise ShapeError(f"ones_column={self.ones_column} is outside the {d} features of the system")
        targets = b[:d] if self.targets == 1 else np.column_stack([G[:d, d:], b[:d]])
        ones = G[:d, self.ones_column] if self.targets == 1 else G[:d, [self.ones_column]]
        return self.target_scale * targets + self.ones_scale * ones

    def solve(self, G: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Least-squares solution(s) of ``G[:d, :d] w = rhs``, flattened target by target."""
        d = len(b) - (self.targets - 1)
        return np.linalg.lstsq(G[:d, :d], self(G, b), rcond=None)[0].T.reshape(-1)


def solve_normal(holder: KeyHolder, system: GramStatistics, rhs: RightHandSide | None = None) -> np.ndarray:
    """Key holder side: decrypt ``G + l2 I'`` and ``b`` (aggregates only) and solve exactly; ``rhs`` forms
    another right-hand side from them (the ridge leaves ``G``'s off-diagonal and intercept entries as they are)."""
    G, b, _ = system.dense(holder)
    return (rhs or RightHandSide()).solve(G, b)


def ridge_vector(features: int, period: int, l2: float, intercept_column: int | None) -> np.ndarray:
    """``l2`` on every feature's diagonal entry but the intercept's, zero-padded to ``period``."""
    ridge = np.zeros(period)
    ridge[:features] = l2
    if intercept_column is not None:
        ridge[intercept_column] = 0.0
    return ridge
