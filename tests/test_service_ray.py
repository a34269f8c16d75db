"""The server with ``--executor ray`` (a local 2-CPU Ray in this process) against ``--executor local``:
Ames linear ("gd", full batch) and logistic trained through gRPC give weights within 1e-6 of each other
(only the shards' summation order and the refreshes' fresh encryptions differ), and the Ray server's jobs
really ran on its executor's shards, their trainers on the pool's driver (a dead shard worker or driver fails
the job UNAVAILABLE, and the pool replaces it). A bad ``--ray-address`` is a one-line startup error, exit
code 2."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import ROOT, ames, leave_mid_job, local_server, session_client

from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.core.logistic import LogisticRegressionConfig
from ciphergrad.core.polynomial import fit_abs
from ciphergrad.server.config import parse_args
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

# End-to-end through child processes (or a Ray cluster): make test-slow, and CI after make test.
pytestmark = pytest.mark.slow

pytest.importorskip("ray")

TOL = 1e-6
LINEAR = LinearRegressionConfig(learning_rate=0.5, momentum=0.3, epochs=4)
LOGISTIC = LogisticRegressionConfig(learning_rate=0.5, momentum=0.5, epochs=3)


def standardized_ames() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y, _ = ames()
    features = X[:, 1:]
    X = np.hstack([X[:, :1], (features - features.mean(axis=0)) / features.std(axis=0)])
    return X, y, (y > np.median(y)).astype(float)


def train_both(address: str) -> dict[str, np.ndarray]:
    X, y, labels = standardized_ames()
    client = session_client(address, X.shape)
    try:
        linear = client.train(client.upload(X, y).dataset_id, LINEAR)
        logistic = client.train(client.upload(X, labels).dataset_id, LOGISTIC)
        # Predict with the encrypted models just trained: their weights are the batches' operand. These
        # parameters leave no level for a server-side sigmoid: the worker's LevelError is the same status.
        try:
            client.predict_proba(logistic.model, X, server_sigmoid=True)
            refused = "no error"
        except grpc.RpcError as error:
            refused = f"{error.code().name}: {error.details()}"
        return {"linear": client.weights(linear.model), "logistic": client.weights(logistic.model),
                "linear_losses": np.asarray(linear.losses), "linear_predictions": client.predict(linear.model, X),
                "logits": client.predict(logistic.model, X), "server_sigmoid": np.asarray(refused)}
    finally:
        client.close()


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory):
    """The module's one Ray server; its executor counts the tables it shards."""
    with local_server(Path(tmp_path_factory.mktemp("ray")), executor="ray", ray_num_cpus=2, workers=2) as server:
        executor = server.runner.executor
        real_shards = executor.shards
        server.sharded_rows = []

        server.open_shards = []

        @contextmanager
        def counting_shards(table, engine):
            server.sharded_rows.append(table.rows)
            with real_shards(table, engine) as shards:
                server.open_shards.append(shards)
                yield shards

        executor.shards = counting_shards
        # This module tests per-row jobs on the executor's shards; Ames is one shard, whose jobs the server
        # would otherwise run whole on a pool worker (that path: tests/test_service_ray_front.py).
        executor.whole = lambda table: False
        yield server


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, ray_server) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    with local_server(Path(tmp_path_factory.mktemp("local"))) as server:
        out["local"] = train_both(server.address)
    before = len(ray_server.sharded_rows)
    out["ray"] = train_both(ray_server.address)
    out["sharded"] = {"rows": np.asarray(ray_server.sharded_rows[before:])}
    return out


def test_linear_on_ray_equals_local(results) -> None:
    assert np.max(np.abs(results["ray"]["linear"] - results["local"]["linear"])) < TOL
    assert results["ray"]["linear_losses"].shape == (LINEAR.epochs,)
    assert np.max(np.abs(results["ray"]["linear_losses"] - results["local"]["linear_losses"])
                  / results["local"]["linear_losses"]) < 1e-6


def test_logistic_on_ray_equals_local(results) -> None:
    assert np.max(np.abs(results["ray"]["logistic"] - results["local"]["logistic"])) < TOL


