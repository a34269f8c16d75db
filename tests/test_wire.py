"""The wire layer: the typed matrix codec, checkpoints and the chunked stream, both directions."""

from __future__ import annotations

import numpy as np
import pytest

from ciphergrad.core import Tile
from ciphergrad.core.errors import MalformedInputError, ShapeError
from ciphergrad.wire import chunks, codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2, types_pb2


def test_matrix_round_trip_keeps_values_and_layout(kh, engine):
    x = np.arange(12.0).reshape(3, 4) / 10
    matrix = kh.encrypt(x, tile=Tile(4, 4))
    message = types_pb2.EncryptedMatrix.FromString(codec.matrix_to_proto(matrix).SerializeToString())
    assert (message.header.rows, message.header.cols, message.header.tile_cols) == (3, 4, 4)
    back = codec.matrix_from_proto(engine, message)
    assert back.shape == matrix.shape and back.tile == matrix.tile and back.level == matrix.level
    assert np.max(np.abs(kh.decrypt(back) - x)) < 1e-6


def test_malformed_matrix_messages_say_what_is_wrong(kh, engine):
    with pytest.raises(MalformedInputError, match="header is missing"):
        codec.matrix_from_proto(engine, types_pb2.EncryptedMatrix())
    message = codec.matrix_to_proto(kh.encrypt(np.ones((2, 2))))
    message.header.format = "something else"
    with pytest.raises(MalformedInputError, match="format"):
        codec.matrix_from_proto(engine, message)
    message = codec.matrix_to_proto(kh.encrypt(np.ones((2, 2))))
    del message.ciphertexts[:]
    with pytest.raises(ShapeError, match="ciphertexts"):
        codec.matrix_from_proto(engine, message)


def test_checkpoint_round_trip(kh, engine):
    weights = kh.encrypt(np.array([[0.5, -0.25]]))
    data = codec.checkpoint_to_bytes({"epoch": 7, "weights": weights, "velocity": None, "rate": 0.125})
    state = codec.checkpoint_from_bytes(engine, data)
    assert state["epoch"] == 7 and isinstance(state["epoch"], int)
    assert state["velocity"] is None and state["rate"] == 0.125
    assert np.max(np.abs(kh.decrypt(state["weights"]) - [[0.5, -0.25]])) < 1e-6
    with pytest.raises(MalformedInputError, match="checkpoint"):
        codec.checkpoint_from_bytes(engine, b"\xff\xff\xff")
    with pytest.raises(TypeError, match="'weights' is a bytes"):
        codec.checkpoint_to_bytes({"weights": weights.to_bytes()})


def test_plain_matrix_checks_its_shape():
    message = codec.plain_to_proto(np.ones((2, 3)))
    assert codec.plain_from_proto(message, "w").shape == (2, 3)
    message.rows = 4
    with pytest.raises(ShapeError, match="4x3"):
        codec.plain_from_proto(message, "w")


def test_chunks_reassemble_each_matrix_and_refuse_strays():
    blobs = [b"a" * 10, b"", b"b" * 25]
    messages = list(chunks.send(model_service_pb2.PredictRequest, "rows", blobs))
    assert len(messages) == 3 and all(m.rows.last for m in messages)  # one chunk each at the default size
    sized = [model_service_pb2.PredictRequest(rows=c) for b in blobs for c in chunks.chunks(b, size=4)]
    assert len(sized) == 3 + 1 + 7
    assert list(chunks.receive(iter(sized), "rows", "rows")) == blobs
    spent: list[int] = []
    list(chunks.receive(iter(sized), "rows", "rows", spent.append))
    assert sum(spent) == 35
    with pytest.raises(MalformedInputError, match="expected a `rows` message, got `model_id`"):
        list(chunks.receive(iter([model_service_pb2.PredictRequest(model_id="x")]), "rows", "rows"))
    with pytest.raises(MalformedInputError, match="before the chunk marked `last`"):
        list(chunks.receive(iter(sized[:2]), "rows", "rows"))
