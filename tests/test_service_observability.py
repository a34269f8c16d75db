"""The Prometheus endpoint (--metrics-port) and the structured per-call logs (request ids, no secrets)."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import local_server, session_client

from ciphergrad.server.rpc.observability import JsonFormatter
from ciphergrad.wire.proto_gen.ciphergrad.v1 import session_service_pb2

X = np.hstack([np.ones((16, 1)), np.random.default_rng(6).uniform(size=(16, 3))])
Y = X @ np.array([0.2, -0.1, 0.4, 0.3])


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("ciphergrad_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_endpoint_counts_requests_streams_jobs_operations_and_bytes(tmp_path: Path) -> None:
    with local_server(tmp_path, metrics_port=0) as server:
        assert server.metrics_port
        client = session_client(server.address, X.shape)
        dataset = client.upload(X, Y)
        run = client.train(dataset.dataset_id, {"epochs": 2})
        with pytest.raises(grpc.RpcError):
            client.train(dataset.dataset_id, {"epochs": -1})
        client.predict(run.model, X)
        values = _scrape(server.metrics_port)
    assert values['ciphergrad_requests_total{code="OK",method="DatasetService/UploadDataset"}'] == 1
    assert values['ciphergrad_requests_total{code="OK",method="TrainingService/Train"}'] == 1
    assert values['ciphergrad_requests_total{code="INVALID_ARGUMENT",method="TrainingService/Train"}'] == 1
    assert values['ciphergrad_streams_in_flight{method="ModelService/Predict"}'] == 0
    assert values['ciphergrad_jobs{state="succeeded"}'] == 1
    assert values['ciphergrad_jobs{state="failed"}'] == 0
    assert values['ciphergrad_he_operations_total{kind="rotations"}'] > 0
    assert values['ciphergrad_he_operations_total{kind="multiplications"}'] > 0
    # The upload's request bytes hold every ciphertext byte the dataset is made of, plus message framing.
    uploaded = values['ciphergrad_request_bytes_total{method="DatasetService/UploadDataset"}']
    assert uploaded >= dataset.size_bytes
    assert values['ciphergrad_response_bytes_total{method="ModelService/Predict"}'] > 0


def test_call_logs_are_json_with_request_ids_and_no_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ciphergrad.server")
    with local_server(tmp_path) as server:
        client = session_client(server.address, X.shape)
        client.upload(X, Y)
        response = client.sessions.GetSession.with_call(
            session_service_pb2.GetSessionRequest(),
            metadata=(*client.metadata, ("x-request-id", "trace-me-42")),
        )
        assert ("x-request-id", "trace-me-42") in response[1].initial_metadata()
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(record)) for record in caplog.records if record.getMessage() == "rpc"]
    methods = {line["method"]: line for line in lines}
    assert methods["SessionService/GetSession"]["request_id"] == "trace-me-42"
    assert methods["DatasetService/UploadDataset"]["code"] == "OK"
    assert methods["DatasetService/UploadDataset"]["bytes_in"] > 0
    assert len({line["request_id"] for line in lines}) == len(lines)  # one id per call
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert client.token not in text
    assert "CGEM" not in text  # no ciphertext bytes
