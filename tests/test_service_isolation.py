"""Tenant isolation and authentication: session B's token never reaches session A's resources."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import local_server, session_client

from ciphergrad.client.sdk import Client
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    dataset_service_pb2,
    model_service_pb2,
    session_service_pb2,
    training_service_pb2,
    types_pb2,
)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_session_b_cannot_reach_session_a(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = np.hstack([np.ones((32, 1)), rng.uniform(size=(32, 3))])
    y = X @ np.array([0.1, 0.5, -0.2, 0.3])
    with local_server(tmp_path) as server:
        a = session_client(server.address, X.shape)
        b = session_client(server.address, X.shape)
        dataset = a.upload(X, y)
        run = a.train(dataset.dataset_id, LinearRegressionConfig(epochs=2))
        job, model = run.job, run.model
        meta = b.metadata

        assert b.list_datasets() == [] and b.list_jobs() == [] and b.list_models() == []
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert (
            _code(
                lambda: b.datasets.GetDataset(
                    dataset_service_pb2.GetDatasetRequest(dataset_id=dataset.dataset_id), metadata=meta
                )
            )
            == denied
        )
        assert _code(lambda: b.delete_dataset(dataset.dataset_id)) == denied
        assert _code(lambda: b.train(dataset.dataset_id, {"epochs": 1})) == denied
        assert _code(lambda: b.train(job_id=job.job_id)) == denied
        assert _code(lambda: b.get_job(job.job_id)) == denied
        assert _code(lambda: b.cancel_job(job.job_id)) == denied
        assert _code(lambda: b.get_model(model.model_id)) == denied
        assert (
            _code(
                lambda: b.models.DeleteModel(
                    model_service_pb2.DeleteModelRequest(model_id=model.model_id), metadata=meta
                )
            )
            == denied
        )
        assert _code(lambda: b.predict(model, X[:4])) == denied
        assert (
            _code(
                lambda: b.sessions.GetSession(
                    session_service_pb2.GetSessionRequest(session_id=a.session_id), metadata=meta
                )
            )
            == denied
        )
        assert (
            _code(
                lambda: b.sessions.DeleteSession(
                    session_service_pb2.DeleteSessionRequest(session_id=a.session_id), metadata=meta
                )
            )
            == denied
        )

        # A's data is intact and usable.
        assert [d.dataset_id for d in a.list_datasets()] == [dataset.dataset_id]
        assert a.get_job(job.job_id).state == training_service_pb2.JOB_STATE_SUCCEEDED
        assert np.max(np.abs(a.predict(model, X[:4]) - X[:4] @ a.weights(model))) < 1e-4

        # Deleting B's own session leaves A untouched; deleting A's removes everything of A.
        b.delete_session()
        assert a.get_session().session_id == a.session_id
        a.delete_session()
        assert _code(a.get_session) == grpc.StatusCode.UNAUTHENTICATED
        assert not (Path(tmp_path) / "blobs" / a.session_id).exists()


def test_missing_or_unknown_token_is_unauthenticated(tmp_path: Path) -> None:
    with local_server(tmp_path) as server, Client(server.address) as anonymous:
        unauth = grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: anonymous.datasets.ListDatasets(dataset_service_pb2.ListDatasetsRequest())) == unauth
        anonymous.token = "not-a-token"
        assert _code(anonymous.list_datasets) == unauth
        assert _code(anonymous.list_jobs) == unauth
        assert _code(anonymous.list_models) == unauth
        spec = training_service_pb2.JobSpec(dataset_id="x", algorithm=types_pb2.ALGORITHM_LINEAR_REGRESSION)
        stream = anonymous.training.Train(
            iter([training_service_pb2.TrainRequest(start=spec)]), metadata=anonymous.metadata
        )
        assert _code(lambda: list(stream)) == unauth
