"""One contributor process of ``benchmarks/pools.py``'s million-row pool: its shard, made from its seed, sent to
a regression pool and a two-class pool; prints one JSON line with the bytes it sent. Imports only what a
contributor needs (no scikit-learn), as a real contributor's process would.

    python benchmarks/pool_contributor.py INDEX REGRESSION_CODE CLASSES_CODE
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ciphergrad.client.contributor import Contributor

MILLION, FEATURES, CONTRIBUTORS = 1_000_000, 100, 10
TARGET_BOUND = 4.0


def shard(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Contributor ``index``'s rows: features uniform in [-1, 1], a linear target with noise (clipped to the
    public bound), the same generator wherever it runs."""
    rng = np.random.default_rng(index)
    weights = np.random.default_rng(12345).normal(size=FEATURES) / np.sqrt(FEATURES)
    X = rng.uniform(-1.0, 1.0, size=(MILLION // CONTRIBUTORS, FEATURES))
    y = np.clip(X @ weights + 0.5 * rng.normal(size=len(X)), -TARGET_BOUND, TARGET_BOUND)
    return X, y


def main(argv: list[str]) -> int:
    index, regression_code, classes_code = int(argv[0]), argv[1], argv[2]
    X, y = shard(index)
    sent = 0
    for code, target in ((regression_code, y), (classes_code, np.where(y > 0, "up", "down"))):
        with Contributor(code) as contributor:
            contributor.upload(X, target, progress=False)
            sent += contributor.bytes_sent
    print(json.dumps({"bytes_sent": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
