"""SessionService: store a public context, hand out a bearer token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc

from core.engine import Engine
from server import auth
from server.access import Access
from server.engines import EngineCache
from server.errors import invalid, rpc
from server.jobs import JobRunner
from server.storage import Store, dumps, new_id
from server.uploads import Budget
from wire import codec
from wire.proto_gen.ciphergrad.v1 import session_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import session_service_pb2_grpc as pb_grpc


def session_to_proto(row: dict[str, Any]) -> pb.Session:
    import json

    from core.params import CKKSParameters

    return pb.Session(
        session_id=row["id"],
        display_name=row["display_name"],
        parameters=codec.params_to_proto(CKKSParameters.from_dict(json.loads(row["params_json"]))),
        context_size_bytes=row["context_size"],
        create_time=codec.timestamp(row["created"]),
    )


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, runner: JobRunner, max_upload: int) -> None:
        self.store, self.access, self.engines, self.runner = store, access, engines, runner
        self.max_upload = max_upload

    @rpc
    def CreateSession(
        self, request_iterator: Iterator[pb.CreateSessionRequest], context: grpc.ServicerContext
    ) -> pb.CreateSessionResponse:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "manifest":
            raise invalid("CreateSession: send a SessionManifest first, then the context in chunks")
        budget = Budget(self.max_upload)
        budget.announce(first.manifest.context_size_bytes, "the public context")
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
            # Validates the bytes and refuses a secret key (FAILED_PRECONDITION) before anything is kept.
            engine = Engine.from_public_context(data)
            session_id, token = new_id(), auth.new_token()
            self.store.publish(path, self.store.context_path(session_id))
        row = {
            "id": session_id,
            "token_hash": auth.token_hash(token),
            "display_name": first.manifest.display_name,
            "params_json": dumps(engine.params.to_dict()),
            "context_size": len(data),
            "created": time.time(),
        }
        self.store.insert("sessions", row)
        return pb.CreateSessionResponse(session=session_to_proto(row), token=token)

    @rpc
    def GetSession(self, request: pb.GetSessionRequest, context: grpc.ServicerContext) -> pb.GetSessionResponse:
        session = self.access.session(context)
        row = self.access.owned("sessions", request.session_id or session["id"], session)
        return pb.GetSessionResponse(session=session_to_proto(row))

    @rpc
    def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSessionResponse:
        session = self.access.session(context)
        row = self.access.owned("sessions", request.session_id or session["id"], session)
        for job in self.store.list("jobs", row["id"]):
            self.runner.stop(job["id"])
        self.store.delete("sessions", row["id"])  # cascades to datasets, jobs and models
        self.engines.forget(row["id"])
        self.store.remove(self.store.session_dir(row["id"]))
        return pb.DeleteSessionResponse()
