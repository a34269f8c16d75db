"""Typed records of the pool tables (pools, invitations, contributions), as ``server.store.records`` has for the
others: a frozen dataclass per table with its row form (``to_row``/``from_row``) and API form (``to_proto``).

A pool's layout is fixed when it is created (``core.layout.pool_tile``), so every contribution is encrypted
alike and their partial sums add up (``core.shards.PooledShards``, ``core.gram.GramPartial.__add__``).
``columns`` counts the intercept column when the pool has one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Self

from ciphergrad.core.layout import Tile, pool_tile
from ciphergrad.core.params import CKKSParameters
from ciphergrad.server.store.records import dumps
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

PACKINGS = {"rows": types_pb2.PACKING_ROWS, "columns": types_pb2.PACKING_COLUMNS}


@dataclass(frozen=True)
class PoolRecord:
    id: str
    session_id: str
    display_name: str
    feature_names: tuple[str, ...]
    target_name: str
    packing: str  # 'rows' or 'columns'
    intercept: bool  # contributors prepend a column of ones (column 0)
    params: CKKSParameters
    created: float
    rows: int = 0  # maintained by the store: the sum over contributions
    contributions: int = 0
    size_bytes: int = 0

    @property
    def columns(self) -> int:
        """Columns of the encrypted features matrix."""
        return len(self.feature_names) + int(self.intercept)

    @property
    def tile(self) -> Tile:
        return pool_tile(self.packing, self.columns, self.params.slots)

    @property
    def column_names(self) -> tuple[str, ...]:
        return (("intercept",) if self.intercept else ()) + self.feature_names

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "display_name": self.display_name,
            "schema_json": dumps({"features": list(self.feature_names), "target": self.target_name,
                                  "packing": self.packing, "intercept": self.intercept}),
            "params_json": dumps(self.params.to_dict()),
            "created": self.created,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        schema = json.loads(row["schema_json"])
        return cls(
            id=row["id"], session_id=row["session_id"], display_name=row["display_name"],
            feature_names=tuple(schema["features"]), target_name=schema["target"], packing=schema["packing"],
            intercept=bool(schema["intercept"]), params=CKKSParameters.from_dict(json.loads(row["params_json"])),
            created=row["created"], rows=int(row.get("rows") or 0), contributions=int(row.get("contributions") or 0),
            size_bytes=int(row.get("size_bytes") or 0),
        )

    def schema_proto(self) -> pb.PoolSchema:
        return pb.PoolSchema(feature_names=list(self.feature_names), target_name=self.target_name,
                             packing=PACKINGS[self.packing], intercept=self.intercept)

    def to_proto(self) -> pb.Pool:
        return pb.Pool(
            pool_id=self.id, display_name=self.display_name, schema=self.schema_proto(), rows=self.rows,
            contributions=self.contributions, size_bytes=self.size_bytes, create_time=codec.timestamp(self.created),
            parameters=codec.params_to_proto(self.params),
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
