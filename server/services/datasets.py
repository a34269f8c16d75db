"""DatasetService: atomic uploads of encrypted (features, targets) matrices (async shells, sync bodies:
``server.rpc.work``).

Invariants: an upload is kept only once every ciphertext of every matrix parsed against the session's context
and passed ``validation.scan`` and the shapes agree; otherwise nothing of it stays (INVALID_ARGUMENT). The
ciphertext checks run where the executor keeps contexts (``Executor.check_files``): in this process with the
local executor, on a pool worker with Ray, so that a Ray server's process never loads a context for an upload.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import grpc

from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import ShapeError
from ciphergrad.core.neighbors import check_reference
from ciphergrad.server.execution import Executor
from ciphergrad.server.execution.engines import EngineCache
from ciphergrad.server.execution.local import LocalExecutor
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import invalid, rpc
from ciphergrad.server.rpc.uploads import Budget, receive_matrix_async
from ciphergrad.server.rpc.validation import ScannedMatrix
from ciphergrad.server.rpc.work import Work
from ciphergrad.server.store.records import DatasetLayout, DatasetRecord, SessionRecord
from ciphergrad.server.store.store import Store, matrix_file, new_id
from ciphergrad.wire.proto_gen.ciphergrad.v1 import dataset_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import dataset_service_pb2_grpc as pb_grpc
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

MAX_SHUFFLES = 1024


PACKING_NAMES = {types_pb2.PACKING_ROWS: "rows", types_pb2.PACKING_COLUMNS: "columns"}


def matrix_count(manifest: pb.DatasetManifest) -> int:
    """How many matrices the manifest announces, once its fields are checked (INVALID_ARGUMENT otherwise)."""
    if not 0 <= manifest.shuffle_count <= MAX_SHUFFLES:
        raise invalid(f"shuffle_count={manifest.shuffle_count} must lie in 0..{MAX_SHUFFLES}")
    validation.packing(manifest.packing)
    if manifest.features_only and manifest.shuffle_count:
        raise invalid("a features_only dataset (for statistics) takes no shuffles; set shuffle_count=0")
    if manifest.reference_set and not manifest.features_only:
        raise invalid("a reference_set dataset is one encrypted matrix: set features_only (no targets)")
    return 1 if manifest.features_only else 2 * (1 + manifest.shuffle_count)


def scan_upload(engine: Engine, handle: BinaryIO, index: int) -> ScannedMatrix:
    """The checks of an upload's matrix ``index`` (``Executor.check_files`` runs them where the context is)."""
    return validation.scan(engine, handle, f"matrix #{index}")


def check_pairs(matrices: list[ScannedMatrix], columns: int) -> None:
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


def check_columns(X: ScannedMatrix, columns: int) -> None:
    if columns and columns != X.shape[1]:
        raise ShapeError(f"{columns} column names for {X.shape[1]} feature columns")


def check_packing(X: ScannedMatrix, declared: int) -> None:
    """The declared packing (if any) must be the one the features were encrypted with."""
    actual = "columns" if X.tile.cols == 1 else "rows"
    wanted = PACKING_NAMES.get(declared)
    if wanted is not None and wanted != actual and X.shape[1] > 1:
        raise ShapeError(
            f"the manifest declares packing={wanted!r} but the features are encrypted in {X.tile.rows}x"
            f"{X.tile.cols} tiles ({actual} packing): encrypt them with packing={wanted!r} or declare {actual!r}"
        )


