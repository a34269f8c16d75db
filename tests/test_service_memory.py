"""Server memory under large streams (issue 9 item 2), measured on a ``ciphergrad-server`` child process:
a ~1 GiB dataset upload, then four ~900 MiB Predict streams at once; the server's peak resident memory
(VmHWM) must stay under 1.5 GB. Ciphertext bytes are generated lazily by repeating one fresh encryption,
so the test process itself stays small."""

from __future__ import annotations

import json
import signal
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from service_support import ServerProcess

from ciphergrad.client.sdk import Client, default_parameters
from ciphergrad.core.layout import Tile
from ciphergrad.wire.chunks import CHUNK_BYTES
from ciphergrad.wire.proto_gen.ciphergrad.v1 import dataset_service_pb2, model_service_pb2, types_pb2

pytestmark = pytest.mark.slow

MIB = 2**20
LIMIT_BYTES = 1.5e9


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _matrix_bytes(blob: bytes, grid: tuple[int, int], tile: Tile, level: int) -> tuple[int, Iterator[bytes]]:
    """A serialized EncryptedMatrix of ``grid`` copies of one ciphertext: its size and its bytes, lazily."""
    header = {
        "format": "ciphergrad.EncryptedMatrix/1",
        "shape": [grid[0] * tile.rows, grid[1] * tile.cols],
        "tile": [tile.rows, tile.cols],
        "grid": list(grid),
        "zero_padding": [True, True],
        "level": level,
    }
    head = json.dumps(header).encode()
    prefix = b"CGEM" + struct.pack("<I", len(head)) + head
    record = struct.pack("<Q", len(blob)) + blob
    count = grid[0] * grid[1]

    def pieces() -> Iterator[bytes]:
        yield prefix
        for _ in range(count):
            yield record

    return len(prefix) + count * len(record), pieces()


def _chunked(pieces: Iterator[bytes], size: int) -> Iterator[types_pb2.MatrixChunk]:
    """Re-cut a byte stream into MatrixChunks of CHUNK_BYTES, the last one flagged."""
    buffer, sent = bytearray(), 0
    for piece in pieces:
        buffer += piece
        while len(buffer) >= CHUNK_BYTES:
            sent += CHUNK_BYTES
            yield types_pb2.MatrixChunk(data=bytes(buffer[:CHUNK_BYTES]), last=sent == size)
            del buffer[:CHUNK_BYTES]
    if buffer or sent < size:
        yield types_pb2.MatrixChunk(data=bytes(buffer), last=True)


def test_large_upload_and_four_large_predict_streams_stay_under_1_5_gb(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    try:
        pid = server.process.pid
        tile = Tile(4096, 1)
        client = Client(server.address)
        client.create_session(default_parameters(), tiles=[tile])
        holder = client.key_holder
        fresh = holder.encrypt(np.full((4096, 1), 0.5), tile=tile)
        blob, level = fresh.blobs()[0], fresh.level
        idle_kib = _kib(pid, "VmRSS")

        # ~1 GiB dataset upload (features only), streamed from a generator.
        count = (1024 * MIB) // len(blob)
        size, pieces = _matrix_bytes(blob, (count, 1), tile, level)
        manifest = dataset_service_pb2.DatasetManifest(total_size_bytes=size, features_only=True)

        def upload() -> Iterator[dataset_service_pb2.UploadDatasetRequest]:
            yield dataset_service_pb2.UploadDatasetRequest(manifest=manifest)
            for chunk in _chunked(pieces, size):
                yield dataset_service_pb2.UploadDatasetRequest(chunk=chunk)

        dataset = client.datasets.UploadDataset(upload(), metadata=client.metadata).dataset
        assert dataset.rows == count * tile.rows
        upload_peak_kib = _kib(pid, "VmHWM")

        # Four Predict streams of ~900 MiB each, in 32 MiB batches, against a server-owned linear model.
        features = 4
        model = client.upload_model(np.array([0.5, -0.25, 0.125, 1.0]), bias=[0.1])
        per_batch = (32 * MIB) // (len(blob) * features)  # row blocks per batch
        batches = (900 * MIB) // (per_batch * features * len(blob))
        answered: list[int] = []
        errors: list[BaseException] = []

        def stream() -> None:
            def requests() -> Iterator[model_service_pb2.PredictRequest]:
                yield model_service_pb2.PredictRequest(model_id=model.model_id)
                for _ in range(batches):
                    batch_size, batch = _matrix_bytes(blob, (per_batch, features), tile, level)
                    for chunk in _chunked(batch, batch_size):
                        yield model_service_pb2.PredictRequest(rows=chunk)

            try:
                responses = client.models.Predict(requests(), metadata=client.metadata)
                answered.append(sum(1 for r in responses if r.predictions.last))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=stream) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(1800)
        assert not errors, errors
        assert answered == [batches] * 4
        peak_kib = _kib(pid, "VmHWM")
        sent_mib = 4 * batches * per_batch * features * len(blob) / MIB
        print(
            f"\nserver RSS idle {idle_kib / 1024:.0f} MiB; peak after a {size / MIB:.0f} MiB upload "
            f"{upload_peak_kib / 1024:.0f} MiB; peak after 4 Predict streams ({sent_mib:.0f} MiB in "
            f"{batches} batches each) {peak_kib / 1024:.0f} MiB"
        )
        assert peak_kib * 1024 < LIMIT_BYTES
    finally:
        server.stop(signal.SIGTERM)
