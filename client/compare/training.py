"""Training tasks: linear regression on Ames (the write-up's run, and to convergence per solver) and
logistic regression on breast cancer, each through the server's Train stream next to its torch twin.

Encrypted wall time covers keys, encryption, upload, every epoch with its refresh round trips and the
decryption of the model; the per-epoch figures are the server's epoch times (refreshes included) against
the twin's. The twins start from the same weights and take the same steps (core.linear / core.logistic),
so the loss curves must coincide up to CKKS noise.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer

from ciphergrad.client.compare.measure import Stopwatch, figures, session, timed
from ciphergrad.client.compare.result import TaskResult
from ciphergrad.client.sdk import TrainingRun, default_parameters, training_layout
from ciphergrad.core import algorithms, linear, logistic
from ciphergrad.core.compare import per_sample_epochs, r2_score
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import load_ames, standardized_split, with_intercept

WRITEUP = {"learning_rate": 0.5, "init_seed": 0, "solver": "gd"}  # the original write-up: plain GD from N(0, 1) weights
LOGISTIC = {"learning_rate": 0.3, "momentum": 0.8, "degree": 5, "bound": 8.0, "l2": 0.0}  # as benchmarks/logreg.py


def _train(
    address: str, X: np.ndarray, y: np.ndarray, config: Any, algorithm: str
) -> tuple[np.ndarray, TrainingRun, dict]:
    """Encrypt, upload, train and decrypt through the server; weights, the run and its figures."""
    params = default_parameters()
    tile, rotations = training_layout(X.shape, params.slots, config)
    watch = Stopwatch()
    name = f"compare {algorithm}"
    with watch, session(address, params, tiles=[tile], rotations=rotations, display_name=name) as client:
        dataset = client.upload(X, y, tile=tile)
        run = client.train(dataset.dataset_id, config, algorithm=algorithm)
        weights = client.weights(run.model)
    return weights, run, {**figures(watch, client), "operations": {**run.operation_counts, "refreshes": run.refreshes}}


def _curves(result: TaskResult, run: TrainingRun, twin: Any, loss_name: str) -> None:
    result.losses = {"encrypted": list(run.losses), "torch": list(twin.losses)}
    result.loss_name = loss_name
    result.epoch_seconds = {
        "encrypted": statistics.median(run.epoch_seconds),
        "torch": statistics.median(twin.epoch_seconds),
    }


def _least_squares(X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """R² and MSE of the exact least-squares fit: the optimum gradient descent converges to."""
    weights = np.linalg.lstsq(X, y, rcond=None)[0]
    return r2_score(X, y, weights), float(np.mean((X @ weights - y) ** 2))


def ames_writeup(address: str, epochs: int, peer_epochs: int) -> TaskResult:
    """The write-up's setup: 50 epochs of plain gradient descent, learning rate 0.5 (unconverged)."""
    data = load_ames()
    X = with_intercept(data.X)
    config = linear.LinearRegressionConfig(epochs=epochs, **WRITEUP)
    weights, run, measured = _train(address, X, data.y, config, "linear")
    twin, plain_seconds = timed(linear.fit_torch, X, data.y, config)
    least_squares, floor = _least_squares(X, data.y)
    result = TaskResult(
        title=f"Linear regression, the write-up's {epochs} epochs of GD (lr 0.5, N(0,1) start)",
        dataset="Ames housing",
        rows=X.shape[0],
        features=X.shape[1] - 1,
        metric="R²",
        encrypted_metric=r2_score(X, data.y, weights),
        plain_metric=r2_score(X, data.y, twin.weights),
        max_abs_diff=float(np.max(np.abs(weights - twin.weights))),
        diff_of="weights",
        plain_seconds=plain_seconds,
        optimum=least_squares,
        notes=f"unconverged by design (the write-up's run); least squares reaches R² {least_squares:.4f}",
        **measured,
    )
    _curves(result, run, twin, "training MSE (SalePrice min-max scaled to [0, 1])")
    result.loss_optimum = floor
    if peer_epochs:
        seconds = per_sample_epochs(X, data.y, WRITEUP["learning_rate"], peer_epochs, seed=WRITEUP["init_seed"])
        peer = statistics.median(seconds)
        result.peer = {
            "name": "one ciphertext per sample (TenSEAL tutorial)",
            "epoch_seconds": peer,
            "epochs_timed": peer_epochs,
            "slowdown_vs_ours": peer / result.epoch_seconds["encrypted"],
        }
    return result


