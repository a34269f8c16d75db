"""Hostile clients (issue 9, item 1): stalled streams cost the server no thread, so 64 of them neither slow
health nor stop a normal client; every limit answers RESOURCE_EXHAUSTED naming its flag; the idle timeout
ends a silent stream; a key holder slower than --refresh-timeout pauses its job, which ``attach`` resumes."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostile_clients import MANIFEST, TINY_X, TINY_Y, HealthProbe
from service_support import (
    ServerProcess,
    StalledStreams,
    ames,
    local_server,
    session_client,
    streams_in_flight,
    wait_until,
)

from ciphergrad.core.compare import compare_linear_regression
from ciphergrad.core.linear import LinearRegressionConfig
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2

JobState = training_service_pb2.JobState


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_64_stalled_streams_leave_health_fast_and_a_normal_client_training(tmp_path: Path) -> None:
    # A server process of its own: the client's key generation and encryption here must not share its GIL.
    flags = ("--max-streams-per-session", "48", "--max-jobs-per-session", "24", "--metrics-port", "0")
    server = ServerProcess(tmp_path, *flags)
    try:
        attacker = session_client(server.address, TINY_X.shape)
        tiny = attacker.upload(TINY_X, TINY_Y)
        X, y, names = ames()
        normal = session_client(server.address, X.shape)
        stalled = StalledStreams(server.address)
        try:
            for _ in range(24):
                stalled.create_session(MANIFEST)
            for _ in range(20):
                stalled.train(attacker.metadata, tiny.dataset_id, {"epochs": 3})
            for _ in range(20):
                stalled.upload(attacker.metadata)
            trains = stalled.events[24:44]
            # Every job got as far as asking its key holder: 20 jobs started on 2 workers, as each gives its
            # HE slot back while it waits.
            wait_until(
                lambda: streams_in_flight(server) >= 64
                and all(any(e.WhichOneof("event") == "refresh_request" for e in list(t)) for t in trains),
                120,
                "64 open streams with 20 refresh requests pending",
            )
            assert stalled.outcomes() == []  # none was refused or ended

            config = LinearRegressionConfig(epochs=10)
            with HealthProbe(server.address) as probe:
                dataset = normal.upload(X, y, column_names=names)
                run = normal.train(dataset.dataset_id, config)
                weights = normal.weights(run.model)
                time.sleep(0.5)  # a few probes after the training too
            assert probe.failures == []
            assert len(probe.latencies) >= 10
            print(f"\nhealth under 64 stalled streams: {len(probe.latencies)} checks, "
                  f"max {max(probe.latencies) * 1000:.1f} ms, median {np.median(probe.latencies) * 1000:.1f} ms")
            assert max(probe.latencies) < 1.0
            assert run.job.state == JobState.JOB_STATE_SUCCEEDED
            local = compare_linear_regression(X, y, config)
            assert np.max(np.abs(weights - local.encrypted_weights)) < 1e-4
        finally:
            stalled.cancel()
        wait_until(lambda: streams_in_flight(server) == 0, 30, "every stream closed")
        # Nothing left behind: no half-received upload or context, no session made, the jobs paused.
        wait_until(lambda: all(job.state == JobState.JOB_STATE_PAUSED for job in attacker.list_jobs()), 30,
                   "every stalled job paused")
        assert len(attacker.list_jobs()) == 20
        assert [d.dataset_id for d in attacker.list_datasets()] == [tiny.dataset_id]
        assert list((tmp_path / "tmp").iterdir()) == []
        assert len(list((tmp_path / "blobs").iterdir())) == 2  # the attacker's and the normal session
        attacker.close()
        normal.close()
    finally:
        server.stop(signal.SIGTERM)


def test_queued_jobs_hold_no_thread(tmp_path: Path) -> None:
    with local_server(tmp_path, max_jobs_per_session=12, max_streams_per_session=12) as server:
        client = session_client(server.address, TINY_X.shape)
        dataset = client.upload(TINY_X, TINY_Y)
        for _ in range(server.config.workers):  # every HE slot busy
            server.runner._slots.acquire()
        stalled = StalledStreams(server.address)
        try:
            for _ in range(10):
                stalled.train(client.metadata, dataset.dataset_id, {"epochs": 2})
            wait_until(lambda: all(any(e.job.state == JobState.JOB_STATE_QUEUED for e in list(events))
                                   for events in stalled.events), 60, "10 queued jobs")
            job_threads = [t for t in threading.enumerate() if t.name.startswith("job-")]
            assert job_threads == []
            for _ in range(server.config.workers):
                server.runner._slots.release()
            wait_until(lambda: all(any(e.WhichOneof("event") == "refresh_request" for e in list(events))
                                   for events in stalled.events), 60, "every job started")
        finally:
            stalled.cancel()
        wait_until(lambda: all(job.state == JobState.JOB_STATE_PAUSED for job in client.list_jobs()), 30,
                   "every job paused")
        client.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    settings = {"max_streams_per_session": 2, "max_anonymous_streams": 2, "max_jobs_per_session": 1,
                "max_inflight_mb": 1}
    with local_server(tmp_path_factory.mktemp("limited"), **settings) as server:
        client = session_client(server.address, TINY_X.shape)
        yield server, client
        client.close()


def _refused(call: object, flag: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert flag in caught.value.details()


def _stalled(server, open_streams) -> None:  # type: ignore[no-untyped-def]
    stalled = StalledStreams(server.address)
    open_streams(stalled)
    count = len(stalled.calls)
    wait_until(lambda: streams_in_flight(server) >= count, 30, f"{count} open streams")
    return stalled


def test_streams_per_session_limit(limited) -> None:  # type: ignore[no-untyped-def]
    server, client = limited
    stalled = _stalled(server, lambda s: [s.upload(client.metadata) for _ in range(2)])
    try:
        _refused(lambda: client.upload(TINY_X, TINY_Y), "--max-streams-per-session")
        assert client.list_datasets() == []  # unary calls still answer
    finally:
        stalled.cancel()
    wait_until(lambda: streams_in_flight(server) == 0, 30, "streams closed")
    client.upload(TINY_X, TINY_Y)  # room again


def test_anonymous_stream_limit(limited) -> None:  # type: ignore[no-untyped-def]
    server, _ = limited
    stalled = _stalled(server, lambda s: [s.create_session(MANIFEST) for _ in range(2)])
    try:
        _refused(lambda: session_client(server.address, TINY_X.shape), "--max-anonymous-streams")
    finally:
        stalled.cancel()


def test_jobs_per_session_limit(limited) -> None:  # type: ignore[no-untyped-def]
    server, client = limited
    wait_until(lambda: streams_in_flight(server) == 0, 30, "streams closed")
    dataset = client.upload(TINY_X, TINY_Y)
    stalled = StalledStreams(server.address)
    stalled.train(client.metadata, dataset.dataset_id, {"epochs": 2})
    try:
        wait_until(lambda: any(e.WhichOneof("event") == "refresh_request" for e in stalled.events[0]), 60,
                   "the stalled job's refresh request")
        _refused(lambda: client.train(dataset.dataset_id, {"epochs": 1}), "--max-jobs-per-session")
    finally:
        stalled.cancel()
    wait_until(lambda: streams_in_flight(server) == 0, 30, "streams closed")
    wait_until(lambda: not server.runner._links, 30, "the stalled job let go")
    run = client.train(dataset.dataset_id, {"epochs": 1})  # room again
    assert run.job.state == JobState.JOB_STATE_SUCCEEDED


def test_memory_in_flight_limit(limited) -> None:  # type: ignore[no-untyped-def]
    server, client = limited
    wait_until(lambda: streams_in_flight(server) == 0, 30, "streams closed")
    model = client.upload_model(np.array([0.5, -0.25]), bias=[0.1])
    rows = np.random.default_rng(4).uniform(size=(8192, 2))
    # One batch of 2 x 2 ciphertexts (~1.6 MiB) is over the limit; one of 2 (a column each) fits.
    _refused(lambda: client.predict(model, rows, batch_rows=8192), "--max-inflight-mb")
    assert server.work.limits.inflight == 0  # nothing stays reserved
    small = client.predict(model, rows[:8], batch_rows=8)
    assert np.max(np.abs(small.ravel() - (rows[:8] @ [0.5, -0.25] + 0.1))) < 1e-3


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory):
    settings = {"stream_idle_timeout": 1.0, "refresh_timeout": 1.0}
    with local_server(tmp_path_factory.mktemp("impatient"), **settings) as server:
        client = session_client(server.address, TINY_X.shape)
        yield server, client
        client.close()


def test_idle_timeout_ends_a_silent_stream(impatient) -> None:  # type: ignore[no-untyped-def]
    server, client = impatient
    stalled = StalledStreams(server.address)
    try:
        start = time.monotonic()
        stalled.upload(client.metadata)
        stalled.create_session(MANIFEST)
        wait_until(lambda: len(stalled.outcomes()) == 2, 30, "both silent streams ended")
        assert time.monotonic() - start < 10
        for outcome in stalled.outcomes():
            assert isinstance(outcome, grpc.aio.AioRpcError)
            assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "--stream-idle-timeout" in outcome.details()
    finally:
        stalled.cancel()
    assert list(server.store.tmp.iterdir()) == []
    assert client.list_datasets() == []


def test_refresh_timeout_pauses_the_job_and_attach_resumes_it(impatient) -> None:  # type: ignore[no-untyped-def]
    server, client = impatient
    dataset = client.upload(TINY_X, TINY_Y)
    stalled = StalledStreams(server.address)
    try:
        stalled.train(client.metadata, dataset.dataset_id, {"epochs": 3})
        wait_until(lambda: len(stalled.outcomes()) == 1, 60, "the stalled Train stream ended")
        (outcome,) = stalled.outcomes()
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "--refresh-timeout" in outcome.details()
    finally:
        stalled.cancel()
    (job,) = client.list_jobs()
    assert job.state == JobState.JOB_STATE_PAUSED
    run = client.train(job_id=job.job_id)
    assert run.job.state == JobState.JOB_STATE_SUCCEEDED
    assert run.job.epoch == 3
    weights = client.weights(run.model)
    assert np.all(np.isfinite(weights))


def test_client_keepalive_pings_are_accepted(tmp_path: Path) -> None:
    """A client pinging every 200 ms keeps its stream: gRPC's default policy would answer with GOAWAY
    "too_many_pings" and fail the stream with UNAVAILABLE."""
    options = [("grpc.keepalive_time_ms", 200), ("grpc.keepalive_timeout_ms", 5000),
               ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
    with local_server(tmp_path) as server, grpc.insecure_channel(server.address, options=options) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(3)  # ~15 pings
        watch.cancel()
        with pytest.raises(grpc.RpcError) as caught:
            next(watch)
        assert caught.value.code() == grpc.StatusCode.CANCELLED  # ended by us, not by the server