def test_encrypted_models_predict_on_ray_as_locally(results) -> None:
    """Each server's predictions equal its own weights' (the twin; tolerance of test_service_inference), so
    Ray's and the local server's differ only as their weights do."""
    X, _, _ = standardized_ames()
    for where in ("local", "ray"):
        got = results[where]
        np.testing.assert_allclose(got["linear_predictions"], X @ got["linear"].reshape(-1), atol=1e-3)
        np.testing.assert_allclose(got["logits"], X @ got["logistic"].reshape(-1), atol=1e-3)
        assert str(got["server_sigmoid"]).startswith("FAILED_PRECONDITION: the server-side sigmoid needs")
    assert str(results["ray"]["server_sigmoid"]) == str(results["local"]["server_sigmoid"])


def test_both_jobs_ran_on_the_ray_shards(results, ray_server) -> None:
    assert list(results["sharded"]["rows"]) == [510, 510]
    # Ames is below the executor's min_shard_rows: one shard each, on the pool's long-lived workers.
    assert [shards.ranges for shards in ray_server.open_shards[-2:]] == [[(0, 2)], [(0, 2)]]
    assert {shards.actors[0] for shards in ray_server.open_shards} <= set(ray_server.runner.executor.pool.workers)


def test_bad_ray_address_is_a_one_line_startup_error(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ciphergrad.server.main",
               "--executor", "ray", "--ray-address", "127.0.0.1:9", "--data-dir", str(tmp_path / "data")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0], done.stderr
    assert not (tmp_path / "data").exists()  # nothing opened before the executor


def test_executor_flags() -> None:
    assert parse_args([], env={}).executor == "local"
    config = parse_args([], env={"CIPHERGRAD_EXECUTOR": "ray", "CIPHERGRAD_RAY_ADDRESS": "auto",
                                 "CIPHERGRAD_RAY_NUM_CPUS": "2"})
    assert (config.executor, config.ray_address, config.ray_num_cpus) == ("ray", "auto", 2)
    with pytest.raises(SystemExit):
        parse_args(["--executor", "spark"], env={})


def test_concurrent_jobs_share_the_ray_cores(ray_server) -> None:
    """Two jobs at once on the server's two pool workers (Ames is one shard each, on the least busy worker):
    both finish with the weights of one job alone."""
    X, y, _ = standardized_ames()
    config = LinearRegressionConfig(learning_rate=0.5, epochs=2)
    clients = [session_client(ray_server.address, X.shape) for _ in range(2)]
    datasets = [client.upload(X, y).dataset_id for client in clients]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda pair: pair[0].train(pair[1], config), zip(clients, datasets, strict=True)))
    weights = [client.weights(run.model) for client, run in zip(clients, runs, strict=True)]
    for client in clients:
        client.close()
    assert np.max(np.abs(weights[0] - weights[1])) < TOL


def test_a_paused_ray_job_resumes_on_new_shards(ray_server, results) -> None:
    """The client leaves mid-job: the job pauses at its last checkpoint (its actors are killed) and, attached
    again, finishes on new shards with the weights of the uninterrupted run."""
    X, y, _ = standardized_ames()
    client = session_client(ray_server.address, X.shape)
    try:
        job = paused = leave_mid_job(client, client.upload(X, y).dataset_id, LINEAR)
        assert 0 < paused.epoch < LINEAR.epochs
        before = len(ray_server.sharded_rows)
        resumed = client.train(job_id=job.job_id)
        assert resumed.job.state == training_service_pb2.JOB_STATE_SUCCEEDED
        assert ray_server.sharded_rows[before:] == [510]
        assert np.max(np.abs(client.weights(resumed.model) - results["local"]["linear"])) < TOL
    finally:
        client.close()


