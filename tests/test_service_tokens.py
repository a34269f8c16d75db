"""Session tokens: compared in constant time, optional expiry (--token-ttl), revocation (RevokeToken)."""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import local_server, session_client

from ciphergrad.client.sdk import Client
from ciphergrad.server.config import parse_args
from ciphergrad.server.rpc import auth

X = np.hstack([np.ones((16, 1)), np.random.default_rng(5).uniform(size=(16, 3))])
Y = X @ np.array([0.2, -0.1, 0.4, 0.3])


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_revoke_token_ends_the_old_token_and_keeps_the_session(tmp_path: Path) -> None:
    with local_server(tmp_path) as server:
        client = session_client(server.address, X.shape)
        dataset = client.upload(X, Y)
        old = Client(server.address)
        old.use_session(client.session_id, client.token, client.key_holder)
        new_token = client.revoke_token()
        assert new_token != old.token
        code, details = _code(old.list_datasets)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
        assert [d.dataset_id for d in client.list_datasets()] == [dataset.dataset_id]
        assert client.train(dataset.dataset_id, {"epochs": 1}).model is not None


def test_token_comparison_is_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    with local_server(tmp_path) as server:
        client = session_client(server.address, X.shape)
        client.list_datasets()
        assert compared and compared[-1][0] == auth.token_hash(client.token).encode()


def test_token_ttl_flag_and_environment() -> None:
    assert parse_args([]).token_ttl == 0.0
    assert parse_args(["--token-ttl", "3600"]).token_ttl == 3600.0
    assert parse_args([], env={"CIPHERGRAD_TOKEN_TTL": "60"}).token_ttl == 60.0
    with pytest.raises(SystemExit):
        parse_args(["--token-ttl", "-1"])
