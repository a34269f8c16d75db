"""SessionService: store a public context, hand out a bearer token (async shells, sync bodies: ``server.rpc.work``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from ciphergrad.server.execution import Executor
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.execution.local import LocalExecutor
from ciphergrad.server.rpc import auth, validation
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import invalid, rpc
from ciphergrad.server.rpc.uploads import Budget
from ciphergrad.server.rpc.work import Work
from ciphergrad.server.store.records import SessionRecord
from ciphergrad.server.store.store import Store, new_id
from ciphergrad.wire.proto_gen.ciphergrad.v1 import session_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import session_service_pb2_grpc as pb_grpc


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(
        self, store: Store, access: Access, engines: EngineCache, stop_job: Callable[[str], None], max_upload: int,
        work: Work, executor: Executor | None = None,
    ) -> None:
        self.store, self.access, self.engines, self.stop_job = store, access, engines, stop_job
        self.max_upload, self.work = max_upload, work
        self.executor = executor or LocalExecutor()

    @rpc
    async def CreateSession(
        self, request_iterator: AsyncIterator[pb.CreateSessionRequest], context: grpc.aio.ServicerContext
    ) -> pb.CreateSessionResponse:
        # A contributor token reaches ContributionService only (CreateSession otherwise needs no token).
        async with self.work.open_stream(
            request_iterator, context, "CreateSession", self.access.refuse_contributor, kinds=("manifest",),
            refusal="CreateSession: send a SessionManifest first, then the context in chunks",
            limit=lambda _: self.work.limits.anonymous(),  # no session yet: --max-anonymous-streams
        ) as (_, requests, first):
            declared = validation.declared_size(first.manifest.context_size_bytes, "context_size_bytes")
            budget = Budget(self.max_upload)
            budget.announce(declared, "the public context")
            with self.store.staging() as scratch:
                path = scratch / "context.bin"
                with open(path, "wb") as handle:
                    async for request in requests:
                        if request.WhichOneof("kind") != "context_chunk":
                            raise invalid("CreateSession: only context_chunk messages may follow the manifest")
                        budget.spend(len(request.context_chunk), "the public context")
                        handle.write(request.context_chunk)
                return await self.work.he(self.create_session, first.manifest, declared, path)

    def create_session(self, manifest: pb.SessionManifest, declared: int, path: Path) -> pb.CreateSessionResponse:
        """Check the received context at ``path`` and keep it under a new session."""
        size = path.stat().st_size  # the bytes are read where they are checked (the executor), not here too
        if not size:
            raise invalid("CreateSession: no context received; stream KeyHolder.public_context()")
        validation.arrived(declared, size, "context_size_bytes")
        session_id, token = new_id(), auth.new_token()
        # Validates the bytes and refuses a secret key (FAILED_PRECONDITION) before anything is kept. On Ray a
        # pool worker loads it (~0.45 s of CPU off this process) and keeps it for the session's jobs.
        params = self.executor.inspect_context(path, self.store.context_path(session_id))
        self.store.publish(path, self.store.context_path(session_id))
        session = SessionRecord(
            id=session_id,
            token_hash=auth.token_hash(token),
            display_name=manifest.display_name,
            params=params,
            context_size=size,
            created=time.time(),
        )
        self.store.add_session(session)
        return pb.CreateSessionResponse(session=session.to_proto(), token=token)

    @rpc
    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        return await self.work.io(self.get_session, request, context.invocation_metadata())

    def get_session(self, request: pb.GetSessionRequest, metadata: Metadata) -> pb.GetSessionResponse:
        caller = self.access.session(metadata)
        session = self.access.own_session(request.session_id or caller.id, caller)
        return pb.GetSessionResponse(session=session.to_proto())

    @rpc
    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeTokenResponse:
        return await self.work.io(self.revoke_token, context.invocation_metadata())

    def revoke_token(self, metadata: Metadata) -> pb.RevokeTokenResponse:
        session = self.access.session(metadata)
        token = auth.new_token()
        self.store.replace_token(session.id, auth.token_hash(token), time.time())
        return pb.RevokeTokenResponse(token=token)

    @rpc
    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        return await self.work.io(self.delete_session, request, context.invocation_metadata())

    def delete_session(self, request: pb.DeleteSessionRequest, metadata: Metadata) -> pb.DeleteSessionResponse:
        caller = self.access.session(metadata)
        session = self.access.own_session(request.session_id or caller.id, caller)
        for job in self.store.jobs(session.id):
            self.stop_job(job.id)
        self.store.delete_session(session.id)  # cascades to datasets, jobs and models
        self.engines.forget(session.id)
        return pb.DeleteSessionResponse()
