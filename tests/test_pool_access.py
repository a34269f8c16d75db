"""Who reaches what with which token: a contributor token reaches only ContributionService (PERMISSION_DENIED
on every other RPC of every service, found by walking the service descriptors so a new RPC cannot be
missed); a session token is PERMISSION_DENIED on ContributionService; a revoked or expired invitation is
PERMISSION_DENIED naming why; another session's pool is PERMISSION_DENIED; and what a contributor downloads
is the public key alone."""

from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tenseal as ts
from pool_support import analyst_pool, contribute, status

from ciphergrad.client import Client, Contributor
from ciphergrad.client.pools import decode_invitation
from ciphergrad.wire.proto_gen.ciphergrad import v1
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2

# Every service of every contract file, found by walking the generated modules: a new one cannot be missed.
ALL_SERVICES = [
    service
    for info in pkgutil.iter_modules(v1.__path__) if info.name.endswith("_pb2")
    for service in importlib.import_module(f"{v1.__name__}.{info.name}").DESCRIPTOR.services_by_name.values()
]
SERVICES = [service for service in ALL_SERVICES if service.name != "ContributionService"]
CONTRIBUTION = pool_service_pb2.DESCRIPTOR.services_by_name["ContributionService"]
RNG = np.random.default_rng(3)
X, Y = RNG.normal(size=(40, 3)), RNG.normal(size=40)


def _message_class(descriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def _call(channel: grpc.Channel, method, token: str) -> tuple[grpc.StatusCode, str]:
    """Call ``method`` with an empty request (a one-message stream where it streams) and ``token``."""
    request_type, response_type = _message_class(method.input_type), _message_class(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    kinds = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
             (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    make = kinds[(method.client_streaming, method.server_streaming)]
    stub = make(path, request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString)
    request = iter([request_type()]) if method.client_streaming else request_type()
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        result = stub(request, metadata=metadata, timeout=30)
        if method.server_streaming:
            list(result)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with analyst_pool(Path(tmp_path_factory.mktemp("data")), 3) as (server, analyst, pool):
        yield server, analyst, pool


def test_a_contributor_token_reaches_only_contribution_service(served) -> None:
    server, analyst, pool = served
    token = decode_invitation(analyst.invite(pool.pool_id).code)["token"]
    with grpc.insecure_channel(server.address) as channel:
        methods = [method for service in SERVICES for method in service.methods]
        names = {service.name for service in SERVICES}
        assert {"SessionService", "DatasetService", "TrainingService", "ModelService", "ComputeService",
                "PoolService"} <= names
        for method in methods:
            code, details = _call(channel, method, token)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (method.full_name, code, details)
            assert "contributor token" in details and "ContributionService" in details, details


def test_a_session_token_is_refused_by_contribution_service(served) -> None:
    server, analyst, _ = served
    with grpc.insecure_channel(server.address) as channel:
        for method in CONTRIBUTION.methods:
            code, details = _call(channel, method, analyst.token)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (method.full_name, code)
            assert "session token" in details and "invitation" in details
        code, _ = _call(channel, CONTRIBUTION.methods_by_name["GetPoolSchema"], "not-a-token")
        assert code == grpc.StatusCode.UNAUTHENTICATED


def test_revoked_and_expired_invitations_are_refused_naming_why(served) -> None:
    _, analyst, pool = served
    revoked = analyst.invite(pool.pool_id, label="revoked")
    contributor = Contributor(revoked.code)
    assert contributor.schema.feature_names == ("x0", "x1", "x2")
    receipt = contributor.upload(X, Y, progress=False)
    assert analyst.revoke_invitation(revoked.invitation_id).revoked
    for call in (contributor.contributions, lambda: contributor.upload(X, Y, progress=False)):
        code, details = status(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in details
    listed = {i.invitation_id: i for i in analyst.pool(pool.pool_id).invitations}
    assert listed[revoked.invitation_id].rows == receipt.rows  # what it contributed stays
    invited = time.time()
    expiring = Contributor(analyst.invite(pool.pool_id, expires_in=3).code)
    expire_time = expiring.schema.expire_time
    assert invited + 2 < expire_time < time.time() + 3.5  # expiry itself: tests/test_access_clock.py


def test_contributors_see_only_their_own_receipts(served) -> None:
    _, analyst, pool = served
    first, second = contribute(analyst, pool, [(X[:20], Y[:20]), (X[20:], Y[20:])])
    assert [r.rows for r in first.contributions()] == [20]
    assert [r.rows for r in second.contributions()] == [20]
    mine = {r.contribution_id for r in first.contributions()}
    assert mine.isdisjoint(r.contribution_id for r in second.contributions())


def test_another_session_cannot_touch_the_pool(served) -> None:
    server, _analyst, pool = served
    other = Client(server.address)
    other.create_pool("mine", ["a"], "b")
    for call in (lambda: other.pool(pool.pool_id), lambda: other.invite(pool.pool_id),
                 lambda: other.pool_statistics(pool.pool_id), lambda: other.delete_pool(pool.pool_id),
                 lambda: other.train(pool_id=pool.pool_id, config={"epochs": 1})):
        code, details = status(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "another session" in details
    assert [p.pool_id for p in other.pools()] != [pool.pool_id]
    other.close()


def test_contributors_download_the_public_key_alone(served) -> None:
    _, analyst, pool = served
    contributor = Contributor(analyst.invite(pool.pool_id).code)
    schema = contributor.schema
    context = ts.context_from(contributor._engine.context.serialize())
    assert context.has_public_key() and not context.has_secret_key()
    assert not context.has_galois_keys() and not context.has_relin_keys()
    full = len(analyst.key_holder.public_context())
    assert schema.context_bytes < full / 4  # no evaluation keys (a pool session makes no Galois keys at all)
    assert schema.parameters == analyst.key_holder.params


def test_deleting_the_session_deletes_its_pools(tmp_path: Path) -> None:
    with analyst_pool(tmp_path, 2) as (server, analyst, pool):
        contributor = contribute(analyst, pool, [(X[:10, :2], Y[:10])])[0]
        pool_dir = server.store.pools.pool_dir(analyst.session_id, pool.pool_id)
        assert any(pool_dir.iterdir())
        analyst.delete_session()
        assert server.store.pools.get(pool.pool_id) is None and not pool_dir.exists()
        code, _ = status(contributor.contributions)
        assert code == grpc.StatusCode.UNAUTHENTICATED  # the invitation went with the pool
