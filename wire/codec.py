"""The one codec between core objects and protobuf messages, for both sides of the API.

An encrypted matrix has one structured form on the wire, ``EncryptedMatrix`` (a typed ``MatrixHeader`` plus
one SEAL ciphertext per tile), and one flat form, ``core.tensor.EncryptedMatrix.to_bytes()``, which chunked
streams and the server's blob store carry. Both hold exactly ``EncryptedMatrix.header()``; a checkpoint is a
``TrainerCheckpoint`` message whose matrices use the structured form. Decoding validates: a malformed
message raises ``core.errors.MalformedInputError`` (or ``ShapeError``) naming the field, never a crash.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import DecodeError

from ciphergrad.core import algorithms
from ciphergrad.core.algorithms import Algorithm
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import MalformedInputError, ShapeError
from ciphergrad.core.flat import FlatMatrix
from ciphergrad.core.params import CKKSParameters
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2


# -- encrypted matrices ---------------------------------------------------------------------------------
def header_to_proto(header: dict[str, Any]) -> types_pb2.MatrixHeader:
    return types_pb2.MatrixHeader(
        format=header["format"],
        rows=header["shape"][0],
        cols=header["shape"][1],
        tile_rows=header["tile"][0],
        tile_cols=header["tile"][1],
        grid_rows=header["grid"][0],
        grid_cols=header["grid"][1],
        zero_padded_rows=header["zero_padding"][0],
        zero_padded_cols=header["zero_padding"][1],
        level=header["level"],
    )


def header_from_proto(message: types_pb2.MatrixHeader) -> dict[str, Any]:
    return {
        "format": message.format,
        "shape": [message.rows, message.cols],
        "tile": [message.tile_rows, message.tile_cols],
        "grid": [message.grid_rows, message.grid_cols],
        "zero_padding": [message.zero_padded_rows, message.zero_padded_cols],
        "level": message.level,
    }


def matrix_to_proto(matrix: EncryptedMatrix | FlatMatrix) -> types_pb2.EncryptedMatrix:
    return types_pb2.EncryptedMatrix(header=header_to_proto(matrix.header()), ciphertexts=matrix.blobs())


def matrix_from_proto(engine: Engine, message: types_pb2.EncryptedMatrix) -> EncryptedMatrix:
    """The matrix, its ciphertexts checked against ``engine``'s context."""
    if not message.HasField("header"):
        raise MalformedInputError("EncryptedMatrix.header is missing: set shape, tile and format")
    return EncryptedMatrix.from_parts(engine, header_from_proto(message.header), list(message.ciphertexts))


def has_matrix(message: types_pb2.EncryptedMatrix) -> bool:
    """Whether an optional EncryptedMatrix field was filled (an epoch without a loss leaves it empty)."""
    return message.HasField("header")


# -- plaintext matrices ---------------------------------------------------------------------------------
def plain_to_proto(array: Any) -> types_pb2.PlainMatrix:
    array = np.asarray(array, dtype=np.float64)
    return types_pb2.PlainMatrix(rows=array.shape[0], cols=array.shape[1], values=array.reshape(-1).tolist())


def plain_from_proto(message: types_pb2.PlainMatrix, what: str) -> np.ndarray:
    values = np.asarray(message.values, dtype=np.float64)
    if message.rows < 1 or message.cols < 1 or values.size != message.rows * message.cols:
        raise ShapeError(f"{what}: {values.size} values do not fill a {message.rows}x{message.cols} matrix (row-major)")
    if not np.all(np.isfinite(values)):
        raise MalformedInputError(f"{what} contains NaN or infinity")
    return values.reshape(message.rows, message.cols)


# -- parameters, times, hyperparameters -----------------------------------------------------------------
def params_to_proto(params: CKKSParameters) -> types_pb2.CkksParameters:
    return types_pb2.CkksParameters(
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        scale_bits=params.scale_bits,
    )


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def struct_from_dict(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


# -- trainer checkpoints --------------------------------------------------------------------------------
def checkpoint_to_bytes(state: dict[str, Any]) -> bytes:
    """A trainer's ``state()``: encrypted matrices (parsed, or ``FlatMatrix``) in their wire form, everything
    else (numbers, None) as scalars."""
    message = types_pb2.TrainerCheckpoint()
    scalars = {}
    for key, value in state.items():
        if isinstance(value, EncryptedMatrix | FlatMatrix):
            message.matrices[key].CopyFrom(matrix_to_proto(value))
        elif value is None or isinstance(value, bool | int | float | str):
            scalars[key] = value
        else:
            raise TypeError(
                f"trainer state {key!r} is a {type(value).__name__}: a checkpoint holds EncryptedMatrix values, "
                "numbers, strings and None"
            )
    message.scalars.update(scalars)
    return message.SerializeToString()


def checkpoint_from_bytes(engine: Engine, data: bytes) -> dict[str, Any]:
    """The state ``checkpoint_to_bytes`` stored, matrices bound to ``engine``; whole numbers come back as int."""
    message = types_pb2.TrainerCheckpoint()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedInputError(f"corrupt trainer checkpoint: {exc}") from exc
    state: dict[str, Any] = {
        key: int(value) if isinstance(value, float) and value.is_integer() else value
        for key, value in json_format.MessageToDict(message.scalars).items()
    }
    for key, matrix in message.matrices.items():
        state[key] = matrix_from_proto(engine, matrix)
    return state


# -- algorithms -----------------------------------------------------------------------------------------
def algorithm_to_proto(entry: Algorithm) -> int:
    return types_pb2.Algorithm.Value(entry.wire_name)


def algorithm_from_proto(value: int) -> Algorithm | None:
    """The trainable algorithm an enum value names (None: unknown, or not trainable)."""
    try:
        return algorithms.by_wire_name(types_pb2.Algorithm.Name(value))
    except ValueError:
        return None
