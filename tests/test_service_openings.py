"""The opening of every client-streaming RPC (``server.rpc.work.Work.open_stream``): a stream that ends before its
first message, one whose first message sets no ``kind`` and one whose first message is of another kind are
each INVALID_ARGUMENT with that servicer's own sentence naming what to send first. The methods are found by
walking the contract, so a new streaming RPC without a pinned sentence fails here."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from pool_support import analyst_pool

from ciphergrad.client.pools import decode_invitation
from ciphergrad.wire.proto_gen.ciphergrad import v1

STREAMING = [
    method
    for info in pkgutil.iter_modules(v1.__path__) if info.name.endswith("_pb2")
    for service in importlib.import_module(f"{v1.__name__}.{info.name}").DESCRIPTOR.services_by_name.values()
    for method in service.methods if method.client_streaming
]

# What each stream must open with, and the sentence that says so (clients and users read these).
OPENINGS = {
    "ciphergrad.v1.SessionService.CreateSession": (
        {"manifest"}, "CreateSession: send a SessionManifest first, then the context in chunks"),
    "ciphergrad.v1.DatasetService.UploadDataset": (
        {"manifest"}, "UploadDataset: send a DatasetManifest first, then the matrices' chunks"),
    "ciphergrad.v1.TrainingService.Train": (
        {"start", "attach"}, "the first TrainRequest must be `start` (a new job) or `attach` (resume a job)"),
    "ciphergrad.v1.ModelService.Predict": (
        {"model_id", "options"}, "Predict: send the model_id (or options) first, then batches of encrypted rows"),
    "ciphergrad.v1.ComputeService.Metrics": (
        {"spec"}, "Metrics: send a MetricsSpec first, then the predictions (and targets) as chunks"),
    "ciphergrad.v1.ComputeService.Distances": (
        {"reference_dataset_id", "model_id"},
        "Distances: send the reference set first (model_id of a plaintext one, or reference_dataset_id of one "
        "the client encrypted), then batches of encrypted queries"),
    "ciphergrad.v1.ContributionService.Contribute": (
        {"manifest"}, "Contribute: send a ContributionManifest first, then the statistics' chunks"),
}


def _wrong_first(request_type, allowed: set[str]):
    """A message whose ``kind`` is set to a member other than ``allowed`` (an empty value of it)."""
    kinds = request_type.DESCRIPTOR.oneofs_by_name["kind"].fields
    other = next(field for field in kinds if field.name not in allowed)
    message = request_type()
    if other.message_type is not None:
        getattr(message, other.name).SetInParent()
    else:
        setattr(message, other.name, type(getattr(message, other.name))())
    assert message.WhichOneof("kind") == other.name
    return message


def _status(channel: grpc.Channel, method, requests: list, token: str) -> tuple[grpc.StatusCode, str]:
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    make = channel.stream_stream if method.server_streaming else channel.stream_unary
    stub = make(path, request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString)
    try:
        result = stub(iter(requests), metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        if method.server_streaming:
            list(result)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with analyst_pool(Path(tmp_path_factory.mktemp("data")), 2) as (server, analyst, pool):
        contributor_token = decode_invitation(analyst.invite(pool.pool_id).code)["token"]
        yield server.address, analyst.token, contributor_token


def test_every_streaming_rpc_has_its_opening_pinned() -> None:
    assert {method.full_name for method in STREAMING} == set(OPENINGS)


@pytest.mark.parametrize("method", STREAMING, ids=lambda method: method.name)
def test_a_stream_without_its_first_message_is_refused_naming_it(served, method) -> None:
    address, session_token, contributor_token = served
    token = contributor_token if method.containing_service.name == "ContributionService" else session_token
    allowed, refusal = OPENINGS[method.full_name]
    request_type = message_factory.GetMessageClass(method.input_type)
    with grpc.insecure_channel(address) as channel:
        for requests in ([], [request_type()], [_wrong_first(request_type, allowed)]):
            code, details = _status(channel, method, requests, token)
            assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, refusal), (method.name, requests)
