"""ContributionService: a contributor's side of a pool (schema and public key, contributions, receipts).

Every call carries a contributor token (an invitation's), which reaches its own pool's schema, appends to
that pool and lists its own receipts, nothing else (``server.rpc.access.Access.contributor``: a revoked or
expired invitation, or a session token, is PERMISSION_DENIED naming why).

A contribution is atomic: its two matrices are received into a scratch directory (``receive_contribution``),
then checked against the pool, published and recorded in one step (``record_contribution``): the names equal
the schema, the matrices are the pool's layout (``core.layout.pool_tile``) at the context's top level, their
rows equal the manifest's, the size is within ``--max-upload-mb`` and the invitation's row cap holds
(checked again in the locked insert, so concurrent contributions cannot pass it together). A failure at any
point, a cancelled stream or a killed contributor leaves nothing: the scratch directory is removed, and a
published directory whose row was refused is removed before the error is returned.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from ciphergrad.core.engine import Engine
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import ServiceError, invalid, rpc
from ciphergrad.server.rpc.uploads import Budget, receive_matrix_async
from ciphergrad.server.rpc.work import Inbound, Work
from ciphergrad.server.store.pool_records import ContributionRecord, InvitationRecord, PoolRecord
from ciphergrad.server.store.pool_tables import RowCapExceeded
from ciphergrad.server.store.store import Store, matrix_file, new_id
from ciphergrad.wire import codec
from ciphergrad.wire.chunks import CHUNK_BYTES
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2_grpc as pb_grpc

# A one-row matrix is replicated across its tile (numpy broadcasting), which a column sum would count many times.
MIN_ROWS = 2


def cap_exceeded(invitation: InvitationRecord, max_rows: int, done: int, rows: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"invitation {invitation.id} may contribute {max_rows} rows in total (its row cap, max_rows); "
        f"{done} are in already, so these {rows} would exceed it: send at most {max(0, max_rows - done)} rows, "
        "or ask the analyst for a larger cap",
    )


def check_manifest(manifest: pb.ContributionManifest, invitation: InvitationRecord, pool: PoolRecord) -> None:
    names, expected = list(manifest.feature_names), list(pool.feature_names)
    if names != expected:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "same names in another order"
        raise invalid(f"feature_names {names} differ from the pool's schema {expected} ({detail}): encrypt the "
                      "schema's columns in its order (GetPoolSchema)")
    if manifest.rows < MIN_ROWS:
        raise invalid(f"rows={manifest.rows}: a contribution needs at least {MIN_ROWS} rows")
    if invitation.max_rows and invitation.rows + manifest.rows > invitation.max_rows:
        raise cap_exceeded(invitation, invitation.max_rows, invitation.rows, manifest.rows)


async def receive_contribution(requests: Inbound, scratch: Path, budget: Budget) -> None:
    """The features then the targets matrix, each written to ``scratch`` as its chunks arrive (on the loop)."""
    for index, role in enumerate(("features", "targets")):
        await receive_matrix_async(requests, "chunk", scratch / matrix_file(index), budget, role)
    if await requests.next() is not None:
        raise invalid("Contribute: send one manifest, then exactly two matrices (features, targets)")


def record_contribution(
    store: Store, engine: Engine, scratch: Path, manifest: pb.ContributionManifest, invitation: InvitationRecord,
    pool: PoolRecord, size: int,
) -> ContributionRecord:
    """Check the received matrices against the pool, publish them and record the contribution (atomic)."""
    X = validation.scan_file(engine, scratch / matrix_file(0), "features")
    y = validation.scan_file(engine, scratch / matrix_file(1), "targets")
    rows, tile = manifest.rows, pool.tile
    if X.shape != (rows, pool.columns):
        intercept = " (the intercept's column of ones first)" if pool.intercept else ""
        raise invalid(f"features have shape {X.shape}; the manifest and the pool's schema make it "
                      f"({rows}, {pool.columns}){intercept}")
    if y.shape != (rows, 1):
        raise invalid(f"targets have shape {y.shape}; expected ({rows}, 1)")
    for name, matrix in (("features", X), ("targets", y)):
        if matrix.tile != tile:
            raise invalid(f"{name} are encrypted in {matrix.tile.rows}x{matrix.tile.cols} tiles; the pool's layout "
                          f"is {tile.rows}x{tile.cols} ({pool.packing} packing): encrypt with that tile")
        if matrix.level != engine.top_level:
            raise invalid(f"{name} are at level {matrix.level}; encrypt fresh, at the context's top level "
                          f"{engine.top_level}")
    contribution = ContributionRecord(
        id=new_id(), pool_id=pool.id, invitation_id=invitation.id, session_id=pool.session_id, rows=rows,
        size_bytes=size, level=min(X.level, y.level), created=time.time(),
    )
    final = store.contribution_dir(contribution)
    store.publish(scratch, final)
    try:
        store.add_contribution(contribution, invitation.max_rows)
    except BaseException as exc:
        store.remove(final)
        if isinstance(exc, RowCapExceeded):
            raise cap_exceeded(invitation, exc.max_rows, exc.rows, rows) from None
        raise
    return contribution


class ContributionServicer(pb_grpc.ContributionServiceServicer):
    """Async shells (``server.rpc.work``); a contributor's open streams count against its invitation's share of
    --max-streams-per-session."""

    def __init__(self, store: Store, access: Access, engines: EngineCache, max_upload: int, work: Work) -> None:
        self.store, self.access, self.engines, self.max_upload, self.work = store, access, engines, max_upload, work

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
        data = self.store.encryption_context_path(pool.session_id).read_bytes()
        header = pb.PoolSchemaHeader(
            pool_id=pool.id, schema=pool.schema_proto(), parameters=codec.params_to_proto(pool.params),
            context_size_bytes=len(data), rows_remaining=invitation.rows_remaining,
            expire_time=codec.timestamp(invitation.expires) if invitation.expires else None,
        )
        return header, data

    @rpc
    async def Contribute(
        self, request_iterator: AsyncIterator[pb.ContributeRequest], context: grpc.aio.ServicerContext
    ) -> pb.ContributeResponse:
        async with self.work.open_stream(
            request_iterator, context, "Contribute", self.access.contributor, kinds=("manifest",),
            refusal="Contribute: send a ContributionManifest first, then the features' and targets' chunks",
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
        engine = self.engines.get(pool.session_id)
        return record_contribution(self.store, engine, scratch, manifest, invitation, pool, size)

    @rpc
    async def ListContributions(
        self, request: pb.ListContributionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContributionsResponse:
        return await self.work.io(self.list_contributions, context.invocation_metadata())

    def list_contributions(self, metadata: Metadata) -> pb.ListContributionsResponse:
        invitation, pool = self.access.contributor(metadata)
        own = self.store.contributions(pool.id, invitation.id)
        return pb.ListContributionsResponse(contributions=[c.to_proto() for c in own])
