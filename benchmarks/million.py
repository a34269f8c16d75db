"""Issue 8: least squares on a million encrypted rows in minutes, with the Gram solver (core.gram).

Seeded synthetic data from a known linear model (10 correlated features, Gaussian noise). The key holder
standardizes the features (core.conditioning), encrypts column-packed row blocks (``Tile(slots, 1)``: one
ciphertext per column per 4,096 rows, the packing core.gram measures fastest) and sends their bytes. The
computing party, with the public context only, deserializes one block at a time, adds its products to the
running Gram sums and drops it, so neither side ever holds more than a block of ciphertexts. It then
finalizes X^T X / n and X^T y / n and trains to convergence (heavy-ball, one masked refresh per epoch);
the key holder decrypts and maps the weights back to the original features.

Phase 1: ``transport`` is a bytes round trip inside this process, standing in for the gRPC upload (phase 2
swaps in a real server); ``upload_s`` / ``upload_mb`` measure those bytes and their deserialization, and
``server_peak_rss_mb`` is this whole process's peak (key holder and computing party, an upper bound on the
server's) up to the end of training; ``process_peak_rss_mb`` includes the per-row contrast.
``epoch_s_gd_100k`` is one per-row gradient-descent epoch (core.linear, row packing) on the first 100,000
rows (or all, if fewer), in the same run, for contrast.

    .venv/bin/python benchmarks/million.py [--rows 1000000] [--epochs 30] [--packing columns] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import Engine, KeyHolder, gram
from core.compare import r2_score
from core.conditioning import Standardizer
from core.data import with_intercept
from core.gram_training import GramTrainer
from core.layout import Tile, choose_tile, rotation_steps
from core.linear import LinearRegressionConfig, LinearTrainer
from core.params import plan
from core.tensor import EncryptedMatrix

FEATURES = 10
GD_ROWS = 100_000


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features with a shared factor (correlations ~0.2), y = 3 + X w + N(0, 0.5^2)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=FEATURES)
    Z = rng.normal(size=(rows, FEATURES))
    X = Z + 0.5 * rng.normal(size=(rows, 1))
    y = 3.0 + X @ w + 0.5 * rng.normal(size=rows)
    return X, y, np.r_[3.0, w]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def transport(payload: bytes) -> bytes:
    """Key holder -> computing party. Phase 1: the bytes themselves (a copy, as a socket would deliver)."""
    return bytes(payload)


def encrypted_blocks(holder: KeyHolder, X: np.ndarray, y: np.ndarray, tile: Tile,
                     timings: dict[str, float]) -> Iterator[tuple[bytes, bytes]]:
    """The key holder's side of the upload: one row block at a time, serialized."""
    for begin in range(0, len(X), tile.rows):
        start = time.perf_counter()
        block = (holder.encrypt(X[begin : begin + tile.rows], tile=tile).to_bytes(),
                 holder.encrypt(y[begin : begin + tile.rows], tile=tile).to_bytes())
        timings["encrypt_s"] += time.perf_counter() - start
        yield block


def received_blocks(engine: Engine, blocks: Iterator[tuple[bytes, bytes]], send: Callable[[bytes], bytes],
                    timings: dict[str, float]) -> Iterator[tuple[EncryptedMatrix, EncryptedMatrix]]:
    """The computing party's side: what arrives, deserialized, one block at a time."""
    for X_bytes, y_bytes in blocks:
        start = time.perf_counter()
        X_arrived, y_arrived = send(X_bytes), send(y_bytes)
        timings["upload_bytes"] += len(X_arrived) + len(y_arrived)
        block = EncryptedMatrix.from_bytes(engine, X_arrived), EncryptedMatrix.from_bytes(engine, y_arrived)
        timings["upload_s"] += time.perf_counter() - start
        yield block


def timed_accumulation(engine: Engine, blocks, timings: dict[str, float]) -> gram.GramPartial:
    partial, iterator = None, iter(blocks)
    while True:
        block = next(iterator, None)  # deserialization is timed by received_blocks, not here
        if block is None:
            break
        start = time.perf_counter()
        part = gram.accumulate(engine, [block])
        partial = part if partial is None else partial + part
        timings["gram_s"] += time.perf_counter() - start
    assert partial is not None
    return partial


