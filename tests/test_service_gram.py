"""The one-pass solvers through gRPC: "gram" (the default for full-batch linear training) against its torch
twin, "normal" against least squares, Predict on their models, a resumed gram job that skips the pass, and
the bad solver requests (INVALID_ARGUMENT from the server, ValueError in the SDK before any upload)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import leave_mid_job, local_server

from ciphergrad.client.cli import main
from ciphergrad.client.estimator import EncryptedLinearRegression
from ciphergrad.client.sdk import Client, default_parameters, training_layout
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.errors import ParameterError
from ciphergrad.core.gram_training import fit_torch_gram
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.server.jobs import trainers as server_jobs
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

SETTINGS = {"learning_rate": 0.7, "momentum": 0.3, "epochs": 12, "init": "zeros"}
GRAM = LinearRegressionConfig(**SETTINGS, solver="gram")
CHOICES = "'gd', 'gram', 'normal'"


@pytest.fixture(scope="module")
def ames_std() -> tuple[np.ndarray, np.ndarray]:
    """Ames with key-holder standardized features and the intercept column first."""
    data = load_ames()
    return with_intercept(Standardizer.fit(data.X).transform(data.X)), data.y


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, ames_std):
    """A server, a session with the Gram layout's keys and Ames uploaded column-packed."""
    X, y = ames_std
    passes: list[int] = []
    original = server_jobs.accumulate

    def counting(*args, **kwargs):
        passes.append(1)
        return original(*args, **kwargs)

    server_jobs.accumulate = counting  # the server runs in this process: count its passes over the rows
    data_dir = Path(tmp_path_factory.mktemp("data"))
    try:
        with local_server(data_dir) as running:
            params = default_parameters()
            tile, rotations = training_layout(X.shape, params.slots, GRAM)
            client = Client(running.address)
            client.create_session(params, tiles=[tile], rotations=rotations)
            dataset = client.upload(X, y, tile=tile)
            yield {"client": client, "dataset": dataset, "address": running.address, "passes": passes,
                   "data_dir": data_dir}
            client.close()
    finally:
        server_jobs.accumulate = original


def _invalid(call) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details()


def test_gram_is_the_default_and_matches_its_twin(served, ames_std) -> None:
    X, y = ames_std
    client = served["client"]
    run = client.train(served["dataset"].dataset_id, dict(SETTINGS))  # no solver named: full batch -> gram
    assert run.job.hyperparameters["solver"] == "gram"
    assert run.job.state == training_service_pb2.JOB_STATE_SUCCEEDED and run.refreshes == GRAM.epochs
    twin = fit_torch_gram(X, y, GRAM)
    weights = client.weights(run.model)
    assert np.max(np.abs(weights - twin.weights)) < 1e-6
    assert np.max(np.abs(np.asarray(run.losses) - twin.losses)) < 1e-6
    # Predict on the gram model: rows go up in the model's tile (not the column-packed upload's).
    predictions = client.predict(run.model, X[:100])
    assert np.max(np.abs(predictions - X[:100] @ weights)) < 1e-6


def test_normal_matches_least_squares_and_predicts(served, ames_std) -> None:
    X, y = ames_std
    client = served["client"]
    run = client.train(served["dataset"].dataset_id, {"solver": "normal"})
    assert run.job.state == training_service_pb2.JOB_STATE_SUCCEEDED and run.job.epochs == 1
    assert run.refreshes == 0 and run.losses == []
    weights = client.weights(run.model)
    assert np.max(np.abs(weights - np.linalg.lstsq(X, y, rcond=None)[0])) < 1e-6
    assert np.max(np.abs(client.predict(run.model, X[:50]) - X[:50] @ weights)) < 1e-6


def test_resumed_gram_job_skips_the_pass(served, ames_std) -> None:
    X, y = ames_std
    client = served["client"]
    before = len(served["passes"])
    job = paused = leave_mid_job(client, served["dataset"].dataset_id, GRAM)
    assert paused.state == training_service_pb2.JOB_STATE_PAUSED and 0 < paused.epoch < GRAM.epochs
    assert list(served["data_dir"].glob(f"blobs/*/jobs/{job.job_id}.fixed"))  # the statistics, written once
    resumed = client.train(job_id=job.job_id)
    assert resumed.job.state == training_service_pb2.JOB_STATE_SUCCEEDED
    assert len(served["passes"]) == before + 1  # one pass for both streams
    twin = fit_torch_gram(X, y, GRAM)
    assert np.max(np.abs(client.weights(resumed.model) - twin.weights)) < 1e-6
    assert np.max(np.abs(np.asarray(resumed.losses) - twin.losses[paused.epoch :])) < 1e-6
    assert not list(served["data_dir"].glob(f"blobs/*/jobs/{job.job_id}.*"))  # cleaned up at the end


def test_bad_solvers_are_invalid_argument(served, ames_std) -> None:
    client, dataset_id = served["client"], served["dataset"].dataset_id
    assert CHOICES in _invalid(lambda: client.train(dataset_id, {"solver": "cholesky"}))
    assert CHOICES in _invalid(lambda: client.train(dataset_id, {"solver": "gram", "batch_size": 128}))
    assert CHOICES in _invalid(lambda: client.train(dataset_id, {"solver": "normal", "batch_size": 64}))
    message = _invalid(lambda: client.train(dataset_id, {"solver": "normal"}, algorithm="logistic"))
    assert "solver='normal' is not one of 'gd', 'quadratic'" in message
    X, y = ames_std
    shuffled = client.upload(X[:64], y[:64], shuffle_orders=[np.arange(64)[::-1]])
    assert "shuffled copies" in _invalid(lambda: client.train(shuffled.dataset_id, {"solver": "gram"}))


def test_estimator_solvers_and_early_value_error(served, ames_std) -> None:
    X, y = ames_std
    model = EncryptedLinearRegression(server=served["address"], solver="normal", fit_intercept=False, progress=False)
    model.fit(X, y)
    assert np.max(np.abs(model.coef_ - np.linalg.lstsq(X, y, rcond=None)[0])) < 1e-6
    assert model.config_.solver == "normal" and model.history_ == []
    assert EncryptedLinearRegression().config().solver == "normal"  # exact by default, like scikit-learn's
    assert EncryptedLinearRegression(batch_size=128).config().solver == "gd"
    # Nothing is contacted: the unreachable address would be an RpcError.
    bad = EncryptedLinearRegression(server="127.0.0.1:1", solver="gram", batch_size=128)
    with pytest.raises(ValueError, match=CHOICES):
        bad.fit(X, y)
    with pytest.raises(ParameterError, match=CHOICES):
        EncryptedLinearRegression(solver="lu").config()


def test_cli_solver_flag(served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(5)
    rooms, area = rng.integers(1, 8, 80), rng.uniform(30, 200, 80)
    path = tmp_path / "houses.csv"
    rows = [f"{r},{a},{20_000 + 5_000 * r + 900 * a}" for r, a in zip(rooms, area, strict=True)]
    path.write_text("rooms,area,price\n" + "\n".join(rows) + "\n")
    code = main(["train", str(path), "--target", "price", "--server", served["address"], "--solver", "normal",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "solver normal" in out and float(out.split("R^2:")[1].split()[0]) > 0.999999
    code = main(["train", str(path), "--target", "price", "--solver", "gram", "--batch-size", "16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and CHOICES in err
