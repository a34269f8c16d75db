"""The pooled-training story from a shell (create -> invite -> contribute x3 -> train -> status), the
estimators' fit_pool against the torch twin on the concatenated plaintext, and `ciphergrad demo --pooled`."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from service_support import local_server

from ciphergrad.client.cli import main
from ciphergrad.client.contributor import Contributor
from ciphergrad.client.estimator import EncryptedLinearRegression, EncryptedLogisticRegression
from ciphergrad.client.sdk import Client
from ciphergrad.core import algorithms, standardize
from ciphergrad.core.data import load_ames, standardized_split, with_intercept

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ["LotArea", "YearBuilt", "TotalBsmtSF", "GarageCars"]
TARGET = "SalePrice"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with local_server(Path(tmp_path_factory.mktemp("data"))) as running:
        yield running.address


def _ames_frame() -> pd.DataFrame:
    data = load_ames()
    frame = pd.DataFrame(data.X, columns=list(data.feature_names))
    frame[TARGET] = data.y
    return frame


def _code(out: str) -> str:
    (code,) = re.findall(r"^  (cgi1\.\S+)$", out, flags=re.MULTILINE)
    return code


def _invitation_id(out: str) -> str:
    return re.search(r"^invitation (\S+) to pool", out, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_the_cli_story(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    common = ["--key-dir", str(keys)]
    frame = _ames_frame()
    assert main(["pool", "create", "houses", "--columns", ",".join(FEATURES), "--target", TARGET,
                 "--server", server, *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "created pool 'houses'" in out and f"features, in order: {', '.join(FEATURES)}" in out
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys.iterdir()} == {
        "secret-context.bin": 0o600, "session-token": 0o600, "session.json": 0o600,
    }  # fmt: skip

    # A key directory holds one session; another pool may share it when the keys cover its width.
    assert main(["pool", "create", "flats", "--columns", "a,b,c", "--target", "y", *common]) == 0
    assert "created pool 'flats'" in capsys.readouterr().out
    wide = ",".join(f"c{i}" for i in range(20))
    assert main(["pool", "create", "wide", "--columns", wide, "--target", "y", *common]) == 2
    assert "lack rotations that 20 features need; give this pool its own --key-dir" in capsys.readouterr().err
    assert main(["pool", "create", "flats", "--columns", "a", "--target", "y", *common]) == 2
    assert "already has a pool named 'flats'" in capsys.readouterr().err

    codes, ids = [], []
    invited = time.monotonic()
    for label, extra in (
        ("north", []), ("south", ["--max-rows", "150"]), ("east", ["--expires", "7d"]), ("late", ["--expires", "1s"])
    ):
        assert main(["pool", "invite", "houses", "--label", label, *extra, *common]) == 0
        out = capsys.readouterr().out
        codes.append(_code(out))
        ids.append(_invitation_id(out))
        assert "ciphergrad contribute THEIR_FILE.csv --invitation @invitation.txt" in out
    codes, late = codes[:3], codes[3]
    parts = [frame.iloc[:200], frame.iloc[200:340], frame.iloc[340:]]
    paths = []
    for index, part in enumerate(parts):
        path = tmp_path / f"part{index}.csv"
        # Contributors' files differ in column order and extra columns: only the schema's columns go.
        columns = [TARGET, *reversed(FEATURES)] + (["MiscVal"] if index == 0 else [])
        part[columns].to_csv(path, index=False)
        paths.append(path)

    # A file without a pool column is refused before anything is encrypted or sent.
    frame[[*FEATURES[:2], TARGET]].to_csv(tmp_path / "short.csv", index=False)
    assert main(["contribute", str(tmp_path / "short.csv"), "--invitation", codes[0], "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the pool needs column(s) ['TotalBsmtSF', 'GarageCars'] that the file lacks" in err
    # Over the row cap: RESOURCE_EXHAUSTED, nothing stored.
    assert main(["contribute", str(paths[0]), "--invitation", codes[1], "--no-progress"]) == 1
    assert "RESOURCE_EXHAUSTED" in capsys.readouterr().err

    for index, (path, code) in enumerate(zip(paths, codes, strict=True)):
        assert main(["contribute", str(path), "--invitation", code, "--no-progress"]) == 0
        out, err = capsys.readouterr()
        assert "encrypted here with the analyst's public key" in out and "receipt " in out
        assert ("['MiscVal'] are not in the pool's schema: left out" in err) == (index == 0)

    assert main(["pool", "revoke", "houses", ids[0], *common]) == 0
    assert f"revoked {ids[0]} (north)" in capsys.readouterr().out
    assert main(["contribute", str(paths[0]), "--invitation", codes[0], "--no-progress"]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err

    time.sleep(max(0.0, invited + 1.5 - time.monotonic()))
    assert main(["contribute", str(paths[2]), "--invitation", late, "--no-progress"]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err

    assert main(["pool", "status", "houses", *common]) == 0
    status = capsys.readouterr().out
    assert "pool 'houses'" in status and f"{len(frame)} rows in 3 contributions" in status
    states = {line.split()[0]: line.split() for line in status.splitlines() if line.startswith(tuple(ids))}
    assert states[ids[0]][1:4] == ["north", "revoked", "200"]
    assert states[ids[1]][1:4] == ["south", "active", "140"] and states[ids[1]][5] == "150"
    assert states[ids[2]][1:4] == ["east", "active", str(len(frame) - 340)]
    assert states[ids[3]][1:4] == ["late", "expired", "0"]

    assert main(["pool", "train", "houses", "--solver", "normal", *common]) == 0
    out = capsys.readouterr().out
    printed = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(\S+)\s+(-?[\d.e+-]+)$", out, re.MULTILINE)}
    design = with_intercept(frame[FEATURES].to_numpy())
    config = algorithms.get("linear").service_config({"solver": "normal"})
    twin = algorithms.get("linear").twin_for(config)(design, frame[TARGET].to_numpy().copy(), config)
    weights = np.array([printed[name] for name in ["(intercept)", *FEATURES]])
    # The normal solver: decrypted X^T X / n and X^T y / n, solved here; the printed 8 significant digits.
    assert np.max(np.abs(weights - twin.weights)) < 1e-4, (weights, twin.weights)
    assert f"on pool 'houses': {len(frame)} rows from 3 contributions x {len(FEATURES)} features" in out

    # --standardize: the pool's decrypted means and deviations, applied by the server; raw-unit coefficients.
    assert main(["pool", "train", "houses", "--solver", "normal", "--standardize", *common]) == 0
    out = capsys.readouterr().out
    assert "standardized: every feature and the target to mean 0 and deviation 1" in out
    printed = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(\S+)\s+(-?[\d.e+-]+)$", out, re.MULTILINE)}
    weights = np.array([printed[name] for name in ["(intercept)", *FEATURES]])
    least_squares = np.linalg.lstsq(design, frame[TARGET].to_numpy(), rcond=None)[0]
    assert np.max(np.abs(weights - least_squares)) < 1e-4, (weights, least_squares)
    assert main(["pool", "train", "houses", "--standardize", "--solver", "gd", *common]) == 2
    assert "--standardize works with --solver gram or normal" in capsys.readouterr().err

    os.chmod(keys / "secret-context.bin", 0o644)
    assert main(["pool", "train", "houses", *common]) == 2
    assert f"run `chmod 600 {keys / 'secret-context.bin'}`" in capsys.readouterr().err


def _pool(client: Client, X: np.ndarray, y: np.ndarray, names: list[str], splits: list[int]) -> str:
    pool = client.create_pool("estimator", names, "target")
    for part in np.split(np.arange(len(X)), splits):
        with Contributor(client.invite(pool.pool_id).code) as contributor:
            contributor.upload(X[part], y[part], progress=False)
    return pool.pool_id


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_fit_pool_matches_the_twin_on_the_concatenated_plaintext(server: str) -> None:
    data = load_ames()
    with Client(server) as client:
        pool_id = _pool(client, data.X, data.y, list(data.feature_names), [180, 390])
        model = EncryptedLinearRegression(solver="gram", epochs=8, learning_rate=0.1, momentum=0.5, init="zeros",
                                          progress=False)
        model.fit_pool(client, pool_id)
    config = model.config_
    twin = algorithms.get("linear").twin_for(config)(with_intercept(data.X), data.y, config)
    assert config.solver == "gram" and model.n_features_in_ == 9 and model.feature_names_ == list(data.feature_names)
    assert np.max(np.abs(np.r_[model.intercept_, model.coef_] - twin.weights)) < 1e-4
    assert np.max(np.abs(np.asarray(model.history_) - twin.losses)) < 1e-6
    assert model.report_["pool_rows"] == len(data.X) and model.report_["refreshes"] >= 8
    with pytest.raises(ValueError, match="pools train full batch"):
        EncryptedLinearRegression(batch_size=64, solver="gd").fit_pool(client, pool_id)


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_fit_pool_standardized_reaches_least_squares_in_raw_units(server: str) -> None:
    data = load_ames()
    with Client(server) as client:
        pool_id = _pool(client, data.X, data.y, list(data.feature_names), [250])
        model = EncryptedLinearRegression(solver="gram", epochs=30, learning_rate=0.7, momentum=0.3, init="zeros",
                                          progress=False)  # fmt: skip
        model.fit_pool(client, pool_id, standardize=True)
        stats = client.pool_statistics(pool_id)
        with pytest.raises(ValueError, match="standardize=True needs linear regression"):
            EncryptedLogisticRegression().fit_pool(client, pool_id, standardize=True)
    scaling = model.report_["standardization"]
    design, target = standardize.apply(with_intercept(data.X), data.y, scaling, 0)
    twin = algorithms.get("linear").twin_for(model.config())(design, target, model.config())  # unstandardized
    weights = np.r_[model.intercept_, model.coef_]
    assert np.max(np.abs(weights - stats.raw_weights(twin.weights, scaling))) < 1e-6
    least_squares = np.linalg.lstsq(with_intercept(data.X), data.y, rcond=None)[0]
    assert np.max(np.abs(weights - least_squares)) < 1e-3, "30 epochs converge on standardized Ames"
    assert np.allclose(model.predict(data.X), with_intercept(data.X) @ weights), "predict takes raw features"


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_logistic_fit_pool_matches_the_twin(server: str) -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    X, _, y, _ = standardized_split(bunch.data[:, :8], bunch.target, seed=0)
    y = y.astype(np.float64)
    with Client(server) as client:
        pool_id = _pool(client, X, y, [f"f{i}" for i in range(8)], [150, 300])
        model = EncryptedLogisticRegression(solver="gd", epochs=4, progress=False).fit_pool(client, pool_id)
    twin = algorithms.get("logistic").twin(with_intercept(X), y, model.config_)
    assert np.max(np.abs(np.r_[model.intercept_, model.coef_] - twin.weights)) < 1e-3
    assert list(model.classes_) == [0.0, 1.0] and model.score(X, y) > 0.9


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_demo_pooled_runs_three_contributor_processes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ciphergrad.client.cli", "demo", "--pooled"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    difference = float(re.search(r"max \|pool - one dataset\| = (\S+) ", out).group(1))  # type: ignore[union-attr]
    assert difference <= 1e-6
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("analyst", "contributor", "server"))}
    assert "yes: its own" in rows["analyst"] and "never" in rows["server"]
    pids = set(re.findall(r"\(pid (\d+)\)", out))
    assert len(pids) == 3 and str(os.getpid()) not in pids, "three separate contributor processes"
    for count in (200, 170, 140):
        assert f"its own {count} " in out