def test_workers_gone_mid_job_fail_the_job_naming_the_address(ray_server, results) -> None:
    """The job's pool workers die between two steps (as when a node leaves): the stream ends UNAVAILABLE and
    the job is recorded FAILED, both with a message naming the Ray address and the step; nothing hangs. The
    next job runs on the workers the pool started in their place."""
    import ray

    X, y, _ = standardized_ames()
    client = session_client(ray_server.address, X.shape)

    def kill_the_shards(values: np.ndarray) -> None:
        if len(ray_server.open_shards) and not getattr(kill_the_shards, "done", False):
            kill_the_shards.done = True
            for actor in ray_server.open_shards[-1].actors:
                ray.kill(actor)

    try:
        with pytest.raises(grpc.RpcError) as error:
            client.train(client.upload(X, y).dataset_id, LINEAR, on_refresh=kill_the_shards)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
        assert "Ray at local" in error.value.details() and "training step" in error.value.details()
        job = client.list_jobs()[0]
        assert job.state == training_service_pb2.JOB_STATE_FAILED
        assert "Ray at local" in job.error_message, job.error_message
        # The pool replaces its dead workers: the next job trains to the uninterrupted weights.
        again = client.train(client.upload(X, y).dataset_id, LINEAR)
        assert np.max(np.abs(client.weights(again.model) - results["local"]["linear"])) < TOL
    finally:
        client.close()


def test_a_driver_gone_mid_job_fails_the_job_and_the_pool_starts_another(ray_server, results) -> None:
    """The pool's driver (where a job over shards runs its trainer) dies between two steps: the stream ends
    UNAVAILABLE naming the Ray address, the job is FAILED, and the next job runs on a new driver to the
    uninterrupted weights."""
    import ray

    X, y, _ = standardized_ames()
    pool = ray_server.runner.executor.pool
    client = session_client(ray_server.address, X.shape)

    def kill_the_driver(values: np.ndarray) -> None:
        if not getattr(kill_the_driver, "done", False):
            kill_the_driver.done = True
            ray.kill(pool.driver())

    try:
        with pytest.raises(grpc.RpcError) as error:
            client.train(client.upload(X, y).dataset_id, LINEAR, on_refresh=kill_the_driver)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
        assert "Ray at local" in error.value.details()
        assert client.list_jobs()[0].state == training_service_pb2.JOB_STATE_FAILED
        dead = pool._driver
        again = client.train(client.upload(X, y).dataset_id, LINEAR)
        assert pool._driver is not dead
        assert np.max(np.abs(client.weights(again.model) - results["local"]["linear"])) < TOL
    finally:
        client.close()


# -- Predict and ComputeService on the executor ------------------------------------------------------------
def serve_all(address: str) -> dict[str, np.ndarray]:
    """Predict, Describe, Metrics and Distances of one fixed input through the server at ``address``."""
    from ciphergrad.client import Client
    from ciphergrad.core import plan

    X, y, _ = standardized_ames()
    features, rng = X[:, 1:], np.random.default_rng(7)
    W, b = rng.normal(0, 0.3, size=(features.shape[1], 2)), np.array([0.25, -1.0])
    predictions = features @ W[:, :1] + 0.1 * rng.normal(size=(len(features), 1))
    reference, queries = features[:40], features[100:137]
    out: dict[str, np.ndarray] = {}
    with Client(address) as client:
        client.create_session(plan(3))  # every power-of-two rotation key: any tile works
        out["predict"] = client.predict(client.upload_model(W, b), features, batch_rows=128)  # 4 batches
        target = (y - y.mean()) / y.std()
        dataset = client.upload(features, target)
        described = client.describe(dataset, ddof=0)
        out["mean"], out["variance"] = described["mean"], described["variance"]
        metrics = client.metrics(predictions[:, 0], target, mae_bound=8.0)
        out |= {f"metrics_{name}": np.asarray(metrics[name]) for name in ("mse", "r2", "mae")}
        out["metrics_dataset_mse"] = np.asarray(client.metrics(predictions[:, 0], dataset=dataset)["mse"])
        out["distances"] = client.distances(client.upload_reference(reference), queries, batch_rows=8)  # 5 batches
        encrypted = client.upload_encrypted_reference(reference, query_rows=16)
        out["distances_encrypted"] = client.distances(encrypted, queries)  # 3 batches
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, ray_server) -> dict[str, dict[str, np.ndarray]]:
    """The same calls through a local server and through the Ray server, whose executor records the
    request work it ran (``run_files``: one call per batch and per Metrics call; ``finish_sums``: Describe)."""
    executor = ray_server.runner.executor
    calls: list[str] = []
    real_batches, real_sums = executor.run_files, executor.finish_sums

    def counting_batches(*args, **kwargs):
        calls.append("batch")
        return real_batches(*args, **kwargs)

    def counting_sums(*args, **kwargs):
        calls.append("sums")
        return real_sums(*args, **kwargs)

    with local_server(Path(tmp_path_factory.mktemp("local-compute"))) as server:
        local = serve_all(server.address)
    executor.run_files, executor.finish_sums = counting_batches, counting_sums
    try:
        ray = serve_all(ray_server.address)
    finally:
        del executor.run_files, executor.finish_sums
    return {"local": local, "ray": ray, "calls": {"batch": np.asarray(calls.count("batch")),
                                                  "sums": np.asarray(calls.count("sums"))}}


