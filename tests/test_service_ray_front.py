"""With ``--executor ray`` the server process only routes uploads and jobs: the upload's checks (every
ciphertext parsed against the session's context) run on the pool worker holding that context
(``Executor.check_files``), and a "gram" or "normal" job's pass, statistics and trainer on the pool too
(``server.execution.ray_trainers``): the server relays refreshes and the normal system as bytes. So do
per-row ("gd") jobs: on a table of one shard, and with shuffled minibatches, the whole trainer runs on the
worker that holds the table's blocks (and its shuffled copies); over several shards, on the pool's driver.

One in-process server on a local 2-CPU Ray for the module (~10 s with Ray's start). In this process a guard
counts every context load (``Engine.from_public_context``) and every ciphertext parsed
(``Engine.ciphertext_from_bytes``) by the server's threads while a session is created and an Ames-sized table
uploaded, and through Predict (a plaintext and an encrypted model), Metrics and Distances: both stay 0 (the
Ray workers are processes of their own, unguarded), and the answers equal a local server's (1e-6) and
plaintext. Bad uploads and bad request batches still get INVALID_ARGUMENT with a human message from the
worker (a corrupt ciphertext: SEAL's refusal; a scale the session cannot take: the validation layer's
``ServiceError``, pickled with its code; rows the model cannot take: its ``ShapeError``) and leave nothing
behind. The one-pass jobs give their twins' results within 1e-6 (the gram solver's weights and losses, and
after a pause and a resume from the job's checkpoints; the normal solver's least squares) with no context
loaded in the server process; a "gd" job run whole on a worker gives the weights and losses of the same job
over two shards driven by the pool's driver within 1e-6, and a shuffled minibatch job its float64 twin's
(1e-3), none of them parsing anything in the server process; the one-pass logistic
solver ("quadratic", a normal system with a right-hand side) on the pool gives the local server's
coefficients within 1e-6. Describe (its sums finished and its covariance computed on a worker) and a pool's
contributions (checked on one) parse nothing here either; their statistics and the sealed release equal a
local server's, and a bad contribution is INVALID_ARGUMENT from the worker. About 90 s in all; the default
suite runs the upload, request, Describe and contribution tests (about 35 s), ``make test-slow`` the jobs too.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from ray_front_support import corrupt, refused
from service_support import ames, leave_mid_job, local_server, session_client
from sklearn.datasets import load_breast_cancer, load_wine

from ciphergrad.client.contributor import Contributor
from ciphergrad.client.datasets import encrypted_pieces
from ciphergrad.client.estimator import EncryptedLogisticRegression
from ciphergrad.client.sdk import Client, default_parameters, training_layout
from ciphergrad.client.training import TrainingCalls
from ciphergrad.core import flat, plan
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.engine import Engine
from ciphergrad.core.gram_training import fit_torch_gram
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import Tile
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.core.logistic import LogisticRegressionConfig
from ciphergrad.core.logistic import fit_torch as fit_torch_logistic
from ciphergrad.core.randomness import shuffle_orders
from ciphergrad.core.release import moment_tile
from ciphergrad.server.store.records import ModelRecord
from ciphergrad.server.store.store import new_id
from ciphergrad.wire import chunks
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    compute_service_pb2,
    dataset_service_pb2,
    model_service_pb2,
    pool_service_pb2,
    training_service_pb2,
    types_pb2,
)

pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)


def _send(client, matrices: list[bytes]) -> None:
    manifest = dataset_service_pb2.DatasetManifest(total_size_bytes=sum(map(len, matrices)))
    requests = [dataset_service_pb2.UploadDatasetRequest(manifest=manifest)]
    requests += chunks.send(dataset_service_pb2.UploadDatasetRequest, "chunk", matrices)
    client.datasets.UploadDataset(iter(requests), metadata=client.metadata)


def test_the_server_process_loads_no_context_for_an_upload(ray_server, guard) -> None:
    server, _ = ray_server
    X, y, _ = ames()
    client = session_client(server.address, X.shape)
    try:
        dataset = client.upload(X, y)
        assert (dataset.rows, dataset.columns) == X.shape
    finally:
        client.close()
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert server.engines._engines == {}  # nothing loaded for the session here


def test_a_bad_upload_is_invalid_argument_from_the_worker(ray_server, guard) -> None:
    server, data_dir = ray_server
    X, y, _ = ames()
    client = session_client(server.address, X.shape)
    try:
        holder, tile = client.key_holder, client.tile_for(X.shape)
        good_X, good_y = holder.encrypt(X, tile=tile), holder.encrypt(y, tile=tile).to_bytes()
        header, blobs = flat.read(io.BytesIO(good_X.to_bytes()))
        blobs = list(blobs)
        blobs[1] = bytes(len(blobs[1]))  # one ciphertext zeroed: SEAL refuses it on load
        corrupt = b"".join(flat.pieces(header, blobs))
        error = refused(lambda: _send(client, [corrupt, good_y]))
        assert "ciphertext" in error.details()

        for ct in good_X.ciphertexts:
            ct.scale = 2.0**150
        error = refused(lambda: _send(client, [good_X.to_bytes(), good_y]))
        assert "2**150" in error.details() and "matrix #0" in error.details()
        assert client.datasets.ListDatasets(dataset_service_pb2.ListDatasetsRequest(),
                                            metadata=client.metadata).datasets == []
    finally:
        client.close()
    assert list((data_dir / "tmp").iterdir()) == []  # no partial upload kept
    assert guard["contexts"] == 0


GRAM = LinearRegressionConfig(learning_rate=0.7, momentum=0.3, epochs=6, init="zeros", solver="gram")


@pytest.mark.slow  # a job each on the pool: make test-slow
def test_one_pass_jobs_run_on_the_pool(ray_server, guard) -> None:
    server, data_dir = ray_server
    data = load_ames()
    X, y = with_intercept(Standardizer.fit(data.X).transform(data.X)), data.y
    params = default_parameters()
    tile, rotations = training_layout(X.shape, params.slots, GRAM)
    client = Client(server.address)
    try:
        client.create_session(params, tiles=[tile], rotations=rotations)
        dataset_id = client.upload(X, y, tile=tile).dataset_id
        normal = client.train(dataset_id, {"solver": "normal"})
        assert normal.job.state == training_service_pb2.JOB_STATE_SUCCEEDED
        assert np.max(np.abs(client.weights(normal.model) - np.linalg.lstsq(X, y, rcond=None)[0])) < 1e-6

        twin = fit_torch_gram(X, y, GRAM)
        run = client.train(dataset_id, GRAM)
        assert run.job.state == training_service_pb2.JOB_STATE_SUCCEEDED and run.refreshes == GRAM.epochs
        assert np.max(np.abs(client.weights(run.model) - twin.weights)) < 1e-6
        assert np.max(np.abs(np.asarray(run.losses) - twin.losses)) < 1e-6

        # Paused at its third refresh, resumed from its checkpoints (written as bytes by the server).
        job = paused = leave_mid_job(client, dataset_id, GRAM)
        assert paused.state == training_service_pb2.JOB_STATE_PAUSED and 0 < paused.epoch < GRAM.epochs
        resumed = client.train(job_id=job.job_id)
        assert resumed.job.state == training_service_pb2.JOB_STATE_SUCCEEDED
        assert np.max(np.abs(client.weights(resumed.model) - twin.weights)) < 1e-6
        assert np.max(np.abs(np.asarray(resumed.losses) - twin.losses[paused.epoch:])) < 1e-6
        assert not list(data_dir.glob(f"blobs/*/jobs/{job.job_id}.*"))  # checkpoints cleaned up at the end
    finally:
        client.close()
    assert guard["contexts"] == 0
    assert server.engines._engines == {}


@pytest.mark.slow  # a job each on the pool: make test-slow
def test_a_bad_refresh_reply_fails_the_job_with_invalid_argument(ray_server, monkeypatch) -> None:
    """The worker checks the client's refreshed matrix (``validation.reply_matrix``): a corrupt ciphertext in it
    ends the job INVALID_ARGUMENT, as in-process."""
    server, _ = ray_server
    data = load_ames()
    X, y = with_intercept(Standardizer.fit(data.X).transform(data.X)), data.y
    params = default_parameters()
    tile, rotations = training_layout(X.shape, params.slots, GRAM)
    original = TrainingCalls._refresh

    def corrupting(self, request, *args, **kwargs):
        reply = original(self, request, *args, **kwargs)
        reply.refreshed.ciphertexts[0] = bytes(len(reply.refreshed.ciphertexts[0]))
        return reply

    monkeypatch.setattr(TrainingCalls, "_refresh", corrupting)
    client = Client(server.address)
    try:
        client.create_session(params, tiles=[tile], rotations=rotations)
        dataset_id = client.upload(X, y, tile=tile).dataset_id
        error = refused(lambda: client.train(dataset_id, GRAM))
        assert "refreshed matrix" in error.details() or "ciphertext" in error.details()
    finally:
        client.close()


@pytest.mark.slow  # a job each on the pool: make test-slow
def test_per_row_jobs_run_on_the_pool_whole_or_over_shards(ray_server, guard, monkeypatch) -> None:
    server, _ = ray_server
    data = load_ames()
    X, y = with_intercept(Standardizer.fit(data.X).transform(data.X)), data.y
    config = LinearRegressionConfig(learning_rate=0.5, momentum=0.3, epochs=3)
    client = session_client(server.address, X.shape)
    try:
        dataset_id = client.upload(X, y).dataset_id
        hosted = client.train(dataset_id, config)
        # Paused at its second refresh and resumed from the checkpoint (the server wrote it as bytes).
        job = leave_mid_job(client, dataset_id, config, at_refresh=2)
        assert job.state == training_service_pb2.JOB_STATE_PAUSED
        resumed = client.train(job_id=job.job_id)
        assert np.max(np.abs(client.weights(resumed.model) - client.weights(hosted.model))) < 1e-6
        # Two shards of 256 and 254 rows, the trainer on the pool's driver: nothing loaded here either.
        monkeypatch.setattr(server.runner.executor, "min_shard_rows", 128)
        sharded = client.train(dataset_id, config)
        assert guard == {"contexts": 0, "ciphertexts": 0}
        assert server.runner.executor.pool._driver is not None  # started for the sharded job
        assert hosted.refreshes == sharded.refreshes > 0
        assert np.max(np.abs(client.weights(hosted.model) - client.weights(sharded.model))) < 1e-6
        assert np.max(np.abs(np.asarray(hosted.losses) - sharded.losses) / np.asarray(sharded.losses)) < 1e-6
    finally:
        client.close()


@pytest.mark.slow  # a job each on the pool: make test-slow
def test_a_minibatch_job_over_shuffles_runs_whole_on_a_worker(ray_server, guard) -> None:
    """Shuffled minibatches (logistic, Nesterov momentum): the table and the key holder's two shuffled copies
    load on one worker, whose trainer steps through the copies' row blocks; the server parses nothing, and the
    weights and losses are the float64 twin's replaying the same orders (test_service_logistic's tolerances)."""
    server, _ = ray_server
    features, target = load_breast_cancer(return_X_y=True)
    X = with_intercept(Standardizer.fit(features[:256]).transform(features[:256]))
    y = target[:256].astype(float)
    config = LogisticRegressionConfig(learning_rate=0.5, epochs=2, batch_size=128, momentum=0.5)
    orders = shuffle_orders(len(X), 2)
    with Client(server.address) as client:
        tile = Tile(128, 32)
        client.create_session(plan(3), tiles=[tile])
        run = client.train(client.upload(X, y, tile=tile, shuffle_orders=orders).dataset_id, config)
        weights = client.weights(run.model)
    assert guard == {"contexts": 0, "ciphertexts": 0}
    twin = fit_torch_logistic(X, y, config, orders)
    np.testing.assert_allclose(weights, twin.weights, atol=1e-3)
    np.testing.assert_allclose(run.losses, twin.losses, rtol=1e-4)
    assert run.refreshes >= 2 * len(X) // 128 - 1  # a refresh each step but the first


@pytest.mark.slow  # a job each on the pool: make test-slow
def test_the_quadratic_logistic_solver_on_the_pool_equals_local(ray_server, tmp_path: Path) -> None:
    """``EncryptedLogisticRegression()`` (one pass, "quadratic": the normal system with a right-hand side)
    whose trainer runs on a worker gives the local server's coefficients within 1e-6."""
    server, _ = ray_server
    data = load_ames()
    X, labels = data.X[:300], (data.y[:300] > np.median(data.y[:300])).astype(float)
    coefficients = []
    with local_server(tmp_path) as local:
        for address in (server.address, local.address):
            model = EncryptedLogisticRegression(server=address, progress=False).fit(X, labels)
            coefficients.append(np.r_[model.coef_.ravel(), model.intercept_])
    assert np.max(np.abs(coefficients[0] - coefficients[1])) < 1e-6


