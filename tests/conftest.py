"""Shared fixtures: one key holder on small parameters for the whole session, and the computing party's
engine built from its public context only (as it would be on the other side of the wire)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ciphergrad.core import EncryptedMatrix, Engine, KeyHolder, plan

# The hostile clients (benchmarks/hostile_clients.py) serve benchmarks/hostile.py and the service tests alike.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.fixture(scope="session")
def params():
    """``plan(3)``: N=8192 (4096 slots), chain [49, 40, 40, 40, 49], three multiplicative levels."""
    return plan(3)


@pytest.fixture(scope="session")
def kh(params):
    """The key holder (secret key), with Galois keys for every power-of-two rotation."""
    return KeyHolder(params)


@pytest.fixture(scope="session")
def public_context(kh):
    return kh.public_context()


@pytest.fixture(scope="session")
def engine(public_context):
    """The computing party's engine: public key, relinearization and Galois keys, no secret."""
    return Engine.from_public_context(public_context)


@pytest.fixture(scope="session")
def enc(engine):
    """Encrypt on the computing side (public key only)."""

    def encrypt(array, **kwargs) -> EncryptedMatrix:
        return EncryptedMatrix.encrypt(engine, np.asarray(array, dtype=np.float64), **kwargs)

    return encrypt


@pytest.fixture(scope="session")
def dec(kh):
    """Decrypt with the key holder's secret key (works on matrices of the public engine: same parameters)."""
    return kh.decrypt


@pytest.fixture
def refresh(kh, engine):
    """The key holder's refresh round trip, through bytes (what a server's refresh callable does)."""

    def call(matrix: EncryptedMatrix) -> EncryptedMatrix:
        answer = kh.refresh(EncryptedMatrix.from_bytes(kh.engine, matrix.to_bytes()))
        return EncryptedMatrix.from_bytes(engine, answer.to_bytes())

    return call


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory):
    """A module's one server on a local Ray of two workers, and its data directory (the front-end and job
    tests; tests/test_service_ray.py has its own, which counts the shards it opens)."""
    from service_support import local_server

    data_dir = Path(tmp_path_factory.mktemp("ray-server"))
    with local_server(data_dir, executor="ray", ray_num_cpus=2, workers=2) as server:
        yield server, data_dir


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the context loads and ciphertext parses of the server's threads in this process
    (``ray_front_support.count_server_parses``)."""
    from ray_front_support import count_server_parses

    return count_server_parses(monkeypatch)
