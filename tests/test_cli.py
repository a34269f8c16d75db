"""The `ciphergrad` CLI and the scikit-learn-style estimator, against a loopback server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from service_support import local_server

from ciphergrad.client.cli import main
from ciphergrad.client.estimator import EncryptedLinearRegression
from ciphergrad.core import algorithms
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.linear import fit_torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with local_server(Path(tmp_path_factory.mktemp("data"))) as running:
        yield running.address


def test_estimator_accepts_pandas_and_torch_and_matches_twin(server: str) -> None:
    data = load_ames()
    # The twin sees the rows as sent: standardize=False (Ames is min-max scaled already), the gram solver.
    model = EncryptedLinearRegression(server=server, solver="gram", epochs=8, standardize=False, progress=False)
    model.fit(pd.DataFrame(data.X), torch.tensor(data.y))
    config = model.config_
    assert config.solver == "gram" and config.learning_rate == 0.25  # 1/lambda_max rounded down to a power of 2
    twin = algorithms.get("linear").twin_for(config)(with_intercept(data.X), data.y, config)
    weights = np.concatenate([[model.intercept_], model.coef_])
    assert np.max(np.abs(weights - twin.weights)) < 1e-4
    assert np.max(np.abs(np.asarray(model.history_) - twin.losses)) < 1e-6
    assert np.allclose(model.predict(data.X), with_intercept(data.X) @ weights)
    assert -10 < model.score(data.X, data.y) < 1
    report = model.report_
    assert report["refreshes"] >= 8 and report["bytes_total"] > report["bytes_sent"]["public context"]
    assert len(report["epoch_seconds"]) == 8 and report["train_seconds"] > 0


def test_estimator_minibatches_follow_the_twins_shuffles(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key holder draws the shuffle orders (CSPRNG) and keeps them: the twin replays them from
    ``shuffle_orders_``, and no seed or order is among the hyperparameters the server received."""
    from ciphergrad.client.training import TrainingCalls

    received: list[dict] = []
    train = TrainingCalls.train

    def spy(self, *args, **kwargs):
        run = train(self, *args, **kwargs)
        received.append(dict(run.job.hyperparameters))  # the server's own record of the job
        return run

    monkeypatch.setattr(TrainingCalls, "train", spy)
    data = load_ames()
    model = EncryptedLinearRegression(server=server, epochs=3, batch_size=128, learning_rate=0.3, standardize=False,
                                      progress=False)
    model.fit(data.X, data.y)
    orders = model.shuffle_orders_
    assert len(orders) == model.shuffles and all(sorted(o) == list(range(len(data.X))) for o in orders)
    twin = fit_torch(with_intercept(data.X), data.y, model.config_, orders)
    assert np.max(np.abs(np.concatenate([[model.intercept_], model.coef_]) - twin.weights)) < 1e-4
    (hyperparameters,) = received
    assert hyperparameters["batch_size"] == 128 and hyperparameters["learning_rate"] == 0.3
    assert "seed" not in hyperparameters and not any("shuffle" in key for key in hyperparameters)


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


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed entry point's code as a child process: exit code and streams as a user sees them."""
    command = [sys.executable, "-m", "ciphergrad.client.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_cli_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("train", "absent.csv", "--target", "price", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "ciphergrad: error: absent.csv: no such file\n"
    assert result.stdout == ""


def test_cli_bad_cells_name_column_and_lines_and_exit_2(tmp_path: Path) -> None:
    # The table: column b holds an empty cell and the text "x"; it used to vanish without a word.
    (tmp_path / "messy.csv").write_text("a,b,c\n1,2,3\n2,,5\n3,x,7\n4,5,9\n5,6,11\n")
    result = run_cli("train", "messy.csv", "--target", "c", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "column 'b' has 2 bad cells: line 3 (missing), line 4 (non-numeric 'x')" in line
    assert "--bad-cells drop" in line and "--bad-cells impute" in line
    unknown = run_cli("train", "messy.csv", "--target", "price", cwd=tmp_path)
    assert unknown.returncode == 2 and "no column 'price'" in unknown.stderr and "Traceback" not in unknown.stderr


def _houses_with_gaps(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"rooms": rng.integers(1, 8, 60).astype(object), "area": rng.uniform(30, 200, 60)})
    frame["price"] = 20_000 + 5_000 * frame["rooms"].astype(float) + 900 * frame["area"]
    frame["street"] = rng.choice(["Elm", "Oak", "Ash"], 60)
    frame.loc[[4, 17, 33], "rooms"] = ["", "x", "NA"]
    path = tmp_path / "gaps.csv"
    frame.to_csv(path, index=False)
    return path


FAST = ["--epochs", "60", "--learning-rate", "1.0", "--momentum", "0.9", "--no-progress"]


def test_cli_drop_trains_on_the_complete_rows_and_says_so(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _houses_with_gaps(tmp_path)
    assert main(["train", str(path), "--target", "price", "--server", server, "--bad-cells", "drop", *FAST]) == 0
    out, err = capsys.readouterr()
    assert "left out column(s) ['street']: no numeric values" in err
    assert "dropped 3 of 60 rows with a missing or non-numeric cell ('rooms': 3)" in err
    assert "trained linear regression on 57 rows x 2 features" in out
    assert float(out.split("R^2:")[1].split()[0]) > 0.99, "the remaining rows follow the formula exactly"


def test_cli_impute_keeps_every_row(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _houses_with_gaps(tmp_path)
    args = ["train", str(path), "--target", "price", "--features", "rooms,area", "--bad-cells", "impute"]
    assert main([*args, "--server", server, *FAST]) == 0
    out, err = capsys.readouterr()
    assert "imputed 3 missing or non-numeric cells with their column mean ('rooms': 3)" in err
    assert "street" not in err, "--features names the columns: nothing else is looked at"
    assert "trained linear regression on 60 rows x 2 features" in out


def test_cli_unreachable_server_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ok.csv").write_text("a,c\n1,2\n2,4\n3,6\n")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli("train", "ok.csv", "--target", "c", "--server", f"127.0.0.1:{port}", "--no-progress", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"ciphergrad: error: 127.0.0.1:{port}: UNAVAILABLE: ")


def test_cli_trains_a_classifier_on_text_labels(server: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_iris

    iris = load_iris()
    rows = [(*features, iris.target_names[label]) for features, label in zip(iris.data, iris.target, strict=True)
            if label < 2]  # setosa vs versicolor: separable
    path = tmp_path / "flowers.csv"
    path.write_text("sepal_l,sepal_w,petal_l,petal_w,species\n" + "\n".join(",".join(map(str, r)) for r in rows))
    assert main(["train", str(path), "--target", "species", "--model", "logistic", "--server", server,
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trained logistic regression on 100 rows x 4 features" in out
    assert "solver quadratic" in out and float(out.split("accuracy:")[1].split()[0]) == 1.0
    counts = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["setosa"],
                                                                                                    ["versicolor"])}
    assert counts == {"setosa": ["50", "50", "50"], "versicolor": ["50", "50", "50"]}
    assert "log-odds of 'versicolor'" in out
    # A linear-only flag with the classifier is one clear line.
    assert main(["train", str(path), "--target", "species", "--model", "logistic", "--init", "zeros"]) == 2
    assert "--init do(es) not apply to --model logistic" in capsys.readouterr().err


def test_kept_models_are_listed_and_predict_encrypted(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """train --keep-model --save, then `models` and `predict`: the server's encrypted predictions, decrypted and
    mapped back, equal the saved decrypted model's on the same rows."""
    from sklearn.datasets import load_diabetes

    monkeypatch.setenv("CIPHERGRAD_MODELS_DIR", str(tmp_path / "models"))
    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.drop(columns=["target"]).head(25).to_csv(tmp_path / "new.csv", index=False)
    assert main(["train", str(tmp_path / "train.csv"), "--target", "target", "--keep-model", "--no-progress"]) == 2
    assert "add --server HOST:PORT" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "train.csv"), "--target", "target", "--server", server, "--keep-model",
                 "--save", str(tmp_path / "model.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    model_id = out.split("kept model ")[1].split()[0]
    assert (tmp_path / "models" / model_id / "secret-context.bin").stat().st_mode & 0o777 == 0o600
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert model_id in listing and "linear" in listing and server in listing
    assert main(["predict", model_id, str(tmp_path / "new.csv"), "--out", str(tmp_path / "out.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "out.csv")["predicted_target"].to_numpy()
    saved = __import__("json").loads((tmp_path / "model.json").read_text())
    local = frame.drop(columns=["target"]).head(25).to_numpy() @ np.array(saved["coef"]) + saved["intercept"]
    assert np.max(np.abs(predicted - local)) < 1e-3 * np.max(np.abs(local))  # CKKS error, in data units
    assert main(["predict", "no-such-model", str(tmp_path / "new.csv"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no kept model 'no-such-model'" in capsys.readouterr().err
