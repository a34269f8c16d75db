from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

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
    __slots__ = ("ciphertexts", "header")
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    header: MatrixHeader
    def __init__(self, ciphertexts: _Optional[_Iterable[bytes]] = ..., header: _Optional[_Union[MatrixHeader, _Mapping]] = ...) -> None: ...

class MatrixHeader(_message.Message):
    __slots__ = ("format", "rows", "cols", "tile_rows", "tile_cols", "grid_rows", "grid_cols", "zero_padded_rows", "zero_padded_cols", "level")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    TILE_ROWS_FIELD_NUMBER: _ClassVar[int]
    TILE_COLS_FIELD_NUMBER: _ClassVar[int]
    GRID_ROWS_FIELD_NUMBER: _ClassVar[int]
    GRID_COLS_FIELD_NUMBER: _ClassVar[int]
    ZERO_PADDED_ROWS_FIELD_NUMBER: _ClassVar[int]
    ZERO_PADDED_COLS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    format: str
    rows: int
    cols: int
    tile_rows: int
    tile_cols: int
    grid_rows: int
    grid_cols: int
    zero_padded_rows: bool
    zero_padded_cols: bool
    level: int
    def __init__(self, format: _Optional[str] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ..., tile_rows: _Optional[int] = ..., tile_cols: _Optional[int] = ..., grid_rows: _Optional[int] = ..., grid_cols: _Optional[int] = ..., zero_padded_rows: _Optional[bool] = ..., zero_padded_cols: _Optional[bool] = ..., level: _Optional[int] = ...) -> None: ...

class TrainerCheckpoint(_message.Message):
    __slots__ = ("scalars", "matrices")
    class MatricesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: EncryptedMatrix
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[EncryptedMatrix, _Mapping]] = ...) -> None: ...
    SCALARS_FIELD_NUMBER: _ClassVar[int]
    MATRICES_FIELD_NUMBER: _ClassVar[int]
    scalars: _struct_pb2.Struct
    matrices: _containers.MessageMap[str, EncryptedMatrix]
    def __init__(self, scalars: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., matrices: _Optional[_Mapping[str, EncryptedMatrix]] = ...) -> None: ...

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
