"""The `ciphergrad` CLI and the scikit-learn-style estimator, against a loopback server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from service_support import local_server

from client.cli import main
from client.estimator import EncryptedLinearRegression
from core.data import load_ames, with_intercept
from core.linear import fit_torch, shuffle_orders


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with local_server(Path(tmp_path_factory.mktemp("data"))) as running:
        yield running.address


def test_estimator_accepts_pandas_and_torch_and_matches_twin(server: str) -> None:
    data = load_ames()
    model = EncryptedLinearRegression(server=server, epochs=8, progress=False)
    model.fit(pd.DataFrame(data.X), torch.tensor(data.y))
    twin = fit_torch(with_intercept(data.X), data.y, model.config())
    weights = np.concatenate([[model.intercept_], model.coef_])
    assert np.max(np.abs(weights - twin.weights)) < 1e-4
    assert np.max(np.abs(np.asarray(model.history_) - twin.losses)) < 1e-6
    assert np.allclose(model.predict(data.X), with_intercept(data.X) @ weights)
    assert -10 < model.score(data.X, data.y) < 1
    report = model.report_
    assert report["refreshes"] >= 8 and report["bytes_total"] > report["bytes_sent"]["public context"]
    assert len(report["epoch_seconds"]) == 8 and report["train_seconds"] > 0


def test_estimator_minibatches_follow_the_twins_shuffles(server: str) -> None:
    data = load_ames()
    model = EncryptedLinearRegression(server=server, epochs=3, batch_size=128, learning_rate=0.3, progress=False)
    model.fit(data.X, data.y)
    orders = shuffle_orders(len(data.X), model.shuffles, model.seed)
    twin = fit_torch(with_intercept(data.X), data.y, model.config(), orders)
    assert np.max(np.abs(np.concatenate([[model.intercept_], model.coef_]) - twin.weights)) < 1e-4


def test_cli_train_csv(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"rooms": rng.integers(1, 8, 80), "area": rng.uniform(30, 200, 80)})
    frame["price"] = 20_000 + 5_000 * frame["rooms"] + 900 * frame["area"]
    path = tmp_path / "houses.csv"
    frame.to_csv(path, index=False)
    flags = ["--epochs", "60", "--learning-rate", "1.0", "--momentum", "0.9", "--init", "zeros", "--no-progress"]
    code = main(["train", str(path), "--target", "price", "--server", server, *flags])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rooms" in out and "area" in out and "R^2" in out
    r2 = float(out.split("R^2:")[1].split()[0])
    assert r2 > 0.99


def test_cli_demo_prints_the_comparison(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--server", server, "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "encrypted MSE" in out and "torch MSE" in out and "max |weight difference|" in out
