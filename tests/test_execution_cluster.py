"""The Ray executor on a two-node cluster on loopback (ray.cluster_utils.Cluster), slow suite.

A job's two shards land on different nodes and give the local executor's weights within 1e-6; a shard
worker killed mid-job, or a node that leaves, ends the next step with an ExecutionError naming the
cluster's address and what was running, within the test's timeout (never a hang).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer
from ciphergrad.server.execution import ExecutionError, StoredTable
from ciphergrad.server.execution.local import LocalExecutor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ray_shards = pytest.importorskip("ciphergrad.server.execution.ray_shards")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture
def cluster():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    executor = ray_shards.RayExecutor(cluster.address, shards=2, min_shard_rows=1, timeout=120)
    yield cluster, worker, executor
    executor.close()
    cluster.shutdown()


@pytest.fixture
def table(tmp_path, enc, public_context):
    data = load_ames()
    X = with_intercept((data.X - data.X.mean(axis=0)) / data.X.std(axis=0))
    Xe = enc(X)
    (tmp_path / "context.bin").write_bytes(public_context)
    (tmp_path / "0.bin").write_bytes(Xe.to_bytes())
    (tmp_path / "1.bin").write_bytes(enc(data.y.reshape(-1, 1), tile=Xe.tile).to_bytes())
    return StoredTable(tmp_path / "context.bin", tmp_path / "0.bin", tmp_path / "1.bin", len(X), Xe.tile.rows)



CONFIG = LinearRegressionConfig(learning_rate=0.5, momentum=0.3, epochs=5)


def test_shards_on_both_nodes_equal_local(cluster, table, engine, dec, refresh) -> None:
    _, _, executor = cluster
    weights = {}
    for name, source in (("local", LocalExecutor()), ("ray", executor)):
        with source.shards(table, engine) as shards:
            if name == "ray":
                assert len({place["node"] for place in shards.placement}) == 2, shards.placement
            trainer = LinearTrainer(engine, None, None, CONFIG, refresh, shards=shards)
            while not trainer.done:
                trainer.run_epoch()
            weights[name] = dec(trainer.weights).reshape(-1)
    assert np.max(np.abs(weights["ray"] - weights["local"])) < 1e-6


def test_a_killed_worker_fails_the_job_cleanly(cluster, table, engine, refresh) -> None:
    node_cluster, _, executor = cluster
    with executor.shards(table, engine) as shards:
        trainer = LinearTrainer(engine, None, None, CONFIG, refresh, shards=shards)
        trainer.run_epoch()
        os.kill(shards.placement[1]["pid"], signal.SIGKILL)
        with pytest.raises(ExecutionError, match="a worker failed during a training step") as failure:
            trainer.run_epoch()
    assert node_cluster.address in str(failure.value)


def test_a_node_that_leaves_fails_the_job_cleanly(cluster, table, engine, refresh) -> None:
    node_cluster, worker, executor = cluster
    with executor.shards(table, engine) as shards:
        trainer = LinearTrainer(engine, None, None, CONFIG, refresh, shards=shards)
        trainer.run_epoch()
        node_cluster.remove_node(worker)
        with pytest.raises(ExecutionError, match=node_cluster.address.replace(".", r"\.")):
            trainer.run_epoch()
