"""Fuzzing the service through gRPC (issue 9): hypothesis draws request messages and mutates real ciphertext and
context bytes; every answer must be OK or a status the caller can act on (never INTERNAL or UNKNOWN), and the
server must still answer its health check afterwards. A few hundred inputs in the default suite, 2,400 in
the slow one; ``-s`` prints the inputs tried and the statuses seen per path."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_support import local_server, session_client

from ciphergrad.client.sdk import Client
from ciphergrad.core.layout import Tile
from ciphergrad.wire import chunks
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    compute_service_pb2,
    dataset_service_pb2,
    model_service_pb2,
    session_service_pb2,
    training_service_pb2,
    types_pb2,
)

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,  # ids drawn at random name nothing
}
X = np.hstack([np.ones((16, 1)), np.random.default_rng(7).uniform(size=(16, 3))])
Y = X @ np.array([0.2, -0.1, 0.4, 0.3])
SEEN: dict[str, Counter] = {}


class Target:
    """One server with a session, a dataset, a trained model, a reference set and the bytes to mutate."""

    def __init__(self, client: Client, server: Any) -> None:
        holder = client.key_holder
        self.client, self.server = client, server
        self.dataset = client.upload(X, Y)
        self.model = client.train(self.dataset.dataset_id, {"epochs": 1}).model
        self.reference = client.upload_reference(np.random.default_rng(8).uniform(size=(5, 4)))
        tile = client.tile_for(X.shape)
        self.rows = holder.encrypt(X, tile=tile).to_bytes()
        self.target = holder.encrypt(Y, tile=tile).to_bytes()
        self.other_target = holder.encrypt(Y, tile=tile).to_bytes()
        self.column = holder.encrypt(X, tile=Tile(16, 1)).to_bytes()  # column-packed queries
        self.context = holder._context.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=True
        )


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with local_server(tmp_path_factory.mktemp("fuzz")) as server:
        yield Target(session_client(server.address, X.shape), server)
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING  # alive after everything
    print("\nfuzz inputs per path and statuses seen:")
    for path, seen in sorted(SEEN.items()):
        statuses = ", ".join(f"{code.name} {count}" for code, count in seen.most_common())
        print(f"  {path}: {sum(seen.values())} inputs: {statuses}")


# -- strategies ----------------------------------------------------------------------------------------
def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with up to four edits: byte flips, truncation, insertions, deletions, zeroed runs."""
    edit = st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "zeros"]),
        st.integers(0, len(data) - 1),
        st.integers(0, 255),
    )

    def apply(edits: list[tuple[str, int, int]]) -> bytes:
        out = bytearray(data)
        for kind, at, value in edits:
            at = min(at, max(len(out) - 1, 0))
            if kind == "flip" and out:
                out[at] ^= value or 1
            elif kind == "truncate":
                del out[at:]
            elif kind == "insert":
                out[at:at] = bytes([value]) * (value % 9 + 1)
            elif kind == "delete":
                del out[at : at + value + 1]
            elif kind == "zeros":
                out[at : at + value * 16] = b"\0" * len(out[at : at + value * 16])
        return bytes(out)

    # Headers are at the front: bias half of the edits there.
    head = st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "zeros"]), st.integers(0, 200), st.integers(0, 255)), max_size=3
    )
    return st.one_of(st.lists(edit, min_size=1, max_size=4), head).map(apply)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**40), 2**40).map(float),
    st.sampled_from([0.0, -1.0, 1e300, -1e300, 2.0**31, 2.0**63, 0.5, 3.0]),
)
values = st.recursive(
    st.one_of(numbers, st.text(max_size=5), st.booleans(), st.none()),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)
names = st.sampled_from(
    ["learning_rate", "epochs", "l2", "batch_size", "momentum", "init_seed", "intercept_column", "degree", "bound",
     "init", "solver", "nonsense"]
)  # fmt: skip
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
doubles = st.floats(allow_nan=True, allow_infinity=True)


def _call(path: str, action: Callable[[], Any]) -> None:
    try:
        result = action()
        if isinstance(result, Iterator):
            for _ in result:
                pass
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        assert code in ALLOWED, f"{path}: {code} {error.details()}"
    SEEN.setdefault(path, Counter())[code] += 1


