"""Feature (and target) standardization that the Gram solvers apply inside their one-pass statistics, for
data whose owners did not standardize it (a pool's contributors cannot: only the analyst learns the pooled
means and deviations).

A standardization is ``(scale, shift)``: one pair per column of the augmented table ``Z = [X | y]``
(``m = d + 1`` values, the target last). Column ``k`` becomes ``z_k * scale_k + shift_k * z_c`` where
``z_c`` is the intercept column of ones (``intercept_column``), which is left alone (scale 1, shift 0). Using
``z_c`` instead of the constant 1 keeps zero-padded rows zero, so the statistics stay sums over real rows.
As a matrix, ``Z' = Z A^T`` with ``A`` = ``transform_matrix``, hence ``Z'^T Z' = A (Z^T Z) A^T``:
``core.gram.finalize`` folds ``A`` into the plaintext masks it multiplies the pair sums by anyway, so
standardizing costs no level and no rotation, only more plaintext products (up to four per entry).

Invariants: without an intercept column every shift is 0 (nothing to shift with); the model trained on
``Z'`` maps back to raw units exactly (``raw_weights``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.gram import GramPartial, center_columns

Standardization = tuple[tuple[float, ...], tuple[float, ...]]


def check(standardization: Sequence[Sequence[float]], intercept_column: int | None) -> None:
    """ParameterError naming what is wrong with a ``(scale, shift)`` pair (lengths are checked against the data
    in ``transform_matrix``)."""
    if len(standardization) != 2:
        raise ParameterError("standardization is (scale, shift): two lists with one value per column of [X | y]")
    scale, shift = (np.asarray(part, dtype=np.float64) for part in standardization)
    if scale.ndim != 1 or scale.shape != shift.shape or len(scale) < 2:
        raise ParameterError(
            f"standardization's scale and shift have {scale.size} and {shift.size} values: give one per column "
            "of [X | y], the target last"
        )
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(shift))) or np.any(scale == 0):
        raise ParameterError("standardization's scales must be finite and non-zero, its shifts finite")
    if intercept_column is None and np.any(shift):
        raise ParameterError("standardization shifts need an intercept column (of ones): set shifts to 0")
    if intercept_column is not None and intercept_column < len(scale) - 1 and (
        scale[intercept_column] != 1 or shift[intercept_column] != 0
    ):
        raise ParameterError(
            f"standardization must leave the intercept column {intercept_column} alone: scale 1, shift 0"
        )


def transform_matrix(standardization: Sequence[Sequence[float]], columns: int,
                     intercept_column: int | None) -> np.ndarray:
    """``A`` (m x m, m = columns + 1) with ``Z' = Z A^T`` for the augmented rows ``Z = [X | y]``."""
    check(standardization, intercept_column)
    scale, shift = (np.asarray(part, dtype=np.float64) for part in standardization)
    if len(scale) != columns + 1:
        raise ShapeError(
            f"standardization has {len(scale)} values per list; the data has {columns} feature columns and a "
            f"target: give {columns + 1}"
        )
    A = np.diag(scale)
    if intercept_column is not None:
        A[:, intercept_column] += shift
        A[intercept_column] = 0.0
        A[intercept_column, intercept_column] = 1.0
    return A


def apply(X: np.ndarray, y: np.ndarray, standardization: Sequence[Sequence[float]],
          intercept_column: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The plaintext twin: ``(X', y')`` as the encrypted statistics see them."""
    Z = np.hstack([np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64).reshape(-1, 1)])
    Z = Z @ transform_matrix(standardization, Z.shape[1] - 1, intercept_column).T
    return Z[:, :-1], Z[:, -1]


def from_moments(mean: np.ndarray, std: np.ndarray, intercept_column: int | None, target_mean: float = 0.0,
                 target_std: float = 1.0) -> Standardization:
    """``(scale, shift)`` that give every feature mean 0 and deviation 1 (a constant column is only centered),
    and the target the same when its moments are given. ``mean``/``std`` cover the feature columns *without*
    the intercept column, which is inserted at ``intercept_column`` (scale 1, shift 0)."""
    std = np.where(np.asarray(std) > 0, std, 1.0)
    scale, shift = list(1.0 / std), list(-np.asarray(mean) / std)
    if intercept_column is not None:
        scale.insert(intercept_column, 1.0)
        shift.insert(intercept_column, 0.0)
    else:
        shift = [0.0] * len(shift)  # nothing to shift with: scale only
        target_mean = 0.0
    target_std = target_std if target_std > 0 else 1.0
    return (*scale, 1.0 / target_std), (*shift, -target_mean / target_std)  # type: ignore[return-value]


def raw_weights(weights: np.ndarray, standardization: Sequence[Sequence[float]],
                intercept_column: int | None) -> np.ndarray:
    """Weights of the model trained on standardized data, in raw units: ``y = X @ raw``.

    From ``y * s_y + t_y = sum_k w_k (x_k * s_k + t_k) + w_c`` (k over the non-intercept columns)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    A = transform_matrix(standardization, len(w), intercept_column)
    # y' = A[-1] . z = (A[:-1, :-1] x) . w  =>  y = x . (A[:-1, :-1]^T w - A[-1, :-1]) / A[-1, -1]
    return (A[:-1, :-1].T @ w - A[-1, :-1]) / A[-1, -1]


def prepare(config: object, partial: GramPartial) -> tuple[GramPartial, np.ndarray | None]:
    """The Gram partial and transform ``core.gram.finalize`` takes for a config's ``standardization`` (the
    partial unchanged and None without one).

    Precision: finalize's plaintext factor ``scale_a * scale_b / n`` is encoded with about 40 bits of scale, so
    an entry keeps about ``40 - log2(n * std_a * std_b)`` bits (``40 - log2 n`` for unit deviations). Centering
    by the mean after the division would cost another ``log2((mean / std)^2)`` bits (a year near 1975 +- 20:
    13 bits), so the shift's integer part is subtracted exactly from the pending sums first
    (``core.gram.center_columns``) and only the fractional rest goes through the transform. Deviations still
    cost bits: send values in units that keep deviations within about 1,000 (prices in thousands, not in
    units: a deviation of 30,000 over 600 rows leaves 1 bit)."""
    found = getattr(config, "standardization", None)
    if found is None:
        return partial, None
    intercept_column = getattr(config, "intercept_column", None)
    A = transform_matrix(found, partial.features, intercept_column)
    if intercept_column is None:
        return partial, A
    scale, shift = np.diag(A).copy(), A[:, intercept_column].copy()
    shift[intercept_column] = 0.0
    center = np.round(-shift / scale)  # z - u z_c, then (z - u z_c) * scale + (shift + scale * u) z_c
    centered = center_columns(partial, center, intercept_column)
    A[:, intercept_column] = shift + scale * center
    A[intercept_column, intercept_column] = 1.0
    return centered, A


def twin_data(X: np.ndarray, y: np.ndarray, config: object) -> tuple[np.ndarray, np.ndarray]:
    """What a plaintext twin trains on: ``(X, y)`` standardized as the config says (unchanged without one)."""
    found = getattr(config, "standardization", None)
    if found is None:
        return X, y
    return apply(X, y, found, getattr(config, "intercept_column", None))
