"""Encrypted statistics (core.stats) on scikit-learn's wine and diabetes data, against numpy.

Per dataset: column mean and variance (``describe``: the standard deviation is the key holder's square
root of the decrypted variance), the covariance matrix and the correlation derived from it, and regression
metrics between encrypted least-squares predictions and encrypted targets (MSE, R², MAE through a degree-6
|x| polynomial on ``[-bound, bound]``). Seconds are the computing party's time on ciphertexts it received
as bytes (encryption and decryption are the key holder's and reported apart); errors are against numpy.

Data: wine's features divided by their standard deviation but left uncentred (means up to ~16 stress the
variance's ``sum(x**2) - sum(x)**2 / n`` cancellation), diabetes as bundled (centred, |x| < 0.2). The
regression pair predicts wine's first feature from the others (diabetes: the disease score from its ten
features), targets divided by their standard deviation so that residuals lie inside ``--mae-bound``.

    .venv/bin/python benchmarks/stats.py --json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from targets import finish

from ciphergrad.core import Engine, KeyHolder, plan
from ciphergrad.core.data import statistics_datasets
from ciphergrad.core.stats import (
    column_mean,
    column_variance,
    covariance,
    finish_correlation,
    finish_r2,
    finish_std,
    mae,
    mse,
    r2_parts,
)
from ciphergrad.core.tensor import EncryptedMatrix

# Exit 1 when one is missed (benchmarks/targets.py); docs/benchmarks.md states each with its command.
TARGETS = {"wine.mae_within_bound": (">=", 1), "diabetes.mae_within_bound": (">=", 1),
           "wine.max_abs_err_correlation": ("<=", 1e-3), "diabetes.r2_abs_err": ("<=", 1e-4)}

def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def run_dataset(keys: KeyHolder, server: Engine, X: np.ndarray, p: np.ndarray, y: np.ndarray, bound: float) -> dict:
    def to_server(m: EncryptedMatrix) -> EncryptedMatrix:
        return EncryptedMatrix.from_bytes(server, m.to_bytes())

    def decrypt(m: EncryptedMatrix) -> np.ndarray:
        return keys.decrypt(EncryptedMatrix.from_bytes(keys.engine, m.to_bytes()))

    start = time.perf_counter()
    rows_packed = to_server(keys.encrypt(X))
    cols_packed = to_server(keys.encrypt(X, packing="columns"))
    P, Y = to_server(keys.encrypt(p)), to_server(keys.encrypt(y))
    encrypt_s = time.perf_counter() - start

    mean_e, mean_s = timed(column_mean, rows_packed)
    var_e, var_s = timed(column_variance, rows_packed, ddof=1)
    cov_e, cov_s = timed(covariance, cols_packed)
    mse_e, mse_s = timed(mse, P, Y)
    (r2_mse_e, r2_var_e), r2_s = timed(r2_parts, P, Y)
    (mae_e, poly), mae_s = timed(mae, P, Y, bound=bound)

    start = time.perf_counter()
    mean, var, cov = decrypt(mean_e)[0], decrypt(var_e)[0], decrypt(cov_e)
    mse_v = float(decrypt(mse_e)[0, 0])
    r2_v = finish_r2(decrypt(r2_mse_e), decrypt(r2_var_e))
    mae_v = float(decrypt(mae_e)[0, 0])
    decrypt_s = time.perf_counter() - start
    std, corr = finish_std(var), finish_correlation(cov)

    residual = (p - y).reshape(-1)
    want_var = X.var(axis=0, ddof=1)
    want_mse = float(np.mean(residual**2))
    want_mae = float(np.mean(np.abs(residual)))
    return {
        "rows": X.shape[0],
        "features": X.shape[1],
        "encrypt_s": round(encrypt_s, 4),
        "mean_s": round(mean_s, 4),
        "variance_s": round(var_s, 4),
        "describe_s": round(mean_s + var_s, 4),
        "covariance_s": round(cov_s, 4),
        "mse_s": round(mse_s, 4),
        "r2_s": round(r2_s, 4),
        "mae_s": round(mae_s, 4),
        "metrics_s": round(mse_s + r2_s + mae_s, 4),
        "decrypt_s": round(decrypt_s, 4),
        "max_abs_err_mean": float(np.max(np.abs(mean - X.mean(axis=0)))),
        "max_abs_err_variance": float(np.max(np.abs(var - want_var))),
        "max_rel_err_variance": float(np.max(np.abs(var - want_var) / np.abs(want_var))),
        "max_rel_err_std": float(np.max(np.abs(std - np.sqrt(want_var)) / np.sqrt(want_var))),
        "max_abs_err_covariance": float(np.max(np.abs(cov - np.cov(X, rowvar=False)))),
        "max_abs_err_correlation": float(np.max(np.abs(corr - np.corrcoef(X, rowvar=False)))),
        "mse_abs_err": abs(mse_v - want_mse),
        "r2": r2_v,
        "r2_abs_err": abs(r2_v - (1.0 - want_mse / float(np.var(y)))),
        "mae": mae_v,
        "mae_abs_err": abs(mae_v - want_mae),
        "mae_abs_err_vs_polynomial": abs(mae_v - float(np.mean(poly(residual)))),
        "mae_bound": poly.max_error,
        "mae_within_bound": bool(abs(mae_v - want_mae) <= poly.max_error),
        "max_abs_residual": float(np.max(np.abs(residual))),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mae-bound", type=float, default=4.0, help="|x| polynomial interval [-b, b]")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)

    keys = KeyHolder(plan(3))
    server = Engine.from_public_context(keys.public_context())
    result: dict = {}
    for name, (X, p, y) in statistics_datasets().items():
        if np.max(np.abs(p - y)) >= args.mae_bound:
            raise SystemExit(f"{name}: residuals exceed --mae-bound {args.mae_bound}; the MAE bound would not hold")
        result[name] = run_dataset(keys, server, X, p, y, args.mae_bound)
    result["params"] = keys.params.summary()

    columns = [
        ("rows", "{:d}"),
        ("features", "{:d}"),
        ("describe_s", "{:.3f}"),
        ("covariance_s", "{:.3f}"),
        ("metrics_s", "{:.3f}"),
        ("max_abs_err_mean", "{:.1e}"),
        ("max_rel_err_variance", "{:.1e}"),
        ("max_abs_err_correlation", "{:.1e}"),
        ("mse_abs_err", "{:.1e}"),
        ("r2_abs_err", "{:.1e}"),
        ("mae_abs_err", "{:.1e}"),
        ("mae_bound", "{:.3f}"),
    ]
    names = [n for n in result if n != "params"]
    print(f"CKKS: {result['params']}\n")
    print(f"{'':24}" + "".join(f"{n:>12}" for n in names))
    for key, fmt in columns:
        print(f"{key:24}" + "".join(f"{fmt.format(result[n][key]):>12}" for n in names))
    if finish(result, TARGETS, args.json):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
