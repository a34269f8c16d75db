"""Storage failures: a full disk is RESOURCE_EXHAUSTED, any other storage failure UNAVAILABLE, never INTERNAL;
the store stays consistent and serves reads (issue 9 item 5)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import local_server, session_client

X = np.hstack([np.ones((16, 1)), np.random.default_rng(4).uniform(size=(16, 3))])
Y = X @ np.array([0.2, -0.1, 0.4, 0.3])


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (sqlite3.OperationalError("database or disk is full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (OSError(errno.EIO, "Input/output error"), grpc.StatusCode.UNAVAILABLE),
        (sqlite3.OperationalError("disk I/O error"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_injected_storage_failures_map_to_their_status(tmp_path: Path, failure: Exception, expected) -> None:
    with local_server(tmp_path) as server:
        client = session_client(server.address, X.shape)
        original = server.store.add_dataset

        def failing(dataset: object) -> None:
            raise failure

        server.store.add_dataset = failing  # type: ignore[method-assign]
        code, details = _code(lambda: client.upload(X, Y))
        assert code == expected, details
        assert ("--data-dir" in details) == (expected == grpc.StatusCode.RESOURCE_EXHAUSTED)
        server.store.add_dataset = original  # type: ignore[method-assign]
        assert client.list_datasets() == []  # no row was committed
        assert client.upload(X, Y).rows == len(X)  # and the server carries on
    with local_server(tmp_path) as server:  # a restart sweeps the blobs whose row never committed
        assert len(list((tmp_path / "blobs").glob("*/datasets/*"))) == 1


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Write a filler file until the filesystem has not one byte left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_tmpfs_data_dir(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "64m") as disk:
        data_dir = disk / "data"
        with local_server(data_dir) as server:
            client = session_client(server.address, X.shape)
            kept = client.upload(X, Y)
            filler = _fill(disk)
            code, details = _code(lambda: client.upload(X, Y))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "disk is full" in details, (code, details)
            code, details = _code(lambda: client.train(kept.dataset_id, {"epochs": 1}))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
            # Reads still work while the disk is full.
            assert [d.dataset_id for d in client.list_datasets()] == [kept.dataset_id]
            assert client.get_session().session_id == client.session_id
            token, session_id, holder = client.token, client.session_id, client.key_holder
        filler.unlink()
        with local_server(data_dir) as server:  # freed and restarted: consistent, and writable again
            from ciphergrad.client.sdk import Client

            client = Client(server.address)
            client.use_session(session_id, token, holder)
            assert [d.dataset_id for d in client.list_datasets()] == [kept.dataset_id]
            run = client.train(kept.dataset_id, {"epochs": 1})
            assert run.model is not None
            assert list((data_dir / "tmp").iterdir()) == []
