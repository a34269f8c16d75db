"""The scaling sweep (``--scaling``): encrypted linear-regression epochs through the server at 1k, 10k and
100k rows x 10 features (synthetic, core.data.synthetic_regression), with upload size and server memory.

Per size: a fresh session (and, unless ``--server`` names one, a fresh child-process server, so its memory
is the size's alone: ``server_peak_mb`` is the peak, ``server_data_mb`` the peak above the idle server), the
data encrypted in row packing and uploaded, ``EPOCHS`` full-batch epochs; the epoch time is the median of
the server's epoch times (refreshes included). A straight line through
log(value) against log(rows) gives the scaling exponent: slope 1 means linear in the rows. 1M rows join
once the sufficient-statistics solver ("gram") exists: gradient descent there would take minutes an epoch.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from client.compare.measure import Stopwatch, session
from client.compare.server import ServerHandle, running_server
from client.compare.tasks import LINEAR_SOLVERS
from client.sdk import default_parameters
from core.data import synthetic_regression
from core.layout import choose_tile
from core.linear import LinearRegressionConfig

SIZES = (1_000, 10_000, 100_000, *((1_000_000,) if "gram" in LINEAR_SOLVERS else ()))
QUICK_SIZES = (256, 1_024, 4_096)
FEATURES = 10
EPOCHS = 3


def run_size(server: ServerHandle, rows: int, config: LinearRegressionConfig) -> dict[str, Any]:
    X, y = synthetic_regression(rows, FEATURES, seed=0)
    params = default_parameters()
    tile = choose_tile(X.shape, params.slots, "rows")
    idle = server.reset_peak()
    upload = Stopwatch()
    with session(server.address, params, tiles=[tile], display_name=f"scaling {rows}") as client:
        with upload:
            dataset = client.upload(X, y, tile=tile)
        run = client.train(dataset.dataset_id, config, algorithm="linear")
        upload_bytes = client.transfer.sent["data upload"]
    peak = server.peak_mb()
    return {
        "rows": rows,
        "epoch_seconds": statistics.median(run.epoch_seconds),
        "upload_mb": upload_bytes / 1e6,
        "upload_seconds": upload.seconds,
        "server_peak_mb": peak,
        "server_data_mb": None if peak is None or idle is None else peak - idle,
    }


def log_slope(rows: list[int], values: list[float | None]) -> float | None:
    """Exponent b of value ~ a * rows**b (least squares in log-log); None without enough measurements."""
    pairs = [(r, v) for r, v in zip(rows, values, strict=True) if v]
    if len(pairs) < 2:
        return None
    return float(np.polyfit(np.log([r for r, _ in pairs]), np.log([v for _, v in pairs]), 1)[0])


def sweep(address: str | None, quick: bool, tick: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every size against the server at ``address``, or each on a fresh child-process server."""
    config = LinearRegressionConfig(learning_rate=0.5, epochs=EPOCHS)
    runs = []
    for rows in QUICK_SIZES if quick else SIZES:
        with running_server(address) as server:
            runs.append(run_size(server, rows, config))
        tick(f"scaling {rows:,} rows")
    sizes = [run["rows"] for run in runs]
    return {
        "features": FEATURES,
        "epochs": EPOCHS,
        "runs": runs,
        "slopes": {
            key: log_slope(sizes, [run[key] for run in runs])
            for key in ("epoch_seconds", "upload_mb", "server_data_mb")
        },
    }
