"""The shipped datasets and the intercept helper."""

from __future__ import annotations

import numpy as np
import pytest

from ciphergrad.core.data import AMES_FEATURES, AMES_TARGET, load_ames, load_diabetes, with_intercept


@pytest.fixture(scope="module")
def ames():
    return load_ames()


def test_ames_shape(ames):
    assert ames.X.shape == (510, 9)
    assert ames.y.shape == (510,)
    assert ames.feature_names == AMES_FEATURES
    assert len(AMES_FEATURES) == 9
    assert ames.target_name == AMES_TARGET == "SalePrice"


def test_ames_is_min_max_scaled(ames):
    table = np.column_stack([ames.X, ames.y])
    assert np.all(np.isfinite(table))
    assert table.min() >= 0.0
    assert table.max() <= 1.0
    for column in range(table.shape[1]):
        values = table[:, column]
        if values.max() > values.min():  # constant columns stay at 0
            assert values.min() == 0.0
            assert values.max() == 1.0


def test_ames_is_deterministic(ames):
    again = load_ames()
    np.testing.assert_array_equal(ames.X, again.X)
    np.testing.assert_array_equal(ames.y, again.y)


def test_with_intercept(ames):
    Xb = with_intercept(ames.X)
    assert Xb.shape == (510, 10)
    np.testing.assert_array_equal(Xb[:, 0], np.ones(510))
    np.testing.assert_array_equal(Xb[:, 1:], ames.X)
    assert Xb.dtype == np.float64


def test_with_intercept_small():
    np.testing.assert_array_equal(with_intercept(np.array([[2, 3], [4, 5]])), [[1.0, 2.0, 3.0], [1.0, 4.0, 5.0]])


def test_diabetes():
    data = load_diabetes()
    assert data.X.shape == (442, 10)
    assert data.y.shape == (442,)
    assert len(data.feature_names) == 10
    assert np.abs(data.y).max() < 4  # target / 100
