import datetime

from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2 as _types_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ColumnBounds(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class PoolSchema(_message.Message):
    __slots__ = ("feature_names", "target_name", "bounds", "classes")
    class BoundsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ColumnBounds
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ColumnBounds, _Mapping]] = ...) -> None: ...
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    target_name: str
    bounds: _containers.MessageMap[str, ColumnBounds]
    classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, feature_names: _Optional[_Iterable[str]] = ..., target_name: _Optional[str] = ..., bounds: _Optional[_Mapping[str, ColumnBounds]] = ..., classes: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleasePolicy(_message.Message):
    __slots__ = ("min_contributors", "min_rows", "epsilon", "delta", "clip_norm")
    MIN_CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    MIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    min_contributors: int
    min_rows: int
    epsilon: float
    delta: float
    clip_norm: float
    def __init__(self, min_contributors: _Optional[int] = ..., min_rows: _Optional[int] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., clip_norm: _Optional[float] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("pool_id", "display_name", "schema", "rows", "contributions", "size_bytes", "create_time", "parameters", "policy", "seal_time", "mechanism", "noise_std", "contributors")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEAL_TIME_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    display_name: str
    schema: PoolSchema
    rows: int
    contributions: int
    size_bytes: int
    create_time: _timestamp_pb2.Timestamp
    parameters: _types_pb2.CkksParameters
    policy: ReleasePolicy
    seal_time: _timestamp_pb2.Timestamp
    mechanism: str
    noise_std: float
    contributors: int
    def __init__(self, pool_id: _Optional[str] = ..., display_name: _Optional[str] = ..., schema: _Optional[_Union[PoolSchema, _Mapping]] = ..., rows: _Optional[int] = ..., contributions: _Optional[int] = ..., size_bytes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parameters: _Optional[_Union[_types_pb2.CkksParameters, _Mapping]] = ..., policy: _Optional[_Union[ReleasePolicy, _Mapping]] = ..., seal_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mechanism: _Optional[str] = ..., noise_std: _Optional[float] = ..., contributors: _Optional[int] = ...) -> None: ...

class Invitation(_message.Message):
    __slots__ = ("invitation_id", "pool_id", "label", "create_time", "expire_time", "max_rows", "rows_contributed", "contributions", "revoked")
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_CONTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    pool_id: str
    label: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    max_rows: int
    rows_contributed: int
    contributions: int
    revoked: bool
    def __init__(self, invitation_id: _Optional[str] = ..., pool_id: _Optional[str] = ..., label: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_rows: _Optional[int] = ..., rows_contributed: _Optional[int] = ..., contributions: _Optional[int] = ..., revoked: _Optional[bool] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("contribution_id", "pool_id", "invitation_id", "rows", "size_bytes", "create_time")
    CONTRIBUTION_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    contribution_id: str
    pool_id: str
    invitation_id: str
    rows: int
    size_bytes: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, contribution_id: _Optional[str] = ..., pool_id: _Optional[str] = ..., invitation_id: _Optional[str] = ..., rows: _Optional[int] = ..., size_bytes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePoolRequest(_message.Message):
    __slots__ = ("display_name", "schema", "policy")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    schema: PoolSchema
    policy: ReleasePolicy
    def __init__(self, display_name: _Optional[str] = ..., schema: _Optional[_Union[PoolSchema, _Mapping]] = ..., policy: _Optional[_Union[ReleasePolicy, _Mapping]] = ...) -> None: ...

class CreatePoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class GetPoolResponse(_message.Message):
    __slots__ = ("pool", "invitations")
    POOL_FIELD_NUMBER: _ClassVar[int]
    INVITATIONS_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    invitations: _containers.RepeatedCompositeFieldContainer[Invitation]
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., invitations: _Optional[_Iterable[_Union[Invitation, _Mapping]]] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class DeletePoolResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateInvitationRequest(_message.Message):
    __slots__ = ("pool_id", "label", "expires_in_seconds", "max_rows")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    label: str
    expires_in_seconds: int
    max_rows: int
    def __init__(self, pool_id: _Optional[str] = ..., label: _Optional[str] = ..., expires_in_seconds: _Optional[int] = ..., max_rows: _Optional[int] = ...) -> None: ...

class CreateInvitationResponse(_message.Message):
    __slots__ = ("invitation", "token")
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    invitation: Invitation
    token: str
    def __init__(self, invitation: _Optional[_Union[Invitation, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListInvitationsRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class ListInvitationsResponse(_message.Message):
    __slots__ = ("invitations",)
    INVITATIONS_FIELD_NUMBER: _ClassVar[int]
    invitations: _containers.RepeatedCompositeFieldContainer[Invitation]
    def __init__(self, invitations: _Optional[_Iterable[_Union[Invitation, _Mapping]]] = ...) -> None: ...

class RevokeInvitationRequest(_message.Message):
    __slots__ = ("invitation_id",)
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    def __init__(self, invitation_id: _Optional[str] = ...) -> None: ...

class RevokeInvitationResponse(_message.Message):
    __slots__ = ("invitation",)
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    invitation: Invitation
    def __init__(self, invitation: _Optional[_Union[Invitation, _Mapping]] = ...) -> None: ...

class SealPoolRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class SealPoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class PoolStatisticsRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class PoolRelease(_message.Message):
    __slots__ = ("pool_id", "rows", "contributions", "contributors", "moments", "noise_std", "epsilon", "delta", "schema", "clip_norm")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    MOMENTS_FIELD_NUMBER: _ClassVar[int]
    NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    rows: int
    contributions: int
    contributors: int
    moments: _types_pb2.EncryptedMatrix
    noise_std: float
    epsilon: float
    delta: float
    schema: PoolSchema
    clip_norm: float
    def __init__(self, pool_id: _Optional[str] = ..., rows: _Optional[int] = ..., contributions: _Optional[int] = ..., contributors: _Optional[int] = ..., moments: _Optional[_Union[_types_pb2.EncryptedMatrix, _Mapping]] = ..., noise_std: _Optional[float] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., schema: _Optional[_Union[PoolSchema, _Mapping]] = ..., clip_norm: _Optional[float] = ...) -> None: ...

class PoolStatisticsResponse(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: PoolRelease
    def __init__(self, release: _Optional[_Union[PoolRelease, _Mapping]] = ...) -> None: ...

class GetPoolSchemaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPoolSchemaResponse(_message.Message):
    __slots__ = ("header", "context_chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PoolSchemaHeader
    context_chunk: bytes
    def __init__(self, header: _Optional[_Union[PoolSchemaHeader, _Mapping]] = ..., context_chunk: _Optional[bytes] = ...) -> None: ...

class PoolSchemaHeader(_message.Message):
    __slots__ = ("pool_id", "schema", "parameters", "context_size_bytes", "rows_remaining", "expire_time", "policy")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROWS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    schema: PoolSchema
    parameters: _types_pb2.CkksParameters
    context_size_bytes: int
    rows_remaining: int
    expire_time: _timestamp_pb2.Timestamp
    policy: ReleasePolicy
    def __init__(self, pool_id: _Optional[str] = ..., schema: _Optional[_Union[PoolSchema, _Mapping]] = ..., parameters: _Optional[_Union[_types_pb2.CkksParameters, _Mapping]] = ..., context_size_bytes: _Optional[int] = ..., rows_remaining: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[_Union[ReleasePolicy, _Mapping]] = ...) -> None: ...

class ContributeRequest(_message.Message):
    __slots__ = ("manifest", "chunk")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    manifest: ContributionManifest
    chunk: _types_pb2.MatrixChunk
    def __init__(self, manifest: _Optional[_Union[ContributionManifest, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.MatrixChunk, _Mapping]] = ...) -> None: ...

class ContributionManifest(_message.Message):
    __slots__ = ("rows", "total_size_bytes", "feature_names")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    total_size_bytes: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rows: _Optional[int] = ..., total_size_bytes: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ContributeResponse(_message.Message):
    __slots__ = ("contribution",)
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    contribution: Contribution
    def __init__(self, contribution: _Optional[_Union[Contribution, _Mapping]] = ...) -> None: ...

class ListContributionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListContributionsResponse(_message.Message):
    __slots__ = ("contributions",)
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    contributions: _containers.RepeatedCompositeFieldContainer[Contribution]
    def __init__(self, contributions: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ...) -> None: ...
