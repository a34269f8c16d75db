"""PoolService: the analyst's side of pools (create, invite, revoke, seal, inspect the release).

Every call carries the session's token (a contributor's token is PERMISSION_DENIED in ``server.rpc.access``).
A pool belongs to one session and uses its CKKS context: contributors download it stripped to the public key
(``core.context_bytes.encryption_only``, cut from its framing without loading it, written once per session
beside the full context). The release policy is the server's to enforce: ``SealPool`` refuses below
``min_contributors``, computes the one release (``core.release.seal``: row-weighted sum of the contributions'
encrypted statistics, plus Gaussian noise from the CSPRNG for a differentially private pool) and stores it;
``PoolStatistics`` and training only ever read that release (docs/threat-model.md, Pools).
"""

from __future__ import annotations

import functools
import math
import time

import grpc

from ciphergrad.core.context_bytes import encryption_only
from ciphergrad.core.release import Bounds, RowSpace, analytic_gaussian_sigma
from ciphergrad.server.execution import Executor
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.jobs.pool_view import release_proto, seal_files
from ciphergrad.server.rpc import auth
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import invalid, precondition, rpc
from ciphergrad.server.rpc.work import Work
from ciphergrad.server.store.pool_records import InvitationRecord, PoolRecord, ReleasePolicy
from ciphergrad.server.store.records import JobState
from ciphergrad.server.store.store import Store, new_id
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2_grpc as pb_grpc

MAX_NAME = 256
MAX_FEATURES = 1024  # a release of 1,024 features is 527k entries: 129 ciphertexts at 4,096 slots
MAX_CLASSES = 256
MAX_EXPIRY_SECONDS = 10 * 365 * 86400


def check_schema(schema: pb.PoolSchema) -> tuple[dict[str, tuple[float, float]], tuple[str, ...]]:
    """The schema's bounds and classes, or INVALID_ARGUMENT naming what to change."""
    names = list(schema.feature_names)
    if not names:
        raise invalid("schema.feature_names is empty: name the feature columns contributors will use")
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
    bounds = {}
    for name, given in schema.bounds.items():
        if name not in names and name != schema.target_name:
            raise invalid(f"schema.bounds names {name!r}, which is not a column of the pool")
        try:
            bounds[name] = (Bounds(given.lower, given.upper).lower, given.upper)  # Bounds validates the pair
        except ValueError as exc:
            raise invalid(f"schema.bounds[{name!r}]: {exc}") from None
    classes = tuple(schema.classes)
    if classes and not 2 <= len(classes) <= MAX_CLASSES:
        raise invalid(f"schema.classes has {len(classes)} labels: a classifier needs 2..{MAX_CLASSES}")
    if len(set(classes)) != len(classes) or any(not c.strip() or len(c) > MAX_NAME for c in classes):
        raise invalid("schema.classes must be distinct, non-blank labels")
    if classes and schema.target_name in bounds:
        raise invalid("schema.bounds: a classification target takes no bounds (its indicators are 0 or 1)")
    return bounds, classes


