"""Typed records of the pool tables (pools, invitations, contributions), as ``server.store.records`` has for the
others: a frozen dataclass per table with its row form (``to_row``/``from_row``) and API form (``to_proto``).

A pool's schema (columns, bounds, classes) fixes ``core.release.RowSpace``, so every contribution's statistics
have the same entries and add up; its policy (minimum contributors and rows, differential privacy) is fixed at
creation too. ``sealed`` (a time) is set once, together with the release blob and its noise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Self

from ciphergrad.core.params import CKKSParameters
from ciphergrad.core.release import Bounds, RowSpace
from ciphergrad.server.store.records import dumps
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pb

DEFAULT_MIN_CONTRIBUTORS = 3
DEFAULT_MIN_ROWS = 10


@dataclass(frozen=True)
class ReleasePolicy:
    min_contributors: int = DEFAULT_MIN_CONTRIBUTORS
    min_rows: int = DEFAULT_MIN_ROWS
    epsilon: float = 0.0  # 0: no differential privacy
    delta: float = 0.0
    clip_norm: float = 0.0  # 0: the bounds' own

    @property
    def private(self) -> bool:
        return self.epsilon > 0

    def to_proto(self) -> pb.ReleasePolicy:
        return pb.ReleasePolicy(**vars(self))


@dataclass(frozen=True)
class PoolRecord:
    id: str
    session_id: str
    display_name: str
    feature_names: tuple[str, ...]
    target_name: str
    params: CKKSParameters
    created: float
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    policy: ReleasePolicy = ReleasePolicy()
    sealed: float = 0.0  # when the release was computed; 0: open
    noise_std: float = 0.0  # of the release's noise, on the scale of the sums
    rows: int = 0  # maintained by the store: the sum over contributions
    contributions: int = 0
    contributors: int = 0  # distinct invitations with a contribution
    size_bytes: int = 0

    @property
    def space(self) -> RowSpace:
        def bounds(name: str) -> Bounds | None:
            return Bounds(*self.bounds[name]) if name in self.bounds else None

        target = None if self.classes else bounds(self.target_name)
        return RowSpace(tuple(bounds(n) for n in self.feature_names), target, len(self.classes),
                        self.policy.clip_norm or None)

    @property
    def column_names(self) -> tuple[str, ...]:
        """The model's weight columns: the intercept, then the features."""
        return ("intercept", *self.feature_names)

    @property
    def columns(self) -> int:
        return len(self.column_names)

    @property
    def mechanism(self) -> str:
        if not self.policy.private:
            return "none: the analyst learns exact aggregates"
        return (f"Gaussian noise on the sufficient statistics (analytic Gaussian mechanism), "
                f"epsilon={self.policy.epsilon:g}, delta={self.policy.delta:g}, once per pool")

    def to_row(self) -> dict[str, Any]:
        schema = {"features": list(self.feature_names), "target": self.target_name,
                  "bounds": {k: list(v) for k, v in self.bounds.items()}, "classes": list(self.classes)}
        return {
            "id": self.id,
            "session_id": self.session_id,
            "display_name": self.display_name,
            "schema_json": dumps(schema),
            "params_json": dumps(self.params.to_dict()),
            "policy_json": dumps(vars(self.policy)),
            "created": self.created,
            "sealed": self.sealed,
            "noise_std": self.noise_std,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        schema = json.loads(row["schema_json"])
        return cls(
            id=row["id"], session_id=row["session_id"], display_name=row["display_name"],
            feature_names=tuple(schema["features"]), target_name=schema["target"],
            params=CKKSParameters.from_dict(json.loads(row["params_json"])), created=row["created"],
            bounds={k: (float(v[0]), float(v[1])) for k, v in schema.get("bounds", {}).items()},
            classes=tuple(schema.get("classes", ())), policy=ReleasePolicy(**json.loads(row["policy_json"] or "{}")),
            sealed=float(row.get("sealed") or 0.0), noise_std=float(row.get("noise_std") or 0.0),
            rows=int(row.get("rows") or 0), contributions=int(row.get("contributions") or 0),
            contributors=int(row.get("contributors") or 0), size_bytes=int(row.get("size_bytes") or 0),
        )

    def schema_proto(self) -> pb.PoolSchema:
        bounds = {name: pb.ColumnBounds(lower=lo, upper=hi) for name, (lo, hi) in self.bounds.items()}
        return pb.PoolSchema(feature_names=list(self.feature_names), target_name=self.target_name, bounds=bounds,
                             classes=list(self.classes))

    def to_proto(self) -> pb.Pool:
        return pb.Pool(
            pool_id=self.id, display_name=self.display_name, schema=self.schema_proto(), rows=self.rows,
            contributions=self.contributions, size_bytes=self.size_bytes, create_time=codec.timestamp(self.created),
            parameters=codec.params_to_proto(self.params), policy=self.policy.to_proto(),
            seal_time=codec.timestamp(self.sealed) if self.sealed else None, mechanism=self.mechanism,
            noise_std=self.noise_std, contributors=self.contributors,
        )


@dataclass(frozen=True)
class InvitationRecord:
    id: str
    pool_id: str
    session_id: str  # the pool's session (deleting it deletes the invitation)
    token_hash: str
    label: str
    created: float
    expires: float = 0.0  # epoch seconds; 0: never
    max_rows: int = 0  # 0: no cap
    revoked: bool = False
    rows: int = 0  # maintained by the store: rows contributed under this invitation
    contributions: int = 0

    def expired(self, now: float | None = None) -> bool:
        return bool(self.expires) and (time.time() if now is None else now) >= self.expires

    @property
    def rows_remaining(self) -> int:
        """Rows this invitation may still contribute; 0 means no cap (as in the API)."""
        return max(0, self.max_rows - self.rows) if self.max_rows else 0

    def to_row(self) -> dict[str, Any]:
        names = ("id", "pool_id", "session_id", "token_hash", "label", "created", "expires", "max_rows")
        return {**{name: getattr(self, name) for name in names}, "revoked": int(self.revoked)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        names = ("id", "pool_id", "session_id", "token_hash", "label", "created", "expires", "max_rows")
        return cls(**{name: row[name] for name in names}, revoked=bool(row["revoked"]),
                   rows=int(row.get("rows") or 0), contributions=int(row.get("contributions") or 0))

    def to_proto(self) -> pb.Invitation:
        return pb.Invitation(
            invitation_id=self.id, pool_id=self.pool_id, label=self.label, create_time=codec.timestamp(self.created),
            expire_time=codec.timestamp(self.expires) if self.expires else None, max_rows=self.max_rows,
            rows_contributed=self.rows, contributions=self.contributions, revoked=self.revoked,
        )


@dataclass(frozen=True)
class ContributionRecord:
    id: str
    pool_id: str
    invitation_id: str
    session_id: str
    rows: int
    size_bytes: int
    level: int
    created: float

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_proto(self) -> pb.Contribution:
        return pb.Contribution(
            contribution_id=self.id, pool_id=self.pool_id, invitation_id=self.invitation_id, rows=self.rows,
            size_bytes=self.size_bytes, create_time=codec.timestamp(self.created),
        )
