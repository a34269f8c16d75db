"""Who is calling, and may they touch this resource? Tenants are isolated by session.

Two kinds of bearer token: a session's (the analyst, every service but ContributionService) and an
invitation's (a contributor: ContributionService only, for its own pool). Each is refused with
PERMISSION_DENIED, naming what it is for, wherever the other kind belongs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from ciphergrad.server.rpc import auth
from ciphergrad.server.rpc.errors import ServiceError, not_found
from ciphergrad.server.store.pool_records import InvitationRecord, PoolRecord
from ciphergrad.server.store.records import DatasetRecord, JobRecord, ModelRecord, SessionRecord
from ciphergrad.server.store.store import Store

Metadata = Iterable[tuple[str, Any]] | None


class Access:
    """``clock`` (epoch seconds) decides token and invitation expiry: ``time.time``, or a test's own."""

    def __init__(self, store: Store, token_ttl: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.store, self.clock = store, clock
        self.token_ttl = token_ttl  # seconds a token stays valid after it is issued; 0: until revoked

    def session(self, metadata: Metadata) -> SessionRecord:
        """The session whose bearer token the call's metadata (``context.invocation_metadata()``) carries, or
        UNAUTHENTICATED."""
        digest = auth.token_hash(auth.bearer_token(metadata))
        # Looked up by its SHA-256 (an index probe reveals nothing about the token), then confirmed in constant time.
        session = self.store.session_by_token_hash(digest)
        if session is None or not auth.same_hash(session.token_hash, digest):
            self.refuse_contributor(metadata, digest)
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "unknown or revoked session token: create a session (SessionService.CreateSession) and "
                "use the token it returns",
            )
        if self.token_ttl and self.clock() > session.token_issued + self.token_ttl:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the session token expired (tokens last {self.token_ttl:g} s, server flag --token-ttl): renew it "
                "before it expires with SessionService.RevokeToken, or create a new session",
            )
        return session

    def refuse_contributor(self, metadata: Metadata, digest: str = "") -> None:
        """PERMISSION_DENIED if the call carries a contributor token (for calls outside ContributionService,
        CreateSession included, which otherwise needs no token)."""
        if not digest:
            token = _bearer_or_none(metadata)
            if token is None:
                return
            digest = auth.token_hash(token)
        invitation = self.store.pools.invitation_by_token_hash(digest)
        if invitation is not None and auth.same_hash(invitation.token_hash, digest):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this is a contributor token (an invitation to pool {invitation.pool_id}): it reaches only "
                "ContributionService (GetPoolSchema, Contribute, ListContributions); the analyst's session token "
                "reaches the rest",
            )

    def contributor(self, metadata: Metadata) -> tuple[InvitationRecord, PoolRecord]:
        """The live invitation whose token the call carries, and its pool (ContributionService only)."""
        digest = auth.token_hash(auth.bearer_token(metadata))
        invitation = self.store.pools.invitation_by_token_hash(digest)
        if invitation is None or not auth.same_hash(invitation.token_hash, digest):
            session = self.store.session_by_token_hash(digest)
            if session is not None and auth.same_hash(session.token_hash, digest):
                raise ServiceError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this is a session token: ContributionService takes a contributor token, the one in an "
                    "invitation (PoolService.CreateInvitation); use PoolService to manage your pools",
                )
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "unknown contributor token: ask the pool's analyst for an invitation (PoolService.CreateInvitation)",
            )
        if invitation.revoked:
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED,
                               f"invitation {invitation.id} was revoked by the analyst: ask for a new invitation")
        if invitation.expired(self.clock()):
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(invitation.expires))
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED,
                               f"invitation {invitation.id} expired at {when}: ask the analyst for a new invitation")
        pool = self.store.pools.get(invitation.pool_id)
        if pool is None:  # deleted meanwhile (the cascade removes the invitation too)
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, f"pool {invitation.pool_id} was deleted")
        return invitation, pool

    def pool(self, pool_id: str, caller: SessionRecord) -> PoolRecord:
        return self._owned("pool", pool_id, self.store.pools.get(pool_id) if pool_id else None, caller)

    def invitation(self, invitation_id: str, caller: SessionRecord) -> InvitationRecord:
        found = self.store.pools.invitation(invitation_id) if invitation_id else None
        return self._owned("invitation", invitation_id, found, caller)

    def own_session(self, session_id: str, caller: SessionRecord) -> SessionRecord:
        return self._owned("session", session_id, self.store.session(session_id) if session_id else None, caller)

    def dataset(self, dataset_id: str, caller: SessionRecord) -> DatasetRecord:
        return self._owned("dataset", dataset_id, self.store.dataset(dataset_id) if dataset_id else None, caller)

    def job(self, job_id: str, caller: SessionRecord) -> JobRecord:
        return self._owned("job", job_id, self.store.job(job_id) if job_id else None, caller)

    def model(self, model_id: str, caller: SessionRecord) -> ModelRecord:
        return self._owned("model", model_id, self.store.model(model_id) if model_id else None, caller)

    def _owned(self, what: str, row_id: str, record: Any, caller: SessionRecord) -> Any:
        """``record`` if it belongs to ``caller``: INVALID_ARGUMENT, NOT_FOUND or PERMISSION_DENIED otherwise."""
        if not row_id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}_id is required")
        if record is None:
            raise not_found(f"no {what} with id {row_id!r}")
        owner = record.id if isinstance(record, SessionRecord) else record.session_id
        if owner != caller.id:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{what} {row_id!r} belongs to another session; this token reaches only its own",
            )
        return record


def _bearer_or_none(metadata: Metadata) -> str | None:
    try:
        return auth.bearer_token(metadata)
    except ServiceError:
        return None
