"""Tasks without training: batched inference (linear, logistic, MLP), statistics and nearest neighbours,
each through the server (ModelService / ComputeService) next to its plaintext twin on the same rows.

Inference rows are a seeded resample (with replacement) of a held-out split to ``rows`` rows, so the
batch size is a free parameter; the models are the model owner's, trained in plaintext on the other split.
The service reports HE operation counts for training jobs only, so these tasks carry none.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from ciphergrad.client.compare.measure import Stopwatch, figures, session, timed
from ciphergrad.client.compare.result import TaskResult
from ciphergrad.core.data import load_diabetes, standardized_split, statistics_datasets
from ciphergrad.core.inference import linear_torch, mlp_torch, train_square_mlp
from ciphergrad.core.layout import Tile, choose_tile
from ciphergrad.core.neighbors import knn_vote, pca_projection, squared_distances_torch
from ciphergrad.core.params import plan

INFERENCE_DEPTH = 3  # the MLP's linear, square, linear; one level suffices for the linear models
BATCH_ROWS = 4096  # one column-packed ciphertext per feature per batch at N = 8192
KNN = {"digits": (load_digits, 5, 16), "iris": (load_iris, 5, None), "wine": (load_wine, 3, None)}  # k, PCA
MAE_DEGREE = 6


def _resample(X: np.ndarray, y: np.ndarray, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    index = np.random.default_rng(seed).integers(0, len(X), size=rows)
    return X[index], y[index]


def _r2(predictions: np.ndarray, targets: np.ndarray) -> float:
    residual = targets - predictions
    return float(1.0 - residual @ residual / np.sum((targets - targets.mean()) ** 2))


def _predict(address: str, model: object, X: np.ndarray, **upload: object) -> tuple[np.ndarray, dict]:
    """Upload a plaintext model the server owns, send X encrypted, decrypt the outputs."""
    watch = Stopwatch()
    with watch, session(address, plan(INFERENCE_DEPTH), tiles=[Tile(2, 1)]) as client:
        handle = client.upload_model(model, **upload)
        outputs = client.predict(handle, X, batch_rows=BATCH_ROWS)
    return outputs, figures(watch, client)


def inference_linear(address: str, rows: int) -> TaskResult:
    """A least-squares model of diabetes progression applied to encrypted held-out rows."""
    data = load_diabetes()
    cut = int(0.8 * len(data.X))
    design = np.hstack([np.ones((cut, 1)), data.X[:cut]])
    coef = np.linalg.lstsq(design, data.y[:cut], rcond=None)[0]
    X, y = _resample(data.X[cut:], data.y[cut:], rows)
    got, measured = _predict(address, coef[1:], X, bias=coef[0])
    want, plain_seconds = timed(linear_torch, X, coef[1:], coef[0])
    return TaskResult(
        title="Batched inference, linear model (server-owned weights)",
        dataset="diabetes",
        rows=rows,
        features=X.shape[1],
        metric="R²",
        encrypted_metric=_r2(got, y),
        plain_metric=_r2(want[:, 0], y),
        max_abs_diff=float(np.max(np.abs(got - want[:, 0]))),
        diff_of="predictions",
        plain_seconds=plain_seconds,
        notes="least squares on the first 80% of rows, applied to a resample of the last 20% (target / 100)",
        **measured,
    )


def inference_logistic(address: str, rows: int) -> TaskResult:
    """scikit-learn's logistic regression on breast cancer; encrypted logits, exact sigmoid after decryption."""
    bunch = load_breast_cancer()
    Xtr, Xte, ytr, yte = standardized_split(bunch.data, bunch.target, seed=0)
    model = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    w, b = model.coef_[0], float(model.intercept_[0])
    X, y = _resample(Xte, yte, rows)
    logits, measured = _predict(address, w, X, bias=b, logistic=True)
    got = 1.0 / (1.0 + np.exp(-logits))
    want, plain_seconds = timed(lambda: torch.sigmoid(torch.as_tensor(linear_torch(X, w, b)[:, 0])).numpy())
    return TaskResult(
        title="Batched inference, logistic model (server-owned weights)",
        dataset="breast cancer",
        rows=rows,
        features=X.shape[1],
        metric="accuracy",
        encrypted_metric=float(np.mean((got > 0.5) == y)),
        plain_metric=float(np.mean((want > 0.5) == y)),
        max_abs_diff=float(np.max(np.abs(got - want))),
        diff_of="probabilities",
        plain_seconds=plain_seconds,
        notes="trained on the 80% split, rows resampled from the 20% test split",
        **measured,
    )