class DatasetServicer(pb_grpc.DatasetServiceServicer):
    def __init__(self, store: Store, access: Access, engines: EngineCache, max_upload: int, work: Work,
                 executor: Executor | None = None) -> None:
        self.store, self.access, self.engines, self.max_upload = store, access, engines, max_upload
        self.work, self.executor = work, executor or LocalExecutor()

    @rpc
    async def UploadDataset(
        self, request_iterator: AsyncIterator[pb.UploadDatasetRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadDatasetResponse:
        async with self.work.open_stream(
            request_iterator, context, "UploadDataset", self.access.session,
            kinds=("manifest",), refusal="UploadDataset: send a DatasetManifest first, then the matrices' chunks",
        ) as (session, requests, first):
            manifest = first.manifest
            count = matrix_count(manifest)
            budget = Budget(self.max_upload)
            budget.announce(validation.declared_size(manifest.total_size_bytes, "total_size_bytes"), "the dataset")
            with self.store.staging() as scratch:
                for index in range(count):
                    role = "features" if index % 2 == 0 else "targets"
                    path = scratch / matrix_file(index)
                    await receive_matrix_async(requests, "chunk", path, budget, f"{role} #{index}")
                if await requests.next() is not None:
                    raise invalid(f"UploadDataset: more than the {count} matrices the manifest announced")
                return await self.work.he(self.store_dataset, session, manifest, budget.used, scratch)

    def store_dataset(
        self, session: SessionRecord, manifest: pb.DatasetManifest, size: int, scratch: Path
    ) -> pb.UploadDatasetResponse:
        """Check the received matrices in ``scratch`` (``size`` bytes in all) and keep them as a dataset."""
        count = matrix_count(manifest)
        validation.arrived(manifest.total_size_bytes, size, "total_size_bytes")
        # Every ciphertext is checked against the session's context, one at a time, before anything is kept
        # (the upload is never parsed whole into memory): here, or on the Ray worker holding the context.
        matrices = self.executor.check_files(self.store.context_path(session.id),
                                             [scratch / matrix_file(i) for i in range(count)], scan_upload,
                                             functools.partial(self.engines.get, session.id))
        columns = matrices[0].shape[1]
        if manifest.reference_set:
            # its layout, or a message saying how to encrypt it
            columns = check_reference(matrices[0], slots=matrices[0].slots)
            if manifest.column_names and len(manifest.column_names) != columns:
                raise ShapeError(f"{len(manifest.column_names)} column names for {columns} reference features")
        elif manifest.features_only:
            check_columns(matrices[0], len(manifest.column_names))
        else:
            check_pairs(matrices, len(manifest.column_names))
        if not manifest.reference_set:
            check_packing(matrices[0], manifest.packing)
        dataset_id = new_id()
        self.store.publish(scratch, self.store.dataset_dir(session.id, dataset_id))
        dataset = DatasetRecord(
            id=dataset_id,
            session_id=session.id,
            display_name=manifest.display_name,
            column_names=tuple(manifest.column_names),
            rows=matrices[0].shape[0],
            columns=columns,
            shuffle_count=manifest.shuffle_count,
            matrices=count,
            size_bytes=size,
            level=min(m.level for m in matrices),
            created=time.time(),
            layout=DatasetLayout.of(matrices[0].tile, manifest.features_only, manifest.reference_set),
        )
        self.store.add_dataset(dataset)
        return pb.UploadDatasetResponse(dataset=dataset.to_proto())

    @rpc
    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        return await self.work.io(self.get_dataset, request, context.invocation_metadata())

    def get_dataset(self, request: pb.GetDatasetRequest, metadata: Metadata) -> pb.GetDatasetResponse:
        dataset = self.access.dataset(request.dataset_id, self.access.session(metadata))
        return pb.GetDatasetResponse(dataset=dataset.to_proto())

    @rpc
    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        return await self.work.io(self.list_datasets, context.invocation_metadata())

    def list_datasets(self, metadata: Metadata) -> pb.ListDatasetsResponse:
        session = self.access.session(metadata)
        return pb.ListDatasetsResponse(datasets=[d.to_proto() for d in self.store.datasets(session.id)])

    @rpc
    async def DeleteDataset(
        self, request: pb.DeleteDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDatasetResponse:
        return await self.work.io(self.delete_dataset, request, context.invocation_metadata())

    def delete_dataset(self, request: pb.DeleteDatasetRequest, metadata: Metadata) -> pb.DeleteDatasetResponse:
        self.store.delete_dataset(self.access.dataset(request.dataset_id, self.access.session(metadata)))
        return pb.DeleteDatasetResponse()
