import datetime

from ciphergrad.wire.proto_gen.ciphergrad.v1 import model_service_pb2 as _model_service_pb2
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as _pool_service_pb2
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2 as _types_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_PAUSED: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class DiagonalForm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIAGONAL_FORM_UNSPECIFIED: _ClassVar[DiagonalForm]
    DIAGONAL_FORM_WRAPPED: _ClassVar[DiagonalForm]
    DIAGONAL_FORM_UPPER: _ClassVar[DiagonalForm]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_PAUSED: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
DIAGONAL_FORM_UNSPECIFIED: DiagonalForm
DIAGONAL_FORM_WRAPPED: DiagonalForm
DIAGONAL_FORM_UPPER: DiagonalForm

class JobSpec(_message.Message):
    __slots__ = ("dataset_id", "algorithm", "hyperparameters", "pool_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    algorithm: _types_pb2.Algorithm
    hyperparameters: _struct_pb2.Struct
    pool_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., algorithm: _Optional[_Union[_types_pb2.Algorithm, str]] = ..., hyperparameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., pool_id: _Optional[str] = ...) -> None: ...

class AttachJob(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class RefreshReply(_message.Message):
    __slots__ = ("refresh_id", "refreshed")
    REFRESH_ID_FIELD_NUMBER: _ClassVar[int]
    REFRESHED_FIELD_NUMBER: _ClassVar[int]
    refresh_id: int
    refreshed: _types_pb2.EncryptedMatrix
    def __init__(self, refresh_id: _Optional[int] = ..., refreshed: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ...) -> None: ...

class NormalSolution(_message.Message):
    __slots__ = ("request_id", "weights", "preconditioner")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PRECONDITIONER_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    weights: _types_pb2.EncryptedMatrix
    preconditioner: _containers.RepeatedCompositeFieldContainer[_types_pb2.EncryptedMatrix]
    def __init__(self, request_id: _Optional[int] = ..., weights: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., preconditioner: _Optional[_Iterable[_Union[_types_pb2.EncryptedMatrix, _Mapping]]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("start", "attach", "refresh_reply", "normal_solution")
    START_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    REFRESH_REPLY_FIELD_NUMBER: _ClassVar[int]
    NORMAL_SOLUTION_FIELD_NUMBER: _ClassVar[int]
    start: JobSpec
    attach: AttachJob
    refresh_reply: RefreshReply
    normal_solution: NormalSolution
    def __init__(self, start: _Optional[_Union[JobSpec, _Mapping]] = ..., attach: _Optional[_Union[AttachJob, _Mapping]] = ..., refresh_reply: _Optional[_Union[RefreshReply, _Mapping]] = ..., normal_solution: _Optional[_Union[NormalSolution, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "dataset_id", "algorithm", "state", "epoch", "epochs", "model_id", "error_message", "hyperparameters", "refreshes", "create_time", "update_time", "pool_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REFRESHES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    dataset_id: str
    algorithm: _types_pb2.Algorithm
    state: JobState
    epoch: int
    epochs: int
    model_id: str
    error_message: str
    hyperparameters: _struct_pb2.Struct
    refreshes: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    pool_id: str
    def __init__(self, job_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., algorithm: _Optional[_Union[_types_pb2.Algorithm, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., model_id: _Optional[str] = ..., error_message: _Optional[str] = ..., hyperparameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., refreshes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pool_id: _Optional[str] = ...) -> None: ...

class EpochProgress(_message.Message):
    __slots__ = ("epoch", "loss", "refreshes", "seconds", "operation_counts", "loss_scale")
    class OperationCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    REFRESHES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LOSS_SCALE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    loss: _types_pb2.EncryptedMatrix
    refreshes: int
    seconds: float
    operation_counts: _containers.ScalarMap[str, int]
    loss_scale: float
    def __init__(self, epoch: _Optional[int] = ..., loss: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., refreshes: _Optional[int] = ..., seconds: _Optional[float] = ..., operation_counts: _Optional[_Mapping[str, int]] = ..., loss_scale: _Optional[float] = ...) -> None: ...

class RefreshRequest(_message.Message):
    __slots__ = ("refresh_id", "masked", "precondition")
    REFRESH_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    PRECONDITION_FIELD_NUMBER: _ClassVar[int]
    refresh_id: int
    masked: _types_pb2.EncryptedMatrix
    precondition: bool
    def __init__(self, refresh_id: _Optional[int] = ..., masked: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., precondition: _Optional[bool] = ...) -> None: ...

class PoolReleaseRequest(_message.Message):
    __slots__ = ("request_id", "release", "weight_tile_rows", "weight_tile_cols")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_TILE_ROWS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_TILE_COLS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    release: _pool_service_pb2.PoolRelease
    weight_tile_rows: int
    weight_tile_cols: int
    def __init__(self, request_id: _Optional[int] = ..., release: _Optional[_Union[_pool_service_pb2.PoolRelease, _Mapping]] = ..., weight_tile_rows: _Optional[int] = ..., weight_tile_cols: _Optional[int] = ...) -> None: ...

class NormalSystemRequest(_message.Message):
    __slots__ = ("request_id", "gram_diagonals", "gram_column", "rows", "features", "factor", "right_hand_side", "preconditioner", "diagonal_form")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GRAM_DIAGONALS_FIELD_NUMBER: _ClassVar[int]
    GRAM_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    RIGHT_HAND_SIDE_FIELD_NUMBER: _ClassVar[int]
    PRECONDITIONER_FIELD_NUMBER: _ClassVar[int]
    DIAGONAL_FORM_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    gram_diagonals: _types_pb2.EncryptedMatrix
    gram_column: _types_pb2.EncryptedMatrix
    rows: int
    features: int
    factor: float
    right_hand_side: RightHandSide
    preconditioner: Preconditioner
    diagonal_form: DiagonalForm
    def __init__(self, request_id: _Optional[int] = ..., gram_diagonals: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., gram_column: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., rows: _Optional[int] = ..., features: _Optional[int] = ..., factor: _Optional[float] = ..., right_hand_side: _Optional[_Union[RightHandSide, _Mapping]] = ..., preconditioner: _Optional[_Union[Preconditioner, _Mapping]] = ..., diagonal_form: _Optional[_Union[DiagonalForm, str]] = ...) -> None: ...

class Preconditioner(_message.Message):
    __slots__ = ("system_ridge", "l2", "intercept_column", "weight_scale", "tile_rows", "tile_cols")
    SYSTEM_RIDGE_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_COLUMN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SCALE_FIELD_NUMBER: _ClassVar[int]
    TILE_ROWS_FIELD_NUMBER: _ClassVar[int]
    TILE_COLS_FIELD_NUMBER: _ClassVar[int]
    system_ridge: float
    l2: float
    intercept_column: int
    weight_scale: float
    tile_rows: int
    tile_cols: int
    def __init__(self, system_ridge: _Optional[float] = ..., l2: _Optional[float] = ..., intercept_column: _Optional[int] = ..., weight_scale: _Optional[float] = ..., tile_rows: _Optional[int] = ..., tile_cols: _Optional[int] = ...) -> None: ...

class RightHandSide(_message.Message):
    __slots__ = ("target_scale", "ones_scale", "ones_column", "targets")
    TARGET_SCALE_FIELD_NUMBER: _ClassVar[int]
    ONES_SCALE_FIELD_NUMBER: _ClassVar[int]
    ONES_COLUMN_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    target_scale: float
    ones_scale: float
    ones_column: int
    targets: int
    def __init__(self, target_scale: _Optional[float] = ..., ones_scale: _Optional[float] = ..., ones_column: _Optional[int] = ..., targets: _Optional[int] = ...) -> None: ...

class TrainingResult(_message.Message):
    __slots__ = ("job", "model")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    job: Job
    model: _model_service_pb2.Model
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., model: _Optional[_Union[_model_service_pb2.Model, _Mapping]] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("job", "epoch", "refresh_request", "result", "normal_system", "pool_release")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REFRESH_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    NORMAL_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    POOL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    job: Job
    epoch: EpochProgress
    refresh_request: RefreshRequest
    result: TrainingResult
    normal_system: NormalSystemRequest
    pool_release: PoolReleaseRequest
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., epoch: _Optional[_Union[EpochProgress, _Mapping]] = ..., refresh_request: _Optional[_Union[RefreshRequest, _Mapping]] = ..., result: _Optional[_Union[TrainingResult, _Mapping]] = ..., normal_system: _Optional[_Union[NormalSystemRequest, _Mapping]] = ..., pool_release: _Optional[_Union[PoolReleaseRequest, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...