def check_policy(policy: pb.ReleasePolicy, space: RowSpace) -> ReleasePolicy:
    """The policy with its defaults, or INVALID_ARGUMENT naming the number to change."""
    found = ReleasePolicy(
        min_contributors=policy.min_contributors or ReleasePolicy.min_contributors,
        min_rows=policy.min_rows or ReleasePolicy.min_rows,
        epsilon=policy.epsilon, delta=policy.delta, clip_norm=policy.clip_norm,
    )
    if found.min_contributors < 1 or found.min_rows < 1:
        raise invalid(f"policy: min_contributors={found.min_contributors} and min_rows={found.min_rows} must be >= 1")
    for name in ("epsilon", "delta", "clip_norm"):
        value = getattr(found, name)
        if not math.isfinite(value) or value < 0:
            raise invalid(f"policy.{name}={value} must be a finite number >= 0")
    if found.epsilon or found.delta:
        if not (found.epsilon > 0 and 0 < found.delta < 1):
            raise invalid(f"policy: differential privacy needs epsilon > 0 and 0 < delta < 1 (got epsilon="
                          f"{found.epsilon}, delta={found.delta}); leave both 0 for none")
        if not space.bounded:
            missing = sum(b is None for b in space.feature_bounds)
            raise invalid(f"policy: differential privacy needs schema.bounds on every feature and on a regression "
                          f"target ({missing} feature(s) or the target have none): the noise is calibrated to them")
    return found


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
        bounds, classes = check_schema(request.schema)
        pool = PoolRecord(
            id=new_id(), session_id=session.id, display_name=request.display_name,
            feature_names=tuple(request.schema.feature_names), target_name=request.schema.target_name,
            params=session.params, created=time.time(), bounds=bounds, classes=classes,
        )
        try:
            space = pool.space
        except ValueError as exc:
            raise invalid(str(exc)) from None
        pool = PoolRecord(**{**vars(pool), "policy": check_policy(request.policy, space)})
        self._ensure_encryption_context(session.id)
        self.store.pools.add(pool)
        return pb.CreatePoolResponse(pool=pool.to_proto())

    def _ensure_encryption_context(self, session_id: str) -> None:
        path = self.store.pools.encryption_context_path(session_id)
        if not path.exists():
            data = encryption_only(self.store.context_path(session_id).read_bytes())  # no context loaded here
            self.store.write_blob(path, data)

    @rpc
    async def GetPool(self, request: pb.GetPoolRequest, context: grpc.aio.ServicerContext) -> pb.GetPoolResponse:
        return await self.work.io(self.get_pool, request, context.invocation_metadata())

    def get_pool(self, request: pb.GetPoolRequest, metadata: Metadata) -> pb.GetPoolResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
        invitations = [i.to_proto() for i in self.store.pools.invitations(pool.id)]
        return pb.GetPoolResponse(pool=pool.to_proto(), invitations=invitations)

    @rpc
    async def ListPools(self, request: pb.ListPoolsRequest, context: grpc.aio.ServicerContext) -> pb.ListPoolsResponse:
        return await self.work.io(self.list_pools, request, context.invocation_metadata())

    def list_pools(self, request: pb.ListPoolsRequest, metadata: Metadata) -> pb.ListPoolsResponse:
        session = self.access.session(metadata)
        return pb.ListPoolsResponse(pools=[p.to_proto() for p in self.store.pools.for_session(session.id)])

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
        self.store.pools.delete(pool)
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
        self.store.pools.add_invitation(invitation)
        return pb.CreateInvitationResponse(invitation=invitation.to_proto(), token=token)

    @rpc
    async def ListInvitations(
        self, request: pb.ListInvitationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInvitationsResponse:
        return await self.work.io(self.list_invitations, request, context.invocation_metadata())

    def list_invitations(self, request: pb.ListInvitationsRequest, metadata: Metadata) -> pb.ListInvitationsResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
        return pb.ListInvitationsResponse(invitations=[i.to_proto() for i in self.store.pools.invitations(pool.id)])

    @rpc
    async def RevokeInvitation(
        self, request: pb.RevokeInvitationRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeInvitationResponse:
        return await self.work.io(self.revoke_invitation, request, context.invocation_metadata())

    def revoke_invitation(self, request: pb.RevokeInvitationRequest, metadata: Metadata) -> pb.RevokeInvitationResponse:
        invitation = self.access.invitation(request.invitation_id, self.access.session(metadata))
        self.store.pools.revoke_invitation(invitation.id)
        revoked = self.store.pools.invitation(invitation.id)
        assert revoked is not None
        return pb.RevokeInvitationResponse(invitation=revoked.to_proto())

    @rpc
    async def SealPool(self, request: pb.SealPoolRequest, context: grpc.aio.ServicerContext) -> pb.SealPoolResponse:
        return await self.work.he(self.seal_pool, request, context.invocation_metadata())

    def seal_pool(self, request: pb.SealPoolRequest, metadata: Metadata) -> pb.SealPoolResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
        if pool.sealed:
            raise precondition(f"pool {pool.id} is already sealed: its release stands; new data goes to a new pool")
        if pool.contributors < pool.policy.min_contributors:
            raise precondition(
                f"pool {pool.id} has {pool.contributors} contributor(s); its policy releases nothing below "
                f"min_contributors={pool.policy.min_contributors}: invite more, then seal"
            )
        contributions = self.store.pools.contributions(pool.id)
        paths = [self.store.pools.contribution_dir(contribution) / "0.bin" for contribution in contributions]
        noise_std = 0.0
        if pool.policy.private:
            noise_std = analytic_gaussian_sigma(pool.policy.epsilon, pool.policy.delta, pool.space.sensitivity())
        # The sum and its noise where the session's context is loaded (a pool worker with the Ray executor).
        release = self.executor.run_files(
            self.store.context_path(pool.session_id), paths,
            functools.partial(seal_files, rows=[c.rows for c in contributions], noise_std=noise_std),
            lambda: self.engines.get(pool.session_id))
        # A concurrent seal may have won: the first release stands, and both callers see it.
        self.store.pools.seal(pool, release, noise_std, time.time())
        sealed = self.store.pools.get(pool.id)
        assert sealed is not None
        return pb.SealPoolResponse(pool=sealed.to_proto())

    @rpc
    async def PoolStatistics(
        self, request: pb.PoolStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PoolStatisticsResponse:
        return await self.work.he(self.pool_statistics, request, context.invocation_metadata())

    def pool_statistics(self, request: pb.PoolStatisticsRequest, metadata: Metadata) -> pb.PoolStatisticsResponse:
        pool = self.access.pool(request.pool_id, self.access.session(metadata))
        return pb.PoolStatisticsResponse(release=release_proto(self.store, pool))

