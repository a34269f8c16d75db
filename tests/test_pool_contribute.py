"""Contributions are checked and atomic: the row cap (RESOURCE_EXHAUSTED naming it, race-free), the size
limit, columns and parameters that do not match the pool (INVALID_ARGUMENT); nothing of a refused one stays."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from pool_support import analyst_pool, status

from ciphergrad.client import Contributor
from ciphergrad.core.engine import Engine
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.params import plan
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
            store.pools.add_contribution(record, max_rows=100)
            admitted.append(index)
        except RowCapExceeded:
            pass

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 3 and sum(c.rows for c in store.pools.contributions("p")) == 90
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
        "context": lambda c: setattr(c, "_engine", Engine.for_encryption(KeyHolder(plan(2)).encryption_context())),
    }
    for expected, corrupt in cases.items():
        bad = Contributor(invitation.code)
        bad.schema  # noqa: B018 - download first, then corrupt what it encrypts with
        corrupt(bad)
        code, details = status(lambda bad=bad: bad.upload(X, Y, progress=False))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (expected, code, details)
        assert expected in details or "parameters" in details, (expected, details)
    assert analyst.pool(pool.pool_id).rows == before
    assert not any(server.store.tmp.iterdir())


def test_the_upload_limit_applies(tmp_path: Path) -> None:
    with analyst_pool(tmp_path, 300, max_upload_mb=3) as (_, analyst, pool):  # the 2.6 MB context fits
        contributor = Contributor(analyst.invite(pool.pool_id).code)
        rows = 20  # the statistics of 300 features: 45,753 entries in 12 ciphertexts, about 4.8 MB
        big_X, big_y = np.zeros((rows, 300)), np.zeros(rows)
        code, details = status(lambda: contributor.upload(big_X, big_y, progress=False))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-upload-mb" in details
        assert analyst.pool(pool.pool_id).rows == 0