# -- paths ---------------------------------------------------------------------------------------------
def fuzz_create_session(t: Target, data: Any) -> None:
    context = data.draw(mutated(t.context))
    declared = data.draw(st.one_of(st.just(len(context)), int64))
    manifest = session_service_pb2.SessionManifest(context_size_bytes=declared)
    requests = [session_service_pb2.CreateSessionRequest(manifest=manifest)]
    requests += [session_service_pb2.CreateSessionRequest(context_chunk=c.data) for c in chunks.chunks(context)]
    _call("CreateSession", lambda: t.client.sessions.CreateSession(iter(requests), timeout=60))


def fuzz_upload(t: Target, data: Any) -> None:
    features_only = data.draw(st.booleans())
    blobs = [data.draw(st.one_of(mutated(t.rows), st.just(t.rows)))]
    if not features_only:
        blobs.append(data.draw(st.one_of(mutated(t.target), st.just(t.target))))
    manifest = dataset_service_pb2.DatasetManifest(
        column_names=data.draw(st.lists(st.text(max_size=3), max_size=5)),
        shuffle_count=data.draw(st.one_of(st.just(0), int32)),
        total_size_bytes=data.draw(st.one_of(st.just(sum(map(len, blobs))), st.just(0), int64)),
        packing=data.draw(st.one_of(st.sampled_from([0, 1, 2]), int32)),
        features_only=features_only,
        reference_set=data.draw(st.booleans()),
    )
    requests = [dataset_service_pb2.UploadDatasetRequest(manifest=manifest)]
    requests += chunks.send(dataset_service_pb2.UploadDatasetRequest, "chunk", blobs)
    _call("UploadDataset", lambda: t.client.datasets.UploadDataset(iter(requests), metadata=t.client.metadata))


def fuzz_train(t: Target, data: Any) -> None:
    hyper = data.draw(st.dictionaries(names, values, max_size=4))
    hyper.setdefault("epochs", 1.0)
    if isinstance(hyper["epochs"], float) and math.isfinite(hyper["epochs"]) and hyper["epochs"] > 2:
        hyper["epochs"] = 2.0  # a valid draw trains for real: keep it short
    spec = training_service_pb2.JobSpec(
        dataset_id=data.draw(st.sampled_from([t.dataset.dataset_id, "", "nope"])),
        algorithm=data.draw(st.one_of(st.sampled_from([1, 2]), int32)),
    )
    spec.hyperparameters.update(hyper)
    request = training_service_pb2.TrainRequest(start=spec)

    def train() -> Iterator[Any]:
        return t.client.training.Train(iter([request]), metadata=t.client.metadata, timeout=120)

    # The request stream closes after `start`: a job that needs a refresh pauses (the stream then ends OK).
    _call("Train", train)


def fuzz_predict(t: Target, data: Any) -> None:
    rows = data.draw(st.one_of(mutated(t.rows), mutated(t.column), st.just(t.rows)))
    options = model_service_pb2.PredictOptions(
        model_id=data.draw(st.sampled_from([t.model.model_id, t.reference.model_id, "", "nope"])),
        server_sigmoid=data.draw(st.booleans()),
    )
    requests = [model_service_pb2.PredictRequest(options=options)]
    requests += chunks.send(model_service_pb2.PredictRequest, "rows", [rows])
    _call("Predict", lambda: t.client.models.Predict(iter(requests), metadata=t.client.metadata, timeout=60))


def fuzz_metrics(t: Target, data: Any) -> None:
    spec = compute_service_pb2.MetricsSpec(
        dataset_id=data.draw(st.sampled_from(["", t.dataset.dataset_id, "nope"])),
        mae_bound=data.draw(st.one_of(st.sampled_from([0.0, 1.0, 4.0]), doubles)),
        mae_degree=data.draw(st.one_of(st.sampled_from([0, 2, 6]), int32)),
    )
    blobs = [data.draw(st.one_of(mutated(t.target), st.just(t.target)))]
    blobs += data.draw(st.lists(st.one_of(mutated(t.target), st.just(t.other_target)), max_size=2))
    requests = [compute_service_pb2.MetricsRequest(spec=spec)]
    requests += chunks.send(compute_service_pb2.MetricsRequest, "chunk", blobs)
    _call("Metrics", lambda: t.client.compute.Metrics(iter(requests), metadata=t.client.metadata, timeout=60))


