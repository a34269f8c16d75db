"""Training that cannot go silently wrong: the key holder's checks on what it decrypts and on its own rows.

CKKS holds values below ``2**integer_bits`` (``CKKSParameters.integer_bits``: 9 bits, |v| < 512, for
``plan(3)``); past that a decryption wraps around to an arbitrary number, often negative. A diverging
gradient descent reaches that bound within a few epochs, so its decrypted loss turns from rising to
negative or huge, and a model fitted from such numbers is garbage. Three checks stop it:

- ``LossWatch``: every decrypted training loss must be finite, not negative and not rising for
  ``patience`` epochs in a row (``DivergenceError`` names the epoch and the number to change).
- ``check_magnitude``: values the key holder decrypts (a refresh: below 3/4 of ``max_abs_value``, so
  the masked value itself stays below half of it) or is about to encrypt (the scaled table: below a
  quarter) must stay in range.
- ``safe_learning_rate``: a step that cannot diverge on the key holder's scaled rows, ``1/L`` rounded
  down to a power of two, ``L`` the gradient's Lipschitz constant (``lambda_max(X^T X / n)`` for least
  squares, a quarter of it for the logistic loss). Rounding leaves the server ``floor(log2 L)`` only: at
  most ``log2(log2(d + 1)) + 1`` bits for standardized columns, whose ``lambda_max`` lies in ``[1, d + 1]``.

``gradient_norm`` then tells whether an iterative fit converged (``CONVERGED_BELOW`` on scaled data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ciphergrad.core.errors import CipherGradError

__all__ = [
    "CONVERGED_BELOW",
    "DivergenceError",
    "LossWatch",
    "check_magnitude",
    "gradient_norm",
    "safe_learning_rate",
]

# Gradient norm on standardized data below which an iterative fit counts as converged.
CONVERGED_BELOW = 1e-3


class DivergenceError(CipherGradError, ValueError):
    """A training run whose decrypted numbers stopped meaning anything (diverged or out of CKKS range)."""


@dataclass
class LossWatch:
    """Raises ``DivergenceError`` on the first decrypted loss that is not finite or is negative, and when the
    loss has risen ``patience`` epochs in a row. ``slack`` absorbs CKKS noise around a loss of zero."""

    patience: int = 5
    slack: float = 1e-4
    hint: str = "lower learning_rate (or leave it None for a step derived from the data), or use an exact solver"
    losses: list[float] = field(default_factory=list)
    _rises: int = 0

    def observe(self, epoch: int, loss: float) -> None:
        hint = self.hint
        if not math.isfinite(loss):
            raise DivergenceError(f"epoch {epoch}: the decrypted loss is {loss}: training diverged; {hint}")
        if loss < -self.slack:
            raise DivergenceError(
                f"epoch {epoch}: the decrypted loss is {loss:.6g} < 0, which a loss cannot be: values left the range "
                f"CKKS holds (training diverged, or the data is not scaled); {hint}"
            )
        if self.losses and loss > self.losses[-1] + self.slack:
            self._rises += 1
            if self._rises >= self.patience:
                raise DivergenceError(
                    f"epoch {epoch}: the decrypted loss rose {self._rises} epochs in a row "
                    f"({self.losses[-self._rises]:.6g} -> {loss:.6g}): training diverges; {hint}"
                )
        else:
            self._rises = 0
        self.losses.append(loss)


def check_magnitude(values: np.ndarray, limit: float, what: str, hint: str) -> None:
    """``DivergenceError`` naming ``what`` and ``hint`` when any value is not finite or reaches ``limit``."""
    values = np.asarray(values, dtype=np.float64)
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if not math.isfinite(largest) or largest >= limit:
        raise DivergenceError(f"{what} reaches {largest:.4g}, at or past {limit:g}: {hint}")


def safe_learning_rate(X: np.ndarray, *, logistic: bool = False) -> float:
    """``1/L`` rounded down to a power of two for the design ``X`` (intercept column included)."""
    X = np.asarray(X, dtype=np.float64)
    largest = float(np.linalg.eigvalsh(X.T @ X / max(len(X), 1))[-1])
    lipschitz = largest / 4.0 if logistic else largest
    if not lipschitz > 0:
        return 1.0
    return 2.0 ** math.floor(-math.log2(lipschitz))


def gradient_norm(X: np.ndarray, y: np.ndarray, weights: np.ndarray, *, logistic: bool = False,
                  l2: float = 0.0, intercept_column: int | None = 0) -> float:
    """Euclidean norm of the mean loss's gradient at ``weights`` (the exact sigmoid for logistic)."""
    X, y, w = (np.asarray(a, dtype=np.float64) for a in (X, y, weights))
    z = X @ w
    residual = 1.0 / (1.0 + np.exp(-z)) - y if logistic else z - y
    gradient = X.T @ residual / len(X)
    if l2:
        penalty = l2 * w.copy()
        if intercept_column is not None:
            penalty[intercept_column] = 0.0
        gradient = gradient + penalty
    return float(np.linalg.norm(gradient))
