"""With ``--executor ray`` the server process only routes an upload: its checks (every ciphertext parsed
against the session's context) run on the pool worker holding that context (``Executor.check_files``).

One in-process server on a local 2-CPU Ray for the module (~10 s with Ray's start). In this process a guard
counts every context load (``Engine.from_public_context``) and every ciphertext parsed
(``Engine.ciphertext_from_bytes``) while a session is created and an Ames-sized table uploaded: both stay 0
(the Ray workers are processes of their own, unguarded). Bad uploads still get INVALID_ARGUMENT with a
human message from the worker (a corrupt ciphertext: SEAL's refusal; a scale the session cannot take: the
validation layer's ``ServiceError``, pickled with its code) and leave nothing behind.
"""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import pytest
from service_support import ames, local_server, session_client

from ciphergrad.core import flat
from ciphergrad.core.engine import Engine
from ciphergrad.wire import chunks
from ciphergrad.wire.proto_gen.ciphergrad.v1 import dataset_service_pb2

pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory):
    data_dir = Path(tmp_path_factory.mktemp("ray-front"))
    with local_server(data_dir, executor="ray", ray_num_cpus=2, workers=2) as server:
        yield server, data_dir


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts context loads and ciphertext parses in this (the server's) process."""
    counts = {"contexts": 0, "ciphertexts": 0}
    load, parse = Engine.from_public_context.__func__, Engine.ciphertext_from_bytes

    def counted_load(cls: type, data: bytes) -> Engine:
        counts["contexts"] += 1
        return load(cls, data)

    def counted_parse(self: Engine, data: bytes) -> object:
        counts["ciphertexts"] += 1
        return parse(self, data)

    monkeypatch.setattr(Engine, "from_public_context", classmethod(counted_load))
    monkeypatch.setattr(Engine, "ciphertext_from_bytes", counted_parse)
    return counts


def _send(client, matrices: list[bytes]) -> None:
    manifest = dataset_service_pb2.DatasetManifest(total_size_bytes=sum(map(len, matrices)))
    requests = [dataset_service_pb2.UploadDatasetRequest(manifest=manifest)]
    requests += chunks.send(dataset_service_pb2.UploadDatasetRequest, "chunk", matrices)
    client.datasets.UploadDataset(iter(requests), metadata=client.metadata)


def _refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value


def test_the_server_process_loads_no_context_for_an_upload(ray_server, guard) -> None:
    server, _ = ray_server
    X, y, _ = ames()
    client = session_client(server.address, X.shape)
    try:
        dataset = client.upload(X, y)
        assert (dataset.rows, dataset.columns) == X.shape
    finally:
        client.close()
    assert guard == {"contexts": 0, "ciphertexts": 0}
    assert server.engines._engines == {}  # nothing loaded for the session here


def test_a_bad_upload_is_invalid_argument_from_the_worker(ray_server, guard) -> None:
    server, data_dir = ray_server
    X, y, _ = ames()
    client = session_client(server.address, X.shape)
    try:
        holder, tile = client.key_holder, client.tile_for(X.shape)
        good_X, good_y = holder.encrypt(X, tile=tile), holder.encrypt(y, tile=tile).to_bytes()
        header, blobs = flat.read(io.BytesIO(good_X.to_bytes()))
        blobs = list(blobs)
        blobs[1] = bytes(len(blobs[1]))  # one ciphertext zeroed: SEAL refuses it on load
        corrupt = b"".join(flat.pieces(header, blobs))
        error = _refused(lambda: _send(client, [corrupt, good_y]))
        assert "ciphertext" in error.details()

        for ct in good_X.ciphertexts:
            ct.scale = 2.0**150
        error = _refused(lambda: _send(client, [good_X.to_bytes(), good_y]))
        assert "2**150" in error.details() and "matrix #0" in error.details()
        assert client.datasets.ListDatasets(dataset_service_pb2.ListDatasetsRequest(),
                                            metadata=client.metadata).datasets == []
    finally:
        client.close()
    assert list((data_dir / "tmp").iterdir()) == []  # no partial upload kept
    assert guard["contexts"] == 0
