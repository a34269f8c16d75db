from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    ALGORITHM_LINEAR_REGRESSION: _ClassVar[Algorithm]
    ALGORITHM_LOGISTIC_REGRESSION: _ClassVar[Algorithm]
    ALGORITHM_MLP: _ClassVar[Algorithm]
    ALGORITHM_NEAREST_NEIGHBORS: _ClassVar[Algorithm]

class Packing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACKING_UNSPECIFIED: _ClassVar[Packing]
    PACKING_ROWS: _ClassVar[Packing]
    PACKING_COLUMNS: _ClassVar[Packing]
ALGORITHM_UNSPECIFIED: Algorithm
ALGORITHM_LINEAR_REGRESSION: Algorithm
ALGORITHM_LOGISTIC_REGRESSION: Algorithm
ALGORITHM_MLP: Algorithm
ALGORITHM_NEAREST_NEIGHBORS: Algorithm
PACKING_UNSPECIFIED: Packing
PACKING_ROWS: Packing
PACKING_COLUMNS: Packing

class CkksParameters(_message.Message):
    __slots__ = ("poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits")
    POLY_MODULUS_DEGREE_FIELD_NUMBER: _ClassVar[int]
    COEFF_MOD_BIT_SIZES_FIELD_NUMBER: _ClassVar[int]
    SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    poly_modulus_degree: int
    coeff_mod_bit_sizes: _containers.RepeatedScalarFieldContainer[int]
    scale_bits: int
    def __init__(self, poly_modulus_degree: _Optional[int] = ..., coeff_mod_bit_sizes: _Optional[_Iterable[int]] = ..., scale_bits: _Optional[int] = ...) -> None: ...

class EncryptedMatrix(_message.Message):
    __slots__ = ("header_json", "ciphertexts")
    HEADER_JSON_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    header_json: str
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header_json: _Optional[str] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class MatrixChunk(_message.Message):
    __slots__ = ("data", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class PlainMatrix(_message.Message):
    __slots__ = ("rows", "cols", "values")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...
