"""With ``--executor ray`` a refinement job (``refine_steps``, ``core.refine``) and a pool's release and job run
their ciphertext work on the pool (``server.execution.ray_trainers``, ``server.jobs.pool_view``): a guard
counts every context load and ciphertext parse by the server's threads in this process
(``ray_front_support.count_server_parses``).

Refinement: the quadratic round trip (answered with Enc(P)'s rows) and the preconditioned refreshes are
relayed as bytes, the trainer runs on a worker holding the whole table, and the weights equal the float64
twin's within 1e-5 (tests/test_refine.py's tolerance); Enc(P) is checkpointed once unparsed, and a job resumed
after the round trip meets the existing refusal of a key holder who never saw P; a corrupt preconditioned
refresh reply fails the job INVALID_ARGUMENT from the worker's check. Pools: the seal's sum and its Gaussian
noise, the release sent out and the check of the solved weights run with no context in this process; the
weights reach least squares within 1e-5 of their scale, a private pool's noise its calibrated size
(tests/test_pool_release.py). One in-process server on a local 2-CPU Ray for the module; every test is slow
(about 60 s in all: ``make test-slow``).
"""

from __future__ import annotations

import numpy as np
import pytest
from ray_front_support import refused
from service_support import leave_mid_job
from sklearn.datasets import load_breast_cancer, load_diabetes

from ciphergrad.client import Contributor
from ciphergrad.client.sdk import Client, default_parameters, training_layout
from ciphergrad.client.training import TrainingCalls
from ciphergrad.core.data import standardized_split, with_intercept
from ciphergrad.core.logistic import LogisticRegressionConfig
from ciphergrad.core.refine import fit_torch_refined
from ciphergrad.core.release import Bounds, Moments, RowSpace, analytic_gaussian_sigma
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

pytest.importorskip("ray")
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


REFINE = LogisticRegressionConfig(solver="quadratic", refine_steps=2)


def _cancer_client(server) -> tuple[Client, str, np.ndarray, np.ndarray]:
    """A session and breast cancer's first 96 rows and 10 features (tests/test_refine.py), uploaded for REFINE."""
    data = load_breast_cancer()
    Xtr, _, ytr, _ = standardized_split(data.data, data.target, 0)
    X, y = with_intercept(Xtr)[:96, :11], ytr[:96].astype(float)
    params = default_parameters("logistic")
    tile, rotations = training_layout(X.shape, params.slots, REFINE)
    client = Client(server.address)
    client.create_session(params, tiles=[tile], rotations=rotations)
    return client, client.upload(X, y, tile=tile).dataset_id, X, y


def test_a_refinement_job_runs_whole_on_the_pool(ray_server, guard) -> None:
    """``refine_steps``: the quadratic round trip (answered with Enc(P)'s rows) and the preconditioned refreshes
    relayed as bytes, the trainer on a worker holding the whole table: the twin's weights (1e-5, as
    tests/test_refine.py), nothing parsed here; Enc(P) checkpointed once, unparsed. Resumed after the round trip,
    the key holder of a new stream (which never saw P) refuses with the existing clear error."""
    server, data_dir = ray_server
    client, dataset_id, X, y = _cancer_client(server)
    try:
        run = client.train(dataset_id, REFINE)
        assert run.job.state == training_service_pb2.JOB_STATE_SUCCEEDED and run.refreshes >= REFINE.refine_steps
        assert np.max(np.abs(client.weights(run.model) - fit_torch_refined(X, y, REFINE).weights)) < 1e-5

        job = leave_mid_job(client, dataset_id, REFINE, at_refresh=2)  # inside the first preconditioned step
        assert job.state == training_service_pb2.JOB_STATE_PAUSED and job.epoch >= 1
        fixed = list(data_dir.glob(f"blobs/*/jobs/{job.job_id}.*"))
        assert len(fixed) >= 1  # Enc(P)'s rows, written by the server as bytes
        with pytest.raises(ValueError, match="resume only in the process that started them"):
            client.train(job_id=job.job_id)
    finally:
        client.close()
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert server.engines._engines == {}


def test_a_bad_preconditioned_refresh_reply_fails_the_job(ray_server, monkeypatch) -> None:
    """The worker checks the preconditioned refresh's reply as in-process: a corrupt ciphertext in it ends the
    job INVALID_ARGUMENT naming it."""
    server, _ = ray_server
    original = TrainingCalls._refresh

    def corrupting(self, request, *args, **kwargs):
        reply = original(self, request, *args, **kwargs)
        if request.precondition:
            reply.refreshed.ciphertexts[0] = bytes(len(reply.refreshed.ciphertexts[0]))
        return reply

    monkeypatch.setattr(TrainingCalls, "_refresh", corrupting)
    client, dataset_id, _, _ = _cancer_client(server)
    try:
        error = refused(lambda: client.train(dataset_id, REFINE))
        assert error.details().startswith("the preconditioned refresh: not a ciphertext"), error.details()
        job = client.list_jobs()[-1]
        assert job.state == training_service_pb2.JOB_STATE_FAILED
        assert job.error_message.startswith("the preconditioned refresh: not a ciphertext"), job.error_message
    finally:
        client.close()


X, Y = load_diabetes(return_X_y=True)
NAMES = [f"x{i}" for i in range(X.shape[1])]
BOUNDS = {n: (float(c.min()) - 0.01, float(c.max()) + 0.01) for n, c in zip(NAMES, X.T, strict=True)}
BOUNDS["y"] = (0.0, 400.0)


def test_a_pool_seals_and_trains_on_the_pool(ray_server, guard) -> None:
    """A pool's whole life (created, three contributions, sealed, its release read, a ridge job on it):
    nothing loaded or parsed here; the weights least squares' (1e-5 of their scale); a private pool's release
    within ten of its calibrated sigma of the exact moments, its noise drawn on the worker."""
    server, _ = ray_server
    with Client(server.address) as analyst:
        exact = analyst.create_pool("ray", NAMES, "y", bounds=BOUNDS, min_contributors=2)
        private = analyst.create_pool("ray dp", NAMES, "y", bounds=BOUNDS, epsilon=1.0, delta=1e-6,
                                      min_contributors=1)
        for part in (slice(0, 200), slice(200, None)):
            Contributor(analyst.invite(exact.pool_id).code).upload(X[part], Y[part], progress=False)
        Contributor(analyst.invite(private.pool_id).code).upload(X, Y, progress=False)

        assert analyst.seal_pool(exact.pool_id).sealed
        run = analyst.train(pool_id=exact.pool_id, algorithm="linear")
        assert run.job.state == training_service_pb2.JOB_STATE_SUCCEEDED
        least_squares = np.linalg.lstsq(with_intercept(X), Y, rcond=None)[0]
        # Relative: diabetes' coefficients reach 800 (Ames' 1e-4 of tests/test_pool_story.py is 1e-5 of its scale).
        assert np.max(np.abs(analyst.weights(run.model) - least_squares)) < 1e-5 * np.max(np.abs(least_squares))

        sealed = analyst.seal_pool(private.pool_id)
        sigma = analytic_gaussian_sigma(1.0, 1e-6, _space().sensitivity())
        assert sealed.noise_std == pytest.approx(sigma)
        noisy = analyst.pool_statistics(private.pool_id).moments
        n, means, _ = _space().moments(X, Y)
        assert 0 < np.max(np.abs(noisy.S - Moments.from_release(n, _space(), means).S)) < 10 * sigma
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert server.engines._engines == {}


def _space() -> RowSpace:
    return RowSpace(tuple(Bounds(*BOUNDS[n]) for n in NAMES), Bounds(*BOUNDS["y"]))
