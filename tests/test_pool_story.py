"""The pool story from a shell (create -> invite -> contribute x3 -> seal -> status -> train), the estimators'
fit_pool against scikit-learn on the concatenated plaintext (regression and three classes), and
`ciphergrad demo --pooled`."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from service_support import local_server
from sklearn.datasets import load_wine
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler

from ciphergrad.client.cli import main
from ciphergrad.client.contributor import Contributor
from ciphergrad.client.estimator import EncryptedLinearRegression, EncryptedLogisticRegression
from ciphergrad.client.sdk import Client
from ciphergrad.core.data import load_ames, with_intercept

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
    bounds = ",".join(f"{c}={frame[c].min() - 1}:{frame[c].max() + 1}" for c in [*FEATURES, TARGET])
    assert main(["pool", "create", "houses", "--columns", ",".join(FEATURES), "--target", TARGET,
                 "--bounds", bounds, "--server", server, *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "created pool 'houses'" in out and f"features, in order: {', '.join(FEATURES)}" in out
    assert "at least 3 contributors of 10+ rows each" in out and "none: the analyst learns exact aggregates" in out
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys.iterdir()} == {
        "secret-context.bin": 0o600, "session-token": 0o600, "session.json": 0o600,
    }  # fmt: skip

    # A key directory holds one session, which any number of pools share (pool keys need no rotations).
    assert main(["pool", "create", "flats", "--columns", "a,b,c", "--target", "y", *common]) == 0
    assert "created pool 'flats'" in capsys.readouterr().out
    assert main(["pool", "create", "flats", "--columns", "a", "--target", "y", *common]) == 2
    assert "already has a pool named 'flats'" in capsys.readouterr().err
    assert main(["pool", "create", "private", "--columns", "a", "--target", "y", "--epsilon", "1", "--delta", "1e-6",
                 *common]) == 1  # fmt: skip
    assert "differential privacy needs schema.bounds" in capsys.readouterr().err

    codes, ids = [], []
    for label, extra in (
        ("north", []), ("south", ["--max-rows", "150"]), ("east", ["--expires", "7d"])
    ):
        assert main(["pool", "invite", "houses", "--label", label, *extra, *common]) == 0
        out = capsys.readouterr().out
        codes.append(_code(out))
        ids.append(_invitation_id(out))
        assert "ciphergrad contribute THEIR_FILE.csv --invitation @invitation.txt" in out
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
        assert "encrypted with the analyst's public key (fingerprint checked); no row left this machine" in out
        assert ("['MiscVal'] are not in the pool's schema: left out" in err) == (index == 0)

    assert main(["pool", "revoke", "houses", ids[0], *common]) == 0
    assert f"revoked {ids[0]} (north)" in capsys.readouterr().out
    assert main(["contribute", str(paths[0]), "--invitation", codes[0], "--no-progress"]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err


    assert main(["pool", "train", "houses", *common]) == 1  # open: nothing is released yet
    assert "seal it first" in capsys.readouterr().err
    assert main(["pool", "seal", "houses", *common]) == 0
    assert f"one release of {len(frame)} rows from 3 contributors" in capsys.readouterr().out
    assert main(["contribute", str(paths[1]), "--invitation", codes[2], "--no-progress"]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err and True

    assert main(["pool", "status", "houses", *common]) == 0
    status = capsys.readouterr().out
    assert "pool 'houses'" in status and "sealed" in status
    assert f"{len(frame)} rows in 3 contributions from 3 contributors" in status
    states = {line.split()[0]: line.split() for line in status.splitlines() if line.startswith(tuple(ids))}
    assert states[ids[0]][1:4] == ["north", "revoked", "200"]
    assert states[ids[1]][1:4] == ["south", "active", "140"] and states[ids[1]][5] == "150"
    assert states[ids[2]][1:4] == ["east", "active", str(len(frame) - 340)]

    assert main(["pool", "train", "houses", *common]) == 0
    out = capsys.readouterr().out
    printed = {m.group(1): float(m.group(2))
               for m in re.finditer(r"^\s+(\S+)\s+(?:-?[\d.e+-]+\s+)?(-?[\d.e+-]+)$", out, re.MULTILINE)}
    design = with_intercept(frame[FEATURES].to_numpy())
    least_squares = np.linalg.lstsq(design, frame[TARGET].to_numpy(), rcond=None)[0]
    weights = np.array([printed[name] for name in ["(intercept)", *FEATURES]])
    # Solved here from the decrypted release; the printed 6 significant digits.
    assert np.allclose(weights, least_squares, rtol=1e-5, atol=1e-6), (weights, least_squares)
    assert f"sealed release of pool 'houses': {len(frame)} rows from 3 contributors x {len(FEATURES)} features" in out

    os.chmod(keys / "secret-context.bin", 0o644)
    assert main(["pool", "train", "houses", *common]) == 2
    assert f"run `chmod 600 {keys / 'secret-context.bin'}`" in capsys.readouterr().err


def _pool(client: Client, X: np.ndarray, y: np.ndarray, names: list[str], splits: list[int], **settings) -> str:
    pool = client.create_pool("estimator", names, "target", **settings)
    for part in np.split(np.arange(len(X)), splits):
        with Contributor(client.invite(pool.pool_id).code) as contributor:
            contributor.upload(X[part], y[part], progress=False)
    client.seal_pool(pool.pool_id)
    return pool.pool_id


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_fit_pool_reaches_least_squares(server: str) -> None:
    data = load_ames()
    with Client(server) as client:
        pool_id = _pool(client, data.X, data.y, list(data.feature_names), [180, 390])
        model = EncryptedLinearRegression(progress=False).fit_pool(client, pool_id)
        with pytest.raises(ValueError, match="regression pool"):
            EncryptedLogisticRegression().fit_pool(client, pool_id)
    least_squares = np.linalg.lstsq(with_intercept(data.X), data.y, rcond=None)[0]
    weights = np.r_[model.intercept_, model.coef_]
    assert model.n_features_in_ == 9 and model.feature_names_ == list(data.feature_names)
    assert model.report_["release"]["rows"] == len(data.X) and model.report_["refreshes"] == 0
    assert abs(model.score(data.X, data.y) - LinearRegression().fit(data.X, data.y).score(data.X, data.y)) < 1e-6
    assert np.max(np.abs(weights - least_squares)) < 1e-4


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_fit_pool_classifies_three_classes(server: str) -> None:
    bunch = load_wine()
    labels = np.array(["barolo", "grignolino", "barbera"])[bunch.target]
    names = [f"f{i}" for i in range(bunch.data.shape[1])]
    bounds = {n: (float(c.min()), float(c.max())) for n, c in zip(names, bunch.data.T, strict=True)}
    with Client(server) as client:
        pool_id = _pool(client, bunch.data, labels, names, [60, 120], bounds=bounds,
                        classes=["barbera", "barolo", "grignolino"])
        model = EncryptedLogisticRegression(progress=False).fit_pool(client, pool_id)
    scaled = StandardScaler().fit_transform(bunch.data)
    reference = LogisticRegression(max_iter=5000).fit(scaled, labels).score(scaled, labels)
    assert list(model.classes_) == ["barbera", "barolo", "grignolino"] and model.coef_.shape == (3, 13)
    assert model.score(bunch.data, labels) >= reference - 0.03


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_demo_pooled_runs_three_contributor_processes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ciphergrad.client.cli", "demo", "--pooled"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    difference = float(re.search(r"difference (\S+) \(must", out).group(1))  # type: ignore[union-attr]
    assert difference <= 1e-6
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("analyst", "contributor", "server"))}
    assert "yes: its own" in rows["analyst"] and "never" in rows["server"]
    pids = set(re.findall(r"\(pid (\d+)\)", out))
    assert len(pids) == 3 and str(os.getpid()) not in pids, "three separate contributor processes"
    for count in (200, 170, 140):
        assert f"its own {count} " in out
