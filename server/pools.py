"""PoolService: the analyst's side of pools (create, invite, revoke, inspect, aggregate statistics).

Every call carries the session's token (a contributor's token is PERMISSION_DENIED in ``server.access``). A
pool belongs to one session and uses its CKKS context: contributors download it stripped to the public key
(``core.keys.encryption_context``, written once per session beside the full context). Statistics are
encrypted column sums over every contribution, computed by the executor table by table and added; the
analyst decrypts them (aggregates only: docs/threat-model.md, Pools).
"""

from __future__ import annotations

import time

import grpc

from core.keys import encryption_context
from core.layout import pool_tile
from core.tensor import EncryptedMatrix
from server import auth
from server.access import Access
from server.engines import EngineCache
from server.errors import ServiceError, invalid, precondition, rpc
from server.execution import Executor, StoredTable
from server.pool_records import InvitationRecord, PoolRecord
from server.pool_training import contribution_tables
from server.records import JobState
from server.storage import Store, new_id
from wire import codec
from wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import pool_service_pb2_grpc as pb_grpc
from wire.proto_gen.ciphergrad.v1 import types_pb2

MAX_NAME = 256
MAX_FEATURES = 4096
MAX_EXPIRY_SECONDS = 10 * 365 * 86400
_PACKING_NAMES = {types_pb2.PACKING_UNSPECIFIED: "columns", types_pb2.PACKING_COLUMNS: "columns",
                  types_pb2.PACKING_ROWS: "rows"}


def check_schema(schema: pb.PoolSchema, slots: int) -> str:
    """The schema's packing name, or INVALID_ARGUMENT naming what to change."""
    names = list(schema.feature_names)
    if not names:
        raise invalid("schema.feature_names is empty: name the feature columns contributors will encrypt")
    if len(names) > MAX_FEATURES:
        raise invalid(f"schema.feature_names has {len(names)} columns; at most {MAX_FEATURES}")
    for name in [*names, schema.target_name]:
        if not name.strip() or len(name) > MAX_NAME:
            raise invalid(f"column name {name!r}: every name must be 1..{MAX_NAME} characters, not blank")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise invalid(f"schema.feature_names repeats {duplicates}: each column once")
    if schema.target_name in names:
        raise invalid(f"schema.target_name {schema.target_name!r} is also a feature: remove it from feature_names")
    if schema.packing not in _PACKING_NAMES:
        raise invalid(f"schema.packing={schema.packing} is not a Packing value: use PACKING_COLUMNS or PACKING_ROWS")
    packing = _PACKING_NAMES[schema.packing]
    pool_tile(packing, len(names) + int(schema.intercept), slots)  # ShapeError (INVALID_ARGUMENT) if too wide
    return packing


