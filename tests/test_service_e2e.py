"""Ames through the service over 127.0.0.1 against the in-process core and the torch twin,
and the masked refresh protocol seen from the key holder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from service_support import ames, local_server, session_client

from ciphergrad.core.compare import compare_linear_regression
from ciphergrad.core.linear import LinearRegressionConfig, fit_torch, weight_scale

# The Ames story through a child-process server: make test-slow, and CI after make test.
pytestmark = pytest.mark.slow

CONFIG = LinearRegressionConfig()  # the original: learning rate 0.5, 50 epochs, N(0, 1) init


@pytest.fixture(scope="module")
def ames_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    X, y, names = ames()
    seen: list[np.ndarray] = []
    with local_server(Path(tmp_path_factory.mktemp("data"))) as server:
        client = session_client(server.address, X.shape)
        dataset = client.upload(X, y, column_names=names)
        run = client.train(dataset.dataset_id, CONFIG, on_refresh=lambda values: seen.append(values.copy()))
        weights = client.weights(run.model)
        fetched = client.weights(client.get_model(run.model.model_id))
        predictions = client.predict(run.model, X[:40])
        client.close()
    return {"X": X, "y": y, "run": run, "weights": weights, "fetched": fetched, "seen": seen, "pred": predictions}


def test_ames_matches_core_and_torch(ames_run: dict) -> None:
    X, y, weights = ames_run["X"], ames_run["y"], ames_run["weights"]
    local = compare_linear_regression(X, y, CONFIG)
    assert np.max(np.abs(weights - local.encrypted_weights)) < 1e-4
    assert np.max(np.abs(weights - local.torch_weights)) < 1e-4
    assert np.max(np.abs(ames_run["fetched"] - weights)) < 1e-12
    twin = fit_torch(X, y, CONFIG)
    losses = np.asarray(ames_run["run"].losses)
    assert losses.shape == (CONFIG.epochs,)
    assert np.max(np.abs(losses - twin.losses) / np.asarray(twin.losses)) < 1e-4


def test_job_and_predictions(ames_run: dict) -> None:
    run = ames_run["run"]
    assert run.job.epoch == CONFIG.epochs and run.job.model_id == run.model.model_id
    assert run.refreshes == run.job.refreshes > 0
    assert np.max(np.abs(ames_run["pred"] - ames_run["X"][:40] @ ames_run["weights"])) < 1e-4


def test_refresh_values_are_masked(ames_run: dict) -> None:
    """What the key holder decrypts during refreshes is far from the weights at that moment."""
    X, y, seen = ames_run["X"], ames_run["y"], ames_run["seen"]
    scale = weight_scale(len(X))
    assert len(seen) == ames_run["run"].refreshes
    # A refresh before epoch k+1 carries the weights after k epochs (and the last one the final model).
    for k, values in enumerate(seen[:-1], start=1):
        true = fit_torch(X, y, LinearRegressionConfig(epochs=k)).weights * scale
        assert np.min(np.abs(values.reshape(-1) - true)) > 1e-3
        assert np.mean(np.abs(values.reshape(-1) - true)) > 1.0  # the mask is uniform in ±(max/4)
    final = fit_torch(X, y, CONFIG).weights * scale
    assert np.mean(np.abs(seen[-1].reshape(-1) - final)) > 1.0
    assert np.max(np.abs(ames_run["weights"] - final / scale)) < 1e-4