def inference_mlp(address: str, rows: int) -> TaskResult:
    """A 64-32-10 square-activation MLP trained in torch on digits, run on encrypted held-out images."""
    bunch = load_digits()
    Xtr, Xte, ytr, yte = standardized_split(bunch.data, bunch.target, seed=0)
    net = train_square_mlp(Xtr, ytr, seed=0)
    X, y = _resample(Xte, yte, rows)
    got, measured = _predict(address, net, X)
    want, plain_seconds = timed(mlp_torch, net, X)
    return TaskResult(
        title="Batched inference, MLP 64-32-10 with square activation",
        dataset="digits",
        rows=rows,
        features=X.shape[1],
        metric="accuracy",
        encrypted_metric=float(np.mean(got.argmax(axis=1) == y)),
        plain_metric=float(np.mean(want.argmax(axis=1) == y)),
        max_abs_diff=float(np.max(np.abs(got - want))),
        diff_of="logits",
        plain_seconds=plain_seconds,
        notes=f"largest |logit| {np.max(np.abs(want)):.1f}; trained on the 80% split",
        **measured,
    )


def _numpy_statistics(X: np.ndarray, p: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | float]:
    residual = (p - y).reshape(-1)
    mse = float(np.mean(residual**2))
    return {
        "mean": X.mean(axis=0),
        "variance": X.var(axis=0, ddof=1),
        "correlation": np.corrcoef(X, rowvar=False),
        "mse": mse,
        "r2": 1.0 - mse / float(np.var(y)),
        "mae": float(np.mean(np.abs(residual))),
    }


def statistics(address: str, dataset: str) -> TaskResult:
    """Column mean, variance, correlation (describe) and MSE/R²/MAE (metrics) against numpy."""
    X, p, y = statistics_datasets()[dataset]
    watch = Stopwatch()
    with watch, session(address, plan(3)) as client:
        uploaded = client.upload(X, packing="columns")
        described = client.describe(uploaded)
        metrics = client.metrics(p, y, mae_degree=MAE_DEGREE)
    want, plain_seconds = timed(_numpy_statistics, X, p, y)
    diffs = {
        key: float(np.max(np.abs(np.asarray(described[key]) - want[key])))
        for key in ("mean", "variance", "correlation")
    }
    diffs.update({key: abs(metrics[key] - want[key]) for key in ("mse", "r2")})
    worst = max(diffs, key=diffs.get)
    mae_error = abs(metrics["mae"] - want["mae"])
    return TaskResult(
        title="Statistics: mean, variance, correlation, MSE/R²/MAE",
        dataset=dataset,
        rows=X.shape[0],
        features=X.shape[1],
        metric="R² (least-squares pair)",
        encrypted_metric=metrics["r2"],
        plain_metric=float(want["r2"]),
        max_abs_diff=diffs[worst],
        diff_of=f"statistics (largest: {worst})",
        plain_seconds=plain_seconds,
        notes=(
            f"MAE {metrics['mae']:.4f} vs {want['mae']:.4f}: off by {mae_error:.1e}, within the degree-{MAE_DEGREE} "
            f"|x| polynomial's bound {metrics['mae_error_bound']:.1e}"
            if mae_error <= metrics["mae_error_bound"]
            else f"MAE off by {mae_error:.1e}: OUTSIDE its polynomial bound {metrics['mae_error_bound']:.1e}"
        ),
        **figures(watch, client),
    )


def knn(address: str, dataset: str, queries: int | None = None) -> TaskResult:
    """k nearest neighbours of encrypted queries against a server-held reference set, vs scikit-learn."""
    loader, k, components = KNN[dataset]
    bunch = loader()
    Xtr, Xte, ytr, yte = standardized_split(bunch.data, bunch.target, seed=0)
    if queries:
        Xte, yte = Xte[:queries], yte[:queries]
    projection = pca_projection(Xtr, components) if components else None
    params, watch = plan(2), Stopwatch()  # distances one level, the projection one more
    with watch, session(address, params, tiles=[choose_tile((2, 1), params.slots, "columns")]) as client:
        reference = client.upload_reference(Xtr, projection)
        distances = client.distances(reference, Xte, batch_rows=128)
        labels = knn_vote(distances, ytr, k)
    twin, twin_seconds = timed(squared_distances_torch, Xte, Xtr, projection)
    project = (lambda Z: Z) if projection is None else (lambda Z: Z @ projection)
    plain = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(project(Xtr), ytr)
    plain_labels, plain_seconds = timed(plain.predict, project(Xte))
    return TaskResult(
        title=f"k-nearest neighbours (k={k}{f', PCA {components}' if components else ''})",
        dataset=dataset,
        rows=len(Xte),
        features=Xtr.shape[1],
        metric="accuracy",
        encrypted_metric=float(np.mean(labels == yte)),
        plain_metric=float(np.mean(plain_labels == yte)),
        max_abs_diff=float(np.max(np.abs(distances - twin))),
        diff_of="squared distances",
        plain_seconds=plain_seconds,
        notes=(
            f"{len(Xtr)} reference rows; labels {'equal' if np.array_equal(labels, plain_labels) else 'DIFFER from'} "
            f"scikit-learn's; torch distance twin {twin_seconds * 1e3:.2f} ms"
        ),
        **figures(watch, client),
    )
