"""The execution layer: shard partials (core.shards) and the local and Ray executors (server.execution).

Tolerances: summed shard partials decrypt within 1e-9 of the whole table's sums (ciphertext addition is
exact; only refresh encryptions differ); Ray's weights within 1e-6 of the local executor's on Ames after
the same epochs (linear "gd", Gram, logistic with the key holder's refresh of the logit), and the local
executor's within 1e-4 of the torch twins; fan-out predictions, column moments, metrics sums and distance
batches within 1e-6 of the local executor's (and of float64 within 1e-4). One local 2-CPU Ray with a pool of
two workers for the module; it splits even Ames (``min_shard_rows=1``) so that every path crosses workers.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from ciphergrad.core import EncryptedMatrix, stats
from ciphergrad.core.blocks import read_block_range
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.errors import ShapeError
from ciphergrad.core.gram import accumulate, row_blocks
from ciphergrad.core.gram_training import GramTrainer
from ciphergrad.core.inference import predict_linear, predict_linear_encrypted
from ciphergrad.core.layout import Tile
from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer, fit_torch
from ciphergrad.core.logistic import LogisticRegressionConfig, LogisticTrainer
from ciphergrad.core.logistic import fit_torch as fit_torch_logistic
from ciphergrad.core.neighbors import encrypt_reference, squared_distances, squared_distances_torch
from ciphergrad.core.shards import LocalShards, block_ranges, row_blocks_of
from ciphergrad.core.stats import mean_from_sums, variance_from_sums
from ciphergrad.server.execution import ExecutionError, StoredTable
from ciphergrad.server.execution.local import LocalExecutor

ray_shards = pytest.importorskip("ciphergrad.server.execution.ray_shards")


@pytest.fixture(scope="module")
def ames():
    data = load_ames()
    X = (data.X - data.X.mean(axis=0)) / data.X.std(axis=0)
    return with_intercept(X), data.y.reshape(-1, 1)



def store(tmp_path: Path, public_context: bytes, X: EncryptedMatrix, y: EncryptedMatrix | None) -> StoredTable:
    (tmp_path / "context.bin").write_bytes(public_context)
    (tmp_path / "0.bin").write_bytes(X.to_bytes())
    if y is not None:
        (tmp_path / "1.bin").write_bytes(y.to_bytes())
    targets = tmp_path / "1.bin" if y is not None else None
    return StoredTable(tmp_path / "context.bin", tmp_path / "0.bin", targets, X.shape[0], X.tile.rows)


@pytest.fixture(scope="module")
def ray_executor():
    executor = ray_shards.RayExecutor(num_cpus=2, shards=2, min_shard_rows=1, timeout=300)
    yield executor
    executor.close()


def train(trainer, dec) -> np.ndarray:
    while not trainer.done:
        trainer.run_epoch()
    return dec(trainer.weights).reshape(-1)


# -- core.shards, no Ray ------------------------------------------------------------------------------------
def test_block_ranges_cover_every_block_and_never_isolate_one_row() -> None:
    assert block_ranges(510, 256, 2) == [(0, 1), (1, 2)]
    assert block_ranges(1000, 256, 8) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert block_ranges(513, 256, 3) == [(0, 1), (1, 3)]  # the one-row third block rides with the second
    ranges = block_ranges(100_000, 256, 3)
    assert ranges[0][0] == 0 and ranges[-1][1] == 391
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_shard_partials_add_up_to_the_whole_step(engine, enc, dec, ames) -> None:
    X, y = ames
    Xe, ye = enc(X), enc(y, tile=enc(X).tile)
    trainer = LinearTrainer(engine, Xe, ye, LinearRegressionConfig(epochs=1), lambda m: m)
    program, weights = trainer.row_step(len(X)), trainer.weights
    whole = LocalShards(program, program.prepare(Xe, ye)).step(weights, None).finish(len(X))
    parts = [LocalShards(program, program.prepare(row_blocks_of(Xe, a, b), row_blocks_of(ye, a, b)))
             for a, b in block_ranges(len(X), Xe.tile.rows, 2)]
    summed = (parts[0].step(weights, None) + parts[1].step(weights, None)).finish(len(X))
    for full, split in zip(whole, summed, strict=True):
        assert full.level == split.level and full.shape == split.shape
        assert np.max(np.abs(dec(full) - dec(split))) < 1e-9


def test_read_block_range_reads_a_range(engine, enc, dec, ames, tmp_path) -> None:
    X, _ = ames
    path = tmp_path / "X.bin"
    path.write_bytes(enc(X).to_bytes())
    second = read_block_range(engine, path, 1, 2)
    assert second.shape == (len(X) - 256, X.shape[1])
    assert np.max(np.abs(dec(second) - X[256:])) < 1e-6


# -- the Ray executor against the local one ---------------------------------------------------------------
@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_linear_gd_on_ray_equals_local(engine, enc, dec, public_context, ames, refresh, ray_executor, tmp_path):
    X, y = ames
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, enc(y, tile=Xe.tile))
    config = LinearRegressionConfig(learning_rate=0.5, momentum=0.3, l2=0.01, epochs=6)
    weights = {}
    for name, executor in (("local", LocalExecutor()), ("ray", ray_executor)):
        with executor.shards(table, engine) as shards:
            trainer = LinearTrainer(engine, None, None, config, refresh, shards=shards)
            weights[name] = train(trainer, dec) / trainer.weight_scale
            if name == "ray":
                assert len({place["pid"] for place in shards.placement}) == 2  # two worker processes
                assert trainer.counts.multiplications > 0  # the shards' operations are reported
    assert np.max(np.abs(weights["ray"] - weights["local"])) < 1e-6
    assert np.max(np.abs(weights["local"] - fit_torch(X, y, config).weights)) < 1e-4


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_logistic_on_ray_equals_local(engine, enc, dec, public_context, ames, refresh, ray_executor, tmp_path):
    X, y = ames
    labels = (y > np.median(y)).astype(float)
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, enc(labels, tile=Xe.tile))
    config = LogisticRegressionConfig(learning_rate=0.5, momentum=0.5, epochs=3)
    weights = {}
    for name, executor in (("local", LocalExecutor()), ("ray", ray_executor)):
        with executor.shards(table, engine) as shards:
            trainer = LogisticTrainer(engine, None, None, config, refresh, shards=shards)
            weights[name] = train(trainer, dec) * trainer.bound
            assert trainer.counts.refreshes >= 2 * config.epochs  # the weights and, mid-step, the logits
    assert np.max(np.abs(weights["ray"] - weights["local"])) < 1e-6
    assert np.max(np.abs(weights["local"] - fit_torch_logistic(X, labels, config).weights)) < 1e-4


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_gram_pass_on_ray_equals_local(engine, enc, dec, public_context, ames, refresh, ray_executor, tmp_path):
    X, y = ames
    Xe = enc(X, packing="columns")
    table = store(tmp_path, public_context, Xe, enc(y, tile=Xe.tile))
    config = LinearRegressionConfig(learning_rate=0.7, momentum=0.3, epochs=8, init="zeros", solver="gram")
    weights = {}
    for name, executor in (("local", LocalExecutor()), ("ray", ray_executor)):
        partial = executor.gram_partial(table, engine)
        weights[name] = train(GramTrainer.from_partial(engine, partial, config, refresh), dec)
    assert np.max(np.abs(weights["ray"] - weights["local"])) < 1e-6
    whole = accumulate(engine, row_blocks(Xe, enc(y, tile=Xe.tile)))
    assert whole.rows == len(X)


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_predict_and_describe_fan_out_agree(engine, enc, dec, public_context, ames, ray_executor, tmp_path):
    X, _ = ames
    table = store(tmp_path, public_context, enc(X), None)
    model = np.linspace(-1, 1, X.shape[1])
    predict = functools.partial(predict_linear, weights=model, bias=0.25)
    results = {}
    for name, executor in (("local", LocalExecutor()), ("ray", ray_executor)):
        predictions = executor.map_blocks(table, predict, engine)
        total, squares = executor.column_sums(table, engine), executor.column_sums(table, engine, squares=True)
        results[name] = (dec(predictions)[:, 0], dec(mean_from_sums(total, len(X)))[0],
                         dec(variance_from_sums(total, squares, len(X)))[0])
    for local, ray in zip(results["local"], results["ray"], strict=True):
        assert local.shape == ray.shape
        assert np.max(np.abs(local - ray)) < 1e-6
    assert np.max(np.abs(results["ray"][0] - (X @ model + 0.25))) < 1e-4
    assert np.max(np.abs(results["ray"][1] - X.mean(axis=0))) < 1e-6
    assert np.max(np.abs(results["ray"][2] - X.var(axis=0))) < 1e-4


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_path_mode_equals_object_store_mode(engine, enc, dec, public_context, ames, refresh, ray_executor, tmp_path):
    """``--ray-blocks path``: workers read the same blocks from the (here shared) disk; same weights."""
    X, y = ames
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, enc(y, tile=Xe.tile))
    config = LinearRegressionConfig(learning_rate=0.5, epochs=2)
    weights = {}
    for mode in ("object-store", "path"):
        ray_executor.set_blocks(mode)
        try:
            with ray_executor.shards(table, engine) as shards:
                weights[mode] = train(LinearTrainer(engine, None, None, config, refresh, shards=shards), dec)
        finally:
            ray_executor.set_blocks("object-store")
    assert np.max(np.abs(weights["path"] - weights["object-store"])) < 1e-6


def test_an_address_where_nothing_answers_is_a_clear_error() -> None:
    with pytest.raises(ExecutionError, match=r"127\.0\.0\.1:9"):
        ray_shards.RayExecutor("127.0.0.1:9", connect_timeout=2)
    with pytest.raises(ExecutionError, match="host:port"):
        ray_shards.RayExecutor("no-port-here")


# -- fan-out over request inputs: pairs of matrices, whole operands, batch streams ------------------------
def both(ray_executor):
    return (("local", LocalExecutor()), ("ray", ray_executor))


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_metrics_sums_over_prediction_and_target_blocks(engine, enc, dec, public_context, ames, ray_executor,
                                                        tmp_path):
    """Metrics' MSE and MAE from row-local terms of (predictions, targets) summed over row blocks."""
    X, y = ames
    rng = np.random.default_rng(1)
    targets = y / np.abs(y).max()
    predictions = targets + rng.normal(scale=0.2, size=targets.shape)
    Pe = enc(predictions)
    table = store(tmp_path, public_context, Pe, enc(targets, tile=Pe.tile))  # scratch files of a request
    poly, averaged = stats.mae_polynomials(len(X), bound=2.0)
    absolute = functools.partial(stats.absolute_residuals, polynomial=averaged)
    results = {}
    for name, executor in both(ray_executor):
        squared = executor.column_sums(table, engine, function=stats.squared_residuals, with_targets=True)
        total = executor.column_sums(table, engine, function=absolute, with_targets=True)
        results[name] = (dec(stats.mse_from_sums(squared, len(X)))[0, 0], dec(total.sum(axis=1))[0, 0])
    assert np.max(np.abs(np.subtract(results["ray"], results["local"]))) < 1e-6
    whole_mse = dec(stats.mse(Pe, enc(targets, tile=Pe.tile)))[0, 0]
    assert abs(results["local"][0] - whole_mse) < 1e-6
    assert abs(results["ray"][0] - np.mean((predictions - targets) ** 2)) < 1e-5
    assert abs(results["ray"][1] - np.mean(np.abs(predictions - targets))) < poly.max_error + 1e-5


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_prediction_with_an_encrypted_model_operand(engine, enc, dec, public_context, ames, ray_executor,
                                                    tmp_path):
    """Every range of rows gets the whole encrypted weights (bytes through the object store, or a path)."""
    X, _ = ames
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, None)
    model = np.linspace(-1, 1, X.shape[1]).reshape(1, -1)
    weights = enc(model, tile=Xe.tile).to_bytes()
    (tmp_path / "model.bin").write_bytes(weights)
    results = {}
    for name, executor in both(ray_executor):
        for source in (weights, tmp_path / "model.bin"):
            got = dec(executor.map_blocks(table, predict_linear_encrypted, engine, operands={"weights": source}))
            results.setdefault(name, []).append(got[:, 0])
    assert np.max(np.abs(np.subtract(results["ray"], results["local"]))) < 1e-6
    assert np.max(np.abs(results["ray"][0] - X @ model[0])) < 1e-4


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_run_files_answers_a_spooled_batch_where_the_context_is(engine, enc, dec, public_context, ames,
                                                                ray_executor, tmp_path):
    """``run_files``: a request's batch and an encrypted model operand as files, parsed, checked and answered
    by ``uploads.answer_batch`` in this process or on a worker (bytes through the object store, or paths);
    serialized answers equal, the worker's operations added to ``counts``, a check's error the caller's."""
    from ciphergrad.core.engine import OpCounts
    from ciphergrad.server.rpc.uploads import answer_batch
    from ciphergrad.server.services.models import _fits

    X, _ = ames
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, None)
    model = np.linspace(-1, 1, X.shape[1]).reshape(1, -1)
    (tmp_path / "model.bin").write_bytes(enc(model, tile=Xe.tile).to_bytes())
    answer = functools.partial(answer_batch, what="a batch", function=predict_linear_encrypted, check=_fits)
    operands = {"weights": tmp_path / "model.bin"}
    results, counts = {}, OpCounts()
    for name, executor, mode in (("local", LocalExecutor(), ""), ("ray", ray_executor, "object-store"),
                                 ("path", ray_executor, "path")):
        if mode:
            executor.set_blocks(mode)
        try:
            data = executor.run_files(table.context, [table.features], answer, lambda: engine, operands=operands,
                                      counts=counts)
        finally:
            ray_executor.set_blocks("object-store")
        results[name] = dec(EncryptedMatrix.from_bytes(engine, data))[:, 0]
    assert np.max(np.abs(results["ray"] - results["local"])) < 1e-6
    assert np.max(np.abs(results["path"] - results["local"])) < 1e-6
    assert np.max(np.abs(results["ray"] - X @ model[0])) < 1e-4
    assert counts.multiplications + counts.plain_multiplications > 0  # the workers' operations, counted here
    narrow = enc(X[:, :-1], tile=Xe.tile)
    (tmp_path / "narrow.bin").write_bytes(narrow.to_bytes())
    with pytest.raises(ShapeError, match="do not fit the model"):
        ray_executor.run_files(table.context, [tmp_path / "narrow.bin"], answer, lambda: engine, operands=operands)


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_finish_sums_finishes_the_ranges_sums_where_the_context_is(engine, enc, dec, public_context, ames,
                                                                   ray_executor, tmp_path):
    """``finish_sums`` (Describe's body, ``compute.describe_of``): the column sums of X and X * X over two
    ranges (four row blocks), added up and finished with the covariance of the whole table on one worker,
    by object store and by path; this process gets bytes (``engine`` never called); equal to the local
    executor's within 1e-6, the workers' operations added to ``counts``."""
    from ciphergrad.core.engine import OpCounts
    from ciphergrad.server.execution import square
    from ciphergrad.server.services.compute import describe_of

    X = ames[0][:, 1:7]
    table = store(tmp_path, public_context, enc(X, tile=Tile(128, 1)), None)
    assert len(ray_executor.ranges(table)) == 2
    finish = functools.partial(describe_of, rows=len(X), ddof=1, covariance=True)

    def unused() -> None:
        raise AssertionError("the Ray executor loads no engine in this process")

    results, counts = {}, OpCounts()
    for name, executor, mode, loaded in (("local", LocalExecutor(), "", lambda: engine),
                                         ("ray", ray_executor, "object-store", unused),
                                         ("path", ray_executor, "path", unused)):
        if mode:
            executor.set_blocks(mode)
        try:
            values = executor.finish_sums(table, finish, loaded, sums=(None, square), files=[table.features],
                                          counts=counts)
        finally:
            ray_executor.set_blocks("object-store")
        results[name] = {key: dec(EncryptedMatrix.from_bytes(engine, data)) for key, data in values}
    for name in ("ray", "path"):
        for key, value in results[name].items():
            assert np.max(np.abs(value - results["local"][key])) < 1e-6, (name, key)
    assert np.max(np.abs(results["ray"]["mean"][0] - X.mean(axis=0))) < 1e-6
    assert np.max(np.abs(results["ray"]["variance"][0] - X.var(axis=0, ddof=1))) < 1e-4
    assert np.max(np.abs(results["ray"]["covariance"] - np.cov(X, rowvar=False))) < 1e-4
    assert counts.multiplications > 0 and counts.rotations > 0  # the workers' operations, counted here


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_distance_batches_stream_back_in_order(engine, enc, dec, public_context, ames, ray_executor, tmp_path):
    """Query batches (one tile each) go to the workers in turn and come back in the order they were sent."""
    X, _ = ames
    (tmp_path / "context.bin").write_bytes(public_context)
    reference = X[:7, :4]
    batches = [X[16 * k : 16 * (k + 1), :4] for k in range(5)]
    encrypted = [enc(batch, tile=Tile(16, 1)).to_bytes() for batch in batches]
    plain = functools.partial(squared_distances, reference=reference)
    (tmp_path / "reference.bin").write_bytes(encrypt_reference(engine, reference, 16).to_bytes())
    results = {}
    for name, executor in both(ray_executor):
        streamed = executor.map_batches(tmp_path / "context.bin", iter(encrypted), plain, engine)
        results[name] = [dec(distances) for distances in streamed]
        against = executor.map_batches(tmp_path / "context.bin", encrypted, squared_distances, engine,
                                       operands={"reference": tmp_path / "reference.bin"})
        results[name + " encrypted"] = [dec(distances) for distances in against]
    for name in ("", " encrypted"):
        assert np.max(np.abs(np.subtract(results["ray" + name], results["local" + name]))) < 1e-6
        for batch, got in zip(batches, results["ray" + name], strict=True):
            assert np.max(np.abs(got - squared_distances_torch(batch, reference))) < 1e-4


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_bad_input_in_a_worker_is_the_callers_error(engine, enc, public_context, ames, ray_executor, tmp_path):
    """A core error raised in a worker (wrong model width) reaches the caller as that error, as locally."""
    X, _ = ames
    table = store(tmp_path, public_context, enc(X), None)
    wrong = functools.partial(predict_linear, weights=np.ones(X.shape[1] + 2))
    for _, executor in both(ray_executor):
        with pytest.raises(ShapeError):
            executor.map_blocks(table, wrong, engine)


