"""B3: batched encrypted inference — a linear model and a small square-activation MLP over many rows.

Data: scikit-learn's breast cancer (linear/logistic model, 30 features) and digits (MLP 64-32-10),
resampled with a fixed seed to ``--rows`` rows and standardized. Inputs are column-packed (one ciphertext
per feature per 4096 rows at N = 8192), so a linear layer is plaintext products and additions only.
``ms_per_row_*`` is the server's compute time divided by rows; the client's encryption and decryption
times are reported separately (``*_encrypt_s``, ``*_decrypt_s``).

    .venv/bin/python benchmarks/inference.py --json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from targets import finish

from ciphergrad.core import Engine, KeyHolder, plan
from ciphergrad.core.inference import (
    linear_torch,
    mlp_from_torch,
    mlp_torch,
    predict_linear,
    predict_mlp,
    train_square_mlp,
)

# Exit 1 when one is missed (benchmarks/targets.py); docs/benchmarks.md states each with its command.
TARGETS = {"ms_per_row_linear": ("<=", 0.1), "max_abs_diff_linear": ("<=", 1e-3), "max_abs_diff_mlp": ("<=", 1e-3)}

def _resample(X: np.ndarray, rows: int, seed: int) -> np.ndarray:
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    return X[np.random.default_rng(seed).integers(0, len(X), size=rows)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)

    keys = KeyHolder(plan(3))
    server = Engine.from_public_context(keys.public_context())
    result: dict = {"rows": args.rows, "params": keys.params.summary()}

    # Linear model (a logistic regression's logit; the client thresholds or applies sigmoid exactly).
    cancer = load_breast_cancer()
    Xl = _resample(cancer.data, args.rows, args.seed)
    yl = cancer.target[np.random.default_rng(args.seed).integers(0, len(cancer.data), size=args.rows)]
    model = LogisticRegression(max_iter=2000).fit(Xl, yl)
    w, b = model.coef_[0], float(model.intercept_[0])
    start = time.perf_counter()
    E = keys.encrypt(Xl, packing="columns")
    result["linear_encrypt_s"] = round(time.perf_counter() - start, 4)
    E = type(E).from_bytes(server, E.to_bytes())  # the server's copy, bound to the public context
    server.counts = type(server.counts)()
    start = time.perf_counter()
    out = predict_linear(E, w, b)
    linear_s = time.perf_counter() - start
    result["linear_ops"] = server.counts.to_dict()
    start = time.perf_counter()
    got = keys.decrypt(type(out).from_bytes(keys.engine, out.to_bytes()))[:, 0]
    result["linear_decrypt_s"] = round(time.perf_counter() - start, 4)
    want = linear_torch(Xl, w, b)[:, 0]
    result["ms_per_row_linear"] = round(1e3 * linear_s / args.rows, 5)
    result["rows_per_s_linear"] = round(args.rows / linear_s, 1)
    result["max_abs_diff_linear"] = float(np.max(np.abs(got - want)))
    result["linear_accuracy_encrypted_vs_plain"] = float(np.mean((got > 0) == (want > 0)))

    # Small MLP with a square activation (3 levels: linear, square, linear).
    digits = load_digits()
    Xd = _resample(digits.data, args.rows, args.seed)
    idx = np.random.default_rng(args.seed).integers(0, len(digits.data), size=args.rows)
    yd = digits.target[idx]
    net = train_square_mlp(Xd, yd, args.seed)
    mlp = mlp_from_torch(net)
    start = time.perf_counter()
    D = keys.encrypt(Xd, packing="columns")
    result["mlp_encrypt_s"] = round(time.perf_counter() - start, 4)
    D = type(D).from_bytes(server, D.to_bytes())
    server.counts = type(server.counts)()
    start = time.perf_counter()
    out = predict_mlp(D, mlp)
    mlp_s = time.perf_counter() - start
    result["mlp_ops"] = server.counts.to_dict()
    got = keys.decrypt(type(out).from_bytes(keys.engine, out.to_bytes()))
    want = mlp_torch(net, Xd)
    result["ms_per_row_mlp"] = round(1e3 * mlp_s / args.rows, 5)
    result["max_abs_diff_mlp"] = float(np.max(np.abs(got - want)))
    result["mlp_argmax_agreement"] = float(np.mean(got.argmax(axis=1) == want.argmax(axis=1)))
    result["mlp_max_abs_output"] = float(np.max(np.abs(want)))

    if finish(result, TARGETS, args.json):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
