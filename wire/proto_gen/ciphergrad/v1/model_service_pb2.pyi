import datetime

from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2 as _types_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Model(_message.Message):
    __slots__ = ("model_id", "job_id", "dataset_id", "algorithm", "weights", "weight_scale", "column_names", "create_time", "metadata_json", "server_owned", "input_columns", "output_columns", "display_name")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SCALE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_NAMES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    SERVER_OWNED_FIELD_NUMBER: _ClassVar[int]
    INPUT_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    job_id: str
    dataset_id: str
    algorithm: _types_pb2.Algorithm
    weights: _types_pb2.EncryptedMatrix
    weight_scale: float
    column_names: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    metadata_json: str
    server_owned: bool
    input_columns: int
    output_columns: int
    display_name: str
    def __init__(self, model_id: _Optional[str] = ..., job_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., algorithm: _Optional[_Union[_types_pb2.Algorithm, str]] = ..., weights: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., weight_scale: _Optional[float] = ..., column_names: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata_json: _Optional[str] = ..., server_owned: _Optional[bool] = ..., input_columns: _Optional[int] = ..., output_columns: _Optional[int] = ..., display_name: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model_id", "rows", "options")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    rows: _types_pb2.MatrixChunk
    options: PredictOptions
    def __init__(self, model_id: _Optional[str] = ..., rows: _Optional[_Union[_types_pb2.MatrixChunk, _Mapping]] = ..., options: _Optional[_Union[PredictOptions, _Mapping]] = ...) -> None: ...

class PredictOptions(_message.Message):
    __slots__ = ("model_id", "server_sigmoid")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_SIGMOID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    server_sigmoid: bool
    def __init__(self, model_id: _Optional[str] = ..., server_sigmoid: _Optional[bool] = ...) -> None: ...

class Polynomial(_message.Message):
    __slots__ = ("coefficients", "bound", "name", "max_error")
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_FIELD_NUMBER: _ClassVar[int]
    coefficients: _containers.RepeatedScalarFieldContainer[float]
    bound: float
    name: str
    max_error: float
    def __init__(self, coefficients: _Optional[_Iterable[float]] = ..., bound: _Optional[float] = ..., name: _Optional[str] = ..., max_error: _Optional[float] = ...) -> None: ...

class LinearModel(_message.Message):
    __slots__ = ("weights", "bias")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    weights: _types_pb2.PlainMatrix
    bias: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, weights: _Optional[_Union[_types_pb2.PlainMatrix, _Mapping]] = ..., bias: _Optional[_Iterable[float]] = ...) -> None: ...

class LogisticModel(_message.Message):
    __slots__ = ("weights", "bias", "sigmoid_degree", "sigmoid_bound")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    SIGMOID_DEGREE_FIELD_NUMBER: _ClassVar[int]
    SIGMOID_BOUND_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedScalarFieldContainer[float]
    bias: float
    sigmoid_degree: int
    sigmoid_bound: float
    def __init__(self, weights: _Optional[_Iterable[float]] = ..., bias: _Optional[float] = ..., sigmoid_degree: _Optional[int] = ..., sigmoid_bound: _Optional[float] = ...) -> None: ...

class MlpLayer(_message.Message):
    __slots__ = ("weights", "bias")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    weights: _types_pb2.PlainMatrix
    bias: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, weights: _Optional[_Union[_types_pb2.PlainMatrix, _Mapping]] = ..., bias: _Optional[_Iterable[float]] = ...) -> None: ...

class MlpActivation(_message.Message):
    __slots__ = ("polynomial",)
    POLYNOMIAL_FIELD_NUMBER: _ClassVar[int]
    polynomial: Polynomial
    def __init__(self, polynomial: _Optional[_Union[Polynomial, _Mapping]] = ...) -> None: ...

class MlpModel(_message.Message):
    __slots__ = ("layers", "activations")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[MlpLayer]
    activations: _containers.RepeatedCompositeFieldContainer[MlpActivation]
    def __init__(self, layers: _Optional[_Iterable[_Union[MlpLayer, _Mapping]]] = ..., activations: _Optional[_Iterable[_Union[MlpActivation, _Mapping]]] = ...) -> None: ...

class NeighborsModel(_message.Message):
    __slots__ = ("reference", "projection")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    reference: _types_pb2.PlainMatrix
    projection: _types_pb2.PlainMatrix
    def __init__(self, reference: _Optional[_Union[_types_pb2.PlainMatrix, _Mapping]] = ..., projection: _Optional[_Union[_types_pb2.PlainMatrix, _Mapping]] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("display_name", "linear", "logistic", "mlp", "neighbors")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LINEAR_FIELD_NUMBER: _ClassVar[int]
    LOGISTIC_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    linear: LinearModel
    logistic: LogisticModel
    mlp: MlpModel
    neighbors: NeighborsModel
    def __init__(self, display_name: _Optional[str] = ..., linear: _Optional[_Union[LinearModel, _Mapping]] = ..., logistic: _Optional[_Union[LogisticModel, _Mapping]] = ..., mlp: _Optional[_Union[MlpModel, _Mapping]] = ..., neighbors: _Optional[_Union[NeighborsModel, _Mapping]] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _types_pb2.MatrixChunk
    def __init__(self, predictions: _Optional[_Union[_types_pb2.MatrixChunk, _Mapping]] = ...) -> None: ...
