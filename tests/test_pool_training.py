"""Training on a pool equals training on the concatenated table: every linear solver (gram, normal, gd) and
logistic regression, against the torch twin on the concatenated plaintext (the existing tolerances) and
against one dataset holding the whole table in the same layout and session (within 1e-6). Also: the pool's
decrypted statistics against numpy, and the JobSpec checks (exactly one of dataset_id/pool_id, full batch)."""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import numpy as np
import pytest
from pool_support import analyst_pool, contribute, status

from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.gram_training import fit_torch_gram, fit_torch_normal
from ciphergrad.core.layout import pool_tile
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.core.linear import fit_torch as fit_linear
from ciphergrad.core.logistic import LogisticRegressionConfig
from ciphergrad.core.logistic import fit_torch as fit_logistic
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2, types_pb2

# Row splits that leave a partial last block in every contribution (tile rows: the 4,096 slots).
SPLITS = (0, 170, 341, 510)


@pytest.fixture(scope="module")
def ames() -> tuple[np.ndarray, np.ndarray]:
    """Ames (510 rows), features standardized, target as the write-up scales it."""
    data = load_ames()
    return Standardizer.fit(data.X).transform(data.X), data.y


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory, ames):
    """Ames split over three contributors, and the whole table as one dataset in the same session and tile."""
    X, y = ames
    with analyst_pool(Path(tmp_path_factory.mktemp("data")), X.shape[1]) as (_, analyst, pool):
        parts = [(X[a:b], y[a:b]) for a, b in itertools.pairwise(SPLITS)]
        for contributor in contribute(analyst, pool, parts):
            contributor.close()
        tile = pool_tile("columns", X.shape[1] + 1, analyst.key_holder.params.slots)
        whole = analyst.upload(with_intercept(X), y, tile=tile)
        yield analyst, pool, whole


def _both(pooled, config, algorithm: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    analyst, pool, whole = pooled
    on_pool = analyst.train(pool_id=pool.pool_id, config=config, algorithm=algorithm)
    assert on_pool.job.pool_id == pool.pool_id and on_pool.job.dataset_id == ""
    assert on_pool.job.state == training_service_pb2.JOB_STATE_SUCCEEDED
    on_table = analyst.train(whole.dataset_id, config, algorithm=algorithm)
    return analyst.weights(on_pool.model), analyst.weights(on_table.model)


def test_statistics_are_the_pooled_means_and_variances(pooled, ames) -> None:
    X, y = ames
    analyst, pool, _ = pooled
    stats = analyst.pool_statistics(pool.pool_id)
    assert stats.rows == len(X) == analyst.pool(pool.pool_id).rows
    assert np.max(np.abs(stats.mean - X.mean(axis=0))) < 1e-6
    assert np.max(np.abs(stats.variance - X.var(axis=0))) < 1e-6
    assert abs(stats.target_mean - y.mean()) < 1e-6 * max(1.0, abs(y.mean()))
    assert abs(stats.target_variance - y.var()) < 1e-6 * max(1.0, y.var())


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_gram_on_a_pool_equals_the_whole_table(pooled, ames) -> None:
    config = LinearRegressionConfig(learning_rate=0.7, momentum=0.3, epochs=12, init="zeros", solver="gram")
    on_pool, on_table = _both(pooled, config)
    assert np.max(np.abs(on_pool - on_table)) < 1e-6
    twin = fit_torch_gram(with_intercept(ames[0]), ames[1], config)
    assert np.max(np.abs(on_pool - twin.weights)) < 1e-6


def test_normal_on_a_pool_equals_least_squares(pooled, ames) -> None:
    config = LinearRegressionConfig(solver="normal")
    on_pool, on_table = _both(pooled, config)
    assert np.max(np.abs(on_pool - on_table)) < 1e-6
    twin = fit_torch_normal(with_intercept(ames[0]), ames[1], config)
    assert np.max(np.abs(on_pool - twin.weights)) < 1e-6


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_gradient_descent_on_a_pool_equals_the_whole_table(pooled, ames) -> None:
    config = LinearRegressionConfig(learning_rate=0.5, epochs=3, solver="gd")
    on_pool, on_table = _both(pooled, config)
    assert np.max(np.abs(on_pool - on_table)) < 1e-6
    twin = fit_linear(with_intercept(ames[0]), ames[1], config)
    assert np.max(np.abs(on_pool - twin.weights)) < 1e-4  # B6's tolerance


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_logistic_regression_on_a_pool_equals_the_whole_table(pooled, ames) -> None:
    analyst, _pool, _whole = pooled
    labels = (ames[1] > np.median(ames[1])).astype(float)
    # Labels need their own contributions: a second pool in the same session, same split.
    X = ames[0]
    logistic = analyst.create_pool("labels", [f"x{i}" for i in range(X.shape[1])], "expensive")
    parts = [(X[a:b], labels[a:b]) for a, b in itertools.pairwise(SPLITS)]
    for contributor in contribute(analyst, logistic, parts):
        contributor.close()
    table = analyst.upload(with_intercept(X), labels, tile=pool_tile("columns", X.shape[1] + 1, 4096))
    config = LogisticRegressionConfig(learning_rate=0.5, epochs=2)
    on_pool = analyst.weights(analyst.train(pool_id=logistic.pool_id, config=config).model)
    on_table = analyst.weights(analyst.train(table.dataset_id, config).model)
    assert np.max(np.abs(on_pool - on_table)) < 1e-6
    twin = fit_logistic(with_intercept(X), labels, config)
    assert np.max(np.abs(on_pool - twin.weights)) < 1e-3  # B4's tolerance


def test_job_spec_names_exactly_one_source_and_pools_train_full_batch(pooled) -> None:
    analyst, pool, whole = pooled
    spec = training_service_pb2.JobSpec(dataset_id=whole.dataset_id, pool_id=pool.pool_id,
                                        algorithm=types_pb2.ALGORITHM_LINEAR_REGRESSION)
    request = training_service_pb2.TrainRequest(start=spec)
    code, details = status(lambda: list(analyst.training.Train(iter([request]), metadata=analyst.metadata)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exactly one" in details
    code, details = status(lambda: analyst.train(pool_id=pool.pool_id, config={"batch_size": 128, "solver": "gd"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "full batch" in details
    with pytest.raises(ValueError, match="exactly one"):
        analyst.train(whole.dataset_id, pool_id=pool.pool_id)
