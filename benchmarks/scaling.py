"""B5: encrypted linear-regression epoch time vs rows (1k to 100k rows x 10 features), and peak memory.

Synthetic data from a seeded linear model plus Gaussian noise, features and target min-max scaled into
[0, 1], an intercept column prepended (11 columns, packed 16 wide: 256 rows per ciphertext at N = 8192).
Core only, in one process: the key holder encrypts, the computing party (Engine.from_public_context)
receives bytes and trains full-batch with LinearTrainer, refreshing through the key holder's masked
refresh as core.compare does. Per size: the median of ``--epochs`` epoch times (refreshes included);
then a least-squares line of epoch time vs rows, its R² (1 = perfectly linear) and the slope as seconds
per 1k rows. ``peak_rss_mb`` is the process's peak resident memory (ru_maxrss) after the largest size:
key holder, computing party and every size's data in one process, so an upper bound on the server's.

    .venv/bin/python benchmarks/scaling.py --json
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import numpy as np
from targets import finish

from ciphergrad.core import Engine, KeyHolder
from ciphergrad.core.data import synthetic_regression
from ciphergrad.core.layout import choose_tile, rotation_steps
from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer, decode_weights
from ciphergrad.core.params import plan
from ciphergrad.core.tensor import EncryptedMatrix

SIZES = (1_000, 3_000, 10_000, 30_000, 100_000)



# Exit 1 when one is missed (benchmarks/targets.py); docs/benchmarks.md states each with its command.
TARGETS = {"memory_target_met": (">=", 1), "linear_fit_r2": (">=", 0.99)}

def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_size(rows: int, features: int, config: LinearRegressionConfig, seed: int) -> dict:
    X, y = synthetic_regression(rows, features, seed)
    params = plan(3, slots=1)
    tile = choose_tile(X.shape, params.slots, "rows")
    holder = KeyHolder(params, rotations=rotation_steps(tile))
    engine = Engine.from_public_context(holder.public_context())
    start = time.perf_counter()
    X_bytes = holder.encrypt(X, tile=tile).to_bytes()
    y_bytes = holder.encrypt(y, tile=tile).to_bytes()
    encrypt_s = time.perf_counter() - start
    Xe, ye = EncryptedMatrix.from_bytes(engine, X_bytes), EncryptedMatrix.from_bytes(engine, y_bytes)
    upload_mb = (len(X_bytes) + len(y_bytes)) / 1e6
    del X_bytes, y_bytes

    def refresh(matrix: EncryptedMatrix) -> EncryptedMatrix:
        answer = holder.refresh(EncryptedMatrix.from_bytes(holder.engine, matrix.to_bytes())).to_bytes()
        return EncryptedMatrix.from_bytes(engine, answer)

    start = time.perf_counter()
    trainer = LinearTrainer(engine, Xe, ye, config, refresh)
    setup_s = time.perf_counter() - start
    seconds, losses = [], []
    while not trainer.done:
        result = trainer.run_epoch()
        seconds.append(result.seconds)
        losses.append(float(holder.decrypt(result.loss)[0, 0]) * result.loss_scale)
    weights = decode_weights(holder.decrypt(trainer.weights), trainer.weight_scale)
    # The same epochs in plaintext float64 from the same start: the encrypted run must track them.
    w = np.random.default_rng(config.init_seed).normal(size=X.shape[1])
    for _ in range(config.epochs):
        w = w - config.learning_rate * X.T @ (X @ w - y[:, 0]) / rows
    return {
        "rows": rows,
        "ciphertexts_per_matrix": Xe.grid[0] * Xe.grid[1],
        "encrypt_s": round(encrypt_s, 3),
        "setup_s": round(setup_s, 3),
        "epoch_s": [round(s, 4) for s in seconds],
        "epoch_s_median": float(np.median(seconds)),
        "data_mb": round(upload_mb, 1),
        "final_loss": losses[-1],
        "max_abs_weight_diff_vs_numpy": float(np.max(np.abs(weights - w))),
        "refreshes": trainer.counts.refreshes,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)

    config = LinearRegressionConfig(learning_rate=0.5, epochs=args.epochs, init_seed=args.seed)
    runs = []
    for rows in args.sizes:
        runs.append(run_size(rows, args.features, config, args.seed))
        gc.collect()
        r = runs[-1]
        print(
            f"{rows:>7} rows: epoch median {r['epoch_s_median']:.3f}s over {args.epochs} "
            f"(encrypt {r['encrypt_s']:.2f}s, {r['data_mb']:.0f} MB), peak RSS {r['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
        )
    sizes = np.array([r["rows"] for r in runs], dtype=np.float64)
    medians = np.array([r["epoch_s_median"] for r in runs])
    slope, intercept = np.polyfit(sizes, medians, 1)
    fitted = slope * sizes + intercept
    r2 = float(1.0 - np.sum((medians - fitted) ** 2) / np.sum((medians - medians.mean()) ** 2))
    result = {
        "sizes": [r["rows"] for r in runs],
        "features": args.features,
        "epochs_per_size": args.epochs,
        "epoch_s_median": [round(m, 4) for m in medians.tolist()],
        "s_per_1k_rows": round(float(slope) * 1e3, 5),
        "fit_intercept_s": round(float(intercept), 4),
        "linear_fit_r2": round(r2, 5),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "memory_target_met": peak_rss_mb() < 4096,
        "runs": runs,
        "config": config.to_dict(),
        "params": plan(3, slots=1).summary(),
    }

    print(
        f"{'rows':>8} | {'cts/matrix':>10} | {'encrypt s':>9} | {'epoch s (median)':>16} | {'per 1k rows':>11} | "
        f"{'weights vs numpy':>16} | {'peak RSS MB':>11}"
    )
    for r in runs:
        print(
            f"{r['rows']:>8} | {r['ciphertexts_per_matrix']:>10} | {r['encrypt_s']:>9.2f} | "
            f"{r['epoch_s_median']:>16.4f} | {1e3 * r['epoch_s_median'] / r['rows']:>11.4f} | "
            f"{r['max_abs_weight_diff_vs_numpy']:>16.1e} | {r['peak_rss_mb']:>11.0f}"
        )
    print(
        f"\nleast-squares line: {result['s_per_1k_rows']:.4f} s per 1k rows + {result['fit_intercept_s']:.4f} s, "
        f"R² {result['linear_fit_r2']:.5f}; peak RSS {result['peak_rss_mb']:.0f} MB (target < 4096 MB)"
    )
    if finish(result, TARGETS, args.json):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