# -- Predict, Metrics and Distances: batches parsed and answered on the pool ---------------------------------
def _encrypted_model(server, client: Client, weights: np.ndarray, tile) -> str:
    """A client-owned linear model stored as a job would store it (its encrypted weights as the blob)."""
    model = ModelRecord(id=new_id(), session_id=client.session_id, job_id="", dataset_id="",
                        algorithm=types_pb2.ALGORITHM_LINEAR_REGRESSION, weight_scale=1.0, metadata={},
                        column_names=(), created=time.time())
    server.store.add_model(model, client.key_holder.encrypt(weights[None, :], tile=tile).to_bytes())
    return model.id


def _answers(server) -> dict[str, np.ndarray]:
    """Predict (a plaintext and an encrypted model), Metrics (targets sent, and a stored dataset's) and
    Distances (a plaintext and an encrypted reference set) of one fixed input through ``server``."""
    X, y, _ = ames()
    features = (X[:, 1:] - X[:, 1:].mean(axis=0)) / X[:, 1:].std(axis=0)
    rng = np.random.default_rng(7)
    W, b, w = rng.normal(0, 0.3, size=(features.shape[1], 2)), np.array([0.25, -1.0]), rng.normal(size=X.shape[1])
    target = (y - y.mean()) / y.std()
    predictions = features @ W[:, 0] + 0.1 * rng.normal(size=len(features))
    out: dict[str, np.ndarray] = {}
    with Client(server.address) as client:
        client.create_session(plan(3))  # every power-of-two rotation key: any tile works
        out["predict"] = client.predict(client.upload_model(W, b), features, batch_rows=128)  # 4 batches
        tile = client.tile_for(X.shape)
        model = client.get_model(_encrypted_model(server, client, w, tile))
        out["predict_encrypted"] = client.predict(model, X, batch_rows=256)  # 2 batches, the weights an operand
        metrics = client.metrics(predictions, target, mae_bound=8.0)
        out |= {f"metrics_{name}": np.asarray(metrics[name]) for name in ("mse", "r2", "mae")}
        dataset = client.upload(features, target)
        out["metrics_dataset_mse"] = np.asarray(client.metrics(predictions, dataset=dataset)["mse"])
        reference, queries = features[:40], features[100:137]
        out["distances"] = client.distances(client.upload_reference(reference), queries, batch_rows=16)
        encrypted = client.upload_encrypted_reference(reference, query_rows=16)
        out["distances_encrypted"] = client.distances(encrypted, queries)
    out["want_predict"], out["want_predict_encrypted"] = features @ W + b, X @ w
    out["want_mse"] = np.asarray(np.mean((predictions - target) ** 2))
    out["want_distances"] = ((reference[:, None, :] - queries[None, :, :]) ** 2).sum(axis=2)
    return out


