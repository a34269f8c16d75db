"""Token and invitation expiry against an injected clock (``Access(clock=...)``): exact boundaries, no sleeps."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ciphergrad.core.params import plan
from ciphergrad.server.rpc import auth
from ciphergrad.server.rpc.access import Access
from ciphergrad.server.rpc.errors import ServiceError
from ciphergrad.server.store.pool_records import InvitationRecord, PoolRecord
from ciphergrad.server.store.records import SessionRecord
from ciphergrad.server.store.store import Store


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value.code, caught.value.message


@pytest.fixture
def store(tmp_path: Path):
    found = Store(tmp_path)
    found.add_session(SessionRecord("s1", auth.token_hash("first"), "test", plan(2), 1, created=1000.0))
    yield found
    found.close()


def test_a_token_lives_exactly_its_ttl_and_renewal_restarts_it(store: Store) -> None:
    clock = Clock(1000.0)
    access = Access(store, token_ttl=60.0, clock=clock)
    clock.now = 1060.0
    assert access.session(_bearer("first")).id == "s1"  # the last second of its life
    clock.now = 1060.5
    code, message = _refused(lambda: access.session(_bearer("first")))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "--token-ttl" in message and "expired" in message
    store.replace_token("s1", auth.token_hash("second"), 1050.0)  # renewed (RevokeToken) before it expired
    clock.now = 1100.0
    assert access.session(_bearer("second")).id == "s1"
    code, message = _refused(lambda: access.session(_bearer("first")))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in message
    clock.now = 1110.5
    assert _refused(lambda: access.session(_bearer("second")))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert Access(store, token_ttl=0.0, clock=clock).session(_bearer("second")).id == "s1"  # 0: no expiry


def test_an_invitation_expires_at_its_time_naming_it(store: Store) -> None:
    store.pools.add(PoolRecord("p1", "s1", "pool", ("x",), "y", plan(2), created=1000.0))
    for name, expires in (("soon", 2000.0), ("never", 0.0)):
        store.pools.add_invitation(InvitationRecord(name, "p1", "s1", auth.token_hash(name), name, 1000.0, expires))
    clock = Clock(1999.9)
    access = Access(store, clock=clock)
    assert access.contributor(_bearer("soon"))[0].id == "soon"
    clock.now = 2000.0
    code, message = _refused(lambda: access.contributor(_bearer("soon")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "expired at 1970-01-01 00:33:20 UTC" in message
    clock.now = 10.0**10
    assert access.contributor(_bearer("never"))[0].id == "never"
