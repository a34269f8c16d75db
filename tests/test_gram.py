"""Least squares on encrypted sufficient statistics (core.gram, core.gram_training) against plaintext.

Tolerances: statistics within 1e-7 of numpy; Gram-solver weights within 1e-6 of the torch twin after 50
Ames epochs (loss within 1e-5 relative); with key-holder standardization R^2 within 1e-4 of least squares;
the normal solver within 1e-6 of numpy.linalg.lstsq. The key holder refreshes through bytes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ciphergrad.core import EncryptedMatrix, LevelError, ParameterError, ShapeError
from ciphergrad.core.compare import r2_score
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.gram import UPPER, WRAPPED, GramPartial, GramStatistics, accumulate, finalize, row_blocks
from ciphergrad.core.gram_training import GramTrainer, fit_torch_gram
from ciphergrad.core.layout import Tile
from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer
from ciphergrad.core.normal import normal_system, solve_normal
from ciphergrad.wire import codec


@pytest.fixture(scope="module")
def ames():
    data = load_ames()
    return with_intercept(data.X), data.y.reshape(-1, 1), data



def encrypted(enc, X, y, packing="rows"):
    Xe = enc(X, packing=packing)
    return Xe, enc(y, tile=Xe.tile)


def train(trainer, dec):
    losses = []
    while not trainer.done:
        result = trainer.run_epoch()
        losses.append(dec(result.loss)[0, 0] * result.loss_scale)
    return dec(trainer.weights).reshape(-1) / trainer.weight_scale, np.array(losses)


@pytest.mark.parametrize("packing", ["rows", "columns"])
def test_statistics_match_numpy(engine, enc, kh, ames, packing):
    X, y, _ = ames
    stats = finalize(accumulate(engine, row_blocks(*encrypted(enc, X, y, packing))), 0.5)
    G, b, yy = stats.dense(kh)
    n = len(X)
    assert np.max(np.abs(G - X.T @ X / n)) < 1e-7
    assert np.max(np.abs(b - X.T @ y[:, 0] / n)) < 1e-7
    assert abs(yy - float(y[:, 0] @ y[:, 0]) / n) < 1e-7
    assert stats.diagonals.level == 1


def test_partials_over_block_ranges_add_up(engine, enc, kh, ames):
    X, y, _ = ames
    Xe = enc(X, tile=Tile(128, 1))  # four row blocks, as a server would stream them or shards would split them
    blocks = list(row_blocks(Xe, enc(y, tile=Xe.tile)))
    whole = accumulate(engine, blocks)
    first, rest = accumulate(engine, blocks[:1]), accumulate(engine, blocks[1:])
    summed = first + rest
    assert (first.rows, summed.rows, whole.rows) == (128, len(X), len(X))
    expected = finalize(whole).dense(kh)
    for a, b in zip(finalize(summed).dense(kh), expected, strict=True):
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) < 1e-9
    # The partial of the first block alone is that block's statistics.
    G_first, _, _ = finalize(first).dense(kh)
    rows = X[: first.rows]
    assert np.max(np.abs(G_first - rows.T @ rows / len(rows))) < 1e-7
    # In place (a worker's running partial, the finishing worker's sum): the same statistics, the same object.
    running = accumulate(engine, blocks[:2])
    grown = accumulate(engine, blocks[2:], into=running)
    absorbed = first.absorb(rest)  # ``summed`` above is its own object
    assert grown is running and absorbed is first and grown.rows == absorbed.rows == len(X)
    for partial in (grown, absorbed):
        for a, b in zip(finalize(partial).dense(kh), expected, strict=True):
            assert np.max(np.abs(np.asarray(a) - np.asarray(b))) < 1e-9


@pytest.mark.parametrize(
    ("momentum", "l2", "packing"), [(0.0, 0.0, "rows"), (0.5, 0.01, "columns")], ids=["plain", "momentum-ridge"]
)
def test_ames_gram_weights_match_twin(engine, enc, dec, ames, refresh, momentum, l2, packing):
    X, y, _ = ames
    config = LinearRegressionConfig(learning_rate=0.5, epochs=50, momentum=momentum, l2=l2, solver="gram")
    trainer = GramTrainer(engine, *encrypted(enc, X, y, packing), config, refresh)
    weights, losses = train(trainer, dec)
    twin = fit_torch_gram(X, y, config)
    assert np.max(np.abs(weights - twin.weights)) < 1e-6
    assert np.max(np.abs(losses - twin.losses) / np.asarray(twin.losses)) < 1e-5
    assert trainer.counts.refreshes == config.epochs  # one per epoch, the loss included
    assert trainer.weights.level >= 2  # fresh: the model can serve predictions without another refresh


def test_gram_with_conditioning_reaches_least_squares(engine, enc, dec, ames, refresh):
    X, y, data = ames
    scaler = Standardizer.fit(data.X)
    config = LinearRegressionConfig(learning_rate=0.5, momentum=0.5, epochs=40, init="zeros", solver="gram")
    trainer = GramTrainer(engine, *encrypted(enc, with_intercept(scaler.transform(data.X)), y), config, refresh)
    weights, _ = train(trainer, dec)
    intercept, coef = scaler.original_weights(weights[0], weights[1:])
    least_squares = np.linalg.lstsq(X, y[:, 0], rcond=None)[0]
    assert abs(r2_score(X, y, np.r_[intercept, coef]) - r2_score(X, y, least_squares)) < 1e-4


@pytest.mark.parametrize(("l2", "packing"), [(0.0, "columns"), (0.05, "columns"), (0.0, "rows"), (0.05, "rows")])
def test_normal_solver_matches_lstsq(engine, enc, kh, ames, l2, packing):
    _, y, data = ames
    Xs = with_intercept(Standardizer.fit(data.X).transform(data.X))  # key-holder conditioning, as for "gram"
    system = normal_system(accumulate(engine, row_blocks(*encrypted(enc, Xs, y, packing))), l2, 0)
    assert system.form == (UPPER if packing == "rows" else WRAPPED)
    weights = solve_normal(kh, to_key_holder(kh, system))
    n = len(Xs)
    ridge = np.eye(Xs.shape[1]) * l2
    ridge[0, 0] = 0.0
    expected = (
        np.linalg.lstsq(Xs, y[:, 0], rcond=None)[0]
        if not l2
        else np.linalg.solve(Xs.T @ Xs / n + ridge, Xs.T @ y[:, 0] / n)
    )
    assert np.max(np.abs(weights - expected)) < 1e-6


def to_key_holder(kh, system):
    """What the key holder receives: bytes."""
    return replace(
        system,
        diagonals=EncryptedMatrix.from_bytes(kh.engine, system.diagonals.to_bytes()),
        column=EncryptedMatrix.from_bytes(kh.engine, system.column.to_bytes()),
    )


def test_upper_statistics_hold_the_wrapped_ones_at_half_the_rotations(engine, enc, kh, ames):
    """``finalize(for_decryption=True)`` on row-packed data: one fold per pass product, the same aggregates,
    and a checkpoint that keeps its form."""
    X, y, _ = ames
    partial = accumulate(engine, row_blocks(*encrypted(enc, X, y, "rows")))
    before = engine.counts.snapshot()
    wrapped = finalize(partial)
    middle = engine.counts.snapshot()
    upper = finalize(partial, for_decryption=True)
    rotations = (middle.rotations - before.rotations, engine.counts.since(middle).rotations)
    assert (wrapped.form, upper.form) == (WRAPPED, UPPER) and rotations[1] < 0.6 * rotations[0]
    assert upper.diagonals.shape == (1, X.shape[1] * upper.period)  # no diagonal beyond the features
    n = len(X)
    for got, want in zip(upper.dense(kh), (X.T @ X / n, X.T @ y[:, 0] / n, float(y[:, 0] @ y[:, 0]) / n), strict=True):
        assert np.max(np.abs(np.asarray(got) - want)) < 1e-7  # as the wrapped form (test_statistics_match_numpy)
    state = codec.checkpoint_from_bytes(engine, codec.checkpoint_to_bytes(upper.state()))
    assert GramStatistics.from_state(engine, state).form == UPPER


def test_checkpoint_resume_continues_without_the_pass(engine, enc, dec, ames, refresh):
    X, y, _ = ames
    config = LinearRegressionConfig(learning_rate=0.5, epochs=6, momentum=0.5, l2=0.01, solver="gram")
    Xe, ye = encrypted(enc, X, y)
    whole = GramTrainer(engine, Xe, ye, config, refresh)
    weights_whole, losses_whole = train(whole, dec)

    first = GramTrainer(engine, Xe, ye, config, refresh)
    losses = [dec(r.loss)[0, 0] * r.loss_scale for r in (first.run_epoch() for _ in range(3))]
    state = codec.checkpoint_from_bytes(engine, codec.checkpoint_to_bytes(first.state()))  # as a server stores it
    before = engine.counts.snapshot()
    resumed = GramTrainer.resume(engine, None, None, config, refresh, state)
    assert engine.counts.since(before).multiplications == 0  # the statistics came from the checkpoint
    assert resumed.epoch == 3
    weights, rest = train(resumed, dec)
    # Equal up to two runs of fresh-encryption noise: each masked refresh re-encrypts values near the mask's
    # bound (64), so six of them leave ~1e-8..1.5e-7 between two runs (1.48e-7 seen on a fresh clone).
    assert np.max(np.abs(weights - weights_whole)) < 5e-7
    np.testing.assert_allclose(np.r_[losses, rest], losses_whole, rtol=1e-6)


def test_bad_solver_configurations_raise(engine, enc, ames, refresh):
    with pytest.raises(ParameterError, match="'gd', 'gram', 'normal'"):
        LinearRegressionConfig(solver="cholesky")
    for solver in ("gram", "normal"):
        with pytest.raises(ParameterError, match=r"batch_size=128.*solver=.gd."):
            LinearRegressionConfig(solver=solver, batch_size=128)
    assert LinearRegressionConfig.from_dict({"solver": "gram"}).solver == "gram"
    with pytest.raises(ParameterError, match="GramTrainer"):
        LinearTrainer(engine, *encrypted(enc, np.ones((8, 2)), np.ones(8)), LinearRegressionConfig(solver="gram"),
                      refresh)
    X, y, _ = ames
    Xe, ye = encrypted(enc, X[:64], y[:64])
    with pytest.raises(ParameterError, match="shuffles need solver='gd'"):
        GramTrainer(engine, Xe, ye, LinearRegressionConfig(solver="gram"), refresh, ((Xe, ye),))
    low = EncryptedMatrix.encrypt(engine, X[:64], level=2)
    with pytest.raises(LevelError, match="top level"):
        accumulate(engine, row_blocks(low, EncryptedMatrix.encrypt(engine, y[:64], tile=low.tile, level=2)))
    square = enc(np.ones((8, 16)), tile=Tile(256, 16))  # 16 features leave no column for y in a 16-wide tile
    with pytest.raises(ShapeError, match="packing='columns'"):
        accumulate(engine, row_blocks(square, enc(np.ones(8), tile=square.tile)))
    rows = accumulate(engine, row_blocks(Xe, ye))
    with pytest.raises(ShapeError, match="same layout"):
        _ = rows + accumulate(engine, row_blocks(*encrypted(enc, X[:64], y[:64], "columns")))
    stats = finalize(rows, 0.1)
    with pytest.raises(ParameterError, match=r"learning_rate=0\.5"):
        GramTrainer(engine, None, None, LinearRegressionConfig(solver="gram"), refresh, statistics=stats)


def test_the_pass_and_its_finalization_are_counted_once(engine, enc, kh, ames):
    """A one-pass job reports the pass's and the finalization's operations with its first epoch (what
    ``ciphergrad demo`` prints), wherever the partials were made: they travel with the partial's state."""
    X, y, _ = ames
    blocks = list(row_blocks(*encrypted(enc, X, y, "rows")))
    start = engine.counts.snapshot()
    halves = [accumulate(engine, blocks[:1]), accumulate(engine, blocks[1:])]
    passed = engine.counts.since(start)
    moved = GramPartial.from_state(engine, halves[1].to_state())  # as from a Ray worker
    partial = halves[0] + moved
    assert partial.counts.multiplications == passed.multiplications > 0
    assert partial.counts.rotations == passed.rotations == len(blocks) * (X.shape[1] - 1)
    before = engine.counts.snapshot()
    system = normal_system(partial, 0.0, 0)
    assert system.counts == partial.counts + engine.counts.since(before)
    assert system.counts.rotations > passed.rotations
