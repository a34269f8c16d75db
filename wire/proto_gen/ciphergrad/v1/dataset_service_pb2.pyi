import datetime

from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2 as _types_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadDatasetRequest(_message.Message):
    __slots__ = ("manifest", "chunk")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    manifest: DatasetManifest
    chunk: _types_pb2.MatrixChunk
    def __init__(self, manifest: _Optional[_Union[DatasetManifest, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.MatrixChunk, _Mapping]] = ...) -> None: ...

class DatasetManifest(_message.Message):
    __slots__ = ("display_name", "column_names", "shuffle_count", "total_size_bytes", "packing", "features_only", "reference_set")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMN_NAMES_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    FEATURES_ONLY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    column_names: _containers.RepeatedScalarFieldContainer[str]
    shuffle_count: int
    total_size_bytes: int
    packing: _types_pb2.Packing
    features_only: bool
    reference_set: bool
    def __init__(self, display_name: _Optional[str] = ..., column_names: _Optional[_Iterable[str]] = ..., shuffle_count: _Optional[int] = ..., total_size_bytes: _Optional[int] = ..., packing: _Optional[_Union[_types_pb2.Packing, str]] = ..., features_only: _Optional[bool] = ..., reference_set: _Optional[bool] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("dataset_id", "display_name", "column_names", "rows", "columns", "shuffle_count", "size_bytes", "level", "create_time", "packing", "tile_rows", "tile_cols", "features_only", "reference_set")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMN_NAMES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    TILE_ROWS_FIELD_NUMBER: _ClassVar[int]
    TILE_COLS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_ONLY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    display_name: str
    column_names: _containers.RepeatedScalarFieldContainer[str]
    rows: int
    columns: int
    shuffle_count: int
    size_bytes: int
    level: int
    create_time: _timestamp_pb2.Timestamp
    packing: _types_pb2.Packing
    tile_rows: int
    tile_cols: int
    features_only: bool
    reference_set: bool
    def __init__(self, dataset_id: _Optional[str] = ..., display_name: _Optional[str] = ..., column_names: _Optional[_Iterable[str]] = ..., rows: _Optional[int] = ..., columns: _Optional[int] = ..., shuffle_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., level: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., packing: _Optional[_Union[_types_pb2.Packing, str]] = ..., tile_rows: _Optional[int] = ..., tile_cols: _Optional[int] = ..., features_only: _Optional[bool] = ..., reference_set: _Optional[bool] = ...) -> None: ...

class UploadDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
