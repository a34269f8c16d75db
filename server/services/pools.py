"""PoolService: the analyst's side of pools (create, invite, revoke, inspect, aggregate statistics).

Every call carries the session's token (a contributor's token is PERMISSION_DENIED in ``server.rpc.access``). A
pool belongs to one session and uses its CKKS context: contributors download it stripped to the public key
(``core.keys.encryption_context``, written once per session beside the full context). Statistics are
encrypted column sums over every contribution, computed by the executor table by table and added; the
analyst decrypts them (aggregates only: docs/threat-model.md, Pools).
"""

from __future__ import annotations

import time

import grpc

from ciphergrad.core.keys import encryption_context
from ciphergrad.core.layout import pool_tile
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import Executor, StoredTable
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.jobs.pool_view import contribution_tables
from ciphergrad.server.rpc import auth
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import ServiceError, invalid, precondition, rpc
from ciphergrad.server.rpc.work import Work
from ciphergrad.server.store.pool_records import InvitationRecord, PoolRecord
from ciphergrad.server.store.records import JobState
from ciphergrad.server.store.store import Store, new_id
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2_grpc as pb_grpc
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

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
    """Async shells (``server.rpc.work``): bodies that load a context or add ciphertexts run on ``Work.he``, the
    rest on ``Work.io``."""

    def __init__(self, store: Store, access: Access, engines: EngineCache, executor: Executor, work: Work) -> None:
        self.store, self.access, self.engines, self.executor, self.work = store, access, engines, executor, work

    @rpc
    async def CreatePool(
        self, request: pb.CreatePoolRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePoolResponse:
        return await self.work.he(self.create_pool, request, context.invocation_metadata())

    def create_pool(self, request: pb.CreatePoolRequest, metadata: Metadata) -> pb.CreatePoolResponse:
        session = self.access.session(metadata)
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
    async def GetPool(self, request: pb.GetPoolRequest, context: grpc.aio.ServicerContext) -> pb.GetPoolResponse:
        return await self.work.io(self.get_pool, request, context.invocation_metadata())

    def get_pool(self, request: pb.GetPoolRequest, metadata: Metadata) -> pb.GetPoolResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
        invitations = [i.to_proto() for i in self.store.invitations(pool.id)]
        return pb.GetPoolResponse(pool=pool.to_proto(), invitations=invitations)

    @rpc
    async def ListPools(self, request: pb.ListPoolsRequest, context: grpc.aio.ServicerContext) -> pb.ListPoolsResponse:
        return await self.work.io(self.list_pools, request, context.invocation_metadata())

    def list_pools(self, request: pb.ListPoolsRequest, metadata: Metadata) -> pb.ListPoolsResponse:
        session = self.access.session(metadata)
        return pb.ListPoolsResponse(pools=[p.to_proto() for p in self.store.pools(session.id)])

    @rpc
    async def DeletePool(
        self, request: pb.DeletePoolRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePoolResponse:
        return await self.work.io(self.delete_pool, request, context.invocation_metadata())

    def delete_pool(self, request: pb.DeletePoolRequest, metadata: Metadata) -> pb.DeletePoolResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
        busy = [job.id for job in self.store.jobs(pool.session_id)
                if job.pool_id == pool.id and job.state in (JobState.JOB_STATE_QUEUED, JobState.JOB_STATE_RUNNING)]
        if busy:
            raise precondition(f"job {busy[0]} is training on pool {pool.id}: cancel it (CancelJob) or let it "
                               "finish, then delete the pool")
        self.store.delete_pool(pool)
        return pb.DeletePoolResponse()

    @rpc
    async def CreateInvitation(
        self, request: pb.CreateInvitationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateInvitationResponse:
        return await self.work.io(self.create_invitation, request, context.invocation_metadata())

    def create_invitation(self, request: pb.CreateInvitationRequest, metadata: Metadata) -> pb.CreateInvitationResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
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
    async def ListInvitations(
        self, request: pb.ListInvitationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInvitationsResponse:
        return await self.work.io(self.list_invitations, request, context.invocation_metadata())

    def list_invitations(self, request: pb.ListInvitationsRequest, metadata: Metadata) -> pb.ListInvitationsResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
        return pb.ListInvitationsResponse(invitations=[i.to_proto() for i in self.store.invitations(pool.id)])

    @rpc
    async def RevokeInvitation(
        self, request: pb.RevokeInvitationRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeInvitationResponse:
        return await self.work.io(self.revoke_invitation, request, context.invocation_metadata())

    def revoke_invitation(self, request: pb.RevokeInvitationRequest, metadata: Metadata) -> pb.RevokeInvitationResponse:
        invitation = self.access.invitation(request.invitation_id, self.access.session(metadata))
        self.store.revoke_invitation(invitation.id)
        revoked = self.store.invitation(invitation.id)
        assert revoked is not None
        return pb.RevokeInvitationResponse(invitation=revoked.to_proto())

    @rpc
    async def PoolStatistics(
        self, request: pb.PoolStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PoolStatisticsResponse:
        return await self.work.he(self.pool_statistics, request, context.invocation_metadata())

    def pool_statistics(self, request: pb.PoolStatisticsRequest, metadata: Metadata) -> pb.PoolStatisticsResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
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
