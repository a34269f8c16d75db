"""Encrypted statistics: column moments, covariance, standardization parameters, regression metrics.

Everything the server computes stays encrypted; what CKKS cannot do cheaply (square roots, divisions by
encrypted values) is finished by the key holder after decryption with the ``finish_*`` helpers, which
work on plain numpy arrays. Divisions by the public row count are plaintext multiplications.

Level costs (fresh inputs): mean 1, variance 2, covariance 3, MSE 2, MAE 3 (degree-6 |x| polynomial);
a depth-3 plan (N = 8192) holds every one of them. Values that end at the last level must stay below
``params.max_abs_value`` (256 for plan(3)): scale raw data so that variances and covariances do.

Variance uses the expansion ``(sum(x**2) - sum(x)**2 / n) / (n - ddof)``:
two levels instead of three for the centred form (centring by a broadcast mean would also put the mean
into the padding slots and cost a masking level). CKKS error is ~1e-9 relative to the largest
intermediate (``sum(x**2)/n``), so the cancellation matters only when |mean| >> std by ~1e4 or more.

The MAE's polynomial range travels to the server in plaintext, so a range derived from the key holder's
residuals is rounded to a public grid first (``mae_grid_bound``: a power of two, exponent in
``MAE_GRID_EXPONENTS``), leaking one small integer instead of a real number.
"""

from __future__ import annotations

import math

import numpy as np

from ciphergrad.core.errors import ShapeError
from ciphergrad.core.polynomial import Polynomial, evaluate, fit_abs
from ciphergrad.core.tensor import EncryptedMatrix, hstack

__all__ = [
    "MAE_GRID_EXPONENTS",
    "absolute_residuals",
    "column_mean",
    "column_variance",
    "covariance",
    "finish_correlation",
    "finish_r2",
    "finish_std",
    "mae",
    "mae_grid_bound",
    "mae_polynomials",
    "mean_from_sums",
    "mse",
    "mse_from_sums",
    "r2_parts",
    "squared_residuals",
    "standardization_params",
    "variance_from_sums",
]


def column_mean(X: EncryptedMatrix) -> EncryptedMatrix:
    """``(1, d)`` column means (1 level)."""
    return mean_from_sums(X.sum(axis=0), X.shape[0])


def column_variance(X: EncryptedMatrix, ddof: int = 0) -> EncryptedMatrix:
    """``(1, d)`` column variances, numpy's ``var(axis=0, ddof=ddof)`` (2 levels)."""
    return variance_from_sums(X.sum(axis=0), (X * X).sum(axis=0), X.shape[0], ddof)


def mean_from_sums(total: EncryptedMatrix, rows: int) -> EncryptedMatrix:
    """Means from the column sums (an executor may add them up over row blocks)."""
    return total * (1.0 / rows)


def variance_from_sums(total: EncryptedMatrix, squares: EncryptedMatrix, rows: int, ddof: int = 0) -> EncryptedMatrix:
    """Variances from the column sums of ``X`` and of ``X * X``."""
    a2 = 1.0 / _rows_after_ddof(rows, ddof)
    # Both terms end in a plaintext multiplication: that lands each on exactly the nominal scale. Ending
    # one in a ciphertext product would leave its scale off by the prime's distance from 2**40 (~7e-7
    # relative), an error of that relative size on sum(x**2)/n once the two are subtracted.
    return squares * a2 - (total * total) * (a2 / rows)


def standardization_params(X: EncryptedMatrix, ddof: int = 0) -> tuple[EncryptedMatrix, EncryptedMatrix]:
    """Batch-norm style ``(mean, variance)``, each ``(1, d)``; the key holder takes ``finish_std``."""
    return column_mean(X), column_variance(X, ddof)


def finish_std(variance: np.ndarray) -> np.ndarray:
    """Key-holder side: standard deviation from a decrypted variance (CKKS noise can make ~0 negative)."""
    return np.sqrt(np.maximum(np.asarray(variance, dtype=np.float64), 0.0))


