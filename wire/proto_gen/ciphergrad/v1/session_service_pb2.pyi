import datetime

from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2 as _types_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("manifest", "context_chunk")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    manifest: SessionManifest
    context_chunk: bytes
    def __init__(self, manifest: _Optional[_Union[SessionManifest, _Mapping]] = ..., context_chunk: _Optional[bytes] = ...) -> None: ...

class SessionManifest(_message.Message):
    __slots__ = ("display_name", "context_size_bytes")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    context_size_bytes: int
    def __init__(self, display_name: _Optional[str] = ..., context_size_bytes: _Optional[int] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "display_name", "parameters", "context_size_bytes", "create_time")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    display_name: str
    parameters: _types_pb2.CkksParameters
    context_size_bytes: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., display_name: _Optional[str] = ..., parameters: _Optional[_Union[_types_pb2.CkksParameters, _Mapping]] = ..., context_size_bytes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session", "token")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    session: Session
    token: str
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...
