"""Typed server records: one frozen dataclass per metadata table, with its row form (``to_row``/``from_row``,
JSON columns parsed once here) and its API form (``to_proto``). Servicers work with these, never raw rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Self

from ciphergrad.core.layout import Tile
from ciphergrad.core.params import CKKSParameters
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    dataset_service_pb2,
    model_service_pb2,
    session_service_pb2,
    types_pb2,
)
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2 as training_pb

JobState = training_pb.JobState
FINISHED_STATES = (JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED)
_PACKINGS = {"rows": types_pb2.PACKING_ROWS, "columns": types_pb2.PACKING_COLUMNS}


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class SessionRecord:
    id: str
    token_hash: str
    display_name: str
    params: CKKSParameters
    context_size: int
    created: float
    token_issued: float = 0.0  # when the current token was handed out (--token-ttl counts from here)

    def __post_init__(self) -> None:
        if not self.token_issued:  # the first token is issued with the session
            object.__setattr__(self, "token_issued", self.created)

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "token_hash": self.token_hash,
            "display_name": self.display_name,
            "params_json": dumps(self.params.to_dict()),
            "context_size": self.context_size,
            "created": self.created,
            "token_issued": self.token_issued,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        params = CKKSParameters.from_dict(json.loads(row["params_json"]))
        issued = row.get("token_issued") or row["created"]  # sessions stored before tokens were rotatable
        return cls(
            row["id"], row["token_hash"], row["display_name"], params, row["context_size"], row["created"], issued
        )

    def to_proto(self) -> session_service_pb2.Session:
        return session_service_pb2.Session(
            session_id=self.id,
            display_name=self.display_name,
            parameters=codec.params_to_proto(self.params),
            context_size_bytes=self.context_size,
            create_time=codec.timestamp(self.created),
        )


@dataclass(frozen=True)
class DatasetLayout:
    """How a dataset was encrypted; empty ``packing`` for datasets stored before layouts were recorded."""

    packing: str = ""  # 'rows' or 'columns'
    tile: tuple[int, int] = (0, 0)
    features_only: bool = False  # no targets: for statistics, not for training
    reference_set: bool = False  # an encrypted kNN reference set (core.neighbors.encrypt_reference)

    @classmethod
    def of(cls, tile: Tile, features_only: bool, reference_set: bool = False) -> Self:
        packing = "columns" if tile.cols == 1 else "rows"
        return cls(packing, (tile.rows, tile.cols), features_only, reference_set)

    def to_json(self) -> str:
        if not self.packing:
            return "{}"
        found: dict[str, Any] = {"packing": self.packing, "tile": list(self.tile), "features_only": self.features_only}
        if self.reference_set:
            found["reference_set"] = True
        return dumps(found)

    @classmethod
    def from_json(cls, text: str | None) -> Self:
        found = json.loads(text or "{}")
        tile = found.get("tile", [0, 0])
        packing, features_only = found.get("packing", ""), bool(found.get("features_only"))
        return cls(packing, (tile[0], tile[1]), features_only, bool(found.get("reference_set")))


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    session_id: str
    display_name: str
    column_names: tuple[str, ...]
    rows: int
    columns: int
    shuffle_count: int
    matrices: int  # stored matrices: X, y, then (X, y) per shuffle (or X alone)
    size_bytes: int
    level: int
    created: float
    layout: DatasetLayout = field(default_factory=DatasetLayout)

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "display_name": self.display_name,
            "column_names_json": dumps(list(self.column_names)),
            "rows": self.rows,
            "columns": self.columns,
            "shuffle_count": self.shuffle_count,
            "matrices": self.matrices,
            "size_bytes": self.size_bytes,
            "level": self.level,
            "created": self.created,
            "layout_json": self.layout.to_json(),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        return cls(
            **{k: row[k] for k in ("id", "session_id", "display_name", "rows", "columns", "shuffle_count")},
            column_names=tuple(json.loads(row["column_names_json"])),
            matrices=row["matrices"],
            size_bytes=row["size_bytes"],
            level=row["level"],
            created=row["created"],
            layout=DatasetLayout.from_json(row.get("layout_json")),
        )

    def to_proto(self) -> dataset_service_pb2.Dataset:
        layout = self.layout
        return dataset_service_pb2.Dataset(
            dataset_id=self.id,
            display_name=self.display_name,
            column_names=list(self.column_names),
            rows=self.rows,
            columns=self.columns,
            shuffle_count=self.shuffle_count,
            size_bytes=self.size_bytes,
            level=self.level,
            create_time=codec.timestamp(self.created),
            packing=_PACKINGS.get(layout.packing, types_pb2.PACKING_UNSPECIFIED),
            tile_rows=layout.tile[0],
            tile_cols=layout.tile[1],
            features_only=layout.features_only,
            reference_set=layout.reference_set,
        )


@dataclass(frozen=True)
class JobRecord:
    id: str
    session_id: str
    dataset_id: str
    algorithm: int  # ciphergrad.v1.Algorithm
    config: dict[str, Any]  # the algorithm config's to_dict()
    state: int  # ciphergrad.v1.JobState
    epochs: int
    created: float
    updated: float
    epoch: int = 0
    refreshes: int = 0
    model_id: str = ""
    error: str = ""
    pool_id: str = ""  # set (and dataset_id empty) when the job trains on a pool

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_row(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "config"}
        return {**row, "config_json": dumps(self.config)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        values = {name: row[name] for name in cls.__dataclass_fields__ if name != "config"}
        return cls(**values, config=json.loads(row["config_json"]))

    def to_proto(self) -> training_pb.Job:
        return training_pb.Job(
            job_id=self.id,
            dataset_id=self.dataset_id,
            algorithm=self.algorithm,
            state=self.state,
            epoch=self.epoch,
            epochs=self.epochs,
            model_id=self.model_id,
            error_message=self.error,
            hyperparameters=codec.struct_from_dict(self.config),
            refreshes=self.refreshes,
            create_time=codec.timestamp(self.created),
            update_time=codec.timestamp(self.updated),
            pool_id=self.pool_id,
        )

    def with_values(self, **values: Any) -> Self:
        return replace(self, **values)


@dataclass(frozen=True)
class ModelRecord:
    id: str
    session_id: str
    job_id: str  # empty for an uploaded (server-owned) model
    dataset_id: str
    algorithm: int  # ciphergrad.v1.Algorithm
    weight_scale: float  # decrypted weights / weight_scale = the model's weights
    metadata: dict[str, Any]  # the trainer's metadata(), or for uploads: server_owned, kind, inputs, outputs
    column_names: tuple[str, ...]
    created: float

    @property
    def server_owned(self) -> bool:
        return bool(self.metadata.get("server_owned"))

    def to_row(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in ("id", "session_id", "job_id", "dataset_id", "algorithm")}
        return {
            **row,
            "weight_scale": self.weight_scale,
            "metadata_json": dumps(self.metadata),
            "column_names_json": dumps(list(self.column_names)),
            "created": self.created,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        return cls(
            **{name: row[name] for name in ("id", "session_id", "job_id", "dataset_id", "algorithm", "weight_scale")},
            metadata=json.loads(row["metadata_json"] or "{}"),
            column_names=tuple(json.loads(row["column_names_json"])),
            created=row["created"],
        )

    def to_proto(self, weights: Any = None) -> model_service_pb2.Model:
        """``weights``: the encrypted weights to include (None: metadata only, as in listings)."""
        meta = self.metadata
        return model_service_pb2.Model(
            model_id=self.id,
            job_id=self.job_id,
            dataset_id=self.dataset_id,
            algorithm=self.algorithm,
            weights=codec.matrix_to_proto(weights) if weights is not None else None,
            weight_scale=self.weight_scale,
            column_names=list(self.column_names),
            create_time=codec.timestamp(self.created),
            metadata_json=dumps(meta),
            server_owned=self.server_owned,
            input_columns=int(meta.get("inputs", meta.get("features", 0))),
            output_columns=int(meta.get("outputs", 1)),
            display_name=str(meta.get("display_name", "")),
        )
