"""Status codes a user can act on: secret keys, malformed input, limits, cancellation, not found."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from hostile_clients import TINY_X, TINY_Y
from service_support import local_server, session_client

from ciphergrad.client.sdk import Client, default_parameters
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import choose_tile
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    dataset_service_pb2,
    session_service_pb2,
    training_service_pb2,
    types_pb2,
)

X, Y = TINY_X, TINY_Y  # the hostile clients' tiny table: 16 rows, an intercept and 3 features


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _context_upload(client: Client, data: bytes) -> None:
    requests = [
        session_service_pb2.CreateSessionRequest(manifest=session_service_pb2.SessionManifest()),
        session_service_pb2.CreateSessionRequest(context_chunk=data),
    ]
    client.sessions.CreateSession(iter(requests))


def _nothing_left(data_dir: Path) -> None:
    assert list((data_dir / "tmp").iterdir()) == []


def test_secret_key_context_is_refused(tmp_path: Path) -> None:
    params = default_parameters()
    holder = KeyHolder(params, rotations=[1])
    with_secret = holder._context.serialize(save_secret_key=True)
    with local_server(tmp_path) as server, Client(server.address) as client:
        error = _error(lambda: _context_upload(client, with_secret))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "secret key" in error.details()
        assert _error(lambda: _context_upload(client, b"garbage")).code() == grpc.StatusCode.INVALID_ARGUMENT
        _nothing_left(tmp_path)
        assert list((tmp_path / "blobs").iterdir()) == []


def test_upload_limits_and_atomicity(tmp_path: Path) -> None:
    # A context with only the rotation keys a small tile needs is ~21 MB.
    with local_server(tmp_path, max_upload_mb=25) as server:
        client = session_client(server.address, X.shape)
        # Too big: refused once the stream passes the limit (the SDK encrypts as it sends, announcing no size).
        error = _error(lambda: client.upload(np.tile(X, (4000, 1)), np.tile(Y, 4000)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-upload-mb" in error.details()

        # A stream that lies about its size is cut off once it passes the limit.
        def lying() -> object:
            manifest = dataset_service_pb2.DatasetManifest(total_size_bytes=10)
            yield dataset_service_pb2.UploadDatasetRequest(manifest=manifest)
            for _ in range(60):  # 36 MB, past the 25 MB limit
                chunk = types_pb2.MatrixChunk(data=b"\0" * (600 * 1024))
                yield dataset_service_pb2.UploadDatasetRequest(chunk=chunk)

        error = _error(lambda: client.datasets.UploadDataset(lying(), metadata=client.metadata))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        # Garbage ciphertexts: INVALID_ARGUMENT, nothing kept.
        def garbage() -> object:
            yield dataset_service_pb2.UploadDatasetRequest(manifest=dataset_service_pb2.DatasetManifest())
            for _ in range(2):
                yield dataset_service_pb2.UploadDatasetRequest(chunk=types_pb2.MatrixChunk(data=b"CGEMxx", last=True))

        error = _error(lambda: client.datasets.UploadDataset(garbage(), metadata=client.metadata))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

        # A cancelled upload leaves nothing either.
        release = threading.Event()

        def stalled() -> object:
            yield dataset_service_pb2.UploadDatasetRequest(manifest=dataset_service_pb2.DatasetManifest())
            yield dataset_service_pb2.UploadDatasetRequest(chunk=types_pb2.MatrixChunk(data=b"x" * 1000))
            release.wait(10)

        future = client.datasets.UploadDataset.future(stalled(), metadata=client.metadata)
        threading.Timer(0.5, future.cancel).start()
        with pytest.raises(grpc.FutureCancelledError):
            future.result(timeout=30)
        release.set()

        assert client.list_datasets() == []
        server.stop(grace=1.0)  # let the handlers finish their clean-up
        _nothing_left(tmp_path)
        assert list((tmp_path / "blobs" / client.session_id).glob("datasets/*")) == []


def test_bad_requests(tmp_path: Path) -> None:
    with local_server(tmp_path) as server:
        client = session_client(server.address, X.shape)
        dataset = client.upload(X, Y)
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        assert _error(lambda: client.train(dataset.dataset_id, {"learning_rate": -1})).code() == invalid
        assert _error(lambda: client.train(dataset.dataset_id, {"epochs": 2.5})).code() == invalid
        assert _error(lambda: client.train(dataset.dataset_id, {"no_such_setting": 1})).code() == invalid
        assert _error(lambda: client.train("nope", {})).code() == grpc.StatusCode.NOT_FOUND
        assert _error(lambda: client.get_job("nope")).code() == grpc.StatusCode.NOT_FOUND
        assert _error(lambda: client.get_model("nope")).code() == grpc.StatusCode.NOT_FOUND
        # batch_size needs data tiled in that many rows: a shape problem the user can fix.
        error = _error(lambda: client.train(dataset.dataset_id, {"batch_size": 4}))
        assert error.code() == invalid and "batch_size" in error.details()
        # Rows packed in another tile than the model's weights.
        run = client.train(dataset.dataset_id, {"epochs": 1})
        wrong = client.key_holder.encrypt(X[:4], tile=choose_tile((4, 4), 4096, "rows", block_rows=2))
        error = _error(
            lambda: list(
                client.models.Predict(
                    iter(
                        [_predict(model_id=run.model.model_id), *[_predict(rows=c) for c in _chunked(wrong.to_bytes())]]
                    ),
                    metadata=client.metadata,
                )
            )
        )
        assert error.code() == invalid
        # A job that already ended cannot be resumed.
        error = _error(lambda: client.train(job_id=run.job.job_id))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def _predict(**kwargs: object) -> object:
    from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2

    return model_service_pb2.PredictRequest(**kwargs)


def _chunked(data: bytes) -> list[types_pb2.MatrixChunk]:
    return [types_pb2.MatrixChunk(data=data, last=True)]


def test_cancel_job_ends_stream_with_cancelled(tmp_path: Path) -> None:
    with local_server(tmp_path) as server:
        client = session_client(server.address, X.shape)
        dataset = client.upload(X, Y)
        other = Client(server.address)
        other.use_session(client.session_id, client.token, client.key_holder)
        jobs: list[str] = []

        def on_epoch(epoch: int, loss: float) -> None:
            if epoch == 2:
                jobs.append(client.list_jobs()[0].job_id)
                other.cancel_job(jobs[0])

        error = _error(lambda: client.train(dataset.dataset_id, LinearRegressionConfig(epochs=30), on_epoch=on_epoch))
        assert error.code() == grpc.StatusCode.CANCELLED
        assert client.get_job(jobs[0]).state == training_service_pb2.JOB_STATE_CANCELLED
