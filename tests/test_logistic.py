"""Encrypted logistic regression against its torch twins (same polynomial; exact sigmoid).

Tolerance: final weights within 1e-4 absolute of the polynomial twin (the issue's target is 1e-3; the
benchmark measures ~5e-6 after 20 epochs), identical test predictions. Small data keeps this fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from ciphergrad.core import KeyHolder, Tile, plan
from ciphergrad.core.data import with_intercept
from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.logistic import (
    LogisticRegressionConfig,
    LogisticTrainer,
    decode_weights,
    fit_torch,
)
from ciphergrad.core.polynomial import fit_sigmoid
from ciphergrad.core.randomness import shuffle_orders

TOL = 1e-4


@pytest.fixture(scope="module")
def kh() -> KeyHolder:
    return KeyHolder(plan(3))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_breast_cancer()
    X, y = bunch.data[:, :7], bunch.target.astype(float)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    rows = np.random.default_rng(0).permutation(len(X))[:256]
    return with_intercept(X[rows]), y[rows]


def _train(kh: KeyHolder, X, y, config, tile=None, shuffles=()) -> tuple[np.ndarray, LogisticTrainer]:
    E = kh.encrypt(X, tile=tile)
    Y = kh.encrypt(y[:, None], tile=E.tile)
    trainer = LogisticTrainer(kh.engine, E, Y, config, kh.refresh, shuffles)
    trainer.losses = []
    while not trainer.done:
        result = trainer.run_epoch()
        trainer.losses.append(float(kh.decrypt(result.loss)[0, 0]) * result.loss_scale)
    return decode_weights(kh.decrypt(trainer.weights), trainer.bound), trainer


@pytest.mark.parametrize(
    ("degree", "momentum", "l2"),
    [(3, 0.0, 0.0), (5, 0.8, 0.01)],
)
def test_full_batch_matches_poly_twin(kh: KeyHolder, data, degree: int, momentum: float, l2: float) -> None:
    X, y = data
    config = LogisticRegressionConfig(learning_rate=0.5, epochs=4, degree=degree, momentum=momentum, l2=l2)
    weights, trainer = _train(kh, X, y, config)
    twin_fit = fit_torch(X, y, config)
    twin = twin_fit.weights
    np.testing.assert_allclose(weights, twin, atol=TOL)
    assert np.array_equal(X @ weights > 0, X @ twin > 0)
    # The encrypted per-epoch loss (Brier score of the polynomial probabilities) vs the twin's: 1e-4 relative.
    np.testing.assert_allclose(trainer.losses, twin_fit.losses, rtol=1e-4)
    # Refreshes happen only when levels run out: at depth 3, z every step and w from the second step on;
    # degree 5 also refreshes the residual every step, momentum the velocity when it is exhausted.
    assert trainer.counts.refreshes == trainer.refresh.count
    if degree == 3 and not momentum:
        assert trainer.counts.refreshes == 4 * 2 - 1
    else:
        assert 4 * 3 - 1 <= trainer.counts.refreshes <= 4 * 4 - 3
    # The exact-sigmoid twin is a different model but learns the same task.
    exact = fit_torch(X, y, config, exact_sigmoid=True).weights
    assert np.mean((X @ exact > 0) == y) > 0.85 and np.mean((X @ weights > 0) == y) > 0.85


def test_shuffled_minibatches_match_twin(kh: KeyHolder, data) -> None:
    X, y = data
    config = LogisticRegressionConfig(learning_rate=0.5, epochs=2, batch_size=128, degree=3)
    tile = Tile(128, 8)
    orders = shuffle_orders(len(X), 2)
    shuffles = tuple((kh.encrypt(X[o], tile=tile), kh.encrypt(y[o][:, None], tile=tile)) for o in orders)
    weights, _ = _train(kh, X, y, config, tile=tile, shuffles=shuffles)
    np.testing.assert_allclose(weights, fit_torch(X, y, config, orders).weights, atol=TOL)


def test_sigmoid_polynomial_error_and_config_checks() -> None:
    assert fit_sigmoid(3, 8.0).max_error < 0.12
    assert fit_sigmoid(7, 8.0).max_error < 0.035
    with pytest.raises(ParameterError):
        LogisticRegressionConfig(degree=4)
    with pytest.raises(ParameterError):
        LogisticRegressionConfig.from_dict({"epochs": 3, "nope": 1})


def test_rejects_mismatched_targets(kh: KeyHolder) -> None:
    E = kh.encrypt(np.ones((8, 3)))
    with pytest.raises(ShapeError):
        LogisticTrainer(kh.engine, E, kh.encrypt(np.ones((8, 1))), LogisticRegressionConfig(), kh.refresh)
