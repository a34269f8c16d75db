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
