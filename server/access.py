"""Who is calling, and may they touch this resource? Tenants are isolated by session."""

from __future__ import annotations

from typing import Any

import grpc

from server import auth
from server.errors import ServiceError, not_found
from server.storage import Store

_NAMES = {"datasets": "dataset", "jobs": "job", "models": "model", "sessions": "session"}


class Access:
    def __init__(self, store: Store) -> None:
        self.store = store

    def session(self, context: grpc.ServicerContext) -> dict[str, Any]:
        """The session whose bearer token the call carries, or UNAUTHENTICATED."""
        token = auth.bearer_token(context)
        session = self.store.session_by_token_hash(auth.token_hash(token))
        if session is None:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "unknown or revoked session token: create a session (SessionService.CreateSession) and "
                "use the token it returns",
            )
        return session

    def owned(self, table: str, row_id: str, session: dict[str, Any]) -> dict[str, Any]:
        """A row of ``table`` that belongs to ``session``: NOT_FOUND or PERMISSION_DENIED otherwise."""
        what = _NAMES[table]
        if not row_id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}_id is required")
        row = self.store.get(table, row_id)
        if row is None:
            raise not_found(f"no {what} with id {row_id!r}")
        owner = row["id"] if table == "sessions" else row["session_id"]
        if owner != session["id"]:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{what} {row_id!r} belongs to another session; this token reaches only its own",
            )
        return row
