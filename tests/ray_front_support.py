"""What the ``--executor ray`` front-end tests share (tests/test_service_ray_front.py): a guard that counts the
context loads and ciphertext parses of the server's threads in this process, and bad-input helpers."""

from __future__ import annotations

import io
import threading

import grpc
import pytest

from ciphergrad.core import flat
from ciphergrad.core.engine import Engine


def count_server_parses(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts context loads and ciphertext parses in this (the server's) process, by the server's threads: the
    test's client runs in the main thread (it decrypts the answers), the server's gRPC loop and pools in others."""
    counts = {"contexts": 0, "ciphertexts": 0}
    load, parse = Engine.from_public_context.__func__, Engine.ciphertext_from_bytes

    def server_side() -> bool:
        return threading.current_thread() is not threading.main_thread()

    def counted_load(cls: type, data: bytes) -> Engine:
        counts["contexts"] += server_side()
        return load(cls, data)

    def counted_parse(self: Engine, data: bytes) -> object:
        counts["ciphertexts"] += server_side()
        return parse(self, data)

    monkeypatch.setattr(Engine, "from_public_context", classmethod(counted_load))
    monkeypatch.setattr(Engine, "ciphertext_from_bytes", counted_parse)
    return counts


def refused(call) -> grpc.RpcError:
    """The error of ``call()``, which must be INVALID_ARGUMENT."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value


def corrupt(matrix: bytes) -> bytes:
    """A serialized matrix with its first ciphertext zeroed: SEAL refuses it on load."""
    header, blobs = flat.read(io.BytesIO(matrix))
    blobs = list(blobs)
    blobs[0] = bytes(len(blobs[0]))
    return b"".join(flat.pieces(header, blobs))