def test_predict_and_compute_on_ray_equal_local(served) -> None:
    local, ray = served["local"], served["ray"]
    assert set(local) == set(ray)
    for name in local:
        assert ray[name].shape == local[name].shape, name
        # Two sessions encrypt the inputs afresh: their noise differs, not only the summation order. The MAE's
        # degree-6 polynomial (coefficients up to ~10 on [-8, 8]) amplifies it: 1.1-2.2e-6 seen between the two
        # servers, so 1e-5 there; each server's MAE is held to its twin in the test below.
        assert np.max(np.abs(ray[name] - local[name])) < (10 * TOL if name == "metrics_mae" else TOL), name
    # 4 Predict batches, 5 + 3 query batches, 2 Metrics calls (each whole on a worker); Describe one call (its
    # two column sums fanned out, finished on a worker).
    assert int(served["calls"]["batch"]) == 4 + 5 + 3 + 2
    assert int(served["calls"]["sums"]) == 1


def test_predict_and_compute_on_ray_equal_the_twins(served) -> None:
    """Results (streamed back batch by batch, in order) against numpy, within the tolerances of
    tests/test_service_inference.py and tests/test_service_compute.py."""
    ray = served["ray"]
    X, y, _ = standardized_ames()
    features, rng = X[:, 1:], np.random.default_rng(7)
    W, b = rng.normal(0, 0.3, size=(features.shape[1], 2)), np.array([0.25, -1.0])
    predictions = features @ W[:, :1] + 0.1 * rng.normal(size=(len(features), 1))
    np.testing.assert_allclose(ray["predict"], features @ W + b, atol=1e-3)
    np.testing.assert_allclose(ray["mean"], features.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(ray["variance"], features.var(axis=0), atol=1e-6 * np.max(np.mean(features**2, 0)))
    target = (y - y.mean()) / y.std()
    mse = float(np.mean((predictions[:, 0] - target) ** 2))
    assert abs(float(ray["metrics_mse"]) - mse) < 1e-6 and abs(float(ray["metrics_dataset_mse"]) - mse) < 1e-6
    assert abs(float(ray["metrics_r2"]) - (1 - mse / np.var(target))) < 1e-6
    poly = fit_abs(6, 8.0)  # the MAE's |x| polynomial: equal to its twin, within its bound of the exact MAE
    # CKKS noise through the degree-6 polynomial on [-8, 8]: up to ~2e-6 from its twin (see above).
    assert abs(float(ray["metrics_mae"]) - float(np.mean(poly(predictions[:, 0] - target)))) < 5e-6
    assert abs(float(ray["metrics_mae"]) - float(np.mean(np.abs(predictions[:, 0] - target)))) <= poly.max_error
    reference, queries = features[:40], features[100:137]
    want = ((reference[:, None, :] - queries[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(ray["distances"], want, atol=1e-4 * (1 + want.max()))
    np.testing.assert_allclose(ray["distances_encrypted"], want, atol=1e-4 * (1 + want.max()))


def test_workers_gone_during_a_compute_call_is_unavailable_naming_the_address(ray_server) -> None:
    """The pool's workers die before a Describe: the call ends UNAVAILABLE naming the Ray address (never
    INTERNAL or a hang), and the next call runs on the workers the pool started in their place."""
    import ray

    X, _, _ = standardized_ames()
    client = session_client(ray_server.address, X.shape)
    try:
        dataset = client.upload(X[:, 1:])
        for worker in ray_server.runner.executor.pool.workers:
            ray.kill(worker)
        with pytest.raises(grpc.RpcError) as error:
            client.describe(dataset, ddof=0)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
        assert "Ray at local" in error.value.details() and "column sums" in error.value.details()
        np.testing.assert_allclose(client.describe(dataset, ddof=0)["mean"], X[:, 1:].mean(axis=0), atol=1e-6)
    finally:
        client.close()


@pytest.mark.filterwarnings("ignore:.*unconverged")  # "gram" at 5 epochs: a comparison, not a fit
def test_one_pass_statistics_are_finalized_on_a_worker(ray_server, tmp_path: Path, monkeypatch) -> None:
    """The SDK's one-pass solvers ("normal", the default, and "gram") on Ray: the statistics' rotations
    (``core.gram.finalize``) run on a pool worker, never in the server process, and the coefficients equal
    the local server's within 1e-6 relative (data units: the estimator maps them back)."""
    from ciphergrad import EncryptedLinearRegression
    from ciphergrad.core import gram, gram_training

    calls: list[str] = []
    for module in (gram, gram_training):
        real = module.finalize
        monkeypatch.setattr(module, "finalize",
                            lambda *args, real=real, **kwargs: calls.append("finalize") or real(*args, **kwargs))
    X, y, _ = ames()
    coefficients: dict[str, np.ndarray] = {}
    with local_server(tmp_path) as local:
        for name, address in (("ray", ray_server.address), ("local", local.address)):
            for solver in ("normal", "gram"):
                model = EncryptedLinearRegression(server=address, solver=solver, epochs=5, progress=False)
                model.fit(X[:, 1:], y)
                coefficients[f"{name} {solver}"] = np.r_[model.intercept_, model.coef_]
            if name == "ray":
                assert calls == [], "the Ray server finalized Gram statistics in its own process"
    assert calls, "control: the local server's finalize went through the patched function"
    for solver in ("normal", "gram"):
        ray, local_fit = coefficients[f"ray {solver}"], coefficients[f"local {solver}"]
        assert np.max(np.abs(ray - local_fit)) <= 1e-6 * max(1.0, np.max(np.abs(local_fit))), solver


def test_contexts_are_checked_on_a_worker_and_a_secret_key_never_leaves(ray_server, monkeypatch) -> None:
    """CreateSession on Ray: a pool worker loads the context (the server process does not); a secret key is
    refused in the server before any worker sees it (FAILED_PRECONDITION), garbage by the worker's load."""
    from ciphergrad.client.sdk import Client, default_parameters
    from ciphergrad.core import KeyHolder
    from ciphergrad.core.engine import Engine
    from ciphergrad.wire.proto_gen.ciphergrad.v1 import session_service_pb2

    def refuse(*args, **kwargs):
        raise AssertionError("the Ray server loaded a context in its own process at CreateSession")

    monkeypatch.setattr(Engine, "from_public_context", refuse)
    holder = KeyHolder(default_parameters(), rotations=[1])
    with Client(ray_server.address) as client:
        for data, code in ((holder._context.serialize(save_secret_key=True), grpc.StatusCode.FAILED_PRECONDITION),
                           (b"garbage", grpc.StatusCode.INVALID_ARGUMENT), (holder.public_context(), None)):
            requests = [session_service_pb2.CreateSessionRequest(manifest=session_service_pb2.SessionManifest()),
                        session_service_pb2.CreateSessionRequest(context_chunk=data)]
            if code is None:
                assert client.sessions.CreateSession(iter(requests)).token
                continue
            with pytest.raises(grpc.RpcError) as caught:
                client.sessions.CreateSession(iter(requests))
            assert caught.value.code() == code, caught.value.details()