def per_row_epoch(holder: KeyHolder, engine: Engine, X: np.ndarray, y: np.ndarray, refresh) -> float:
    """One full-batch epoch of per-row gradient descent (core.linear) on these rows, row-packed."""
    tile = choose_tile(X.shape, engine.slots, "rows")
    Xe = EncryptedMatrix.from_bytes(engine, holder.encrypt(X, tile=tile).to_bytes())
    ye = EncryptedMatrix.from_bytes(engine, holder.encrypt(y, tile=tile).to_bytes())
    trainer = LinearTrainer(engine, Xe, ye, LinearRegressionConfig(learning_rate=0.5, epochs=1), refresh)
    return trainer.run_epoch().seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=0.7)
    parser.add_argument("--momentum", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-gd", action="store_true", help="leave out the per-row contrast epoch")
    parser.add_argument("--packing", choices=("columns", "rows"), default="columns",
                        help="upload layout: columns (Tile(slots, 1), the fast one) or rows (256 x 16, as for 'gd')")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)

    X, y, _ = synthetic(args.rows, args.seed)
    params = plan(3, slots=1)
    tile = Tile(params.slots, 1) if args.packing == "columns" else choose_tile((args.rows, FEATURES + 1), params.slots)
    period = gram.weight_period(FEATURES + 1, tile)
    steps = set(gram.rotation_steps(period, params.slots)) | set(rotation_steps(Tile(params.slots // 16, 16)))
    holder = KeyHolder(params, rotations=steps)
    engine = Engine.from_public_context(transport(holder.public_context()))

    def refresh(matrix: EncryptedMatrix) -> EncryptedMatrix:
        answer = holder.refresh(EncryptedMatrix.from_bytes(holder.engine, transport(matrix.to_bytes())))
        return EncryptedMatrix.from_bytes(engine, transport(answer.to_bytes()))

    timings = dict.fromkeys(("encrypt_s", "upload_s", "upload_bytes", "gram_s"), 0.0)
    start = time.perf_counter()
    scaler = Standardizer.fit(X)  # key holder, plaintext
    Xs = with_intercept(scaler.transform(X))
    blocks = encrypted_blocks(holder, Xs, y, tile, timings)
    partial = timed_accumulation(engine, received_blocks(engine, blocks, transport, timings), timings)
    tick = time.perf_counter()
    config = LinearRegressionConfig(learning_rate=args.learning_rate, momentum=args.momentum, epochs=args.epochs,
                                    init="zeros", solver="gram")
    trainer = GramTrainer.from_partial(engine, partial, config, refresh)
    finalize_s = time.perf_counter() - tick
    timings["gram_s"] += finalize_s
    tick = time.perf_counter()
    epoch_seconds, losses = [], []
    while not trainer.done:
        result = trainer.run_epoch()
        epoch_seconds.append(result.seconds)
        losses.append(float(holder.decrypt(result.loss)[0, 0]) * result.loss_scale)
    weights = holder.decrypt(trainer.weights).reshape(-1)
    train_s = time.perf_counter() - tick
    total_s = time.perf_counter() - start
    gram_peak_mb = peak_rss_mb()  # before the per-row contrast, which holds all its 100k rows at once
    intercept, coef = scaler.original_weights(weights[0], weights[1:])
    Xi = with_intercept(X)
    least_squares = np.linalg.lstsq(Xi, y, rcond=None)[0]
    gd_rows = min(GD_ROWS, args.rows)
    gd_epoch = None if args.skip_gd else per_row_epoch(holder, engine, Xs[:gd_rows], y[:gd_rows], refresh)

    figures = {
        "rows": args.rows,
        "features": FEATURES,
        "packing": args.packing,
        "encrypt_s": round(timings["encrypt_s"], 2),
        "upload_s": round(timings["upload_s"], 2),
        "upload_mb": round(timings["upload_bytes"] / 1e6, 1),
        "gram_s": round(timings["gram_s"], 2),
        "gram_finalize_s": round(finalize_s, 2),  # included in gram_s: independent of the rows
        "train_s": round(train_s, 2),
        "total_s": round(total_s, 2),
        "r2_encrypted": r2_score(Xi, y, np.r_[intercept, coef]),
        "r2_least_squares": r2_score(Xi, y, least_squares),
        "epochs": args.epochs,
        "epoch_s_gram": statistics.median(epoch_seconds),
        "epoch_s_gd_100k": gd_epoch,
        "gd_rows": gd_rows,
        "server_peak_rss_mb": round(gram_peak_mb, 1),
        "process_peak_rss_mb": round(peak_rss_mb(), 1),
        "final_mse_encrypted": losses[-1],
        "max_abs_weight_diff_vs_least_squares": float(np.max(np.abs(np.r_[intercept, coef] - least_squares))),
        "refreshes": trainer.counts.refreshes,
        "transport": "in-process bytes (phase 1)",
        "config": config.to_dict(),
        "params": params.summary(),
    }
    figures["r2_gap"] = abs(figures["r2_encrypted"] - figures["r2_least_squares"])
    print(
        f"{args.rows:,} rows x {FEATURES} features: encrypt {figures['encrypt_s']:.1f} s, upload "
        f"{figures['upload_mb']:,.0f} MB in {figures['upload_s']:.1f} s, Gram pass {figures['gram_s']:.1f} s, "
        f"{args.epochs} epochs {train_s:.1f} s ({figures['epoch_s_gram'] * 1e3:.0f} ms each"
        + (f"; a per-row epoch on {gd_rows:,} rows: {gd_epoch:.2f} s" if gd_epoch else "")
        + f"), total {total_s:.1f} s",
        file=sys.stderr,
    )
    print(
        f"R2 encrypted {figures['r2_encrypted']:.6f} vs least squares {figures['r2_least_squares']:.6f} "
        f"(gap {figures['r2_gap']:.1e}); peak RSS {figures['server_peak_rss_mb']:,.0f} MB (both parties, Gram path)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