@pytest.fixture(scope="module")
def local_answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    with local_server(Path(tmp_path_factory.mktemp("local-answers"))) as server:
        return _answers(server)


def test_predict_metrics_and_distances_parse_nothing_in_the_server(ray_server, local_answers, guard) -> None:
    """Every batch, the model's weights, the reference set and the metrics input are parsed and checked on the
    worker holding the session's context: no context load and no ciphertext parse in the server process, and
    the answers equal the local executor's (1e-6; the MAE's degree-6 polynomial amplifies the two sessions'
    fresh noise: 1e-5, as tests/test_service_ray.py) and plaintext (that file's tolerances)."""
    server, data_dir = ray_server
    ray = _answers(server)
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert server.engines._engines == {}
    for name in [name for name in ray if not name.startswith("want")]:
        assert ray[name].shape == local_answers[name].shape, name
        tolerance = 1e-5 if name == "metrics_mae" else 1e-6
        assert np.max(np.abs(ray[name] - local_answers[name])) < tolerance, name
    np.testing.assert_allclose(ray["predict"], ray["want_predict"], atol=1e-3)
    np.testing.assert_allclose(ray["predict_encrypted"], ray["want_predict_encrypted"], atol=1e-3)
    assert abs(float(ray["metrics_mse"]) - float(ray["want_mse"])) < 1e-6
    assert abs(float(ray["metrics_dataset_mse"]) - float(ray["want_mse"])) < 1e-6
    want = ray["want_distances"]
    for name in ("distances", "distances_encrypted"):
        np.testing.assert_allclose(ray[name], want, atol=1e-4 * (1 + want.max()))
    assert list((data_dir / "tmp").iterdir()) == []  # every spooled batch removed


