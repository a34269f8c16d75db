"""PoolService calls, the analyst's side of pools: create a pool with its bounds and release policy, invite
contributors, watch their row counts, seal it, decrypt its release (``pool_statistics``) and train on it
(``train(pool_id=...)``: the release solved here, the weights sent back freshly encrypted).

An invitation's ``code`` is everything a contributor needs (``client.contributor.Contributor``): the server
address this client connected to, the contributor token, the pool id and the SHA-256 fingerprint of this
session's public key (the contributor refuses any other key), as ``"cgi1." + urlsafe base64 of JSON``. The
token is shown once (the server keeps its hash): hand the code over as you would a password. The analyst never
receives contributors' ciphertexts; it decrypts only the pool's one sealed release and the model
(docs/threat-model.md, Pools).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ciphergrad.client.session import Connection
from ciphergrad.core.keys import KeyHolder, key_fingerprint
from ciphergrad.core.params import CKKSParameters, plan
from ciphergrad.core.release import Bounds, Moments, RowSpace
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2

CODE_PREFIX = "cgi1."


def encode_invitation(address: str, token: str, pool_id: str, tls: bool = False, key: str = "") -> str:
    payload = json.dumps({"address": address, "token": token, "pool_id": pool_id, "tls": tls, "key": key},
                         sort_keys=True)
    return CODE_PREFIX + base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_invitation(code: str) -> dict[str, Any]:
    """The address, token, pool id and TLS flag of an invitation code, or ValueError saying what is wrong."""
    code = code.strip()
    if not code.startswith(CODE_PREFIX):
        raise ValueError(f"not a ciphergrad invitation: it should start with {CODE_PREFIX!r}; copy the whole code")
    body = code[len(CODE_PREFIX):]
    try:
        found = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError as exc:
        raise ValueError(f"the invitation code is damaged ({exc}): copy the whole code again") from exc
    if not isinstance(found, dict) or not all(isinstance(found.get(k), str) for k in ("address", "token", "pool_id")):
        raise ValueError("the invitation code lacks its address, token or pool id: ask the analyst for a new one")
    return found


@dataclass(frozen=True)
class InvitationInfo:
    invitation_id: str
    pool_id: str
    label: str
    rows: int  # rows contributed under this invitation
    contributions: int
    max_rows: int  # 0: no cap
    expire_time: float  # epoch seconds; 0: never
    revoked: bool

    @classmethod
    def from_proto(cls, message: pool_service_pb2.Invitation) -> InvitationInfo:
        expires = message.expire_time.ToNanoseconds() / 1e9 if message.HasField("expire_time") else 0.0
        return cls(message.invitation_id, message.pool_id, message.label, message.rows_contributed,
                   message.contributions, message.max_rows, float(expires), message.revoked)


@dataclass(frozen=True)
class Invitation(InvitationInfo):
    code: str = ""  # the opaque string a contributor needs: give it to them, and to nobody else


def schema_space(schema: pool_service_pb2.PoolSchema, clip_norm: float = 0.0) -> RowSpace:
    """The ``core.release.RowSpace`` a pool's schema (and policy's clip norm) defines."""
    def bounds(name: str) -> Bounds | None:
        return Bounds(schema.bounds[name].lower, schema.bounds[name].upper) if name in schema.bounds else None

    target = None if schema.classes else bounds(schema.target_name)
    return RowSpace(tuple(bounds(n) for n in schema.feature_names), target, len(schema.classes), clip_norm or None)


@dataclass(frozen=True)
class PoolInfo:
    pool_id: str
    name: str
    feature_names: tuple[str, ...]
    target_name: str
    bounds: dict[str, tuple[float, float]]
    classes: tuple[str, ...]
    min_contributors: int
    min_rows: int
    epsilon: float  # 0: no differential privacy
    delta: float
    mechanism: str  # in words, "none: ..." without differential privacy
    sealed: float  # epoch seconds; 0: open
    noise_std: float
    rows: int
    contributions: int
    contributors: int
    size_bytes: int
    invitations: tuple[InvitationInfo, ...] = ()  # filled by Client.pool(), not by pools()

    @classmethod
    def from_proto(cls, message: pool_service_pb2.Pool, invitations: Sequence[Any] = ()) -> PoolInfo:
        schema, policy = message.schema, message.policy
        sealed = message.seal_time.ToNanoseconds() / 1e9 if message.HasField("seal_time") else 0.0
        return cls(message.pool_id, message.display_name, tuple(schema.feature_names), schema.target_name,
                   {k: (v.lower, v.upper) for k, v in schema.bounds.items()}, tuple(schema.classes),
                   policy.min_contributors, policy.min_rows, policy.epsilon, policy.delta, message.mechanism,
                   float(sealed), message.noise_std, message.rows, message.contributions, message.contributors,
                   message.size_bytes, tuple(InvitationInfo.from_proto(i) for i in invitations))


@dataclass(frozen=True)
class PoolRelease:
    """A pool's sealed release, decrypted here: ``moments`` holds every aggregate (``core.release.Moments``:
    means, variances, correlations, ridge and logistic solutions)."""

    pool_id: str
    feature_names: tuple[str, ...]
    target_name: str
    classes: tuple[str, ...]
    rows: int
    contributions: int
    contributors: int
    epsilon: float
    delta: float
    noise_std: float
    moments: Moments = field(repr=False)

    @property
    def mean(self) -> np.ndarray:
        """Features' means (data units)."""
        return self.moments.mean()[: len(self.feature_names)]

    @property
    def variance(self) -> np.ndarray:
        """Features' population variances."""
        return self.moments.variance()[: len(self.feature_names)]

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.variance)

    @property
    def target_mean(self) -> float:
        return float(self.moments.mean()[len(self.feature_names)])

    @property
    def target_variance(self) -> float:
        return float(self.moments.variance()[len(self.feature_names)])

    @classmethod
    def decrypt(cls, release: pool_service_pb2.PoolRelease, holder: KeyHolder, matrix: Any) -> PoolRelease:
        schema = release.schema
        values = holder.decrypt(matrix).reshape(-1)
        moments = Moments.from_release(release.rows, schema_space(schema, release.clip_norm), values, release.noise_std)
        return cls(release.pool_id, tuple(schema.feature_names), schema.target_name, tuple(schema.classes),
                   release.rows, release.contributions, release.contributors, release.epsilon, release.delta,
                   release.noise_std, moments)