class PoolServicer(pb_grpc.PoolServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, executor: Executor) -> None:
        self.store, self.access, self.engines, self.executor = store, access, engines, executor

    @rpc
    def CreatePool(self, request: pb.CreatePoolRequest, context: grpc.ServicerContext) -> pb.CreatePoolResponse:
        session = self.access.session(context)
        if len(request.display_name) > MAX_NAME:
            raise invalid(f"display_name has {len(request.display_name)} characters; at most {MAX_NAME}")
        packing = check_schema(request.schema, session.params.slots)
        self._ensure_encryption_context(session.id)
        pool = PoolRecord(
            id=new_id(), session_id=session.id, display_name=request.display_name,
            feature_names=tuple(request.schema.feature_names), target_name=request.schema.target_name,
            packing=packing, intercept=request.schema.intercept, params=session.params, created=time.time(),
        )
        self.store.add_pool(pool)
        return pb.CreatePoolResponse(pool=pool.to_proto())

    def _ensure_encryption_context(self, session_id: str) -> None:
        path = self.store.encryption_context_path(session_id)
        if not path.exists():
            data = encryption_context(self.store.context_path(session_id).read_bytes())
            self.store.write_blob(path, data)

    @rpc
    def GetPool(self, request: pb.GetPoolRequest, context: grpc.ServicerContext) -> pb.GetPoolResponse:
        pool = self.access.pool(request.pool_id, self.access.session(context))
        invitations = [i.to_proto() for i in self.store.invitations(pool.id)]
        return pb.GetPoolResponse(pool=pool.to_proto(), invitations=invitations)

    @rpc
    def ListPools(self, request: pb.ListPoolsRequest, context: grpc.ServicerContext) -> pb.ListPoolsResponse:
        session = self.access.session(context)
        return pb.ListPoolsResponse(pools=[p.to_proto() for p in self.store.pools(session.id)])

    @rpc
    def DeletePool(self, request: pb.DeletePoolRequest, context: grpc.ServicerContext) -> pb.DeletePoolResponse:
        pool = self.access.pool(request.pool_id, self.access.session(context))
        busy = [job.id for job in self.store.jobs(pool.session_id)
                if job.pool_id == pool.id and job.state in (JobState.JOB_STATE_QUEUED, JobState.JOB_STATE_RUNNING)]
        if busy:
            raise precondition(f"job {busy[0]} is training on pool {pool.id}: cancel it (CancelJob) or let it "
                               "finish, then delete the pool")
        self.store.delete_pool(pool)
        return pb.DeletePoolResponse()

    @rpc
    def CreateInvitation(
        self, request: pb.CreateInvitationRequest, context: grpc.ServicerContext
    ) -> pb.CreateInvitationResponse:
        pool = self.access.pool(request.pool_id, self.access.session(context))
        if not 0 <= request.expires_in_seconds <= MAX_EXPIRY_SECONDS:
            raise invalid(f"expires_in_seconds={request.expires_in_seconds} must lie in 0..{MAX_EXPIRY_SECONDS} "
                          "(0: never expires)")
        if request.max_rows < 0:
            raise invalid(f"max_rows={request.max_rows} must be >= 0 (0: no cap)")
        if len(request.label) > MAX_NAME:
            raise invalid(f"label has {len(request.label)} characters; at most {MAX_NAME}")
        token, now = auth.new_token(), time.time()
        invitation = InvitationRecord(
            id=new_id(), pool_id=pool.id, session_id=pool.session_id, token_hash=auth.token_hash(token),
            label=request.label, created=now,
            expires=now + request.expires_in_seconds if request.expires_in_seconds else 0.0, max_rows=request.max_rows,
        )
        self.store.add_invitation(invitation)
        return pb.CreateInvitationResponse(invitation=invitation.to_proto(), token=token)

    @rpc
    def ListInvitations(
        self, request: pb.ListInvitationsRequest, context: grpc.ServicerContext
    ) -> pb.ListInvitationsResponse:
        pool = self.access.pool(request.pool_id, self.access.session(context))
        return pb.ListInvitationsResponse(invitations=[i.to_proto() for i in self.store.invitations(pool.id)])

    @rpc
    def RevokeInvitation(
        self, request: pb.RevokeInvitationRequest, context: grpc.ServicerContext
    ) -> pb.RevokeInvitationResponse:
        invitation = self.access.invitation(request.invitation_id, self.access.session(context))
        self.store.revoke_invitation(invitation.id)
        revoked = self.store.invitation(invitation.id)
        assert revoked is not None
        return pb.RevokeInvitationResponse(invitation=revoked.to_proto())

    @rpc
    def PoolStatistics(
        self, request: pb.PoolStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.PoolStatisticsResponse:
        pool = self.access.pool(request.pool_id, self.access.session(context))
        tables = contribution_tables(self.store, pool)
        if not tables:
            raise precondition(f"pool {pool.id} has no contributions yet: invite contributors first")
        engine = self.engines.get(pool.session_id)
        targets = [StoredTable(t.context, t.targets, None, t.rows, t.tile_rows) for t in tables if t.targets]
        sums = {
            "feature_sums": self._column_sums(tables, engine, False),
            "feature_square_sums": self._column_sums(tables, engine, True),
            "target_sum": self._column_sums(targets, engine, False),
            "target_square_sum": self._column_sums(targets, engine, True),
        }
        return pb.PoolStatisticsResponse(rows=pool.rows, **{k: codec.matrix_to_proto(v) for k, v in sums.items()})

    def _column_sums(self, tables: list[StoredTable], engine: object, squares: bool) -> EncryptedMatrix:
        total: EncryptedMatrix | None = None
        for table in tables:
            part = self.executor.column_sums(table, engine, squares)  # type: ignore[arg-type]
            total = part if total is None else total + part
        if total is None:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "the pool has no contributions yet")
        return total