def test_a_bad_batch_is_invalid_argument_from_the_worker(ray_server, guard) -> None:
    """A corrupt ciphertext or a foreign scale in a Predict batch or a Metrics input: INVALID_ARGUMENT with
    the validation layer's message naming the input, raised on the worker; nothing parsed here."""
    server, data_dir = ray_server
    X, y, _ = ames()
    client = session_client(server.address, X.shape)
    try:
        holder, tile = client.key_holder, client.tile_for(X.shape)
        model = client.get_model(_encrypted_model(server, client, np.ones(X.shape[1]), tile))
        rows = holder.encrypt(X, tile=tile)

        def predict(batch: bytes) -> None:
            first = model_service_pb2.PredictRequest(model_id=model.model_id)
            requests = [first, *chunks.send(model_service_pb2.PredictRequest, "rows", [batch])]
            list(client.models.Predict(iter(requests), metadata=client.metadata))

        error = refused(lambda: predict(corrupt(rows.to_bytes())))
        assert "ciphertext" in error.details()
        foreign = holder.encrypt(X, tile=tile)
        for ct in foreign.ciphertexts:
            ct.scale = 2.0**150
        error = refused(lambda: predict(foreign.to_bytes()))
        assert "a prediction batch" in error.details() and "2**150" in error.details()
        narrow = holder.encrypt(X[:, :-1], tile=tile)
        error = refused(lambda: predict(narrow.to_bytes()))
        assert "do not fit the model" in error.details()

        def metrics(predictions: bytes) -> None:
            spec = compute_service_pb2.MetricsSpec()
            targets = holder.encrypt(y, tile=tile).to_bytes()
            requests = [compute_service_pb2.MetricsRequest(spec=spec),
                        *chunks.send(compute_service_pb2.MetricsRequest, "chunk", [predictions, targets])]
            list(client.compute.Metrics(iter(requests), metadata=client.metadata))

        error = refused(lambda: metrics(corrupt(holder.encrypt(y, tile=tile).to_bytes())))
        assert "ciphertext" in error.details()
        error = refused(lambda: metrics(foreign.to_bytes()))
        assert "the metrics input" in error.details() and "2**150" in error.details()
    finally:
        client.close()
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert list((data_dir / "tmp").iterdir()) == []


