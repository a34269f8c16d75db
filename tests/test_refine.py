"""Refining the quadratic solution with Böhning-preconditioned steps (core.refine) against its float64 twin.

Tolerances: encrypted weights within 1e-5 of the twin after 2 steps (4e-7 measured on 128 rows: CKKS noise
of about 1e-7 per refreshed value, through the degree-3 polynomial sigmoid and P, whose norm is at most
1 / l2 = 10; the bound leaves room for the fresh masks' draw); the twin's steps (degree-5 sigmoid) lower the
exact penalized logistic loss at every one of 5 steps on breast cancer (plaintext); the preconditioner
recovered from the system is P to 1e-9.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from ciphergrad.core import ParameterError
from ciphergrad.core.algorithms import get
from ciphergrad.core.data import standardized_split, with_intercept
from ciphergrad.core.logistic import LogisticRegressionConfig
from ciphergrad.core.normal import ridge_vector
from ciphergrad.core.refine import (
    Preconditioner,
    RefinedSolver,
    answer,
    apply,
    fit_torch_refined,
    mask_bound,
    preconditioner_matrix,
)


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    Xtr, _, ytr, _ = standardized_split(data.data, data.target, 0)
    return with_intercept(Xtr), ytr.astype(float)


def _link(kh):
    """The key holder: answers the round trip (keeping P) and preconditioned refreshes."""

    class Link:
        def __init__(self):
            self.P, self.seen = None, []

        def __call__(self, masked):
            return kh.refresh(masked)

        def solve_refined(self, system, rhs, spec):
            _, self.P, start, rows = answer(kh, system, rhs, spec)
            return start, rows

        def precondition(self, masked):
            values = kh.decrypt(masked)
            self.seen.append(values)
            return kh.encrypt(apply(self.P, values, kh.params.max_abs_value), tile=masked.tile)

    return Link()


def test_config_and_registry():
    entry = get("logistic")
    config = entry.service_config({"solver": "quadratic", "refine_steps": 2})
    assert entry.trainer_for(config) is RefinedSolver and entry.twin_for(config) is fit_torch_refined
    assert RefinedSolver.epochs_of(config) == 3
    with pytest.raises(ParameterError, match="solver='quadratic'"):
        LogisticRegressionConfig(solver="gd", refine_steps=1)
    with pytest.raises(ParameterError, match="l2 > 0"):
        LogisticRegressionConfig(solver="quadratic", refine_steps=1, l2=0.0)
    with pytest.raises(ParameterError, match="one-vs-rest"):
        LogisticRegressionConfig(solver="quadratic", refine_steps=1, classes=3)
    with pytest.raises(ParameterError, match="refine_steps=-1"):
        LogisticRegressionConfig(solver="quadratic", refine_steps=-1)


def test_preconditioner_from_the_system_and_twin_descends(cancer):
    X, y = cancer
    config = LogisticRegressionConfig(solver="quadratic", refine_steps=5)
    d = X.shape[1]
    G = X.T @ X / len(X)
    spec = Preconditioner(0.3, config.l2, 0, 1.0, None)  # type: ignore[arg-type]
    P = preconditioner_matrix(G + np.diag(ridge_vector(d, d, 0.3, 0)), spec)
    ridge = ridge_vector(d, d, config.l2, 0)
    assert np.max(np.abs(P @ (G / 4 + np.diag(ridge)) - np.eye(d))) < 1e-9
    def loss(k):  # the exact penalized logistic loss the steps descend (Böhning: never up for the true sigmoid)
        w = fit_torch_refined(X, y, LogisticRegressionConfig(solver="quadratic", refine_steps=k, degree=5)).weights
        z = X @ w
        return float(np.mean(np.logaddexp(0, z) - y * z) + config.l2 / 2 * np.sum((ridge > 0) * w**2))

    losses = [loss(k) for k in range(6)]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    # Centred features: |P|_2 <= 1 / min(1/4, l2), so the mask keeps |P (u + m)| inside the last level's range.
    assert np.linalg.norm(P, 2) <= 1 / min(0.25, config.l2) + 1e-9
    assert mask_bound(256.0, 0.1, 31) == pytest.approx(64 * 0.1 / np.sqrt(31))


def test_encrypted_refinement_matches_twin(engine, enc, kh, cancer):
    X, y = cancer
    X, y = X[:128], y[:128]
    config = LogisticRegressionConfig(solver="quadratic", refine_steps=2)
    Xe = enc(X, packing="rows")
    ye = enc(y[:, None], tile=Xe.tile)
    link = _link(kh)
    solver = RefinedSolver(engine, Xe, ye, config, link)
    while not solver.done:
        solver.run_epoch()
    assert solver.epoch == 3 and len(link.seen) == 2
    weights = kh.decrypt(solver.weights).reshape(-1) * solver.bound
    twin = fit_torch_refined(X, y, config).weights
    assert np.max(np.abs(weights - twin)) < 1e-5
    # What the key holder saw in a step: d masked numbers, within the mask's range around the direction.
    assert link.seen[0].size == X.shape[1]
    assert np.max(np.abs(link.seen[0])) < mask_bound(kh.params.max_abs_value, config.l2, X.shape[1]) + 1.0
    # Checkpoint: the preconditioner's rows travel with the state.
    resumed = RefinedSolver.resume(engine, Xe, ye, config, link, solver.state())
    assert resumed.done and len(resumed._rows) == X.shape[1]
    # The rows are the fixed part a job runner writes once; alone (a stop before the first step's checkpoint)
    # they resume a job that starts again from its pass.
    assert set(solver.fixed_state()) == {f"preconditioner_{j}" for j in range(X.shape[1])}
    assert set(solver.state()) == {"epoch", "weights", *solver.fixed_state()}
    again = RefinedSolver.resume(engine, Xe, ye, config, link, solver.fixed_state())
    assert again.epoch == 0 and not again.done
    assert solver.metadata()["refine_steps"] == 2


@pytest.mark.slow  # a server, keys and a fit: about 11 s
def test_service_refines_and_refuses_bad_combinations(tmp_path, cancer):
    """Through a server: the estimator's refined weights match the twin (same 1e-5 as above); refine_steps with
    solver='gd' is INVALID_ARGUMENT naming the valid choice."""
    import grpc
    from service_support import local_server

    from ciphergrad import EncryptedLogisticRegression
    from ciphergrad.client.session import default_parameters
    from ciphergrad.core.layout import choose_tile

    X, y = cancer
    X, y = X[:96, :11], y[:96]
    config = LogisticRegressionConfig(solver="quadratic", refine_steps=2)
    with local_server(tmp_path) as server:
        address = server.address
        model = EncryptedLogisticRegression(server=address, refine_steps=2, standardize=False, progress=False)
        model.fit(X[:, 1:], y)
        assert model.config_.refine_steps == 2 and model.report_["refreshes"] >= 2
        twin = fit_torch_refined(X, y, config).weights
        assert np.max(np.abs(model.weights_ - twin)) < 1e-5

        from ciphergrad import Client

        params = default_parameters("logistic")
        with Client(address) as client:
            client.create_session(params, tiles=[choose_tile(X.shape, params.slots, "rows")])
            dataset = client.upload(X, y, tile=choose_tile(X.shape, params.slots, "rows"))
            with pytest.raises(grpc.RpcError) as caught:
                client.train(dataset_id=dataset.dataset_id, algorithm="logistic",
                             config={"solver": "gd", "refine_steps": 1})
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "solver='quadratic'" in caught.value.details()
