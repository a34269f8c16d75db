"""PoolService calls, the analyst's side of pools: create a pool in this session, invite contributors, watch
their row counts, decrypt the pool's aggregate statistics and train on it (``train(pool_id=...)``).

An invitation's ``code`` is everything a contributor needs (``client.contributor.Contributor``): the server
address this client connected to, the contributor token and the pool id, as ``"cgi1." + urlsafe base64 of
JSON``. The token is shown once (the server keeps its hash): hand the code over as you would a password.
The analyst never receives contributors' ciphertexts; it decrypts only aggregates (``pool_statistics``),
masked refreshes and the model (docs/threat-model.md, Pools).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ciphergrad.client.session import Connection
from ciphergrad.core import standardize
from ciphergrad.core.gram import rotation_steps, weight_period
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import pool_tile
from ciphergrad.core.params import CKKSParameters, plan
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2, types_pb2

CODE_PREFIX = "cgi1."
_PACKINGS = {"rows": types_pb2.PACKING_ROWS, "columns": types_pb2.PACKING_COLUMNS}
_PACKING_NAMES = {value: name for name, value in _PACKINGS.items()}


def encode_invitation(address: str, token: str, pool_id: str, tls: bool = False) -> str:
    payload = json.dumps({"address": address, "token": token, "pool_id": pool_id, "tls": tls}, sort_keys=True)
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


@dataclass(frozen=True)
class PoolInfo:
    pool_id: str
    name: str
    feature_names: tuple[str, ...]
    target_name: str
    packing: str
    intercept: bool
    rows: int
    contributions: int
    size_bytes: int
    invitations: tuple[InvitationInfo, ...] = ()  # filled by Client.pool(), not by pools()

    @classmethod
    def from_proto(cls, message: pool_service_pb2.Pool, invitations: Sequence[Any] = ()) -> PoolInfo:
        schema = message.schema
        return cls(message.pool_id, message.display_name, tuple(schema.feature_names), schema.target_name,
                   _PACKING_NAMES.get(schema.packing, "columns"), schema.intercept, message.rows,
                   message.contributions, message.size_bytes,
                   tuple(InvitationInfo.from_proto(i) for i in invitations))


@dataclass(frozen=True)
class PoolStatistics:
    """Decrypted aggregates of every contributed row (features without the intercept column)."""

    rows: int
    feature_names: tuple[str, ...]
    mean: np.ndarray  # (d,)
    variance: np.ndarray  # (d,) population variance (ddof=0)
    target_mean: float
    target_variance: float
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # the decrypted sums the above come from
    intercept: bool = True  # the pool's features carry a column of ones first

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.variance, 0.0))

    @property
    def intercept_column(self) -> int | None:
        return 0 if self.intercept else None

    def standardization(self, target: bool = True) -> standardize.Standardization:
        """``(scale, shift)`` for ``LinearRegressionConfig(standardization=...)`` (solvers "gram"/"normal"):
        every feature to mean 0 and deviation 1, and the target too unless ``target=False``. The server applies
        it inside the Gram statistics and so learns these means and deviations (docs/threat-model.md, Pools)."""
        target_moments = (self.target_mean, float(np.sqrt(max(self.target_variance, 0.0)))) if target else (0.0, 1.0)
        return standardize.from_moments(self.mean, self.std, self.intercept_column, *target_moments)

    def raw_weights(self, weights: np.ndarray, standardization: standardize.Standardization | None = None,
                    target: bool = True) -> np.ndarray:
        """Weights trained with ``standardization`` (default: ``self.standardization(target)``) in raw units, in
        the same order (intercept first): ``y = [1, x] @ raw``."""
        found = standardization if standardization is not None else self.standardization(target)
        return standardize.raw_weights(weights, found, self.intercept_column)


def pool_keys(params: CKKSParameters, columns: int, packing: str) -> KeyHolder:
    """Keys for a pool of ``columns`` encrypted feature columns: the rotations of its tile (statistics,
    gradient descent) and of the Gram solver's weights."""
    tile = pool_tile(packing, columns, params.slots)
    return KeyHolder.for_tiles(params, [tile], rotation_steps(weight_period(columns, tile), params.slots))


class PoolCalls(Connection):
    # -- pools ----------------------------------------------------------------------------------------
    def create_pool(
        self,
        name: str,
        feature_names: Sequence[str],
        target_name: str,
        *,
        packing: str = "columns",
        intercept: bool = True,
        params: CKKSParameters | None = None,
    ) -> PoolInfo:
        """A pool in this session (one is created with suitable keys if there is none yet). Contributors
        encrypt ``feature_names`` in this order and ``target_name``; with ``intercept`` their SDK prepends
        a column of ones (the model's intercept, weight 0)."""
        if packing not in _PACKINGS:
            raise ValueError(f"packing={packing!r}: use 'columns' (the default, fastest Gram pass) or 'rows'")
        if self.key_holder is None:
            params = params or plan(3)
            columns = len(feature_names) + int(intercept)
            self.create_session(key_holder=pool_keys(params, columns, packing), display_name=f"pool {name}")
        schema = pool_service_pb2.PoolSchema(feature_names=list(feature_names), target_name=target_name,
                                             packing=_PACKINGS[packing], intercept=intercept)
        request = pool_service_pb2.CreatePoolRequest(display_name=name, schema=schema)
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
        code = encode_invitation(self.address, response.token, pool_id, tls=bool(self.tls))
        return Invitation(**vars(info), code=code)

    def invitations(self, pool_id: str) -> list[InvitationInfo]:
        request = pool_service_pb2.ListInvitationsRequest(pool_id=pool_id)
        found = self.pools_stub.ListInvitations(request, metadata=self.metadata)
        return [InvitationInfo.from_proto(i) for i in found.invitations]

    def revoke_invitation(self, invitation_id: str) -> InvitationInfo:
        """The invitation's token stops working at once; what it contributed stays in the pool."""
        request = pool_service_pb2.RevokeInvitationRequest(invitation_id=invitation_id)
        return InvitationInfo.from_proto(self.pools_stub.RevokeInvitation(request, metadata=self.metadata).invitation)

    # -- aggregates -----------------------------------------------------------------------------------
    def pool_statistics(self, pool_id: str) -> PoolStatistics:
        """Count, per-column mean and variance of the pooled features and target, decrypted here from the
        server's encrypted column sums (no row is ever decrypted)."""
        response = self.pools_stub.PoolStatistics(
            pool_service_pb2.PoolStatisticsRequest(pool_id=pool_id), metadata=self.metadata
        )
        info = self.pool(pool_id)
        holder = self._holder()
        names = ("feature_sums", "feature_square_sums", "target_sum", "target_square_sum")
        sums = {name: holder.decrypt(self._matrix(getattr(response, name))).reshape(-1) for name in names}
        self.transfer.add("received", "pool statistics", response.ByteSize())
        n, skip = response.rows, int(info.intercept)
        mean = sums["feature_sums"][skip:] / n
        variance = sums["feature_square_sums"][skip:] / n - mean**2
        target_mean = float(sums["target_sum"][0] / n)
        target_variance = float(sums["target_square_sum"][0] / n - target_mean**2)
        return PoolStatistics(n, info.feature_names, mean, variance, target_mean, target_variance, sums,
                              info.intercept)