# -- Describe and a pool's contributions: finished and checked on the pool --------------------------------------
def _describe_and_contribute(server) -> tuple[dict[str, np.ndarray], dict[str, list[int]], Client, str]:
    """Describe (a row-packed table's means and variances; a column-packed one's with the covariance) and two
    contributions to a pool (its release still unsealed) through ``server``: the statistics, the contributions'
    records, and the analyst and pool to seal."""
    X = load_wine().data[:, :6]
    X = X / X.std(axis=0)
    out: dict[str, np.ndarray] = {}
    with Client(server.address) as client:
        client.create_session(plan(3))
        rows = client.describe(client.upload(X, X[:, 0]), ddof=0)
        columns = client.describe(client.upload(X, packing="columns"))
    out |= {f"rows_{name}": rows[name] for name in ("mean", "variance")}
    out |= {f"columns_{name}": columns[name] for name in ("mean", "variance", "covariance")}
    analyst = Client(server.address)
    pool = analyst.create_pool("ray pool", [f"x{i}" for i in range(3)], "target", min_contributors=1)
    records = [Contributor(analyst.invite(pool.pool_id).code).upload(X[k::2, :3], X[k::2, 3], progress=False)
               for k in (0, 1)]
    kept = server.store.pools.contributions(pool.pool_id)  # as recorded: rows, size and the checked level
    assert sorted(c.id for c in kept) == sorted(r.contribution_id for r in records)
    return out, {"rows": sorted(c.rows for c in kept), "levels": [c.level for c in kept]}, analyst, pool.pool_id


def _release(analyst: Client, pool_id: str) -> dict[str, np.ndarray]:
    """The pool sealed (SealPool adds the contributions in the server process) and its release decrypted."""
    try:
        analyst.seal_pool(pool_id)
        release = analyst.pool_statistics(pool_id)
        return {"release_mean": release.mean, "release_variance": release.variance}
    finally:
        analyst.close()


