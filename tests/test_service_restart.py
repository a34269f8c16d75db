"""Persistence: sessions, datasets, models and paused jobs survive SIGTERM and SIGKILL, and a job
whose client went away resumes where it paused."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import ServerProcess, leave_mid_job, local_server, session_client

from ciphergrad.client.sdk import Client
from ciphergrad.core.linear import LinearRegressionConfig, fit_torch
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

RNG = np.random.default_rng(3)
X = np.hstack([np.ones((64, 1)), RNG.uniform(size=(64, 4))])
Y = X @ np.array([0.3, 0.5, -0.4, 0.2, 0.1]) + 0.01 * RNG.normal(size=64)
CONFIG = LinearRegressionConfig(epochs=6)
PAUSED = training_service_pb2.JOB_STATE_PAUSED


def _wait_for_state(client: Client, job_id: str, state: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get_job(job_id).state != state:
        assert time.monotonic() < deadline, f"job stayed {client.get_job(job_id).state}"
        time.sleep(0.1)


def _start_stalled_job(client: Client, dataset_id: str) -> tuple[threading.Thread, threading.Event, list]:
    """A training job whose client stops answering at its second refresh (the job is RUNNING)."""
    release, stalled, outcome = threading.Event(), threading.Event(), []

    def on_refresh(values: np.ndarray) -> None:
        if len(outcome) == 1:
            stalled.set()
            release.wait(60)
        outcome.append(values)

    def train() -> None:
        try:
            client.train(dataset_id, CONFIG, on_refresh=on_refresh)
        except grpc.RpcError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    assert stalled.wait(60)
    return thread, release, outcome


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_keeps_everything(tmp_path: Path, sig: int) -> None:
    server = ServerProcess(tmp_path)
    try:
        client = session_client(server.address, X.shape)
        dataset = client.upload(X, Y, column_names=["one", "a", "b", "c", "d"])
        run = client.train(dataset.dataset_id, CONFIG)
        weights = client.weights(run.model)
        thread, release, _ = _start_stalled_job(client, dataset.dataset_id)
        paused_job = next(j for j in client.list_jobs() if j.job_id != run.job.job_id)
        status = server.stop(sig)
        release.set()
        thread.join(30)
        assert status == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    finally:
        if server.process.poll() is None:
            server.process.kill()

    restarted = ServerProcess(tmp_path)
    try:
        again = Client(restarted.address)
        again.use_session(client.session_id, client.token, client.key_holder)
        assert again.get_session().session_id == client.session_id
        assert [d.dataset_id for d in again.list_datasets()] == [dataset.dataset_id]
        model = again.get_model(run.model.model_id)
        assert np.array_equal(again.weights(model), weights)
        assert np.max(np.abs(again.predict(model, X[:8]) - X[:8] @ weights)) < 1e-4
        # The interrupted job is paused at its last epoch and finishes when its session attaches.
        job = again.get_job(paused_job.job_id)
        assert job.state == PAUSED and 0 < job.epoch < CONFIG.epochs
        resumed = again.train(job_id=job.job_id)
        assert len(resumed.losses) == CONFIG.epochs - job.epoch
        twin = fit_torch(X, Y, CONFIG)
        assert np.max(np.abs(again.weights(resumed.model) - twin.weights)) < 1e-4
        again.close()
    finally:
        restarted.stop(signal.SIGTERM)


def test_job_pauses_when_client_leaves_and_resumes(tmp_path: Path) -> None:
    with local_server(tmp_path) as server:
        client = session_client(server.address, X.shape)
        dataset = client.upload(X, Y)
        job = paused = leave_mid_job(client, dataset.dataset_id, CONFIG)
        assert 0 < paused.epoch < CONFIG.epochs
        resumed = client.train(job_id=job.job_id)
        assert resumed.job.state == training_service_pb2.JOB_STATE_SUCCEEDED
        twin = fit_torch(X, Y, CONFIG)
        assert np.max(np.abs(client.weights(resumed.model) - twin.weights)) < 1e-4
        assert np.max(np.abs(np.asarray(resumed.losses) - twin.losses[paused.epoch :])) < 1e-6
