"""DatasetService calls: encrypt here, upload in chunks (features and targets, shuffled copies, an encrypted
nearest-neighbour reference set)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ciphergrad.client.session import Connection, as_matrix
from ciphergrad.core import flat
from ciphergrad.core.engine import Engine
from ciphergrad.core.layout import Tile, choose_tile, grid
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.wire import chunks
from ciphergrad.wire.proto_gen.ciphergrad.v1 import dataset_service_pb2, types_pb2

PACKINGS = {"rows": types_pb2.PACKING_ROWS, "columns": types_pb2.PACKING_COLUMNS}


class DatasetCalls(Connection):
    # -- datasets -----------------------------------------------------------------------------------
    def tile_for(self, shape: tuple[int, int], batch_size: int | None = None) -> Tile:
        slots = self._holder().params.slots
        return choose_tile(shape, slots, "rows", block_rows=batch_size)

    def upload(
        self,
        X: Any,
        y: Any = None,
        *,
        tile: Tile | None = None,
        packing: str = "rows",
        shuffle_orders: Sequence[np.ndarray] = (),
        column_names: Sequence[str] = (),
        display_name: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> dataset_service_pb2.Dataset:
        """Encrypt ``X`` (n, d) and ``y`` (n,) and upload them, plus one copy per row order.

        ``shuffle_orders`` stay here (only the encrypted copies go up); draw them from the CSPRNG with
        ``core.randomness.shuffle_orders``, never from a seed the server could learn or guess.

        Without ``y`` only the features go up (``features_only``: for ``describe``, not for training).
        ``packing``: 'rows' (training, the default) or 'columns' (one ciphertext per column: what the
        covariance/correlation of ``describe`` needs); an explicit ``tile`` overrides it.
        """
        holder = self._holder()
        X = as_matrix(X)
        if packing not in PACKINGS:
            raise ValueError(f"packing={packing!r}: use 'rows' or 'columns'")
        if tile is None:
            tile = self.tile_for(X.shape) if packing == "rows" else choose_tile(X.shape, holder.params.slots, packing)
        if tile.cols == 1 and X.shape[1] > 1:
            packing = "columns"
        features_only = y is None
        if features_only:
            if len(shuffle_orders):
                raise ValueError("shuffle_orders need targets: pass y")
            blobs = [self._encrypted_pieces(X, tile)]
        else:
            y = as_matrix(y)
            pairs = [(X, y)] + [(X[order], y[order]) for order in shuffle_orders]
            blobs = [self._encrypted_pieces(m, tile) for Xs, ys in pairs for m in (Xs, ys)]
        manifest = dataset_service_pb2.DatasetManifest(
            display_name=display_name,
            column_names=list(column_names),
            shuffle_count=len(shuffle_orders),
            packing=PACKINGS[packing],
            features_only=features_only,
        )
        return self._upload(manifest, blobs, "data upload", progress)

    def _encrypted_pieces(self, array: np.ndarray, tile: Tile) -> Iterator[bytes]:
        return encrypted_pieces(self._holder().engine, array, tile)

    def _upload(
        self,
        manifest: dataset_service_pb2.DatasetManifest,
        blobs: list[bytes] | list[Iterator[bytes]],
        what: str,
        progress: Callable[[int], None] | None = None,
    ) -> dataset_service_pb2.Dataset:
        """One UploadDataset call: the manifest, then the blobs' chunks. Encrypted as they go (pieces), their
        total size is unknown up front (0): the server's limit then applies as the chunks arrive."""
        if all(isinstance(blob, bytes) for blob in blobs):
            manifest.total_size_bytes = sum(len(blob) for blob in blobs)  # type: ignore[arg-type]
        sent = 0

        def count(size: int) -> None:
            nonlocal sent
            sent += size
            if progress is not None:
                progress(size)

        def requests() -> Iterator[dataset_service_pb2.UploadDatasetRequest]:
            yield dataset_service_pb2.UploadDatasetRequest(manifest=manifest)
            yield from chunks.send(dataset_service_pb2.UploadDatasetRequest, "chunk", blobs, count)

        response = self.datasets.UploadDataset(requests(), metadata=self.metadata)
        self.transfer.add("sent", what, sent)
        return response.dataset

    def list_datasets(self) -> list[dataset_service_pb2.Dataset]:
        request = dataset_service_pb2.ListDatasetsRequest()
        return list(self.datasets.ListDatasets(request, metadata=self.metadata).datasets)

    def delete_dataset(self, dataset_id: str) -> None:
        request = dataset_service_pb2.DeleteDatasetRequest(dataset_id=dataset_id)
        self.datasets.DeleteDataset(request, metadata=self.metadata)

    def upload_encrypted_reference(
        self,
        reference: Any,
        *,
        query_rows: int = 256,
        projection: Any = None,
        column_names: Sequence[str] = (),
        display_name: str = "",
    ) -> dataset_service_pb2.Dataset:
        """Encrypt a ``(K, d)`` nearest-neighbour reference set here and store it as a dataset: the server
        sees neither it nor the queries. ``query_rows``: rows per query block (q, rounded up to a power of
        two; ``distances`` then sends queries in blocks of q). ``projection`` (d, c) is applied here before
        encrypting; pass the same one to ``distances``. See core.neighbors.encrypt_reference for the layout."""
        from ciphergrad.core.neighbors import encrypt_reference

        holder = self._holder()
        query_rows = max(1, min(int(query_rows), holder.params.slots))
        blob = encrypt_reference(holder, as_matrix(reference), query_rows, projection).to_bytes()

        manifest = dataset_service_pb2.DatasetManifest(
            display_name=display_name, column_names=list(column_names), features_only=True, reference_set=True
        )
        return self._upload(manifest, [blob], "reference upload")


def encrypted_pieces(engine: Engine, array: np.ndarray, tile: Tile) -> Iterator[bytes]:
    """``EncryptedMatrix.encrypt(engine, array).to_bytes()`` made one tile row at a time, as it is sent:
    memory for one row block of ciphertexts, whatever the number of rows (public key only)."""
    starts = range(0, len(array), tile.rows) if len(array) > 1 else [0]
    blocks = (EncryptedMatrix.encrypt(engine, _block(array, start, tile.rows), tile=tile) for start in starts)
    first = next(blocks)
    header = {**first.header(), "shape": list(array.shape), "grid": list(grid(array.shape, tile))}
    yield from flat.pieces(header, itertools.chain(first.blobs(), (b for block in blocks for b in block.blobs())))


def _block(array: np.ndarray, start: int, rows: int) -> np.ndarray:
    """Rows ``start:start+rows`` as their own matrix; a last block of one row (of a longer table) gets a zero
    row below it, since a one-row matrix would be replicated across the tile (broadcasting) rather than
    zero-padded as the whole table's last block is."""
    block = array[start : start + rows]
    if len(block) == 1 and len(array) > 1:
        block = np.vstack([block, np.zeros_like(block)])
    return block
