"""Key-holder-side conditioning: standardize features before encryption, map the weights back after.

Gradient descent converges at a rate set by the condition number of X^T X. Min-max-scaled features with a
column of ones are badly conditioned (the bias and every feature's mean pull together); centring and
scaling each feature decouples the bias and brings the Hessian close to a correlation matrix. The key
holder has the plaintext, so this costs nothing encrypted; the fitted model is then an exact linear
re-parametrization of the model on the original features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Standardizer:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        X = np.asarray(X, dtype=np.float64)
        scale = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(scale > 0, scale, 1.0))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def original_weights(self, intercept: float, coef: np.ndarray) -> tuple[float, np.ndarray]:
        """Weights on the original features for a model fitted on standardized ones."""
        coef = np.asarray(coef, dtype=np.float64) / self.scale
        return float(intercept - coef @ self.mean), coef
