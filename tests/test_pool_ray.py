"""Pools on the Ray executor (``--executor ray``, a local 2-CPU Ray): each contribution is a table of its own
shards and the step partials add up, so per-row gradient descent and the Gram pass on a pool equal the same
training on one dataset holding the whole table (within 1e-6), and every contribution ran on shards."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pool_support import analyst_pool, contribute

from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.layout import pool_tile
from ciphergrad.core.linear import LinearRegressionConfig

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

SPLITS = (0, 200, 510)


def test_pools_on_ray_equal_the_whole_table(tmp_path: Path) -> None:
    data = load_ames()
    X, y = Standardizer.fit(data.X).transform(data.X), data.y
    with analyst_pool(tmp_path, X.shape[1], executor="ray", ray_num_cpus=2) as (server, analyst, pool):
        executor, sharded = server.runner.executor, []
        real_shards = executor.shards

        @contextmanager
        def counting(table, engine):
            sharded.append(table.rows)
            with real_shards(table, engine) as shards:
                yield shards

        executor.shards = counting
        contribute(analyst, pool, [(X[a:b], y[a:b]) for a, b in itertools.pairwise(SPLITS)])
        whole = analyst.upload(with_intercept(X), y, tile=pool_tile("columns", X.shape[1] + 1, 4096))
        for config in (LinearRegressionConfig(learning_rate=0.5, epochs=3, solver="gd"),
                       LinearRegressionConfig(learning_rate=0.7, momentum=0.3, epochs=10, init="zeros", solver="gram")):
            on_pool = analyst.weights(analyst.train(pool_id=pool.pool_id, config=config).model)
            on_table = analyst.weights(analyst.train(whole.dataset_id, config).model)
            assert np.max(np.abs(on_pool - on_table)) < 1e-6, config.solver
        assert sharded[:2] == [200, 310]  # the pool's gd job: one shard set per contribution
