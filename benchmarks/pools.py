"""Pools: Ames split across three contributors, trained by one analyst through a server child process.

The analyst (``client.Client``) makes the keys and a pool; three ``client.Contributor`` objects (in this
process, one per invitation code) download the schema and the encryption-only public context, encrypt their
rows and contribute them. The analyst decrypts the pool statistics, trains ``"gram"`` (30 epochs) and
``"normal"`` with the standardization from those statistics (applied by the server inside the Gram
statistics), and the same jobs on the whole table uploaded as one dataset in the same session and tile.

  context_bytes_full / context_bytes_contributor   what the analyst uploads vs what a contributor downloads
  contribute_s / contribute_mb                      per contributor: encrypt + upload wall time, bytes sent
  statistics_s                                      PoolStatistics call plus decryption
  train_gram_s / train_normal_s                     the Train call on the pool (one-pass statistics included)
  max_weight_diff_vs_table                          pool vs one dataset, same config (1e-6 expected)
  r2_pool / r2_least_squares                        in raw units, after mapping the weights back

    .venv/bin/python benchmarks/pools.py --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np

from ciphergrad.client import Client, Contributor
from ciphergrad.client.local import local_server
from ciphergrad.core.data import load_ames, with_intercept
from ciphergrad.core.layout import pool_tile
from ciphergrad.core.linear import LinearRegressionConfig

SPLITS = (0, 170, 341, 510)


def _r2(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(1 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2))


def run() -> dict[str, object]:
    data = load_ames()
    X, y = data.X, data.y
    out: dict[str, object] = {"rows": len(X), "features": X.shape[1], "contributors": len(SPLITS) - 1}
    with local_server() as address:
        analyst = Client(address)
        start = time.perf_counter()
        pool = analyst.create_pool("ames", list(data.feature_names), "SalePrice")
        out["keys_and_pool_s"] = time.perf_counter() - start
        out["context_bytes_full"] = len(analyst.key_holder.public_context())
        seconds, sent = [], []
        for a, b in itertools.pairwise(SPLITS):
            contributor = Contributor(analyst.invite(pool.pool_id).code)
            start = time.perf_counter()
            contributor.upload(X[a:b], y[a:b], progress=False)
            seconds.append(time.perf_counter() - start)
            sent.append(contributor.bytes_sent / 1e6)
            out["context_bytes_contributor"] = contributor.schema.context_bytes
            contributor.close()
        out["contribute_s"], out["contribute_mb"] = seconds, sent
        start = time.perf_counter()
        stats = analyst.pool_statistics(pool.pool_id)
        out["statistics_s"] = time.perf_counter() - start
        out["max_mean_error"] = float(np.max(np.abs(stats.mean - X.mean(axis=0))))
        whole = analyst.upload(with_intercept(X), y, tile=pool_tile("columns", X.shape[1] + 1, 4096))
        least = np.linalg.lstsq(with_intercept(X), y, rcond=None)[0]
        out["r2_least_squares"] = _r2(y, with_intercept(X) @ least)
        diffs = []
        for solver, extra in (("gram", {"learning_rate": 0.7, "momentum": 0.3, "epochs": 30, "init": "zeros"}),
                              ("normal", {})):
            config = LinearRegressionConfig(solver=solver, standardization=stats.standardization(), **extra)
            start = time.perf_counter()
            weights = analyst.weights(analyst.train(pool_id=pool.pool_id, config=config).model)
            out[f"train_{solver}_s"] = time.perf_counter() - start
            on_table = analyst.weights(analyst.train(whole.dataset_id, config).model)
            diffs.append(float(np.max(np.abs(weights - on_table))))
            out[f"r2_pool_{solver}"] = _r2(y, with_intercept(X) @ stats.raw_weights(weights))
        out["max_weight_diff_vs_table"] = max(diffs)
        analyst.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    result = run()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
