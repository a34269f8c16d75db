"""ContributionService: a contributor's side of a pool (schema and public key, contributions, receipts).

Every call carries a contributor token (an invitation's), which reaches its own pool's schema, appends to
that pool and lists its own receipts, nothing else (``server.rpc.access.Access.contributor``: a revoked or
expired invitation, or a session token, is PERMISSION_DENIED naming why).

A contribution is the encrypted sufficient statistics of the contributor's rows (``core.release``: one
``(entries, 1)`` column), never a row. It is atomic: the matrix is received into a scratch directory
(``receive_contribution``), then checked against the pool, published and recorded in one step
(``record_contribution``): the names equal the schema, the pool is open, the rows reach the policy's
``min_rows``, the matrix has the pool's entries in tile ``(slots, 1)`` at the context's top level, the size is
within ``--max-upload-mb`` and the invitation's row cap holds (the cap and the open state are checked again in
the locked insert, so concurrent contributions cannot pass the cap, nor land after the seal). The ciphertext
checks (``check_statistics``) run where the executor keeps the analyst session's context
(``Executor.check_files``): in this process with the local executor, on a pool worker with Ray, so that a Ray
server's process loads no context and parses no ciphertext for a contribution. A failure at any
point, a cancelled stream or a killed contributor leaves nothing: the scratch directory is removed, and a
published directory whose row was refused is removed before the error is returned.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

import grpc

from ciphergrad.core.engine import Engine
from ciphergrad.core.release import moment_tile
from ciphergrad.server.execution import Executor
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.execution.local import LocalExecutor
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import ServiceError, invalid, precondition, rpc
from ciphergrad.server.rpc.uploads import Budget, receive_matrix_async
from ciphergrad.server.rpc.validation import ScannedMatrix
from ciphergrad.server.rpc.work import Inbound, Work
from ciphergrad.server.store.pool_records import ContributionRecord, InvitationRecord, PoolRecord
from ciphergrad.server.store.pool_tables import PoolSealed, RowCapExceeded
from ciphergrad.server.store.store import Store, matrix_file, new_id
from ciphergrad.wire import codec
from ciphergrad.wire.chunks import CHUNK_BYTES
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2_grpc as pb_grpc


def cap_exceeded(invitation: InvitationRecord, max_rows: int, done: int, rows: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"invitation {invitation.id} may contribute {max_rows} rows in total (its row cap, max_rows); "
        f"{done} are in already, so these {rows} would exceed it: send at most {max(0, max_rows - done)} rows, "
        "or ask the analyst for a larger cap",
    )


def sealed(pool: PoolRecord) -> ServiceError:
    return precondition(f"pool {pool.id} is sealed: its release is final and takes no more contributions; ask the "
                        "analyst for an invitation to a new pool")


def check_manifest(manifest: pb.ContributionManifest, invitation: InvitationRecord, pool: PoolRecord) -> None:
    names, expected = list(manifest.feature_names), list(pool.feature_names)
    if names != expected:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "same names in another order"
        raise invalid(f"feature_names {names} differ from the pool's schema {expected} ({detail}): encrypt the "
                      "schema's columns in its order (GetPoolSchema)")
    if pool.sealed:
        raise sealed(pool)
    if manifest.rows < pool.policy.min_rows:
        raise invalid(f"rows={manifest.rows}: this pool's policy takes contributions of at least "
                      f"{pool.policy.min_rows} rows (min_rows), so no release can single out a few: send more rows")
    if invitation.max_rows and invitation.rows + manifest.rows > invitation.max_rows:
        raise cap_exceeded(invitation, invitation.max_rows, invitation.rows, manifest.rows)


async def receive_contribution(requests: Inbound, scratch: Path, budget: Budget) -> None:
    """The statistics matrix, written to ``scratch`` as its chunks arrive (on the loop)."""
    await receive_matrix_async(requests, "chunk", scratch / matrix_file(0), budget, "statistics")
    if await requests.next() is not None:
        raise invalid("Contribute: send one manifest, then exactly one matrix (the encrypted statistics)")


def check_statistics(engine: Engine, handle: BinaryIO, index: int, *, entries: int) -> ScannedMatrix:
    """The checks of a contribution's statistics matrix against the analyst session's context (run where the
    executor keeps it: ``Executor.check_files``): every ciphertext (``validation.scan``), the pool's ``entries``
    in one column, tile ``(slots, 1)``, the context's top level. Small and picklable back; INVALID_ARGUMENT."""
    moments = validation.scan(engine, handle, "statistics")
    tile = moment_tile(engine.params.slots)
    if moments.shape != (entries, 1):
        raise invalid(f"statistics have shape {moments.shape}; the pool's schema makes ({entries}, 1): the "
                      "mean of upper(v v^T) for v = [1, features, target] (core.release.RowSpace.moments)")
    if moments.tile != tile:
        raise invalid(f"statistics are encrypted in {moments.tile.rows}x{moments.tile.cols} tiles; a pool's are "
                      f"{tile.rows}x{tile.cols}: encrypt with that tile")
    if moments.level != engine.top_level:
        raise invalid(f"statistics are at level {moments.level}; encrypt fresh, at the context's top level "
                      f"{engine.top_level}")
    return moments


