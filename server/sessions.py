"""SessionService: store a public context, hand out a bearer token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from core.engine import Engine
from server import auth, validation
from server.access import Access
from server.engines import EngineCache
from server.errors import invalid, rpc
from server.records import SessionRecord
from server.storage import Store, new_id
from server.uploads import Budget
from wire.proto_gen.ciphergrad.v1 import session_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import session_service_pb2_grpc as pb_grpc


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(
        self, store: Store, access: Access, engines: EngineCache, stop_job: Callable[[str], None], max_upload: int
    ) -> None:
        self.store, self.access, self.engines, self.stop_job = store, access, engines, stop_job
        self.max_upload = max_upload

    @rpc
    def CreateSession(
        self, request_iterator: Iterator[pb.CreateSessionRequest], context: grpc.ServicerContext
    ) -> pb.CreateSessionResponse:
        self.access.refuse_contributor(context)  # a contributor token reaches ContributionService only
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "manifest":
            raise invalid("CreateSession: send a SessionManifest first, then the context in chunks")
        declared = validation.declared_size(first.manifest.context_size_bytes, "context_size_bytes")
        budget = Budget(self.max_upload)
        budget.announce(declared, "the public context")
        with self.store.staging() as scratch:
            path = scratch / "context.bin"
            with open(path, "wb") as handle:
                for request in request_iterator:
                    if request.WhichOneof("kind") != "context_chunk":
                        raise invalid("CreateSession: only context_chunk messages may follow the manifest")
                    budget.spend(len(request.context_chunk), "the public context")
                    handle.write(request.context_chunk)
            data = path.read_bytes()
            if not data:
                raise invalid("CreateSession: no context received; stream KeyHolder.public_context()")
            validation.arrived(declared, len(data), "context_size_bytes")
            # Validates the bytes and refuses a secret key (FAILED_PRECONDITION) before anything is kept.
            engine = Engine.from_public_context(data)
            session_id, token = new_id(), auth.new_token()
            self.store.publish(path, self.store.context_path(session_id))
        session = SessionRecord(
            id=session_id,
            token_hash=auth.token_hash(token),
            display_name=first.manifest.display_name,
            params=engine.params,
            context_size=len(data),
            created=time.time(),
        )
        self.store.add_session(session)
        return pb.CreateSessionResponse(session=session.to_proto(), token=token)

    @rpc
    def GetSession(self, request: pb.GetSessionRequest, context: grpc.ServicerContext) -> pb.GetSessionResponse:
        caller = self.access.session(context)
        session = self.access.own_session(request.session_id or caller.id, caller)
        return pb.GetSessionResponse(session=session.to_proto())

    @rpc
    def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext) -> pb.RevokeTokenResponse:
        session = self.access.session(context)
        token = auth.new_token()
        self.store.replace_token(session.id, auth.token_hash(token), time.time())
        return pb.RevokeTokenResponse(token=token)

    @rpc
    def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSessionResponse:
        caller = self.access.session(context)
        session = self.access.own_session(request.session_id or caller.id, caller)
        for job in self.store.jobs(session.id):
            self.stop_job(job.id)
        self.store.delete_session(session.id)  # cascades to datasets, jobs and models
        self.engines.forget(session.id)
        return pb.DeleteSessionResponse()