def pool_keys(params: CKKSParameters) -> KeyHolder:
    """Keys for pools: no Galois keys at all (the release is a weighted sum; column-packed predictions add
    columns without rotating), so the session's public context stays small."""
    return KeyHolder(params, rotations=[])


class PoolCalls(Connection):
    # -- pools ----------------------------------------------------------------------------------------
    def create_pool(
        self,
        name: str,
        feature_names: Sequence[str],
        target_name: str,
        *,
        bounds: dict[str, tuple[float, float]] | None = None,
        classes: Sequence[Any] | None = None,
        min_contributors: int = 3,
        min_rows: int = 10,
        epsilon: float | None = None,
        delta: float | None = None,
        clip_norm: float | None = None,
        params: CKKSParameters | None = None,
    ) -> PoolInfo:
        """A pool in this session (one is created, with keys, if there is none yet). Contributors summarize
        ``feature_names`` and ``target_name`` (a classification pool: ``classes``, its labels), each column
        clipped to its public ``bounds`` ``{name: (lower, upper)}`` if it has some. The server releases nothing
        before ``min_contributors`` distinct contributors and takes no contribution under ``min_rows`` rows;
        ``epsilon``/``delta`` make the one release differentially private (bounds needed on every column)."""
        if self.key_holder is None:
            self.create_session(key_holder=pool_keys(params or plan(3)), display_name=f"pool {name}")
        schema = pool_service_pb2.PoolSchema(
            feature_names=list(feature_names), target_name=target_name,
            bounds={k: pool_service_pb2.ColumnBounds(lower=float(lo), upper=float(hi))
                    for k, (lo, hi) in (bounds or {}).items()},
            classes=[str(c) for c in classes or ()],
        )
        policy = pool_service_pb2.ReleasePolicy(min_contributors=min_contributors, min_rows=min_rows,
                                                epsilon=epsilon or 0.0, delta=delta or 0.0, clip_norm=clip_norm or 0.0)
        request = pool_service_pb2.CreatePoolRequest(display_name=name, schema=schema, policy=policy)
        return PoolInfo.from_proto(self.pools_stub.CreatePool(request, metadata=self.metadata).pool)

    def pool(self, pool_id: str) -> PoolInfo:
        """The pool with its per-invitation row counts (only the analyst sees these)."""
        found = self.pools_stub.GetPool(pool_service_pb2.GetPoolRequest(pool_id=pool_id), metadata=self.metadata)
        return PoolInfo.from_proto(found.pool, found.invitations)

    def pools(self) -> list[PoolInfo]:
        found = self.pools_stub.ListPools(pool_service_pb2.ListPoolsRequest(), metadata=self.metadata)
        return [PoolInfo.from_proto(p) for p in found.pools]

    def delete_pool(self, pool_id: str) -> None:
        self.pools_stub.DeletePool(pool_service_pb2.DeletePoolRequest(pool_id=pool_id), metadata=self.metadata)

    # -- invitations ----------------------------------------------------------------------------------
    def invite(
        self, pool_id: str, label: str = "", expires_in: float | None = None, max_rows: int | None = None
    ) -> Invitation:
        """A new invitation: ``expires_in`` seconds (None: never), ``max_rows`` in total (None: no cap)."""
        request = pool_service_pb2.CreateInvitationRequest(
            pool_id=pool_id, label=label, expires_in_seconds=int(expires_in or 0), max_rows=int(max_rows or 0)
        )
        response = self.pools_stub.CreateInvitation(request, metadata=self.metadata)
        info = InvitationInfo.from_proto(response.invitation)
        code = encode_invitation(self.address, response.token, pool_id, tls=bool(self.tls),
                                 key=key_fingerprint(self._holder().public_context()))
        return Invitation(**vars(info), code=code)

    def invitations(self, pool_id: str) -> list[InvitationInfo]:
        request = pool_service_pb2.ListInvitationsRequest(pool_id=pool_id)
        found = self.pools_stub.ListInvitations(request, metadata=self.metadata)
        return [InvitationInfo.from_proto(i) for i in found.invitations]

    def revoke_invitation(self, invitation_id: str) -> InvitationInfo:
        """The invitation's token stops working at once; what it contributed stays in the pool."""
        request = pool_service_pb2.RevokeInvitationRequest(invitation_id=invitation_id)
        return InvitationInfo.from_proto(self.pools_stub.RevokeInvitation(request, metadata=self.metadata).invitation)

    # -- the release ----------------------------------------------------------------------------------
    def seal_pool(self, pool_id: str) -> PoolInfo:
        """Freeze the pool's contributions and have the server compute its one release (refused below the
        policy's ``min_contributors``). Later contributions are refused: new data goes to a new pool."""
        request = pool_service_pb2.SealPoolRequest(pool_id=pool_id)
        return PoolInfo.from_proto(self.pools_stub.SealPool(request, metadata=self.metadata).pool)

    def pool_statistics(self, pool_id: str) -> PoolRelease:
        """The pool's sealed release, decrypted here: counts, means, variances, correlations and the exact
        ridge and logistic solutions (``.moments``); the same numbers on every call."""
        response = self.pools_stub.PoolStatistics(
            pool_service_pb2.PoolStatisticsRequest(pool_id=pool_id), metadata=self.metadata
        )
        self.transfer.add("received", "pool release", response.ByteSize())
        release = response.release
        return PoolRelease.decrypt(release, self._holder(), self._matrix(release.moments))
