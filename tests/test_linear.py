"""Encrypted linear regression against its torch twin, the masked refresh, and configuration checks.

The computing party works on the public engine only; the key holder refreshes through bytes, as it
would over the wire. Agreement: weights within 1e-4 absolute, per-epoch loss within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

from ciphergrad.core import EncryptedMatrix, ParameterError, ShapeError, Tile
from ciphergrad.core.linear import (
    LinearRegressionConfig,
    LinearTrainer,
    decode_weights,
    fit_torch,
    weight_scale,
)
from ciphergrad.core.randomness import shuffle_orders
from ciphergrad.core.refresh import MaskedRefresh

ROWS, FEATURES = 32, 4


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(11)
    X = np.hstack([np.ones((ROWS, 1)), rng.uniform(0, 1, (ROWS, FEATURES - 1))])
    y = X @ np.array([0.2, 0.5, -0.3, 0.1]) + rng.normal(0, 0.05, ROWS)
    return X, y


@pytest.fixture
def refresh(kh, engine):
    """The key holder's refresh, through bytes; records what the key holder decrypts."""

    def call(matrix: EncryptedMatrix) -> EncryptedMatrix:
        received = EncryptedMatrix.from_bytes(kh.engine, matrix.to_bytes())
        call.seen.append(kh.decrypt(received))
        return EncryptedMatrix.from_bytes(engine, kh.refresh(received).to_bytes())

    call.seen = []
    return call


def upload(kh, engine, array, tile=None):
    return EncryptedMatrix.from_bytes(engine, kh.encrypt(array, tile=tile).to_bytes())


def train(kh, engine, refresh, X, y, config, orders=None):
    """Encrypted training; returns (weights, per-epoch losses, trainer)."""
    tile = None
    if config.batch_size is not None:
        tile = Tile(config.batch_size, 1 << (X.shape[1] - 1).bit_length())
    Xe = upload(kh, engine, X, tile)
    ye = upload(kh, engine, y.reshape(-1, 1), Xe.tile)
    shuffles = ()
    if orders is not None:
        shuffles = tuple(
            (upload(kh, engine, X[order], Xe.tile), upload(kh, engine, y[order].reshape(-1, 1), Xe.tile))
            for order in orders
        )
    trainer = LinearTrainer(engine, Xe, ye, config, refresh, shuffles)
    batches = Xe.grid[0] if config.batch_size is not None else 1
    losses = []
    while not trainer.done:
        result = trainer.run_epoch()
        losses.append(float(kh.decrypt(result.loss)[0, 0]) * result.loss_scale)
        # Three levels per step at depth 3: the weights are refreshed before every step but the first
        # (with momentum the velocity may need refreshes too).
        assert result.refreshes >= batches - (result.epoch == 1)
    weights = decode_weights(kh.decrypt(trainer.weights), trainer.weight_scale)
    return weights, losses, trainer


def assert_matches(weights, losses, twin):
    np.testing.assert_allclose(weights, twin.weights, atol=1e-4, rtol=0)
    np.testing.assert_allclose(losses, twin.losses, rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"l2": 0.1},
        {"momentum": 0.5},
        {"l2": 0.05, "momentum": 0.3, "intercept_column": None, "learning_rate": 0.3},
    ],
    ids=["plain", "l2", "momentum", "l2+momentum"],
)
def test_full_batch_matches_torch(kh, engine, refresh, problem, settings):
    X, y = problem
    config = LinearRegressionConfig(epochs=4, **settings)
    weights, losses, trainer = train(kh, engine, refresh, X, y, config)
    twin = fit_torch(X, y, config)
    assert_matches(weights, losses, twin)
    assert trainer.refresh.count == len(refresh.seen) >= config.epochs - 1
    if not config.momentum:
        assert trainer.refresh.count == config.epochs - 1
    assert losses[-1] < losses[0]


def test_minibatches_over_shuffles_match_torch(kh, engine, refresh, problem):
    X, y = problem
    config = LinearRegressionConfig(epochs=3, batch_size=8)
    orders = shuffle_orders(ROWS, 2)  # the key holder's (CSPRNG); the twin replays the same ones
    assert all(sorted(order) == list(range(ROWS)) for order in orders)
    assert not np.array_equal(orders[0], orders[1])
    weights, losses, trainer = train(kh, engine, refresh, X, y, config, orders)
    assert trainer.refresh.count == 3 * ROWS // 8 - 1  # one per step but the first
    twin = fit_torch(X, y, config, orders=orders)
    assert_matches(weights, losses, twin)


def test_initial_weights_follow_init_seed_and_shuffles_take_none():
    """The N(0, 1) start is reproducible (it protects nothing); no config field orders the shuffles."""
    same = [fit_torch(np.eye(3), np.ones(3), LinearRegressionConfig(epochs=1, init_seed=s)).weights for s in (1, 1, 2)]
    assert np.array_equal(same[0], same[1]) and not np.array_equal(same[0], same[2])
    assert "seed" not in LinearRegressionConfig.__dataclass_fields__
    with pytest.raises(ParameterError, match="init_seed"):
        LinearRegressionConfig.from_dict({"seed": 5})


