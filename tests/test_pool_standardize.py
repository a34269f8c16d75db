"""Standardization without the analyst seeing rows: contributors send raw units (years near 1975, prices in
thousands), the analyst decrypts the pool's means and deviations, and the Gram solvers apply
the standardization inside their statistics. Checked against the torch twins on the same standardization
and, mapped back to raw units, against least squares on the raw table. Plus the plaintext algebra of
``core.standardize`` and the refusals (gd, bad lengths, shifts without an intercept)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from pool_support import analyst_pool, contribute, status

from ciphergrad.core import standardize
from ciphergrad.core.data import with_intercept
from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.gram_training import fit_torch_gram, fit_torch_normal
from ciphergrad.core.linear import LinearRegressionConfig


def _raw_table(rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Area (thousands of square feet), year built, rooms; price in thousands (deviations up to ~30: see the
    precision note of core.standardize.prepare)."""
    rng = np.random.default_rng(21)
    X = np.column_stack([rng.normal(1.5, 0.4, rows), rng.normal(1975, 20, rows), rng.normal(3, 1, rows)])
    y = 60 * X[:, 0] + 0.9 * (X[:, 1] - 1975) + 8 * X[:, 2] + 40 + rng.normal(0, 5, rows)
    return X, y


def test_standardize_algebra_round_trips() -> None:
    X, y = _raw_table(50)
    design = with_intercept(X)
    found = standardize.from_moments(X.mean(axis=0), X.std(axis=0), 0, y.mean(), y.std())
    Xs, ys = standardize.apply(design, y, found, 0)
    assert np.allclose(Xs[:, 1:].mean(axis=0), 0) and np.allclose(Xs[:, 1:].std(axis=0), 1)
    assert np.allclose(Xs[:, 0], 1) and abs(ys.mean()) < 1e-9 and abs(ys.std() - 1) < 1e-9
    fitted = np.linalg.lstsq(Xs, ys, rcond=None)[0]
    raw = np.linalg.lstsq(design, y, rcond=None)[0]
    assert np.allclose(standardize.raw_weights(fitted, found, 0), raw, rtol=1e-9)
    with pytest.raises(ParameterError, match="intercept column"):
        standardize.check(((1.0, 1.0), (0.0, 1.0)), None)
    with pytest.raises(ParameterError, match="solver='gram'"):
        LinearRegressionConfig(solver="gd", standardization=found)
    with pytest.raises(ShapeError, match="give 5"):
        standardize.transform_matrix(((1.0, 1.0), (0.0, 0.0)), 4, 0)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory):
    X, y = _raw_table()
    with analyst_pool(Path(tmp_path_factory.mktemp("data")), X.shape[1]) as (_, analyst, pool):
        for contributor in contribute(analyst, pool, [(X[:250], y[:250]), (X[250:], y[250:])]):
            contributor.close()
        yield analyst, pool, analyst.pool_statistics(pool.pool_id)


def test_gram_with_standardization_trains_on_raw_units(pooled) -> None:
    analyst, pool, stats = pooled
    X, y = _raw_table()
    assert np.allclose(stats.mean, X.mean(axis=0), rtol=1e-9) and np.allclose(stats.std, X.std(axis=0), rtol=1e-6)
    config = LinearRegressionConfig(learning_rate=0.7, momentum=0.3, epochs=40, init="zeros", solver="gram",
                                    standardization=stats.standardization())
    run = analyst.train(pool_id=pool.pool_id, config=config)
    weights = analyst.weights(run.model)
    twin = fit_torch_gram(with_intercept(X), y, config)
    assert np.max(np.abs(weights - twin.weights)) < 3e-6  # standardized units, O(1) weights (measured 4.7e-7)
    raw, least = stats.raw_weights(weights), np.linalg.lstsq(with_intercept(X), y, rcond=None)[0]
    predictions, best = with_intercept(X) @ raw, with_intercept(X) @ least
    r2 = 1 - np.sum((y - predictions) ** 2) / np.sum((y - y.mean()) ** 2)
    r2_best = 1 - np.sum((y - best) ** 2) / np.sum((y - y.mean()) ** 2)
    assert abs(r2 - r2_best) < 1e-4  # converged to least squares, in raw units


def test_normal_with_standardization_is_least_squares_in_raw_units(pooled) -> None:
    analyst, pool, stats = pooled
    X, y = _raw_table()
    config = LinearRegressionConfig(solver="normal", standardization=stats.standardization())
    weights = analyst.weights(analyst.train(pool_id=pool.pool_id, config=config).model)
    # Measured 3.6e-7; without the exact integer centering (core.gram.center_columns) it was 2.9e-3.
    assert np.max(np.abs(weights - fit_torch_normal(with_intercept(X), y, config).weights)) < 3e-6
    least = np.linalg.lstsq(with_intercept(X), y, rcond=None)[0]
    assert np.allclose(stats.raw_weights(weights), least, rtol=1e-5)


def test_standardization_is_refused_where_it_cannot_apply(pooled) -> None:
    analyst, pool, stats = pooled
    found = stats.standardization()
    code, details = status(lambda: analyst.train(pool_id=pool.pool_id, config={
        "solver": "gram", "standardization": [list(found[0][:-1]), list(found[1][:-1])]}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "give 5" in details
    code, details = status(lambda: analyst.train(pool_id=pool.pool_id, config={
        "solver": "gd", "standardization": [list(found[0]), list(found[1])]}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "solver='gram'" in details
