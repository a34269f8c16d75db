from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2 as _types_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ("dataset_id", "ddof", "covariance")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DDOF_FIELD_NUMBER: _ClassVar[int]
    COVARIANCE_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    ddof: int
    covariance: bool
    def __init__(self, dataset_id: _Optional[str] = ..., ddof: _Optional[int] = ..., covariance: _Optional[bool] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("statistic", "value")
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    statistic: str
    value: _types_pb2.EncryptedMatrix
    def __init__(self, statistic: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ...) -> None: ...

class MetricsSpec(_message.Message):
    __slots__ = ("dataset_id", "mae_bound", "mae_degree")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    MAE_BOUND_FIELD_NUMBER: _ClassVar[int]
    MAE_DEGREE_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    mae_bound: float
    mae_degree: int
    def __init__(self, dataset_id: _Optional[str] = ..., mae_bound: _Optional[float] = ..., mae_degree: _Optional[int] = ...) -> None: ...

class MetricsRequest(_message.Message):
    __slots__ = ("spec", "chunk")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    spec: MetricsSpec
    chunk: _types_pb2.MatrixChunk
    def __init__(self, spec: _Optional[_Union[MetricsSpec, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.MatrixChunk, _Mapping]] = ...) -> None: ...

class MetricsResponse(_message.Message):
    __slots__ = ("metric", "value", "max_error")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_FIELD_NUMBER: _ClassVar[int]
    metric: str
    value: _types_pb2.EncryptedMatrix
    max_error: float
    def __init__(self, metric: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., max_error: _Optional[float] = ...) -> None: ...

class DistancesRequest(_message.Message):
    __slots__ = ("model_id", "queries", "reference_dataset_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    queries: _types_pb2.MatrixChunk
    reference_dataset_id: str
    def __init__(self, model_id: _Optional[str] = ..., queries: _Optional[_Union[_types_pb2.MatrixChunk, _Mapping]] = ..., reference_dataset_id: _Optional[str] = ...) -> None: ...

class DistancesResponse(_message.Message):
    __slots__ = ("distances",)
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    distances: _types_pb2.MatrixChunk
    def __init__(self, distances: _Optional[_Union[_types_pb2.MatrixChunk, _Mapping]] = ...) -> None: ...
