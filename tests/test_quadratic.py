"""Logistic regression from one pass of encrypted statistics (core.quadratic) against its float64 twin.

Tolerances: encrypted weights within 1e-6 of the twin (same surrogate, the default ridge l2 = 0.1, which bounds
the condition number that multiplies CKKS noise: at l2 = 0.01 the 30 collinear features give 1.4e-6),
whichever packing the pass used; the surrogate's closed form zeroes its polynomial loss's gradient (1e-9,
plaintext); test accuracy on breast cancer >= 0.95 (0.965 measured) and within 0.03 of scikit-learn's exact fit.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from ciphergrad.core import ParameterError
from ciphergrad.core.algorithms import get
from ciphergrad.core.data import standardized_split, with_intercept
from ciphergrad.core.gram import accumulate, one_pass_tile, row_blocks
from ciphergrad.core.logistic import LogisticRegressionConfig
from ciphergrad.core.normal import solve_normal
from ciphergrad.core.polynomial import fit_log_loss
from ciphergrad.core.quadratic import QuadraticSolver, fit_torch_quadratic, system_terms


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    Xtr, Xte, ytr, yte = standardized_split(data.data, data.target, 0)
    return with_intercept(Xtr), with_intercept(Xte), ytr.astype(float), yte


def _link(kh):
    """The key holder on the other end of the link: solves and answers with a fresh encryption."""

    class Link:
        asked = 0

        def __call__(self, masked):
            return kh.refresh(masked)

        def solve_normal(self, system, rhs=None):
            Link.asked += 1
            weights = solve_normal(kh, system, rhs)
            return kh.encrypt(weights[None, :], tile=system.column.tile)

    return Link()


def test_registry_offers_the_solver():
    entry = get("logistic")
    config = entry.service_config({"solver": "quadratic"})
    assert entry.trainer_for(config) is QuadraticSolver and entry.twin_for(config) is fit_torch_quadratic
    assert entry.service_config({}).solver == "gd"  # the service's default stays the per-row trainer
    with pytest.raises(ParameterError, match="batch_size"):
        LogisticRegressionConfig(solver="quadratic", batch_size=64)
    with pytest.raises(ParameterError, match="'gd', 'quadratic'"):
        LogisticRegressionConfig(solver="newton")
    with pytest.raises(ParameterError, match="fit_intercept"):
        system_terms(LogisticRegressionConfig(solver="quadratic", intercept_column=None))


def test_closed_form_minimizes_the_surrogate(cancer):
    X, _, y, _ = cancer
    config = LogisticRegressionConfig(solver="quadratic", l2=0.01)
    w = fit_torch_quadratic(X, y, config).weights
    _, c1, c2 = fit_log_loss(4.0).coefficients
    t = 2 * y - 1
    ridge = np.full(X.shape[1], config.l2)
    ridge[0] = 0.0

    def gradient(v):
        z = X @ v
        return X.T @ (c1 * t + 2 * c2 * z) / len(X) + ridge * v

    assert np.max(np.abs(gradient(w))) < 1e-9


@pytest.mark.parametrize("packing", ["rows", "columns"])
def test_encrypted_matches_twin_and_classifies(engine, enc, kh, cancer, packing):
    X, Xte, y, yte = cancer
    if packing == "columns":  # the column pass costs a rotation per pair and window step: 10 features suffice
        X, Xte = X[:, :11], Xte[:, :11]
    # The default l2 (0.1) keeps G + l2' I well conditioned (24): CKKS noise in G reaches the weights times it.
    config = LogisticRegressionConfig(solver="quadratic")
    Xe = enc(X, packing=packing)
    ye = enc(y[:, None], tile=Xe.tile)
    link = _link(kh)
    solver = QuadraticSolver.from_partial(engine, accumulate(engine, row_blocks(Xe, ye)), config, link)
    solver.run_epoch()
    assert solver.done and link.asked == 1
    weights = kh.decrypt(solver.weights).reshape(-1)
    twin = fit_torch_quadratic(X, y, config).weights
    assert np.max(np.abs(weights - twin)) < 1e-6
    accuracy = float(np.mean((Xte @ weights > 0) == yte))
    exact = LogisticRegression(max_iter=5000).fit(X[:, 1:], y).score(Xte[:, 1:], yte)
    assert accuracy > exact - 0.03  # 10 features: 0.921 vs 0.947; all 30: 0.965 vs 0.982
    if packing == "rows":
        assert accuracy >= 0.95
    metadata = solver.metadata()
    assert metadata["solver"] == "quadratic" and metadata["surrogate"]["bound"] == 4.0


def test_resume_keeps_the_statistics(engine, enc, kh, cancer):
    X, _, y, _ = cancer
    config = LogisticRegressionConfig(solver="quadratic")
    Xe = enc(X[:64], packing="rows")
    ye = enc(y[:64, None], tile=Xe.tile)
    link = _link(kh)
    first = QuadraticSolver.from_partial(engine, accumulate(engine, row_blocks(Xe, ye)), config, link)
    resumed = QuadraticSolver.resume(engine, None, None, replace(config), link, first.state())
    assert not resumed.done
    resumed.run_epoch()
    assert np.max(np.abs(kh.decrypt(resumed.weights) - fit_torch_quadratic(X[:64], y[:64], config).weights)) < 1e-6


def test_one_vs_rest_solves_every_class_against_one_gram(engine, enc, kh):
    from sklearn.datasets import load_wine

    data = load_wine()
    Xtr, _, ytr, _ = standardized_split(data.data, data.target, 0)
    design, classes = with_intercept(Xtr), 3
    onehot = np.eye(classes)[ytr.astype(int)]
    table, target = np.hstack([design, onehot[:, :-1]]), onehot[:, -1]
    config = LogisticRegressionConfig(solver="quadratic", classes=classes)
    Xe = enc(table, tile=one_pass_tile(table.shape, engine.slots))  # rows, with room for y
    ye = enc(target[:, None], tile=Xe.tile)
    solver = QuadraticSolver.from_partial(engine, accumulate(engine, row_blocks(Xe, ye)), config, _link(kh))
    solver.run_epoch()
    weights = kh.decrypt(solver.weights).reshape(classes, design.shape[1])
    twin = fit_torch_quadratic(table, target, config).weights.reshape(classes, design.shape[1])
    assert np.max(np.abs(weights - twin)) < 1e-6
    # Each class's block is the binary surrogate's solution for that class alone.
    for k in range(classes):
        alone = fit_torch_quadratic(design, onehot[:, k], LogisticRegressionConfig(solver="quadratic")).weights
        assert np.max(np.abs(twin[k] - alone)) < 1e-9
    assert solver.metadata()["classes"] == 3 and solver.metadata()["features"] == design.shape[1]
    with pytest.raises(ParameterError, match="one-vs-rest"):
        LogisticRegressionConfig(solver="gd", classes=3)
