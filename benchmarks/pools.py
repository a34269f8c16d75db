"""Pools: sealed releases of encrypted sufficient statistics, with and without differential privacy.

- ``ames``: Ames split across three contributors; the analyst's ridge from the release vs least squares on the
  whole table (``r2_diff``, target <= 1e-6).
- ``wine``: three classes across three contributors; one-vs-rest quadratic logistic from the release vs
  scikit-learn's exact ``LogisticRegression`` (standardized, lbfgs), training accuracy.
- ``rows_1m_100f_10_contributors``: 1,000,000 rows x 100 features held by 10 contributor processes
  (``pool_contributor.py``; 100,000 rows each, generated in the process from its seed: the parent never sends
  rows). Each contributes to a regression pool and a two-class pool; the analyst seals both and trains ridge
  and logistic on them.
  ``total_s`` (target <= 30) runs from starting the contributors to both models stored;
  ``contributor_upload_bytes`` is what one contributor sent. The models are checked against numpy's least
  squares and scikit-learn's logistic regression on the same million rows, regenerated here afterwards.
- ``dp``: held-out R^2 (Ames, diabetes) and accuracy (breast cancer) against epsilon
  (``client.compare.privacy``, 20 releases each); ``dp_noise_rel_error``: |empirical sigma / calibrated sigma
  - 1| over 200 releases of one fixed set of encrypted statistics (target <= 0.1).

    .venv/bin/python benchmarks/pools.py --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pool_contributor import CONTRIBUTORS, FEATURES, TARGET_BOUND, shard
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from targets import finish

from ciphergrad import EncryptedLinearRegression, EncryptedLogisticRegression, local_server
from ciphergrad.client import Client, Contributor
from ciphergrad.client.compare import privacy
from ciphergrad.client.pool_demo import public_bounds
from ciphergrad.core.data import load_ames
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.params import plan
from ciphergrad.core.release import Bounds, RowSpace, analytic_gaussian_sigma, moment_tile, seal

TARGETS = {
    "ames.r2_diff": ("<=", 1e-6),
    "rows_1m_100f_10_contributors.total_s": ("<=", 30.0),
    "rows_1m_100f_10_contributors.r2_diff": ("<=", 1e-6),
    "rows_1m_100f_10_contributors.accuracy_vs_sklearn": (">=", -0.01),
    "dp_noise_rel_error": ("<=", 0.1),
}


def _r2(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(1 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2))


def _small_pool(address: str, X: np.ndarray, y: np.ndarray, names: list[str], target: str,
                **settings: object) -> tuple[Client, str]:
    analyst = Client(address)
    pool = analyst.create_pool("bench", names, target, **settings)  # type: ignore[arg-type]
    for rows in np.array_split(np.arange(len(X)), 3):
        with Contributor(analyst.invite(pool.pool_id).code) as contributor:
            contributor.upload(X[rows], y[rows], progress=False)
    analyst.seal_pool(pool.pool_id)
    return analyst, pool.pool_id


def ames(address: str) -> dict[str, object]:
    data = load_ames()
    names = [*data.feature_names, data.target_name]
    bounds = {n: public_bounds(c) for n, c in zip(names, np.column_stack([data.X, data.y]).T, strict=True)}
    analyst, pool_id = _small_pool(address, data.X, data.y, list(data.feature_names), data.target_name,
                                   bounds=bounds)
    with analyst:
        model = EncryptedLinearRegression(progress=False).fit_pool(analyst, pool_id)
    design = np.c_[np.ones(len(data.X)), data.X]
    exact = np.linalg.lstsq(design, data.y, rcond=None)[0]
    pooled = _r2(data.y, model.predict(data.X))
    return {"r2_pool": pooled, "r2_least_squares": _r2(data.y, design @ exact),
            "r2_diff": abs(pooled - _r2(data.y, design @ exact))}


def wine(address: str) -> dict[str, object]:
    X, y = load_wine(return_X_y=True)
    names = [f"f{i}" for i in range(X.shape[1])]
    bounds = {n: public_bounds(c) for n, c in zip(names, X.T, strict=True)}
    analyst, pool_id = _small_pool(address, X, y, names, "class", bounds=bounds, classes=["0", "1", "2"])
    with analyst:
        model = EncryptedLogisticRegression(progress=False).fit_pool(analyst, pool_id)
    scaled = StandardScaler().fit_transform(X)
    exact = LogisticRegression(max_iter=10_000).fit(scaled, y)
    return {"accuracy": float(np.mean(model.predict(X).astype(int) == y)),
            "sklearn_accuracy": float(exact.score(scaled, y))}


def million(address: str) -> dict[str, object]:
    names = [f"x{i}" for i in range(FEATURES)]
    bounds = {n: (-1.0, 1.0) for n in names}
    analyst = Client(address)
    regression = analyst.create_pool("1m", names, "y", bounds=bounds | {"y": (-TARGET_BOUND, TARGET_BOUND)})
    classes = analyst.create_pool("1m classes", names, "y", bounds=bounds, classes=["down", "up"])
    codes = [(analyst.invite(regression.pool_id).code, analyst.invite(classes.pool_id).code)
             for _ in range(CONTRIBUTORS)]
    start = time.perf_counter()
    script = str(Path(__file__).with_name("pool_contributor.py"))
    children = [subprocess.Popen([sys.executable, script, str(i), a, b], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for i, (a, b) in enumerate(codes)]
    sent = []
    for child in children:
        out, err = child.communicate(timeout=600)
        if child.returncode:
            raise RuntimeError(f"a contributor failed: {err.strip()}")
        sent.append(json.loads(out.strip().splitlines()[-1])["bytes_sent"])
    uploaded = time.perf_counter() - start
    analyst.seal_pool(regression.pool_id)
    analyst.seal_pool(classes.pool_id)
    ridge = EncryptedLinearRegression(progress=False).fit_pool(analyst, regression.pool_id)
    logistic = EncryptedLogisticRegression(progress=False).fit_pool(analyst, classes.pool_id)
    total = time.perf_counter() - start
    analyst.close()
    parts = [shard(i) for i in range(CONTRIBUTORS)]
    X, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    labels = np.where(y > 0, "up", "down")
    design = np.c_[np.ones(len(X)), X]
    exact = np.linalg.lstsq(design, y, rcond=None)[0]
    reference = LogisticRegression(max_iter=1000).fit(X, labels).score(X, labels)
    accuracy = float(np.mean(logistic.predict(X) == labels))
    return {
        "total_s": round(total, 2), "contributions_s": round(uploaded, 2),
        "contributor_upload_bytes": int(np.mean(sent)), "r2_pool": _r2(y, ridge.predict(X)),
        "r2_diff": abs(_r2(y, ridge.predict(X)) - _r2(y, design @ exact)), "logistic_accuracy": accuracy,
        "sklearn_accuracy": float(reference), "accuracy_vs_sklearn": accuracy - float(reference),
    }


def noise_error(draws: int = 200) -> float:
    """|empirical sigma / calibrated sigma - 1| of ``core.release.seal``'s noise on fixed encrypted statistics."""
    data = load_ames()
    space = RowSpace(tuple(Bounds(*public_bounds(c)) for c in data.X.T), Bounds(*public_bounds(data.y)))
    holder = KeyHolder(plan(2), rotations=[])
    n, moments, _ = space.moments(data.X, data.y)
    encrypted = holder.encrypt(moments[:, None], tile=moment_tile(holder.params.slots))
    sigma = analytic_gaussian_sigma(1.0, 1e-6, space.sensitivity())
    noise = [(holder.decrypt(seal([(n, encrypted)], sigma)).ravel() - moments) * n for _ in range(draws)]
    return abs(float(np.std(np.concatenate(noise))) / sigma - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    result: dict[str, object] = {}
    with local_server() as address:
        result["ames"] = ames(address)
        result["wine"] = wine(address)
        result["rows_1m_100f_10_contributors"] = million(address)
    result["dp"] = privacy.sweep(repeats=20)
    result["dp_noise_rel_error"] = noise_error()
    return finish(result, TARGETS, args.json)


if __name__ == "__main__":
    sys.exit(main())