# -- the worker pool --------------------------------------------------------------------------------------
@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_jobs_reuse_the_pool_workers_and_their_contexts(engine, enc, public_context, ames, refresh, ray_executor,
                                                        tmp_path, monkeypatch):
    X, y = ames
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, enc(y, tile=Xe.tile))
    config = LinearRegressionConfig(epochs=1)
    seen = []
    for _ in range(2):
        with ray_executor.shards(table, engine) as shards:
            train(LinearTrainer(engine, None, None, config, refresh, shards=shards), lambda m: np.zeros(1))
            seen.append(([place["pid"] for place in shards.placement], shards.usage()))
    (pids, first), (again, second) = seen
    assert pids == again  # the same worker processes, no new ones per job
    assert [u["context_loads"] for u in first] == [u["context_loads"] for u in second]  # loaded once
    assert [u["open_shards"] for u in second] == [1, 1]
    usage = ray_executor.get([w.usage.remote() for w in ray_executor.pool.workers], "usage")
    assert [u["open_shards"] for u in usage] == [0, 0]  # every job's blocks released
    monkeypatch.setattr(ray_executor, "min_shard_rows", ray_shards.MIN_SHARD_ROWS)
    assert ray_executor.ranges(table) == [(0, 2)]  # Ames, 510 rows: one shard, no fan-out
    assert len(ray_executor.ranges(dataclasses.replace(table, rows=100_000))) == 2


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_a_dead_worker_is_replaced_for_the_next_job(engine, enc, dec, public_context, ames, refresh, ray_executor,
                                                    tmp_path):
    X, y = ames
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, enc(y, tile=Xe.tile))
    config = LinearRegressionConfig(learning_rate=0.5, epochs=2)
    with ray_executor.shards(table, engine) as shards:
        trainer = LinearTrainer(engine, None, None, config, refresh, shards=shards)
        trainer.run_epoch()
        os.kill(shards.placement[0]["pid"], signal.SIGKILL)
        with pytest.raises(ExecutionError, match="a worker failed during a training step"):
            trainer.run_epoch()
    weights = {}
    for name, executor in both(ray_executor):
        with executor.shards(table, engine) as shards:
            weights[name] = train(LinearTrainer(engine, None, None, config, refresh, shards=shards), dec)
    assert np.max(np.abs(weights["ray"] - weights["local"])) < 1e-6


