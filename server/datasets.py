"""DatasetService: atomic uploads of encrypted (features, targets) matrices."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc

from core.errors import ShapeError
from core.neighbors import check_reference
from core.tensor import EncryptedMatrix
from server.access import Access
from server.engines import EngineCache
from server.errors import invalid, rpc
from server.storage import Store, dumps, new_id
from server.uploads import Budget, receive_matrix
from wire import codec
from wire.proto_gen.ciphergrad.v1 import dataset_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import dataset_service_pb2_grpc as pb_grpc
from wire.proto_gen.ciphergrad.v1 import types_pb2

MAX_SHUFFLES = 1024


PACKING_NAMES = {types_pb2.PACKING_ROWS: "rows", types_pb2.PACKING_COLUMNS: "columns"}


def layout(row: dict[str, Any]) -> dict[str, Any]:
    """A dataset's layout: ``packing`` ('rows'/'columns'), ``tile`` [rows, cols], ``features_only``
    (empty for datasets stored before layouts were recorded; ``load_matrices`` gives their tiles)."""
    return json.loads(row.get("layout_json") or "{}")


def describe_layout(tile: Any, features_only: bool, reference_set: bool = False) -> dict[str, Any]:
    found = {
        "packing": "columns" if tile.cols == 1 else "rows",
        "tile": [tile.rows, tile.cols],
        "features_only": features_only,
    }
    if reference_set:  # an encrypted kNN reference set (core.neighbors.encrypt_reference)
        found["reference_set"] = True
    return found


def dataset_to_proto(row: dict[str, Any]) -> pb.Dataset:
    found = layout(row)
    tile = found.get("tile", [0, 0])
    return pb.Dataset(
        dataset_id=row["id"],
        display_name=row["display_name"],
        column_names=json.loads(row["column_names_json"]),
        rows=row["rows"],
        columns=row["columns"],
        shuffle_count=row["shuffle_count"],
        size_bytes=row["size_bytes"],
        level=row["level"],
        create_time=codec.timestamp(row["created"]),
        packing=types_pb2.PACKING_COLUMNS
        if found.get("packing") == "columns"
        else types_pb2.PACKING_ROWS
        if found.get("packing") == "rows"
        else types_pb2.PACKING_UNSPECIFIED,
        tile_rows=tile[0],
        tile_cols=tile[1],
        features_only=bool(found.get("features_only")),
        reference_set=bool(found.get("reference_set")),
    )


def load_matrices(store: Store, row: dict[str, Any], engine: Any) -> list[EncryptedMatrix]:
    """The stored matrices in upload order: X, y, then (X, y) of each shuffle."""
    folder = store.dataset_dir(row["session_id"], row["id"])
    return [EncryptedMatrix.from_bytes(engine, (folder / f"{i}.bin").read_bytes()) for i in range(row["matrices"])]


def check_pairs(matrices: list[EncryptedMatrix], columns: int) -> None:
    """Every (X, y) pair has the same shape and tile; names, if any, match the columns."""
    X = matrices[0]
    for k in range(0, len(matrices), 2):
        Xs, ys = matrices[k], matrices[k + 1]
        what = "the data" if k == 0 else f"shuffle {k // 2}"
        if Xs.shape != X.shape or Xs.tile != X.tile:
            raise ShapeError(f"features of {what} have shape {Xs.shape}; expected {X.shape} in the same tile")
        if ys.shape != (X.shape[0], 1) or ys.tile != X.tile:
            raise ShapeError(
                f"targets of {what} have shape {ys.shape}; expected ({X.shape[0]}, 1) in the features' tile"
            )
    check_columns(X, columns)


def check_columns(X: EncryptedMatrix, columns: int) -> None:
    if columns and columns != X.shape[1]:
        raise ShapeError(f"{columns} column names for {X.shape[1]} feature columns")


def check_packing(X: EncryptedMatrix, declared: int) -> None:
    """The declared packing (if any) must be the one the features were encrypted with."""
    actual = "columns" if X.tile.cols == 1 else "rows"
    wanted = PACKING_NAMES.get(declared)
    if wanted is not None and wanted != actual and X.shape[1] > 1:
        raise ShapeError(
            f"the manifest declares packing={wanted!r} but the features are encrypted in {X.tile.rows}x"
            f"{X.tile.cols} tiles ({actual} packing): encrypt them with packing={wanted!r} or declare {actual!r}"
        )


class DatasetServicer(pb_grpc.DatasetServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, max_upload: int) -> None:
        self.store, self.access, self.engines, self.max_upload = store, access, engines, max_upload

    @rpc
    def UploadDataset(
        self, request_iterator: Iterator[pb.UploadDatasetRequest], context: grpc.ServicerContext
    ) -> pb.UploadDatasetResponse:
        session = self.access.session(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "manifest":
            raise invalid("UploadDataset: send a DatasetManifest first, then the matrices' chunks")
        manifest = first.manifest
        if not 0 <= manifest.shuffle_count <= MAX_SHUFFLES:
            raise invalid(f"shuffle_count={manifest.shuffle_count} must lie in 0..{MAX_SHUFFLES}")
        budget = Budget(self.max_upload)
        budget.announce(manifest.total_size_bytes, "the dataset")
        if manifest.features_only and manifest.shuffle_count:
            raise invalid("a features_only dataset (for statistics) takes no shuffles; set shuffle_count=0")
        if manifest.reference_set and not manifest.features_only:
            raise invalid("a reference_set dataset is one encrypted matrix: set features_only (no targets)")
        count = 1 if manifest.features_only else 2 * (1 + manifest.shuffle_count)
        with self.store.staging() as scratch:
            for index in range(count):
                role = "features" if index % 2 == 0 else "targets"
                receive_matrix(request_iterator, "chunk", scratch / f"{index}.bin", budget, f"{role} #{index}")
            if next(request_iterator, None) is not None:
                raise invalid(f"UploadDataset: more than the {count} matrices the manifest announced")
            engine = self.engines.get(session["id"])
            # Parsing checks every ciphertext against the session's context before anything is kept.
            matrices = [EncryptedMatrix.from_bytes(engine, (scratch / f"{i}.bin").read_bytes()) for i in range(count)]
            columns = matrices[0].shape[1]
            if manifest.reference_set:
                columns = check_reference(matrices[0])  # its layout, or a message saying how to encrypt it
                if manifest.column_names and len(manifest.column_names) != columns:
                    raise ShapeError(f"{len(manifest.column_names)} column names for {columns} reference features")
            elif manifest.features_only:
                check_columns(matrices[0], len(manifest.column_names))
            else:
                check_pairs(matrices, len(manifest.column_names))
            if not manifest.reference_set:
                check_packing(matrices[0], manifest.packing)
            dataset_id = new_id()
            self.store.publish(scratch, self.store.dataset_dir(session["id"], dataset_id))
        row = {
            "id": dataset_id,
            "session_id": session["id"],
            "display_name": manifest.display_name,
            "column_names_json": dumps(list(manifest.column_names)),
            "rows": matrices[0].shape[0],
            "columns": columns,
            "shuffle_count": manifest.shuffle_count,
            "matrices": count,
            "size_bytes": budget.used,
            "level": min(m.level for m in matrices),
            "created": time.time(),
            "layout_json": dumps(describe_layout(matrices[0].tile, manifest.features_only, manifest.reference_set)),
        }
        self.store.insert("datasets", row)
        return pb.UploadDatasetResponse(dataset=dataset_to_proto(row))

    @rpc
    def GetDataset(self, request: pb.GetDatasetRequest, context: grpc.ServicerContext) -> pb.GetDatasetResponse:
        row = self.access.owned("datasets", request.dataset_id, self.access.session(context))
        return pb.GetDatasetResponse(dataset=dataset_to_proto(row))

    @rpc
    def ListDatasets(self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext) -> pb.ListDatasetsResponse:
        session = self.access.session(context)
        return pb.ListDatasetsResponse(
            datasets=[dataset_to_proto(r) for r in self.store.list("datasets", session["id"])]
        )

    @rpc
    def DeleteDataset(
        self, request: pb.DeleteDatasetRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDatasetResponse:
        row = self.access.owned("datasets", request.dataset_id, self.access.session(context))
        self.store.delete("datasets", row["id"])
        self.store.remove(self.store.dataset_dir(row["session_id"], row["id"]))
        return pb.DeleteDatasetResponse()