def fuzz_describe(t: Target, data: Any) -> None:
    request = compute_service_pb2.DescribeRequest(
        dataset_id=data.draw(st.sampled_from([t.dataset.dataset_id, "", "nope"])),
        ddof=data.draw(st.one_of(st.sampled_from([0, 1, 15, 16]), int32)),
        covariance=data.draw(st.booleans()),
    )
    _call("Describe", lambda: t.client.compute.Describe(request, metadata=t.client.metadata, timeout=60))


def fuzz_distances(t: Target, data: Any) -> None:
    first = data.draw(
        st.sampled_from(
            [
                compute_service_pb2.DistancesRequest(model_id=t.reference.model_id),
                compute_service_pb2.DistancesRequest(model_id=t.model.model_id),
                compute_service_pb2.DistancesRequest(reference_dataset_id=t.dataset.dataset_id),
                compute_service_pb2.DistancesRequest(),
            ]
        )
    )
    queries = data.draw(st.one_of(mutated(t.column), st.just(t.column), mutated(t.rows)))
    requests = [first, *chunks.send(compute_service_pb2.DistancesRequest, "queries", [queries])]
    _call("Distances", lambda: t.client.compute.Distances(iter(requests), metadata=t.client.metadata, timeout=60))


def fuzz_upload_model(t: Target, data: Any) -> None:
    matrix = st.builds(
        types_pb2.PlainMatrix,
        rows=st.integers(-2, 5),
        cols=st.integers(-2, 5),
        values=st.lists(doubles, max_size=12),
    )
    kind = data.draw(st.sampled_from(["linear", "logistic", "neighbors", "mlp", "none"]))
    request = model_service_pb2.UploadModelRequest()
    if kind == "linear":
        request.linear.weights.CopyFrom(data.draw(matrix))
        request.linear.bias.extend(data.draw(st.lists(doubles, max_size=3)))
    elif kind == "logistic":
        request.logistic.weights.extend(data.draw(st.lists(doubles, max_size=5)))
        request.logistic.bias = data.draw(doubles)
        request.logistic.sigmoid_degree = data.draw(st.one_of(st.sampled_from([0, 3, 5]), int32))
        request.logistic.sigmoid_bound = data.draw(doubles)
    elif kind == "neighbors":
        request.neighbors.reference.CopyFrom(data.draw(matrix))
        if data.draw(st.booleans()):
            request.neighbors.projection.CopyFrom(data.draw(matrix))
    elif kind == "mlp":
        for _ in range(data.draw(st.integers(0, 3))):
            layer = request.mlp.layers.add()
            layer.weights.CopyFrom(data.draw(matrix))
            layer.bias.extend(data.draw(st.lists(doubles, max_size=3)))
        for _ in range(data.draw(st.integers(0, 2))):
            activation = request.mlp.activations.add()
            if data.draw(st.booleans()):
                activation.polynomial.coefficients.extend(data.draw(st.lists(doubles, max_size=4)))
                activation.polynomial.bound = data.draw(doubles)
    _call("UploadModel", lambda: t.client.models.UploadModel(request, metadata=t.client.metadata, timeout=60))


PATHS = {
    "CreateSession": fuzz_create_session,
    "UploadDataset": fuzz_upload,
    "Train": fuzz_train,
    "Predict": fuzz_predict,
    "Metrics": fuzz_metrics,
    "Describe": fuzz_describe,
    "Distances": fuzz_distances,
    "UploadModel": fuzz_upload_model,
}


def _fuzz(target: Target, path: str, examples: int) -> None:
    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=False
    )
    @given(st.data())
    def run(data: Any) -> None:
        PATHS[path](target, data)

    run()


@pytest.mark.parametrize("path", PATHS)
def test_fuzz(target: Target, path: str) -> None:
    _fuzz(target, path, 40)


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_fuzz_long(target: Target, path: str) -> None:
    _fuzz(target, path, 300)
