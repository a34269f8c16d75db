"""Ray's object-store mode (the default ``--ray-blocks``): workers never open the server's data directory.

One local Ray (2 CPUs, a pool of two workers) for the module. Every worker first installs a guard
(``BlockWorker.forbid_reads``): any open of a path under the table's directory raises in the worker and is
counted. Then a training job's shards (blocks streamed in pieces: the budget is set below the table's size),
the Gram pass and a fan-out run in object-store mode, give the local executor's results within 1e-6 (the
same tolerance as tests/test_execution.py: only the masked refreshes' fresh encryptions differ) and leave the
guard's count at 0; the same fan-out in path mode trips the guard, so the guard is live. Default suite: Ames
stacked twice (1,020 rows, two shards of two blocks), two epochs, ~15 s with Ray's start.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.gram_training import GramTrainer
from ciphergrad.core.inference import predict_linear
from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer
from ciphergrad.server.execution import StoredTable
from ciphergrad.server.execution.local import LocalExecutor

ray_shards = pytest.importorskip("ciphergrad.server.execution.ray_shards")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def table(tmp_path_factory, public_context, enc) -> StoredTable:
    data = load_ames()
    X = with_intercept((data.X - data.X.mean(axis=0)) / data.X.std(axis=0))
    X, y = np.vstack([X, X]), np.concatenate([data.y, data.y]).reshape(-1, 1)  # four row blocks of 256 rows
    Xe = enc(X)
    root = tmp_path_factory.mktemp("blobs")
    (root / "context.bin").write_bytes(public_context)
    (root / "0.bin").write_bytes(Xe.to_bytes())
    (root / "1.bin").write_bytes(enc(y, tile=Xe.tile).to_bytes())
    return StoredTable(root / "context.bin", root / "0.bin", root / "1.bin", len(X), Xe.tile.rows)


@pytest.fixture(scope="module")
def guarded(table):
    """A 2-worker pool whose workers refuse every open under the table's directory, with a budget of a
    third of the table (a block of X and y is a quarter), so that the blocks stream one at a time."""
    size = os.path.getsize(table.features) + os.path.getsize(table.targets)
    executor = ray_shards.RayExecutor(num_cpus=2, shards=2, min_shard_rows=1, timeout=120,
                                      object_store_mb=size / 3 / 2**20)
    executor.get([w.forbid_reads.remote(str(table.features.parent)) for w in executor.pool.workers], "guard")
    yield executor, size
    executor.close()


def forbidden_opens(executor) -> int:
    return sum(u["forbidden_opens"] for u in executor.get([w.usage.remote() for w in executor.pool.workers],
                                                          "usage"))


def test_object_store_mode_opens_no_blob_path_on_a_worker(guarded, table, engine, dec, refresh) -> None:
    executor, _ = guarded
    config = LinearRegressionConfig(learning_rate=0.5, momentum=0.3, epochs=2)
    weights, pieces = {}, []
    for name, source in (("local", LocalExecutor()), ("ray", executor)):
        with source.shards(table, engine) as shards:
            trainer = LinearTrainer(engine, None, None, config, refresh, shards=shards)
            while not trainer.done:
                trainer.run_epoch()
            weights[name], columns = dec(trainer.weights).reshape(-1), shards.shape[1]
            if name == "ray":
                assert len({place["pid"] for place in shards.placement}) == 2
                pieces = executor.feeder.pieces([table.features, table.targets], shards.ranges)
    assert len(pieces) > len(executor.ranges(table)), pieces  # the budget made the blocks stream in pieces
    assert 0 < executor.feeder.peak_bytes <= executor.feeder.budget
    assert np.max(np.abs(weights["ray"] - weights["local"])) < 1e-6

    gram = GramTrainer.from_partial(engine, executor.gram_partial(table, engine),
                                    LinearRegressionConfig(epochs=2, init="zeros", solver="gram"), refresh)
    local = GramTrainer.from_partial(engine, LocalExecutor().gram_partial(table, engine),
                                     LinearRegressionConfig(epochs=2, init="zeros", solver="gram"), refresh)
    for trainer in (gram, local):
        while not trainer.done:
            trainer.run_epoch()
    assert np.max(np.abs(dec(gram.weights) - dec(local.weights))) < 1e-6

    predict = functools.partial(predict_linear, weights=np.linspace(-1, 1, columns), bias=0.25)
    fanned, alone = executor.map_blocks(table, predict, engine), LocalExecutor().map_blocks(table, predict, engine)
    assert np.max(np.abs(dec(fanned) - dec(alone))) < 1e-6
    assert forbidden_opens(executor) == 0


def test_the_guard_catches_a_worker_reading_by_path(guarded, table, engine) -> None:
    """Control: the same fan-out in path mode makes the workers open the blobs, which the guard refuses."""
    executor, _ = guarded
    before = forbidden_opens(executor)
    executor.set_blocks("path")
    try:
        with pytest.raises(PermissionError, match=str(Path(table.features).parent)):
            executor.column_sums(table, engine)
    finally:
        executor.set_blocks("object-store")
    assert forbidden_opens(executor) > before