@pytest.fixture(scope="module")
def local_statistics(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    with local_server(Path(tmp_path_factory.mktemp("local-statistics"))) as server:
        out, records, analyst, pool_id = _describe_and_contribute(server)
        return out | _release(analyst, pool_id), records


def test_describe_and_contributions_parse_nothing_in_the_server(ray_server, local_statistics, guard) -> None:
    """Describe's column sums are added up and finished, and its covariance computed, on a worker holding the
    session's context (``Executor.finish_sums``); a contribution's statistics are checked on one
    (``Executor.check_files``): no context load and no ciphertext parse in the server process. The statistics
    equal numpy's (tests/test_service_compute.py's tolerances) and the local executor's within twice those
    (two independent encryptions); so does the pool's release (sealed afterwards, on a worker)."""
    server, data_dir = ray_server
    out, records, analyst, pool_id = _describe_and_contribute(server)
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert server.engines._engines == {}
    local, local_records = local_statistics
    assert records == local_records
    out |= _release(analyst, pool_id)
    X = load_wine().data[:, :6]
    X = X / X.std(axis=0)
    # A variance is E[x^2] - E[x]^2: CKKS's error scales with E[x^2] (up to ~300 here), not with the variance.
    tolerance = 1e-6 * float(np.max(np.mean(X**2, axis=0)))
    for name, value in out.items():
        # Two servers, two sessions: independent encryptions, each within its bound of numpy, so within
        # twice that of each other (a variance read 1.1e-6 apart once in ten runs).
        bound = 2 * (tolerance if "variance" in name else 1e-6)
        assert value.shape == local[name].shape, name
        assert np.max(np.abs(value - local[name])) < bound, name
    np.testing.assert_allclose(out["rows_mean"], X.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(out["rows_variance"], X.var(axis=0), atol=tolerance)
    np.testing.assert_allclose(out["columns_variance"], X.var(axis=0, ddof=1), atol=tolerance)
    np.testing.assert_allclose(out["columns_covariance"], np.cov(X, rowvar=False), atol=tolerance)
    np.testing.assert_allclose(out["release_mean"], X[:, :3].mean(axis=0), atol=1e-6)
    assert list((data_dir / "tmp").iterdir()) == []


def _contribute(contributor: Contributor, moments: np.ndarray, rows: int, broken: bool = False) -> None:
    """``moments`` (any length) encrypted in the pool's tile and contributed as ``rows`` rows, a ciphertext
    zeroed if ``broken``: what a broken or hostile contributor could send."""
    engine = contributor._engine
    data = b"".join(encrypted_pieces(engine, moments[:, None], moment_tile(engine.params.slots)))
    manifest = pool_service_pb2.ContributionManifest(rows=rows, feature_names=list(contributor.schema.feature_names),
                                                     total_size_bytes=len(data))
    requests = [pool_service_pb2.ContributeRequest(manifest=manifest),
                *chunks.send(pool_service_pb2.ContributeRequest, "chunk", [corrupt(data) if broken else data])]
    contributor.stub.Contribute(iter(requests), metadata=contributor._metadata)


def test_a_bad_contribution_is_invalid_argument_from_the_worker(ray_server, guard) -> None:
    """Statistics with a corrupt ciphertext, of the wrong length, or encrypted under another context:
    INVALID_ARGUMENT with the validation layer's or the pool's message (``check_statistics``), raised on the
    worker; nothing of them kept, nothing parsed here."""
    server, data_dir = ray_server
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    analyst = Client(server.address)
    try:
        pool = analyst.create_pool("bad contributions", [f"x{i}" for i in range(3)], "target")
        contributor = Contributor(analyst.invite(pool.pool_id).code)
        rows, moments = contributor.statistics(X, y)
        error = refused(lambda: _contribute(contributor, moments, rows, broken=True))
        assert "ciphertext" in error.details()
        error = refused(lambda: _contribute(contributor, moments[:-1], rows))
        assert f"statistics have shape ({len(moments) - 1}, 1)" in error.details(), error.details()
        contributor._engine = Engine.for_encryption(KeyHolder(plan(2)).encryption_context())
        error = refused(lambda: contributor.upload(X, y, progress=False))
        assert "statistics" in error.details() or "ciphertext" in error.details(), error.details()
        assert analyst.pool(pool.pool_id).rows == 0
        assert contributor.contributions() == []
    finally:
        analyst.close()
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert list((data_dir / "tmp").iterdir()) == []