@pytest.mark.slow  # minutes-scale suite: runs in make test-slow (and CI after make test)
def test_warm_loads_a_context_on_one_worker_and_its_calls_go_there(engine, enc, public_context, ames, ray_executor,
                                                                   tmp_path):
    X, y = ames
    Xe = enc(X)
    table = store(tmp_path, public_context, Xe, enc(y, tile=Xe.tile))
    workers = ray_executor.pool.workers

    def loads() -> list[int]:
        return [u["context_loads"] for u in ray_executor.get([w.usage.remote() for w in workers], "usage")]

    before = loads()
    ray_executor.warm(table.context)
    ray_executor.warm(table.context)  # held already: nothing more to load
    warmed = loads()
    assert sum(warmed) == sum(before) + 1  # a worker serves calls in order: the warm ran first
    (holder,) = ray_executor.holders(table.context)
    assert warmed[holder] == before[holder] + 1
    row = functools.partial(predict_linear, weights=np.ones(X.shape[1]), bias=0.0)
    (alone,) = ray_executor.map_batches(table.context, [Xe.to_bytes()], row, engine)  # one call: to the holder
    assert alone.shape == (len(X), 1) and loads() == warmed
    with ray_executor.shards(table, engine):  # two shards: the other worker loads it as its shard opens
        pass
    assert sum(loads()) == sum(before) + 2 and ray_executor.holders(table.context) == {0, 1}


def test_a_job_engine_is_a_fork_of_the_cached_one(tmp_path, public_context) -> None:
    """Jobs reuse the server's loaded context (no reload per job) but count their own operations; a cache miss
    tells ``on_load`` the context file, so the executor can warm its workers."""
    from ciphergrad.server.execution.engines import EngineCache

    class Contexts:
        def context_path(self, session_id: str) -> Path:
            return tmp_path / f"{session_id}.bin"

    (tmp_path / "s.bin").write_bytes(public_context)
    cache, told = EngineCache(Contexts()), []
    cache.on_load = told.append
    job = cache.fork("s")
    assert job.context is cache.get("s").context and job.counts is not cache.get("s").counts
    assert told == [tmp_path / "s.bin"]  # once: the fork and the later get hit the cache
