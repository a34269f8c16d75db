"""With ``--executor ray`` the server process only routes an upload and a one-pass job: the upload's checks
(every ciphertext parsed against the session's context) run on the pool worker holding that context
(``Executor.check_files``), and a "gram" or "normal" job's pass, statistics and trainer on the pool too
(``server.execution.ray_trainers``): the server relays refreshes and the normal system as bytes. So does a
per-row ("gd") job on a table of one shard: its whole trainer runs on the worker that holds its blocks.

One in-process server on a local 2-CPU Ray for the module (~10 s with Ray's start). In this process a guard
counts every context load (``Engine.from_public_context``) and every ciphertext parsed
(``Engine.ciphertext_from_bytes``) while a session is created and an Ames-sized table uploaded: both stay 0
(the Ray workers are processes of their own, unguarded). Bad uploads still get INVALID_ARGUMENT with a
human message from the worker (a corrupt ciphertext: SEAL's refusal; a scale the session cannot take: the
validation layer's ``ServiceError``, pickled with its code) and leave nothing behind. The one-pass jobs give
their twins' results within 1e-6 (the gram solver's weights and losses, and after a pause and a resume from
the job's checkpoints; the normal solver's least squares) with no context loaded in the server process; a
"gd" job run whole on a worker gives the weights and losses of the same job on the executor's shards (driven
from the server, as larger tables are) within 1e-6; the one-pass logistic solver ("quadratic", a normal system
with a right-hand side) on the pool gives the local server's coefficients within 1e-6. About 60 s in all;
the default suite runs the upload tests (about 15 s), ``make test-slow`` the jobs too.
"""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import ames, leave_mid_job, local_server, session_client

from ciphergrad.client.estimator import EncryptedLogisticRegression
from ciphergrad.client.sdk import Client, default_parameters, training_layout
from ciphergrad.client.training import TrainingCalls
from ciphergrad.core import flat
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.engine import Engine
from ciphergrad.core.gram_training import fit_torch_gram
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.wire import chunks
from ciphergrad.wire.proto_gen.ciphergrad.v1 import dataset_service_pb2, training_service_pb2

pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory):
    data_dir = Path(tmp_path_factory.mktemp("ray-front"))
    with local_server(data_dir, executor="ray", ray_num_cpus=2, workers=2) as server:
        yield server, data_dir


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts context loads and ciphertext parses in this (the server's) process."""
    counts = {"contexts": 0, "ciphertexts": 0}
    load, parse = Engine.from_public_context.__func__, Engine.ciphertext_from_bytes

    def counted_load(cls: type, data: bytes) -> Engine:
        counts["contexts"] += 1
        return load(cls, data)

    def counted_parse(self: Engine, data: bytes) -> object:
        counts["ciphertexts"] += 1
        return parse(self, data)

    monkeypatch.setattr(Engine, "from_public_context", classmethod(counted_load))
    monkeypatch.setattr(Engine, "ciphertext_from_bytes", counted_parse)
    return counts


def _send(client, matrices: list[bytes]) -> None:
    manifest = dataset_service_pb2.DatasetManifest(total_size_bytes=sum(map(len, matrices)))
    requests = [dataset_service_pb2.UploadDatasetRequest(manifest=manifest)]
    requests += chunks.send(dataset_service_pb2.UploadDatasetRequest, "chunk", matrices)
    client.datasets.UploadDataset(iter(requests), metadata=client.metadata)


def _refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value


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
        error = _refused(lambda: _send(client, [corrupt, good_y]))
        assert "ciphertext" in error.details()

        for ct in good_X.ciphertexts:
            ct.scale = 2.0**150
        error = _refused(lambda: _send(client, [good_X.to_bytes(), good_y]))
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
        error = _refused(lambda: client.train(dataset_id, GRAM))
        assert "refreshed matrix" in error.details() or "ciphertext" in error.details()
    finally:
        client.close()


@pytest.mark.slow  # a job each on the pool: make test-slow
def test_a_per_row_job_on_one_shard_runs_whole_on_the_pool(ray_server, guard, monkeypatch) -> None:
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
        assert guard["contexts"] == 0  # the jobs' trainers ran on a worker: no context in this process
        monkeypatch.setattr(server.runner.executor, "whole", lambda table: False)  # the driver here, one shard
        sharded = client.train(dataset_id, config)
        assert guard["contexts"] == 1
        assert hosted.refreshes == sharded.refreshes > 0
        assert np.max(np.abs(client.weights(hosted.model) - client.weights(sharded.model))) < 1e-6
        assert np.max(np.abs(np.asarray(hosted.losses) - sharded.losses) / np.asarray(sharded.losses)) < 1e-6
    finally:
        client.close()


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
