"""Pools release sealed aggregates only: the release math against scikit-learn, the Gaussian mechanism's
calibration, and the server's policy (no release below min_contributors, no contribution below min_rows or
after the seal, one release however often it is asked for, no per-row solver, no swapped key)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from pool_support import status
from service_support import local_server
from sklearn.datasets import load_diabetes, load_wine
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler

from ciphergrad.client import Client, Contributor
from ciphergrad.client.contributor import KeyMismatchError
from ciphergrad.client.pools import decode_invitation, encode_invitation
from ciphergrad.core.keys import KeyHolder, key_fingerprint
from ciphergrad.core.params import plan
from ciphergrad.core.release import Bounds, Moments, RowSpace, analytic_gaussian_sigma, moment_tile, seal

X, Y = load_diabetes(return_X_y=True)
NAMES = [f"x{i}" for i in range(X.shape[1])]
BOUNDS = {n: (float(c.min()) - 0.01, float(c.max()) + 0.01) for n, c in zip(NAMES, X.T, strict=True)}
BOUNDS["y"] = (0.0, 400.0)


def _space(**extra: object) -> RowSpace:
    return RowSpace(tuple(Bounds(*BOUNDS[n]) for n in NAMES), Bounds(*BOUNDS["y"]), **extra)  # type: ignore[arg-type]


def test_three_contributions_solve_to_least_squares() -> None:
    space = _space()
    parts = [space.moments(X[i::3], Y[i::3]) for i in range(3)]
    rows = sum(n for n, _, _ in parts)
    release = sum(n * m for n, m, _ in parts) / rows
    moments = Moments.from_release(rows, space, release)
    exact = LinearRegression().fit(X, Y)
    assert np.max(np.abs(moments.ridge() - np.r_[exact.intercept_, exact.coef_])) < 1e-8 * np.max(np.abs(exact.coef_))
    assert np.allclose(moments.mean()[:-1], X.mean(axis=0)) and np.allclose(moments.variance()[:-1], X.var(axis=0))


def test_one_vs_rest_from_the_release_classifies_wine_like_sklearn() -> None:
    Xw, yw = load_wine(return_X_y=True)
    space = RowSpace(tuple(Bounds(float(c.min()), float(c.max())) for c in Xw.T), classes=3)
    rows, moments, _ = space.moments(Xw, yw)
    weights = Moments.from_release(rows, space, moments).logistic()
    accuracy = np.mean(np.argmax(np.c_[np.ones(len(Xw)), Xw] @ weights.T, axis=1) == yw)
    scaled = StandardScaler().fit_transform(Xw)
    reference = LogisticRegression(max_iter=5000).fit(scaled, yw).score(scaled, yw)
    assert accuracy >= reference - 0.02, (accuracy, reference)


def test_rows_are_clipped_to_the_bounds_and_counted() -> None:
    space = RowSpace((Bounds(0.0, 1.0),), Bounds(0.0, 1.0))
    u, clipped = space.rows(np.array([[2.0], [0.5]]), np.array([0.5, -3.0]))
    assert clipped == 2 and np.allclose(u, [[1.0, 0.0], [0.0, -1.0]])


def test_sensitivity_bounds_any_two_rows() -> None:
    space = _space()
    rng = np.random.default_rng(3)
    rows, cols = np.triu_indices(space.width)
    worst = 0.0
    for _ in range(2000):
        a, b = (np.r_[1.0, rng.choice([-1.0, 1.0], space.width - 1) * rng.uniform(0.5, 1, space.width - 1)]
                for _ in range(2))
        worst = max(worst, float(np.linalg.norm(np.outer(a, a)[rows, cols] - np.outer(b, b)[rows, cols])))
    assert worst <= space.sensitivity()


def test_analytic_gaussian_sigma_matches_the_classic_bound_where_that_holds() -> None:
    classic = np.sqrt(2 * np.log(1.25 / 1e-5)) / 0.5
    sigma = analytic_gaussian_sigma(0.5, 1e-5, 1.0)
    assert 0.6 * classic < sigma < classic  # analytic calibration is tighter, never looser (Balle & Wang 2018)
    assert analytic_gaussian_sigma(8.0, 1e-5, 1.0) < analytic_gaussian_sigma(1.0, 1e-5, 1.0)
    with pytest.raises(ValueError, match="delta"):
        analytic_gaussian_sigma(1.0, 0.0, 1.0)


def test_released_noise_has_the_calibrated_deviation() -> None:
    """``dp_noise_rel_error``: 200 releases of one fixed set of encrypted statistics (|sigma_hat / sigma - 1|)."""
    holder = KeyHolder(plan(2), rotations=[])
    space = _space()
    n, moments, _ = space.moments(X, Y)
    encrypted = holder.encrypt(moments[:, None], tile=moment_tile(holder.params.slots))
    sigma = analytic_gaussian_sigma(1.0, 1e-6, space.sensitivity())
    draws = [(holder.decrypt(seal([(n, encrypted)], sigma)).ravel() - moments) * n for _ in range(200)]
    ratio = float(np.std(np.concatenate(draws)) / sigma)
    assert abs(ratio - 1) <= 0.1, ratio


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory):
    with local_server(Path(tmp_path_factory.mktemp("data"))) as server:
        yield server


def test_the_release_policy_is_enforced(pool_server) -> None:  # type: ignore[no-untyped-def]
    with Client(pool_server.address) as analyst:
        pool = analyst.create_pool("policy", NAMES, "y", bounds=BOUNDS, min_contributors=3, min_rows=10)
        small = Contributor(analyst.invite(pool.pool_id).code)
        code, details = status(lambda: small.upload(X[:9], Y[:9], progress=False))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "min_rows" in details
        for i in range(2):
            Contributor(analyst.invite(pool.pool_id).code).upload(X[i::3], Y[i::3], progress=False)
        code, details = status(lambda: analyst.pool_statistics(pool.pool_id))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "seal it first" in details
        code, details = status(lambda: analyst.seal_pool(pool.pool_id))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "min_contributors=3" in details
        code, details = status(lambda: analyst.train(pool_id=pool.pool_id, algorithm="linear"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "seal it first" in details
        Contributor(analyst.invite(pool.pool_id).code).upload(X[2::3], Y[2::3], progress=False)
        sealed = analyst.seal_pool(pool.pool_id)
        assert sealed.sealed and sealed.contributors == 3 and sealed.rows == len(X)
        first = analyst.pool_statistics(pool.pool_id).moments.S
        # Differencing: a further contribution is refused, and every later release is the sealed one.
        late = Contributor(analyst.invite(pool.pool_id).code)
        code, details = status(lambda: late.upload(X[:50], Y[:50], progress=False))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "sealed" in details
        assert np.array_equal(analyst.pool_statistics(pool.pool_id).moments.S, first)
        code, _ = status(lambda: analyst.seal_pool(pool.pool_id))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        # No per-row path: the per-row solvers and algorithms are refused, naming the aggregate ones.
        for algorithm, config in (("linear", {"solver": "gd"}), ("linear", {"solver": "gram"}), ("logistic", {})):
            code, details = status(lambda a=algorithm, c=config: analyst.train(pool_id=pool.pool_id, algorithm=a,
                                                                             config=c))
            assert code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT), details
        run = analyst.train(pool_id=pool.pool_id, algorithm="linear")
        exact = LinearRegression().fit(X, Y)
        predicted = analyst.predict(run.model, np.c_[np.ones(len(X)), X][:40]).ravel()
        assert np.max(np.abs(predicted - exact.predict(X[:40]))) < 1e-3


def test_differential_privacy_needs_bounds_and_reports_its_noise(pool_server) -> None:  # type: ignore[no-untyped-def]
    with Client(pool_server.address) as analyst:
        code, details = status(lambda: analyst.create_pool("dp", NAMES, "y", epsilon=1.0, delta=1e-6))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "bounds" in details
        pool = analyst.create_pool("dp", NAMES, "y", bounds=BOUNDS, epsilon=1.0, delta=1e-6, min_contributors=1)
        Contributor(analyst.invite(pool.pool_id).code).upload(X, Y, progress=False)
        sealed = analyst.seal_pool(pool.pool_id)
        expected = analytic_gaussian_sigma(1.0, 1e-6, _space().sensitivity())
        assert sealed.noise_std == pytest.approx(expected) and "epsilon=1" in sealed.mechanism
        noisy = analyst.pool_statistics(pool.pool_id).moments
        n, means, _ = _space().moments(X, Y)
        exact = Moments.from_release(n, _space(), means)
        assert 0 < np.max(np.abs(noisy.S - exact.S)) < 10 * expected


def test_a_swapped_key_is_refused_before_anything_is_sent(pool_server) -> None:  # type: ignore[no-untyped-def]
    with Client(pool_server.address) as analyst:
        pool = analyst.create_pool("keys", NAMES, "y", bounds=BOUNDS)
        found = decode_invitation(analyst.invite(pool.pool_id).code)
        other = KeyHolder(plan(3), rotations=[]).public_context()
        forged = encode_invitation(found["address"], found["token"], found["pool_id"], key=key_fingerprint(other))
        contributor = Contributor(forged)
        with pytest.raises(KeyMismatchError, match="not the analyst's"):
            contributor.upload(X, Y, progress=False)
        assert contributor.bytes_sent == 0 and analyst.pool(pool.pool_id).contributions == 0