def covariance(X: EncryptedMatrix, ddof: int = 1) -> EncryptedMatrix:
    """``(d, d)`` covariance matrix, numpy's ``cov(X, rowvar=False, ddof=ddof)`` (3 levels).

    Needs column packing (``packing='columns'``, tile ``(R, 1)`` with ``R >= d``) so that every column is
    a ciphertext of its own. Cost: d(d+1)/2 ciphertext products and rotate-and-sums (symmetry halves it),
    d**2 plaintext masks; ~1.5 s for 13 features at N = 8192.
    """
    n, d = X.shape
    if X.tile.cols != 1 or X.tile.rows < d:
        raise ShapeError(
            f"covariance needs column packing with at least {d} tile rows; encrypt X with "
            f"packing='columns' (got tile {X.tile.rows}x{X.tile.cols})"
        )
    scale = 1.0 / _rows_after_ddof(X.shape[0], ddof)
    columns = [X.column(j) for j in range(d)]
    # gram[j][k] (j <= k): a (1, 1) matrix holding sum_i x_ij x_ik in every slot.
    gram: dict[tuple[int, int], EncryptedMatrix] = {}
    for k in range(d):
        for j in range(k + 1):
            gram[j, k] = (columns[j] * columns[k]).sum(axis=0)
    sums = X.sum(axis=0)  # (1, d): tile k holds sum_i x_ik everywhere
    # Output tile k must hold entry (j, k) at row slot j: a plaintext unit vector per j moves each
    # everywhere-replicated scalar into its row, with 1/(n - ddof) folded into the same factor.
    result_columns = []
    sums_column = None  # (d, 1): sum_j at row j
    for j in range(d):
        unit = np.zeros((d, 1))
        unit[j, 0] = 1.0
        part = sums.column(j) * unit
        sums_column = part if sums_column is None else sums_column + part
    for k in range(d):
        column = None
        for j in range(d):
            unit = np.zeros((d, 1))
            unit[j, 0] = scale
            part = gram[min(j, k), max(j, k)] * unit
            column = part if column is None else column + part
        result_columns.append(column)
    result = hstack(result_columns)
    # The correction S_j S_k / (n (n - ddof)) ends in a plaintext factor (a third level) so that its scale
    # is exact, like the Gram term's (see column_variance).
    outer = (sums_column * sums) * (scale / n)
    return result - outer


