"""The scaling sweep (``--scaling``): encrypted linear regression through the server at 1k, 10k and 100k
rows x 10 features (synthetic, core.data.synthetic_regression) with per-row gradient descent ("gd"), and at
1k to 1M rows with the sufficient-statistics solver ("gram"), with upload size and server memory.

Per solver and size: a fresh session (and, unless ``--server`` names one, a fresh child-process server, so
its memory is the run's alone: ``server_peak_mb`` is the peak, ``server_data_mb`` the peak above the idle
server), the data encrypted in the solver's packing (``client.sdk.training_layout``: rows for "gd", columns
for "gram") and uploaded, ``EPOCHS`` full-batch epochs; the epoch time is the median of the server's epoch
times (refreshes included); ``train_seconds`` the whole Train call (for "gram" that includes its one pass).
A straight line through log(value) against log(rows), per solver, gives the scaling exponent: slope 1
means linear in the rows. "gd" stops at 100k rows: at 1M an epoch would take minutes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from ciphergrad.client.compare.measure import Stopwatch, session
from ciphergrad.client.compare.server import ServerHandle, running_server
from ciphergrad.client.compare.tasks import LINEAR_SOLVERS
from ciphergrad.client.sdk import default_parameters, training_layout
from ciphergrad.core.data import synthetic_regression
from ciphergrad.core.linear import LinearRegressionConfig

SIZES = (1_000, 10_000, 100_000, 1_000_000)
# The rows each solver of the sweep runs ("gd" only up to 100k rows).
SOLVER_SIZES = {"gd": SIZES[:3], **({"gram": SIZES} if "gram" in LINEAR_SOLVERS else {})}
QUICK_SIZES = (256, 1_024, 4_096)
FEATURES = 10
EPOCHS = 3


def run_size(server: ServerHandle, rows: int, config: LinearRegressionConfig) -> dict[str, Any]:
    X, y = synthetic_regression(rows, FEATURES, seed=0)
    params = default_parameters()
    tile, rotations = training_layout(X.shape, params.slots, config)
    idle = server.reset_peak()
    upload, training = Stopwatch(), Stopwatch()
    name = f"scaling {config.solver} {rows}"
    with session(server.address, params, tiles=[tile], rotations=rotations, display_name=name) as client:
        with upload:
            dataset = client.upload(X, y, tile=tile)
        with training:
            run = client.train(dataset.dataset_id, config, algorithm="linear")
        upload_bytes = client.transfer.sent["data upload"]
    peak = server.peak_mb()
    return {
        "solver": config.solver,
        "rows": rows,
        "epoch_seconds": statistics.median(run.epoch_seconds),
        "train_seconds": training.seconds,
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
    """Every solver and size against the server at ``address``, or each on a fresh child-process server."""
    runs = []
    for solver, sizes in SOLVER_SIZES.items():
        config = LinearRegressionConfig(learning_rate=0.5, epochs=EPOCHS, solver=solver)
        for rows in QUICK_SIZES if quick else sizes:
            with running_server(address) as server:
                runs.append(run_size(server, rows, config))
            tick(f"scaling {solver} {rows:,} rows")
    slopes = {}
    for solver in SOLVER_SIZES:
        mine = [run for run in runs if run["solver"] == solver]
        rows = [run["rows"] for run in mine]
        slopes[solver] = {key: log_slope(rows, [run[key] for run in mine]) for key in SLOPE_KEYS}
    return {"features": FEATURES, "epochs": EPOCHS, "runs": runs, "slopes": slopes}


SLOPE_KEYS = ("epoch_seconds", "upload_mb", "server_data_mb")


def run_count(quick: bool) -> int:
    """How many runs ``sweep`` makes (for a progress bar)."""
    return sum(len(QUICK_SIZES if quick else sizes) for sizes in SOLVER_SIZES.values())
