"""Shared helpers for the pool tests: a server with an analyst's pool, contributors, gRPC status checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import local_server

from ciphergrad.client import Client, Contributor
from ciphergrad.client.pools import PoolInfo


@contextmanager
def analyst_pool(data_dir: Path, features: int, **settings: object) -> Iterator[tuple[object, Client, PoolInfo]]:
    """A running server, an analyst client (keys made for the pool) and a pool of ``features`` columns."""
    with local_server(data_dir, **settings) as server:
        analyst = Client(server.address)
        pool = analyst.create_pool("test pool", [f"x{i}" for i in range(features)], "target")
        try:
            yield server, analyst, pool
        finally:
            analyst.close()


def contribute(analyst: Client, pool: PoolInfo, parts: list[tuple[np.ndarray, np.ndarray]]) -> list[Contributor]:
    """One invitation and one contribution per part; the contributors (still open) in order."""
    contributors = []
    for index, (X, y) in enumerate(parts):
        contributor = Contributor(analyst.invite(pool.pool_id, label=f"party {index}").code)
        contributor.upload(X, y, progress=False)
        contributors.append(contributor)
    return contributors


def status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()