def ames_converged(address: str, solver: str, **settings: Any) -> TaskResult:
    """Ames to the least-squares optimum: the key holder standardizes the features, the server runs
    ``solver`` with its settings (tasks.SOLVER_SETTINGS), and weights are mapped back to the data's units."""
    config = linear.LinearRegressionConfig(**settings, solver=solver)
    data = load_ames()
    scaler = Standardizer.fit(data.X)
    Xs, X = with_intercept(scaler.transform(data.X)), with_intercept(data.X)
    weights, run, measured = _train(address, Xs, data.y, config, "linear")
    twin, plain_seconds = timed(algorithms.get("linear").twin_for(config), Xs, data.y, config)

    def r2(w: np.ndarray) -> float:
        return r2_score(X, data.y, np.r_[scaler.original_weights(w[0], w[1:])])

    least_squares, floor = _least_squares(X, data.y)
    result = TaskResult(
        title=f"Linear regression to convergence, solver {solver!r} "
        + ("(one round trip, standardized)" if solver == "normal" else f"({config.epochs} epochs, standardized)"),
        dataset="Ames housing",
        rows=X.shape[0],
        features=X.shape[1] - 1,
        metric="R²",
        encrypted_metric=r2(weights),
        plain_metric=r2(twin.weights),
        max_abs_diff=float(np.max(np.abs(weights - twin.weights))),
        diff_of="weights (standardized features)",
        plain_seconds=plain_seconds,
        optimum=least_squares,
        notes=f"least squares R² {least_squares:.4f}; settings {settings}",
        **measured,
    )
    if run.losses:  # the normal solver is one round trip: no epochs, no loss curve
        _curves(result, run, twin, "training MSE (SalePrice min-max scaled to [0, 1])")
        result.loss_optimum = floor
    return result


def _cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Breast cancer, stratified 80/20, standardized with the training split's statistics, an intercept."""
    bunch = load_breast_cancer()
    Xtr, Xte, ytr, yte = standardized_split(bunch.data, bunch.target, seed=0)
    return with_intercept(Xtr), with_intercept(Xte), ytr.astype(np.float64), yte


def _test_accuracy(split: tuple, weights: np.ndarray) -> float:
    _, Xte, _, yte = split
    return float(np.mean((Xte @ weights > 0) == yte))


def _cancer_result(title: str, weights: np.ndarray, twin: np.ndarray, split: tuple, reference: str,
                   plain_seconds: float, measured: dict) -> TaskResult:
    """The classifier's task result: test accuracy both ways and the weights' difference."""
    Xtr, _, _, yte = split
    return TaskResult(
        title=title, dataset="breast cancer", rows=Xtr.shape[0], features=Xtr.shape[1] - 1,
        metric="test accuracy", encrypted_metric=_test_accuracy(split, weights),
        plain_metric=_test_accuracy(split, twin), max_abs_diff=float(np.max(np.abs(weights - twin))),
        diff_of="weights", plain_seconds=plain_seconds, notes=f"{reference}; {len(yte)} test rows", **measured,
    )


def logistic_cancer(address: str, epochs: int) -> TaskResult:
    """Breast cancer (stratified 80/20), degree-5 sigmoid polynomial, Nesterov momentum."""
    split = Xtr, _, ytr, _ = _cancer()
    config = logistic.LogisticRegressionConfig(epochs=epochs, **LOGISTIC)
    weights, run, measured = _train(address, Xtr, ytr, config, "logistic")
    twin, plain_seconds = timed(logistic.fit_torch, Xtr, ytr, config)
    exact = logistic.fit_torch(Xtr, ytr, config, exact_sigmoid=True).weights
    reference = f"torch with the exact sigmoid: test accuracy {_test_accuracy(split, exact):.4f}"
    result = _cancer_result(f"Logistic regression, degree-5 sigmoid, {epochs} epochs", weights, twin.weights, split,
                            reference, plain_seconds, measured)
    _curves(result, run, twin, "training Brier score (mean squared probability error)")
    return result


def logistic_cancer_quadratic(address: str) -> TaskResult:
    """Breast cancer (stratified 80/20) from one pass: the quadratic surrogate, solved in one round trip."""
    from sklearn.linear_model import LogisticRegression

    from ciphergrad.core.quadratic import fit_torch_quadratic

    split = Xtr, Xte, ytr, yte = _cancer()
    config = logistic.LogisticRegressionConfig(solver="quadratic")
    weights, _, measured = _train(address, Xtr, ytr, config, "logistic")
    twin, plain_seconds = timed(fit_torch_quadratic, Xtr, ytr, config)
    exact = LogisticRegression(max_iter=10_000).fit(Xtr[:, 1:], ytr).score(Xte[:, 1:], yte)
    reference = f"scikit-learn's exact LogisticRegression: test accuracy {exact:.4f}"
    title = "Logistic regression, quadratic surrogate on [-4, 4], l2 0.1 (one pass, one round trip)"
    return _cancer_result(title, weights, twin.weights, split, reference, plain_seconds, measured)