def record_contribution(
    store: Store, executor: Executor, engine: Callable[[], Engine], scratch: Path, manifest: pb.ContributionManifest,
    invitation: InvitationRecord, pool: PoolRecord, size: int,
) -> ContributionRecord:
    """Check the received matrix against the pool (``check_statistics``, where ``executor`` keeps the analyst
    session's context: ``engine()`` loads it in this process, for the local executor only), publish it and
    record the contribution (atomic)."""
    check = functools.partial(check_statistics, entries=pool.space.entries)
    (moments,) = executor.check_files(store.context_path(pool.session_id), [scratch / matrix_file(0)], check, engine)
    rows = manifest.rows
    contribution = ContributionRecord(
        id=new_id(), pool_id=pool.id, invitation_id=invitation.id, session_id=pool.session_id, rows=rows,
        size_bytes=size, level=moments.level, created=time.time(),
    )
    final = store.pools.contribution_dir(contribution)
    store.publish(scratch, final)
    try:
        store.pools.add_contribution(contribution, invitation.max_rows)
    except BaseException as exc:
        store.remove(final)
        if isinstance(exc, RowCapExceeded):
            raise cap_exceeded(invitation, exc.max_rows, exc.rows, rows) from None
        if isinstance(exc, PoolSealed):
            raise sealed(pool) from None
        raise
    return contribution


class ContributionServicer(pb_grpc.ContributionServiceServicer):
    """Async shells (``server.rpc.work``); a contributor's open streams count against its invitation's share of
    --max-streams-per-session."""

    def __init__(self, store: Store, access: Access, engines: EngineCache, max_upload: int, work: Work,
                 executor: Executor | None = None) -> None:
        self.store, self.access, self.engines, self.max_upload, self.work = store, access, engines, max_upload, work
        self.executor = executor or LocalExecutor()

    @rpc
    async def GetPoolSchema(
        self, request: pb.GetPoolSchemaRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetPoolSchemaResponse]:
        header, context_bytes = await self.work.io(self.pool_schema, context.invocation_metadata())
        yield pb.GetPoolSchemaResponse(header=header)
        for start in range(0, len(context_bytes), CHUNK_BYTES):
            yield pb.GetPoolSchemaResponse(context_chunk=context_bytes[start:start + CHUNK_BYTES])

    def pool_schema(self, metadata: Metadata) -> tuple[pb.PoolSchemaHeader, bytes]:
        """The schema header and the public encryption context (public key only: well under a MB)."""
        invitation, pool = self.access.contributor(metadata)
        data = self.store.pools.encryption_context_path(pool.session_id).read_bytes()
        header = pb.PoolSchemaHeader(
            pool_id=pool.id, schema=pool.schema_proto(), parameters=codec.params_to_proto(pool.params),
            context_size_bytes=len(data), rows_remaining=invitation.rows_remaining, policy=pool.policy.to_proto(),
            expire_time=codec.timestamp(invitation.expires) if invitation.expires else None,
        )
        return header, data

    @rpc
    async def Contribute(
        self, request_iterator: AsyncIterator[pb.ContributeRequest], context: grpc.aio.ServicerContext
    ) -> pb.ContributeResponse:
        async with self.work.open_stream(
            request_iterator, context, "Contribute", self.access.contributor, kinds=("manifest",),
            refusal="Contribute: send a ContributionManifest first, then the statistics' chunks",
            limit=lambda contributor: self.work.limits.stream(f"invitation {contributor[0].id}"),
        ) as ((invitation, pool), requests, first):
            manifest = first.manifest
            check_manifest(manifest, invitation, pool)
            declared = validation.declared_size(manifest.total_size_bytes, "total_size_bytes")
            budget = Budget(self.max_upload)
            budget.announce(declared, "the contribution")
            with self.store.staging() as scratch:
                await receive_contribution(requests, scratch, budget)
                validation.arrived(declared, budget.used, "total_size_bytes")
                contribution = await self.work.he(self.store_contribution, context.invocation_metadata(), scratch,
                                                  manifest, budget.used)
        return pb.ContributeResponse(contribution=contribution.to_proto())

    def store_contribution(
        self, metadata: Metadata, scratch: Path, manifest: pb.ContributionManifest, size: int
    ) -> ContributionRecord:
        invitation, pool = self.access.contributor(metadata)  # revoked or expired during the upload?
        engine = functools.partial(self.engines.get, pool.session_id)
        return record_contribution(self.store, self.executor, engine, scratch, manifest, invitation, pool, size)

    @rpc
    async def ListContributions(
        self, request: pb.ListContributionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContributionsResponse:
        return await self.work.io(self.list_contributions, context.invocation_metadata())

    def list_contributions(self, metadata: Metadata) -> pb.ListContributionsResponse:
        invitation, pool = self.access.contributor(metadata)
        own = self.store.pools.contributions(pool.id, invitation.id)
        return pb.ListContributionsResponse(contributions=[c.to_proto() for c in own])
