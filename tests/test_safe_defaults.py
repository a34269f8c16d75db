"""Estimators with their defaults on raw public tables match scikit-learn, and an iterative run that goes wrong
says so instead of returning garbage (core.convergence; client.estimator).

Tolerances: default linear regression's R² within 1e-6 of scikit-learn's ``LinearRegression`` (exact solver,
CKKS noise ~1e-8 relative) on raw diabetes; default logistic regression's test accuracy within 0.03 of
scikit-learn's default ``LogisticRegression`` on raw breast cancer (0.965 vs 0.982 measured).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split

from ciphergrad import Client, EncryptedLinearRegression, EncryptedLogisticRegression, local_server
from ciphergrad.client.sdk import default_parameters, training_layout
from ciphergrad.core.convergence import DivergenceError, LossWatch, safe_learning_rate


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with local_server() as running:
        yield running


def test_default_linear_regression_is_exact_on_raw_data(address):
    X, y = load_diabetes(return_X_y=True)  # raw target: 25..346, squares far past what CKKS holds
    X = X * 1000.0 + 50.0  # features in everyday units, not the bundled pre-scaled ones
    model = EncryptedLinearRegression(server=address).fit(X, y)
    exact = LinearRegression().fit(X, y)
    assert model.config_.solver == "normal" and model.report_["converged"]
    assert abs(model.score(X, y) - exact.score(X, y)) < 1e-6
    assert np.allclose(model.coef_, exact.coef_, rtol=1e-5, atol=1e-7)
    assert model.intercept_ == pytest.approx(exact.intercept_, rel=1e-6)


def test_default_logistic_regression_matches_scikit_learn(address):
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    model = EncryptedLogisticRegression(server=address).fit(Xtr, ytr)  # raw features (areas near 2,000)
    exact = LogisticRegression(max_iter=10_000).fit(Xtr, ytr)
    assert model.config_.solver == "quadratic" and model.history_ == []
    assert model.score(Xte, yte) > exact.score(Xte, yte) - 0.03
    assert model.score(Xte, yte) >= 0.95
    assert model.report_["refreshes"] == 0


def test_iterative_solver_reports_convergence(address):
    X, y = load_diabetes(return_X_y=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        short = EncryptedLinearRegression(server=address, solver="gram", epochs=3).fit(X, y)
    assert not short.report_["converged"] and short.report_["gradient_norm"] > 1e-3
    assert any(issubclass(w.category, ConvergenceWarning) and "solver='normal'" in str(w.message) for w in caught)
    # the derived step is a power of two below 1/lambda_max of the scaled design's X^T X / n
    assert np.log2(short.config_.learning_rate) == int(np.log2(short.config_.learning_rate))


def test_diverging_run_stops_with_an_error(address):
    X, y = load_diabetes(return_X_y=True)
    model = EncryptedLinearRegression(server=address, solver="gram", epochs=30, learning_rate=2.0)
    with pytest.raises(DivergenceError, match="learning_rate"):
        model.fit(X, y)
    assert not hasattr(model, "coef_")


def test_values_past_the_plaintext_range_are_refused(address):
    # Standardized, one cell is at most sqrt(n - 1) deviations out (21 here): only raw values can be past it.
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match="the target, row 256: 346 is past"):
        EncryptedLinearRegression(server=address, standardize=False).fit(X, y)
    X = X.copy()
    X[7, 2] = 1e6
    with pytest.raises(ValueError, match="column 2, row 7"):
        EncryptedLinearRegression(server=address, standardize=False).fit(X, y / 1000)


def test_loss_watch():
    watch = LossWatch(patience=3)
    for epoch, loss in enumerate([1.0, 0.5, 0.4, 0.4]):
        watch.observe(epoch, loss)
    with pytest.raises(DivergenceError, match=r"negative|< 0"):
        LossWatch().observe(3, -0.2)
    with pytest.raises(DivergenceError, match="nan"):
        LossWatch().observe(1, float("nan"))
    rising = LossWatch(patience=3)
    with pytest.raises(DivergenceError, match="rose 3 epochs"):
        for epoch, loss in enumerate([0.3, 0.4, 0.5, 0.6]):
            rising.observe(epoch, loss)


def test_safe_learning_rate_is_a_power_of_two_below_the_bound():
    rng = np.random.default_rng(0)
    X = np.c_[np.ones(200), rng.normal(size=(200, 5))]
    largest = np.linalg.eigvalsh(X.T @ X / 200)[-1]
    rate = safe_learning_rate(X)
    assert rate <= 1 / largest < 2 * rate
    assert safe_learning_rate(X, logistic=True) == 4 * rate


@pytest.mark.slow  # two fits and a job through the service: make test-slow (core's one-vs-rest test is quick)
def test_multiclass_one_pass_matches_scikit_learn_and_stays_on_the_key_holder(address):
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    labels = np.array(["barolo", "grignolino", "barbera"])[y]  # any labels, text too
    Xtr, Xte, ytr, yte = train_test_split(X, labels, test_size=0.2, random_state=0, stratify=labels)
    model = EncryptedLogisticRegression(server=address).fit(Xtr, ytr)
    exact = LogisticRegression(max_iter=10_000).fit(Xtr, ytr)
    assert list(model.classes_) == sorted(set(labels)) and model.coef_.shape == (3, 13)
    assert model.score(Xte, yte) > exact.score(Xte, yte) - 0.03  # 1.0 vs 0.972 measured
    proba = model.predict_proba(Xte)
    assert proba.shape == (len(Xte), 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert model.config_.classes == 3 and model.report_["refreshes"] == 0
    with pytest.raises(ValueError, match="solver='quadratic'"):
        EncryptedLogisticRegression(server=address, solver="gd").fit(Xtr, ytr)
    # The server stores the one-vs-rest model, but encrypted Predict on it is refused, not silently wrong.
    design = np.c_[np.ones(len(Xtr)), (Xtr - Xtr.mean(0)) / Xtr.std(0)]
    onehot = np.eye(3)[np.searchsorted(model.classes_, ytr)]
    table, target = np.hstack([design, onehot[:, :-1]]), onehot[:, -1]
    config = model.config_
    params = default_parameters("logistic")
    tile, rotations = training_layout(table.shape, params.slots, config)
    with Client(address) as client:
        client.create_session(params, tiles=[tile], rotations=rotations)
        run = client.train(client.upload(table, target, tile=tile).dataset_id, config, algorithm="logistic")
        weights = client.weights(run.model).reshape(3, -1)
        assert np.allclose(weights[:, 1:] / Xtr.std(0), model.coef_, atol=1e-5)
        with pytest.raises(grpc.RpcError) as refused:
            client.predict(run.model, design)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "one-vs-rest over 3 classes" in refused.value.details()


@pytest.mark.slow  # two more fits: make test-slow keeps the default suite under six minutes
def test_to_sklearn_gives_the_same_model_without_a_server(address):
    X, y = load_diabetes(return_X_y=True)
    model = EncryptedLinearRegression(server=address).fit(X, y)
    plain = model.to_sklearn()
    assert type(plain).__name__ == "LinearRegression"
    np.testing.assert_allclose(plain.predict(X), model.predict(X), rtol=1e-12)
    Xb, yb = load_breast_cancer(return_X_y=True)
    clf = EncryptedLogisticRegression(server=address).fit(Xb[:200], np.where(yb[:200], "benign", "malignant"))
    twin = clf.to_sklearn()
    assert list(twin.classes_) == ["benign", "malignant"]
    np.testing.assert_array_equal(twin.predict(Xb), clf.predict(Xb))
    np.testing.assert_allclose(twin.predict_proba(Xb), clf.predict_proba(Xb), rtol=1e-9, atol=1e-12)
