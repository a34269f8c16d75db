"""Bearer tokens: one per session, stored only as a hash (a stolen disk yields no credentials)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

import grpc

from ciphergrad.server.rpc.errors import ServiceError

HEADER = "authorization"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(stored: str, digest: str) -> bool:
    """Constant-time comparison: how long it takes says nothing about how much of a guess was right."""
    return hmac.compare_digest(stored.encode(), digest.encode())


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token from ``authorization: Bearer <token>`` metadata (``context.invocation_metadata()``), or
    UNAUTHENTICATED."""
    for key, value in metadata or ():
        if key.lower() == HEADER:
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise ServiceError(
        grpc.StatusCode.UNAUTHENTICATED,
        "missing credentials: send the session token as metadata 'authorization: Bearer <token>' "
        "(CreateSession returns it)",
    )