def finish_correlation(cov: np.ndarray) -> np.ndarray:
    """Key-holder side: correlation matrix from a decrypted covariance matrix."""
    cov = np.asarray(cov, dtype=np.float64)
    std = finish_std(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(std, std)
    return np.clip(corr, -1.0, 1.0)


# -- metrics between encrypted predictions and encrypted targets ------------------------------------
def mse(predictions: EncryptedMatrix, targets: EncryptedMatrix) -> EncryptedMatrix:
    """``(1, 1)`` mean squared error (2 levels); RMSE is ``sqrt`` of it on the key holder's side."""
    _check_pair(predictions, targets)
    return mse_from_sums(squared_residuals(predictions, targets).sum(axis=0), predictions.shape[0])


def squared_residuals(predictions: EncryptedMatrix, targets: EncryptedMatrix) -> EncryptedMatrix:
    """``(predictions - targets)**2`` row by row (1 level): row-local, so it can be split over row blocks
    and its column sums added up (``server.execution``'s ``column_sums``); ``mse_from_sums`` finishes."""
    _check_pair(predictions, targets)
    residual = predictions - targets
    return residual * residual


def mse_from_sums(sums: EncryptedMatrix, rows: int) -> EncryptedMatrix:
    """``(1, 1)`` MSE from the ``(1, d)`` column sums of ``squared_residuals`` over ``rows`` rows."""
    return sums.sum(axis=1) * (1.0 / rows / sums.shape[1])


def r2_parts(predictions: EncryptedMatrix, targets: EncryptedMatrix) -> tuple[EncryptedMatrix, EncryptedMatrix]:
    """``(MSE, variance of targets)``, both ``(1, 1)``; ``finish_r2`` divides them after decryption."""
    _check_pair(predictions, targets)
    if targets.shape[1] != 1:
        raise ShapeError(f"R² takes one target column, got {targets.shape[1]}")
    return mse(predictions, targets), column_variance(targets)


def finish_r2(mse_value: np.ndarray | float, target_variance: np.ndarray | float) -> float:
    return float(1.0 - np.asarray(mse_value).reshape(-1)[0] / np.asarray(target_variance).reshape(-1)[0])


def mae(
    predictions: EncryptedMatrix,
    targets: EncryptedMatrix,
    *,
    bound: float = 1.0,
    degree: int = 6,
) -> tuple[EncryptedMatrix, Polynomial]:
    """``(1, 1)`` mean absolute error through a least-squares |x| polynomial on ``[-bound, bound]``.

    Returns the encrypted value and the polynomial used; its ``max_error`` bounds the error of the
    result when every residual lies in ``[-bound, bound]`` (the mean of per-row errors is at most their
    maximum). Degree 6 costs 3 levels; 1/n is folded into the coefficients so it costs none.
    """
    _check_pair(predictions, targets)
    poly, averaged = mae_polynomials(predictions.shape[0] * predictions.shape[1], bound=bound, degree=degree)
    return absolute_residuals(predictions, targets, polynomial=averaged).sum(), poly


# The powers of two ``mae_grid_bound`` chooses from: 24 values, so at most log2(24) < 4.6 bits. Below 2**-4
# the degree-6 polynomial's coefficients (~bound**-5) amplify CKKS noise past its own error bound (at 2**-8 a
# mean absolute residual of 0.0027 decrypts as -0.0007), so smaller residuals share the range 2**-4.
MAE_GRID_EXPONENTS = (-4, 19)  # 2**19 < the server's MAX_MAE_BOUND (1e6)


def mae_grid_bound(largest_residual: float) -> float:
    """The |x| polynomial's range for residuals up to ``largest_residual`` in absolute value, on a public
    grid: ``2**ceil(log2(1.25 * largest_residual))`` (1.25: a margin for values the key holder did not
    see, e.g. CKKS noise), clamped to ``2**MAE_GRID_EXPONENTS``; 1/16 when there is no residual. Whoever
    receives it learns only that exponent, at most ``log2(24)`` bits; above the clamp the MAE's error bound
    (proportional to the range) is at most twice that of the unrounded range."""
    largest = abs(float(largest_residual))
    if not math.isfinite(largest):
        raise ValueError(f"largest_residual={largest_residual} must be finite")
    low, high = MAE_GRID_EXPONENTS
    if largest == 0.0:
        return 2.0**low
    return 2.0 ** min(max(math.ceil(math.log2(1.25 * largest)), low), high)


def mae_polynomials(count: int, *, bound: float = 1.0, degree: int = 6) -> tuple[Polynomial, Polynomial]:
    """The |x| polynomial and the same divided by ``count`` (rows x columns): ``absolute_residuals``' input."""
    poly = fit_abs(degree, bound)
    averaged = Polynomial(tuple(c / count for c in poly.coefficients), poly.bound, poly.name, poly.max_error)
    return poly, averaged


def absolute_residuals(predictions: EncryptedMatrix, targets: EncryptedMatrix, *, polynomial: Polynomial
                       ) -> EncryptedMatrix:
    """``polynomial(predictions - targets)`` row by row (row-local); the sum of all of it is the MAE when
    ``polynomial`` is ``mae_polynomials``' averaged one."""
    _check_pair(predictions, targets)
    # Padding slots hold residual 0; their constant term is packed as 0 there, so they add nothing.
    return evaluate(polynomial, predictions - targets)


# -- helpers -----------------------------------------------------------------------------------------
def _rows_after_ddof(rows: int, ddof: int) -> int:
    n = rows - ddof
    if n < 1:
        raise ShapeError(f"{rows} rows with ddof={ddof} leave no degrees of freedom")
    return n


def _check_pair(a: EncryptedMatrix, b: EncryptedMatrix) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"predictions {a.shape} and targets {b.shape} differ in shape")