def test_resume_from_state_continues_training(kh, engine, refresh, problem):
    X, y = problem
    config = LinearRegressionConfig(epochs=3, momentum=0.5)
    Xe = upload(kh, engine, X)
    ye = upload(kh, engine, y.reshape(-1, 1), Xe.tile)
    trainer = LinearTrainer(engine, Xe, ye, config, refresh)
    trainer.run_epoch()
    trainer.run_epoch()
    state = trainer.state()
    resumed = LinearTrainer.resume(engine, Xe, ye, config, refresh, state)
    assert resumed.epoch == 2
    resumed.run_epoch()
    assert resumed.done
    weights = decode_weights(kh.decrypt(resumed.weights), resumed.weight_scale)
    np.testing.assert_allclose(weights, fit_torch(X, y, config).weights, atol=1e-4)


def test_refresh_sees_masked_weights(kh, engine, refresh, problem):
    X, y = problem
    config = LinearRegressionConfig(epochs=2)
    train(kh, engine, refresh, X, y, config)
    assert weight_scale(ROWS) < 1  # encrypted weights are N(0, 1) * 0.7: |w| < 3 with overwhelming probability
    assert refresh.seen
    for seen in refresh.seen:
        assert np.max(np.abs(seen)) > 3  # the mask (|m| < 64 here) dominates what the key holder sees


def test_masked_refresh_hides_values_and_restores_them(kh, enc, dec, refresh):
    w = np.array([[0.1, -0.2, 0.3, 0.05]])
    W = enc(w) * 1.0 * 1.0  # two levels down
    masked = MaskedRefresh(refresh)
    assert masked.bound_for(W) == kh.params.max_abs_value / 4
    before = W.to_bytes()
    fresh = masked(W)
    assert W.to_bytes() == before
    assert masked.count == 1
    (seen,) = refresh.seen
    assert np.min(np.abs(seen - w)) > 1e-3  # every entry is masked
    assert np.max(np.abs(seen)) <= 64 + 1
    np.testing.assert_allclose(dec(fresh), w, atol=1e-6)
    assert fresh.level == kh.params.depth  # re-encrypted at the top; unmasking is a plain subtraction


def test_masked_refresh_bound_and_count(enc, dec, refresh, engine):
    before = engine.counts.refreshes
    masked = MaskedRefresh(refresh, bound=0.5)
    W = enc(np.zeros((1, 3)))
    dec(masked(masked(W)))
    assert masked.count == 2
    assert engine.counts.refreshes == before + 2
    assert all(np.max(np.abs(seen)) <= 0.5 + 1e-6 for seen in refresh.seen)
    assert not np.allclose(refresh.seen[0], 0, atol=1e-3)


def test_masked_refreshes_with_the_same_arguments_draw_different_masks(enc, dec, refresh):
    """No seed: two wrappers built alike (a resumed or repeated job) never show the key holder the same
    masked values, and each still restores the value (CKKS error ~1e-9 at these parameters; 1e-6 allowed)."""
    w = np.array([[0.25, -0.5, 0.75]])
    W = enc(w) * 1.0 * 1.0
    fresh = [MaskedRefresh(refresh)(W) for _ in range(2)]
    first, second = refresh.seen
    assert np.min(np.abs(first - second)) > 1e-3  # every entry's mask differs (equal by chance: ~2**-40)
    for matrix in fresh:
        np.testing.assert_allclose(dec(matrix), w, atol=1e-6)


def test_masked_refresh_rejects_wrong_shape(enc, kh, engine):
    masked = MaskedRefresh(lambda m: EncryptedMatrix.encrypt(engine, np.zeros((2, 2))))
    with pytest.raises(ValueError, match="shape"):
        masked(enc(np.zeros((1, 3))))


# -- configuration and data checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"epochs": 0}, "epochs"),
        ({"l2": -1.0}, "l2"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 12}, "power of two"),
    ],
)
def test_config_validation(settings, pattern):
    with pytest.raises(ParameterError, match=pattern):
        LinearRegressionConfig(**settings)


def test_config_dict_round_trip():
    config = LinearRegressionConfig(learning_rate=0.25, epochs=7, l2=0.01, batch_size=64, momentum=0.9, init_seed=3)
    assert LinearRegressionConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ParameterError, match=r"unknown.*'rate'"):
        LinearRegressionConfig.from_dict({"rate": 0.1})


def test_trainer_checks_shapes(kh, engine, refresh, problem):
    X, y = problem
    Xe = upload(kh, engine, X)
    with pytest.raises(ShapeError, match="y has shape"):
        LinearTrainer(engine, Xe, upload(kh, engine, y[:-1].reshape(-1, 1), Xe.tile), LinearRegressionConfig(), refresh)
    with pytest.raises(ShapeError, match="same tile"):
        LinearTrainer(engine, Xe, upload(kh, engine, y.reshape(-1, 1)), LinearRegressionConfig(), refresh)
    ye = upload(kh, engine, y.reshape(-1, 1), Xe.tile)
    with pytest.raises(ShapeError, match="batch_size=8 needs data encrypted in tiles of 8 rows"):
        LinearTrainer(engine, Xe, ye, LinearRegressionConfig(batch_size=8), refresh)
    with pytest.raises(ShapeError, match="shuffle"):
        short = upload(kh, engine, X[:16], Xe.tile), upload(kh, engine, y[:16].reshape(-1, 1), Xe.tile)
        LinearTrainer(engine, Xe, ye, LinearRegressionConfig(), refresh, (short,))


def test_torch_twin_is_deterministic_and_descends(problem):
    X, y = problem
    config = LinearRegressionConfig(epochs=20)
    first, second = fit_torch(X, y, config), fit_torch(X, y, config)
    np.testing.assert_array_equal(first.weights, second.weights)
    assert len(first.losses) == 20
    assert first.losses[-1] < first.losses[0]
