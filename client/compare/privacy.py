"""What differential privacy costs a pool: test R^2 and accuracy against epsilon, through the real mechanism.

Each table is split 80/20; the training rows go to three contributors, whose statistics
(``core.release.RowSpace.moments``) are encrypted with a key holder's public key. For every epsilon the pool's
release is sealed exactly as the server seals it (``core.release.seal``: row-weighted sum plus Gaussian noise
from ``secrets`` with the analytic Gaussian mechanism's sigma), decrypted, and solved (ridge for Ames and
diabetes, the quadratic logistic surrogate for breast cancer); the held-out rows score it. ``repeats`` noise
draws per epsilon give the mean and spread. epsilon = inf is the exact release (no noise).

Bounds are public by assumption: here each column's range rounded outward (``client.pool_demo.public_bounds``),
a stand-in for what a domain expert would declare.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from ciphergrad.client.pool_demo import public_bounds
from ciphergrad.core.data import load_ames
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.params import plan
from ciphergrad.core.release import Bounds, Moments, RowSpace, analytic_gaussian_sigma, moment_tile, seal

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
DELTA = 1e-6
CONTRIBUTORS = 3


def _tables() -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    ames = load_ames()
    X, y = load_diabetes(return_X_y=True)
    Xc, yc = load_breast_cancer(return_X_y=True)
    return {"ames": (ames.X, ames.y, False), "diabetes": (X, y, False), "breast cancer": (Xc, yc, True)}


def _score(weights: np.ndarray, X: np.ndarray, y: np.ndarray, classify: bool) -> float:
    predicted = np.c_[np.ones(len(X)), X] @ weights
    if classify:
        return float(np.mean((predicted > 0) == (y == 1)))
    return float(1 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2))


def sweep(repeats: int = 20, epsilons: tuple[float, ...] = EPSILONS,
          tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Per table: the metric's mean and standard deviation over ``repeats`` releases for each epsilon."""
    holder = KeyHolder(plan(2), rotations=[])
    tile = moment_tile(holder.params.slots)
    found: dict[str, Any] = {"delta": DELTA, "epsilons": [e if math.isfinite(e) else None for e in epsilons],
                             "repeats": repeats, "contributors": CONTRIBUTORS, "tables": {}}
    for name, (X, y, classify) in _tables().items():
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)
        bounds = tuple(Bounds(*public_bounds(column)) for column in Xtr.T)
        space = RowSpace(bounds, None if classify else Bounds(*public_bounds(ytr)), 2 if classify else 0)
        parts = []
        for rows in np.array_split(np.arange(len(Xtr)), CONTRIBUTORS):
            n, moments, _ = space.moments(Xtr[rows], ytr[rows])
            parts.append((n, holder.encrypt(moments[:, None], tile=tile)))
        total = sum(n for n, _ in parts)
        means, spreads, sigmas = [], [], []
        for epsilon in epsilons:
            sigma = analytic_gaussian_sigma(epsilon, DELTA, space.sensitivity()) if math.isfinite(epsilon) else 0.0
            scores = []
            for _ in range(repeats if sigma else 1):
                release = Moments.from_release(total, space, holder.decrypt(seal(parts, sigma)).ravel(), sigma)
                weights = release.logistic() if classify else release.ridge()
                scores.append(_score(weights, Xte, yte, classify))
            means.append(float(np.mean(scores)))
            spreads.append(float(np.std(scores)))
            sigmas.append(sigma)
            if tick:
                tick(f"{name} epsilon={epsilon}")
        found["tables"][name] = {
            "metric": "test accuracy" if classify else "test R²", "rows": len(Xtr), "features": X.shape[1],
            "mean": means, "std": spreads, "noise_std": sigmas, "sensitivity": space.sensitivity(),
        }
    return found
