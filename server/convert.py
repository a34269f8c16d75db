"""Protobuf <-> core conversions shared by the servicers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from core.engine import Engine
from core.errors import MalformedInputError
from core.params import CKKSParameters
from core.tensor import EncryptedMatrix
from server.proto_gen.ciphergrad.v1 import types_pb2

# Well under gRPC's 4 MB default so that chunks pass any proxy with default limits.
CHUNK_BYTES = 1 << 20


def matrix_to_proto(matrix: EncryptedMatrix) -> types_pb2.EncryptedMatrix:
    return types_pb2.EncryptedMatrix(header_json=json.dumps(matrix.header()), ciphertexts=matrix.blobs())


def matrix_from_proto(engine: Engine, message: types_pb2.EncryptedMatrix) -> EncryptedMatrix:
    try:
        header = json.loads(message.header_json)
    except json.JSONDecodeError as exc:
        raise MalformedInputError(f"EncryptedMatrix.header_json is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedInputError("EncryptedMatrix.header_json must be a JSON object")
    return EncryptedMatrix.from_parts(engine, header, list(message.ciphertexts))


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[types_pb2.MatrixChunk]:
    """``data`` as MatrixChunks, the last one flagged (an empty matrix still sends one chunk)."""
    view = memoryview(data)
    for start in range(0, max(len(view), 1), size):
        end = start + size
        yield types_pb2.MatrixChunk(data=bytes(view[start:end]), last=end >= len(view))


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


def config_from_struct(struct: struct_pb2.Struct, config_type: type) -> Any:
    """Build a core config dataclass from a Struct, whose numbers are all doubles on the wire."""
    values = json_format.MessageToDict(struct)
    fields = {f.name: str(f.type) for f in dataclasses.fields(config_type)}
    for name, value in list(values.items()):
        kind = fields.get(name, "")
        if isinstance(value, float) and "int" in kind and "float" not in kind:
            if not value.is_integer():
                raise MalformedInputError(f"hyperparameter {name}={value} must be a whole number")
            values[name] = int(value)
    return config_type.from_dict(values)
