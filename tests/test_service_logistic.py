"""Logistic regression through the TrainingService over 127.0.0.1, against the in-process LogisticTrainer
and the polynomial torch twin: weights within 1e-3 (measured ~1e-6), identical test predictions."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import local_server
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from ciphergrad.client import EncryptedLogisticRegression
from ciphergrad.core import KeyHolder, plan
from ciphergrad.core.data import with_intercept
from ciphergrad.core.logistic import LogisticRegressionConfig, LogisticTrainer, decode_weights, fit_torch

TOL = 1e-3


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small breast-cancer subset: 8 features, standardized, stratified 80/20 split, fixed seed."""
    bunch = load_breast_cancer()
    rows = np.random.default_rng(0).permutation(len(bunch.data))[:320]
    X, y = bunch.data[rows][:, :8], bunch.target[rows]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    return (Xtr - mean) / std, (Xte - mean) / std, ytr, yte


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with local_server(Path(tmp_path_factory.mktemp("data"))) as running:
        yield running


def test_estimator_matches_core_and_twin(server, cancer) -> None:
    Xtr, Xte, ytr, yte = cancer
    # The per-row solver on the rows as sent (cancer is standardized already), next to its twin.
    model = EncryptedLogisticRegression(server=server.address, solver="gd", learning_rate=0.5, epochs=8,
                                        standardize=False, progress=False)
    model.fit(Xtr, ytr)
    weights = np.concatenate([[model.intercept_], model.coef_])
    config = model.config_
    design = with_intercept(Xtr)
    twin = fit_torch(design, ytr, config).weights
    np.testing.assert_allclose(weights, twin, atol=TOL)
    # The same trainer in process (no service): the same model.
    kh = KeyHolder(plan(3))
    E = kh.encrypt(design)
    trainer = LogisticTrainer(kh.engine, E, kh.encrypt(ytr[:, None].astype(float), tile=E.tile), config, kh.refresh)
    while not trainer.done:
        trainer.run_epoch()
    local = decode_weights(kh.decrypt(trainer.weights), trainer.bound)
    np.testing.assert_allclose(weights, local, atol=TOL)
    test_design = with_intercept(Xte)
    np.testing.assert_array_equal(model.predict(Xte), (test_design @ twin > 0).astype(int))
    assert model.score(Xte, yte) > 0.8
    proba = model.predict_proba(Xte)
    assert proba.shape == (len(Xte), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert len(model.history_) == 8 and model.report_["refreshes"] > 0
    assert list(model.classes_) == [0, 1]


def test_minibatch_job_through_client_matches_twin(server, cancer) -> None:
    """The SDK's train() with a logistic config (shuffled minibatches, Nesterov momentum)."""
    from ciphergrad.client import Client
    from ciphergrad.core.layout import Tile
    from ciphergrad.core.randomness import shuffle_orders

    Xtr, _, ytr, _ = cancer
    X, y = with_intercept(Xtr[:256]), ytr[:256].astype(float)
    config = LogisticRegressionConfig(learning_rate=0.5, epochs=2, batch_size=128, momentum=0.5)
    orders = shuffle_orders(len(X), 2)
    with Client(server.address) as client:
        tile = Tile(128, 16)
        client.create_session(plan(3), tiles=[tile])
        dataset = client.upload(X, y, tile=tile, shuffle_orders=orders)
        run = client.train(dataset.dataset_id, config)
        assert run.model.algorithm == 2 and len(run.losses) == len(run.epoch_seconds) == 2
        weights = client.weights(run.model)
        meta = run.model.metadata_json
        # Encrypted inference with the client-owned encrypted model: the logit, sigmoid by the client.
        logits = client.predict(run.model, X[:100])
        proba = client.predict_proba(run.model, X[:100])
        # The server-side sigmoid does not fit after an encrypted-model logit at depth 3: an actionable error.
        with pytest.raises(grpc.RpcError) as caught:
            client.predict(run.model, X[:8], server_sigmoid=True)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "predict_proba" in caught.value.details()
    twin_fit = fit_torch(X, y, config, orders)
    twin = twin_fit.weights
    np.testing.assert_allclose(weights, twin, atol=TOL)
    # Encrypted per-epoch Brier score of the polynomial probabilities vs the twin's: 1e-4 relative.
    np.testing.assert_allclose(run.losses, twin_fit.losses, rtol=1e-4)
    assert '"degree": 3' in meta
    np.testing.assert_allclose(logits, X[:100] @ twin, atol=TOL)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-(X[:100] @ twin))), atol=TOL)
