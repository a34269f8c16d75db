"""Contributions are checked and atomic: the row cap (RESOURCE_EXHAUSTED naming it, race-free), the size
limit, columns, parameters and layout that do not match the pool (INVALID_ARGUMENT), and a contributor killed
mid-upload, after which the pool is unchanged and no stray file remains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from pool_support import analyst_pool, status
from service_support import ROOT

from ciphergrad.client import Contributor
from ciphergrad.core.engine import Engine
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import Tile
from ciphergrad.core.params import plan
from ciphergrad.server.jobs.pool_view import pool_view
from ciphergrad.server.store.pool_records import ContributionRecord
from ciphergrad.server.store.pool_tables import RowCapExceeded
from ciphergrad.server.store.store import Store

RNG = np.random.default_rng(11)
X, Y = RNG.normal(size=(60, 3)), RNG.normal(size=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with analyst_pool(Path(tmp_path_factory.mktemp("data")), 3) as (server, analyst, pool):
        yield server, analyst, pool


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def test_the_row_cap_is_enforced_and_named(served) -> None:
    _, analyst, pool = served
    invitation = analyst.invite(pool.pool_id, max_rows=50)
    contributor = Contributor(invitation.code)
    assert contributor.schema.rows_remaining == 50
    contributor.upload(X[:30], Y[:30], progress=False)
    code, details = status(lambda: contributor.upload(X[:30], Y[:30], progress=False))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "row cap" in details and "at most 20 rows" in details
    contributor.upload(X[:20], Y[:20], progress=False)  # exactly up to the cap
    assert [r.rows for r in contributor.contributions()] == [30, 20]


def test_concurrent_contributions_cannot_pass_the_cap_together(served) -> None:
    _, analyst, pool = served
    code = analyst.invite(pool.pool_id, max_rows=50).code
    outcomes: list[object] = []

    def upload() -> None:
        try:
            outcomes.append(Contributor(code).upload(X[:40], Y[:40], progress=False).rows)
        except grpc.RpcError as error:
            outcomes.append(error.code())

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == sorted([40, grpc.StatusCode.RESOURCE_EXHAUSTED], key=str)


def test_the_locked_insert_admits_exactly_the_cap(tmp_path: Path) -> None:
    """Many threads racing for the last rows of one invitation: the check and the insert are one step."""
    store = Store(tmp_path)
    admitted: list[int] = []

    def add(index: int) -> None:
        record = ContributionRecord(f"c{index}", "p", "i", "s", 30, 1, 3, time.time())
        try:
            store._db.execute("PRAGMA foreign_keys=OFF")  # no pool/invitation rows in this unit test
            store.add_contribution(record, max_rows=100)
            admitted.append(index)
        except RowCapExceeded:
            pass

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 3 and sum(c.rows for c in store.contributions("p")) == 90
    store.close()


def test_mismatched_columns_parameters_and_layout_are_invalid(served) -> None:
    server, analyst, pool = served
    invitation = analyst.invite(pool.pool_id)
    before = analyst.pool(pool.pool_id).rows
    contributor = Contributor(invitation.code)
    schema = contributor.schema
    with pytest.raises(ValueError, match="3"):
        contributor.upload(X[:, :2], Y, progress=False)  # caught by the SDK before anything is sent
    cases = {
        "differ from the pool's schema": lambda c: object.__setattr__(
            c, "_schema", replace(schema, feature_names=("x1", "x0", "x2"))),
        "tiles": lambda c: setattr(type(c), "tile", property(lambda self: Tile(1024, 1))),
        "context": lambda c: setattr(c, "_engine", Engine.for_encryption(KeyHolder(plan(2)).encryption_context())),
    }
    for expected, corrupt in cases.items():
        bad = Contributor(invitation.code)
        bad.schema  # noqa: B018 - download first, then corrupt what it encrypts with
        saved = type(bad).tile
        try:
            corrupt(bad)
            code, details = status(lambda bad=bad: bad.upload(X, Y, progress=False))
        finally:
            type(bad).tile = saved
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (expected, code, details)
        assert expected in details or "parameters" in details, (expected, details)
    assert analyst.pool(pool.pool_id).rows == before
    assert not any(server.store.tmp.iterdir())


def test_the_upload_limit_applies(tmp_path: Path) -> None:
    with analyst_pool(tmp_path, 3, max_upload_mb=60) as (_, analyst, pool):  # the 57 MiB context fits
        contributor = Contributor(analyst.invite(pool.pool_id).code)
        rows = 40 * 4096  # 40 blocks of 6 ciphertexts (X with the intercept, y): about 79 MiB
        big_X, big_y = np.zeros((rows, 3)), np.zeros(rows)
        code, details = status(lambda: contributor.upload(big_X, big_y, progress=False))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-upload-mb" in details
        assert analyst.pool(pool.pool_id).rows == 0


def test_a_contributor_killed_mid_upload_leaves_nothing(served) -> None:
    server, analyst, pool = served
    code = analyst.invite(pool.pool_id, label="killed").code
    before, files = analyst.pool(pool.pool_id), _files(server.store.blob_root)
    script = (
        "import sys, numpy as np; from ciphergrad.client import Contributor; "
        "c = Contributor(sys.argv[1]); rows = 120_000; "
        "c.upload(np.random.rand(rows, 3), np.random.rand(rows), progress=False)"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script, code], cwd=ROOT, env=environment)
    try:
        deadline = time.monotonic() + 120
        while not any(path.stat().st_size > 2**20 for path in _files(server.store.tmp)):  # well into the upload
            assert child.poll() is None, "the contributor finished before it could be killed"
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    deadline = time.monotonic() + 30
    while any(server.store.tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(server.store.tmp.iterdir())  # the scratch directory is gone
    after = analyst.pool(pool.pool_id)
    assert (after.rows, after.contributions, after.size_bytes) == (before.rows, before.contributions, before.size_bytes)
    assert _files(server.store.blob_root) == files


def test_a_last_block_of_one_row_is_zero_padded(served) -> None:
    """4,097 rows in 4,096-row tiles: the last block holds one row, which must not be replicated across its
    tile (a one-row matrix broadcasts); the pooled sums and the normal solver see each row once."""
    _, analyst, _ = served
    rng = np.random.default_rng(4)
    X = rng.normal(size=(4097, 2))
    y = X @ np.array([0.5, -0.25]) + 0.1 + 0.01 * rng.normal(size=4097)
    X[-1], y[-1] = [3.0, -2.0], 5.0  # an outlier in the one-row block: counted 4,096 times, it would show
    pool = analyst.create_pool("edge", ["a", "b"], "y")
    Contributor(analyst.invite(pool.pool_id).code).upload(X, y, progress=False)
    stats = analyst.pool_statistics(pool.pool_id)
    assert np.max(np.abs(stats.mean - X.mean(axis=0))) < 1e-6
    assert abs(stats.target_mean - y.mean()) < 1e-6
    weights = analyst.weights(analyst.train(pool_id=pool.pool_id, config={"solver": "normal"}).model)
    least = np.linalg.lstsq(np.hstack([np.ones((len(X), 1)), X]), y, rcond=None)[0]
    assert np.max(np.abs(weights - least)) < 1e-5


def test_a_job_trains_on_the_contributions_it_started_with(served) -> None:
    server, analyst, _ = served
    pool = analyst.create_pool("snapshot", ["a", "b", "c"], "y")
    contributor = Contributor(analyst.invite(pool.pool_id).code)
    contributor.upload(X[:30], Y[:30], progress=False)
    created = time.time()
    contributor.upload(X[30:], Y[30:], progress=False)
    before = pool_view(server.store, pool.pool_id, created)
    assert before is not None and before.rows == 30 and len(before.tables) == 1
    assert pool_view(server.store, pool.pool_id).rows == 60  # type: ignore[union-attr]


def test_a_pool_with_a_running_job_is_not_deleted(served) -> None:
    _, analyst, _ = served
    pool = analyst.create_pool("busy", ["a", "b", "c"], "y")
    Contributor(analyst.invite(pool.pool_id).code).upload(X, Y, progress=False)
    refused: list[tuple[grpc.StatusCode, str]] = []

    def delete_during(epoch: int, loss: float) -> None:
        if epoch == 1:
            refused.append(status(lambda: analyst.delete_pool(pool.pool_id)))

    run = analyst.train(pool_id=pool.pool_id, config={"epochs": 3, "solver": "gram"}, on_epoch=delete_during)
    assert run.model is not None
    assert refused and refused[0][0] == grpc.StatusCode.FAILED_PRECONDITION and "CancelJob" in refused[0][1]
    analyst.delete_pool(pool.pool_id)  # once the job ended
    assert pool.pool_id not in {p.pool_id for p in analyst.pools()}
