"""Encrypted statistics against numpy on scikit-learn's bundled data.

Tolerances: CKKS at scale 2**40 keeps ~1e-7 relative precision of the largest intermediate value, so
moments are checked to 1e-6 times the largest mean square (a few e-4 on raw wine data, which is why the
data are divided by their standard deviation first, giving mean squares up to ~250).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine

from ciphergrad.core import KeyHolder, plan
from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.polynomial import fit_abs
from ciphergrad.core.stats import (
    MAE_GRID_EXPONENTS,
    column_mean,
    column_variance,
    covariance,
    finish_correlation,
    finish_r2,
    finish_std,
    mae,
    mae_grid_bound,
    mse,
    r2_parts,
    standardization_params,
)


@pytest.fixture(scope="module")
def kh() -> KeyHolder:
    return KeyHolder(plan(3))


@pytest.fixture(scope="module")
def wine() -> np.ndarray:
    X = load_wine().data
    return X / X.std(axis=0)  # uncentred on purpose: means up to ~16 stress the variance cancellation


def _tol(X: np.ndarray) -> float:
    return 1e-6 * float(np.max(np.mean(X**2, axis=0)))


@pytest.mark.parametrize("packing", ["rows", "columns"])
def test_mean_variance_std_match_numpy(kh: KeyHolder, wine: np.ndarray, packing: str) -> None:
    E = kh.encrypt(wine, packing=packing)
    mean, var = standardization_params(E, ddof=1)
    assert mean.level == 2 and var.level == 1  # 1 and 2 levels spent, as documented
    np.testing.assert_allclose(kh.decrypt(mean)[0], wine.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(kh.decrypt(var)[0], wine.var(axis=0, ddof=1), atol=_tol(wine))
    np.testing.assert_allclose(finish_std(kh.decrypt(var)[0]), wine.std(axis=0, ddof=1), atol=_tol(wine))


def test_population_variance_on_partial_tile(kh: KeyHolder) -> None:
    X = np.random.default_rng(3).normal(2.0, 3.0, size=(37, 5))  # 37 rows: padding in the last tile
    E = kh.encrypt(X)
    np.testing.assert_allclose(kh.decrypt(column_mean(E))[0], X.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(kh.decrypt(column_variance(E))[0], X.var(axis=0), atol=_tol(X))


def test_covariance_and_correlation_match_numpy(kh: KeyHolder) -> None:
    X = load_iris().data
    E = kh.encrypt(X, packing="columns")
    C = covariance(E)
    assert C.shape == (4, 4)
    cov = kh.decrypt(C)
    np.testing.assert_allclose(cov, np.cov(X, rowvar=False), atol=_tol(X))
    np.testing.assert_allclose(finish_correlation(cov), np.corrcoef(X, rowvar=False), atol=1e-5)


def test_covariance_needs_column_packing(kh: KeyHolder) -> None:
    with pytest.raises(ShapeError, match="packing='columns'"):
        covariance(kh.encrypt(np.ones((8, 3))))


def test_regression_metrics(kh: KeyHolder, wine: np.ndarray) -> None:
    Z = (wine - wine.mean(axis=0)) / wine.std(axis=0)
    y, p = Z[:, :1], 0.6 * Z[:, 1:2] + 0.2 * Z[:, 2:3]
    P, Y = kh.encrypt(p), kh.encrypt(y)
    mse_plain = float(np.mean((p - y) ** 2))
    got = float(kh.decrypt(mse(P, Y))[0, 0])
    assert abs(got - mse_plain) < 1e-6
    m, v = r2_parts(P, Y)
    r2 = 1 - mse_plain / float(np.var(y))
    assert abs(finish_r2(kh.decrypt(m), kh.decrypt(v)) - r2) < 1e-6
    # MAE: equal to the polynomial twin to 1e-6, and to the exact MAE within the documented bound.
    bound = 4.0
    assert np.max(np.abs(p - y)) < bound
    enc, poly = mae(P, Y, bound=bound)
    got = float(kh.decrypt(enc)[0, 0])
    assert abs(got - float(np.mean(poly(p - y)))) < 1e-6
    assert abs(got - float(np.mean(np.abs(p - y)))) <= poly.max_error


def test_mae_grid_bound_is_a_public_power_of_two() -> None:
    """What may travel to the server: 2**ceil(log2(1.25 r)) clamped to the grid, one of 24 values."""
    assert mae_grid_bound(3.0) == 4.0 and mae_grid_bound(3.3) == 8.0 and mae_grid_bound(-0.7) == 1.0
    assert mae_grid_bound(0.0) == mae_grid_bound(1e-9) == 2.0 ** MAE_GRID_EXPONENTS[0]
    assert mae_grid_bound(1e12) == 2.0 ** MAE_GRID_EXPONENTS[1]
    residuals = np.geomspace(1e-3, 1e5, 500)
    bounds = {mae_grid_bound(r) for r in residuals}
    assert len(bounds) <= MAE_GRID_EXPONENTS[1] - MAE_GRID_EXPONENTS[0] + 1 == 24
    assert all(np.log2(b).is_integer() for b in bounds)
    with pytest.raises(ValueError):
        mae_grid_bound(float("nan"))


def test_mae_of_small_residuals_stays_within_its_bound_at_the_grid_floor(kh: KeyHolder) -> None:
    """Residuals of 0.005: a range of 1.25 * 0.005 (what was sent before) makes the |x| polynomial's
    coefficients amplify CKKS noise past its bound; the grid's floor 2**-4 keeps the documented bound."""
    p = np.linspace(-0.01, 0.01, 16)[:, None]
    y = 0.5 * p
    bound = mae_grid_bound(float(np.max(np.abs(p - y))))
    assert bound == 2.0**-4
    enc, poly = mae(kh.encrypt(p), kh.encrypt(y), bound=bound)
    assert abs(float(kh.decrypt(enc)[0, 0]) - float(np.mean(np.abs(p - y)))) <= poly.max_error


def test_abs_polynomial_error_bound_is_attained_and_small() -> None:
    poly = fit_abs(6, 2.0)
    x = np.linspace(-2, 2, 100001)
    err = np.abs(poly(x) - np.abs(x))
    assert err.max() <= poly.max_error + 1e-12
    assert 0.08 * 2.0 < poly.max_error < 0.09 * 2.0  # 0.085 * bound, as documented in fit_abs


@pytest.mark.parametrize("bound", [1e-200, 1e-80])
def test_abs_fit_out_of_reach_is_a_parameter_error(bound) -> None:
    # Found by the service fuzz: such bounds gave infinite coefficients, then INTERNAL inside evaluate().
    with pytest.raises(ParameterError, match="out of reach"):
        fit_abs(6, bound)
