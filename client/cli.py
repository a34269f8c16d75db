"""``ciphergrad``: train on a CSV file through a server, or run the Ames demo.

ciphergrad train FILE.csv --target COLUMN --server HOST:PORT
ciphergrad demo [--server HOST:PORT]      # starts an in-process server when none is given
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from client.estimator import EncryptedLinearRegression, local_server


def _add_training_flags(parser: argparse.ArgumentParser, epochs: int) -> None:
    parser.add_argument("--server", help="HOST:PORT of a ciphergrad server (default: start one in-process)")
    parser.add_argument("--tls", metavar="CA.pem", help="use TLS, trusting this CA certificate")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, help="power-of-two minibatch (default: full batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", choices=("normal", "zeros"), default="normal", help="initial weights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _estimator(args: argparse.Namespace, server: str | None) -> EncryptedLinearRegression:
    return EncryptedLinearRegression(
        server=server,
        tls=args.tls or False,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        l2=args.l2,
        momentum=args.momentum,
        batch_size=args.batch_size,
        seed=args.seed,
        init=args.init,
        progress=False if args.no_progress else None,
    )


def _minmax(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return (values - low) / span, low, span


def cmd_train(args: argparse.Namespace) -> int:
    import pandas as pd

    frame = pd.read_csv(args.file)
    if args.target not in frame.columns:
        print(f"error: no column {args.target!r} in {args.file}; columns: {list(frame.columns)}", file=sys.stderr)
        return 2
    features = [c for c in (args.features.split(",") if args.features else frame.columns) if c != args.target]
    numeric = frame[[*features, args.target]].apply(pd.to_numeric, errors="coerce").dropna()
    if len(numeric) < len(frame):
        print(f"dropped {len(frame) - len(numeric)} rows with missing or non-numeric values", file=sys.stderr)
    X, y = numeric[features].to_numpy(float), numeric[args.target].to_numpy(float)
    # CKKS holds a bounded range: train on min-max scaled columns, report coefficients in data units.
    Xs, x_low, x_span = _minmax(X)
    ys, y_low, y_span = _minmax(y[:, None])
    model = _estimator(args, args.server).fit(Xs, ys[:, 0])
    coef = model.coef_ * y_span[0] / x_span
    intercept = y_low[0] + y_span[0] * (model.intercept_ - float(model.coef_ @ (x_low / x_span)))
    print(f"trained on {len(X)} rows x {len(features)} features through {args.server or 'an in-process server'}")
    print(f"final training MSE (scaled): {model.history_[-1]:.6g}   R^2: {model.score(Xs, ys[:, 0]):.4f}")
    print(f"{'feature':>24} {'coefficient':>16}")
    print(f"{'(intercept)':>24} {intercept:>16.6g}")
    for name, value in zip(features, coef, strict=True):
        print(f"{name:>24} {value:>16.6g}")
    report = model.report_
    print(
        f"time: session {report['session_seconds']:.2f}s, upload {report['upload_seconds']:.2f}s, "
        f"training {report['train_seconds']:.2f}s; refreshes {report['refreshes']}; "
        f"bytes moved {report['bytes_total'] / 1e6:.1f} MB"
    )
    return 0


def run_demo(server: str, args: argparse.Namespace) -> str:
    """Ames through the service, next to the torch twin; returns the comparison table."""
    from core.compare import LinearComparison, r2_score
    from core.data import load_ames, with_intercept
    from core.engine import OpCounts
    from core.linear import fit_torch
    from core.params import plan

    data = load_ames()
    model = _estimator(args, server)
    start = time.perf_counter()
    model.fit(data.X, data.y)
    elapsed = time.perf_counter() - start
    config, X = model.config(), with_intercept(data.X)
    twin = fit_torch(X, data.y, config, model.shuffle_orders(len(X)) or None)
    report = model.report_
    counts = report["operation_counts"]
    comparison = LinearComparison(
        config=config,
        params=model.params or plan(3, slots=1),
        encrypted_weights=np.concatenate([[model.intercept_], model.coef_]),
        torch_weights=twin.weights,
        encrypted_losses=model.history_,
        torch_losses=twin.losses,
        epoch_seconds=report["epoch_seconds"],
        torch_epoch_seconds=twin.epoch_seconds,
        counts=OpCounts(**{k: v for k, v in counts.items() if k in OpCounts.__dataclass_fields__}),
        refreshes=report["refreshes"],
        bytes_moved={
            **{f"sent {k}": v for k, v in report["bytes_sent"].items()},
            **{f"received {k}": v for k, v in report["bytes_received"].items()},
        },
    )
    lines = [
        f"Ames housing: {X.shape[0]} rows x {X.shape[1] - 1} features + bias, trained through {server} (gRPC)",
        f"learning rate {config.learning_rate}, {config.epochs} epochs, weights ~ N(0, 1) (seed {config.seed})",
        "",
        comparison.table(),
        "",
        f"R^2 encrypted {r2_score(X, data.y, comparison.encrypted_weights):.6f}, "
        f"torch {r2_score(X, data.y, twin.weights):.6f}",
        f"wall time through the service {elapsed:.2f}s (session {report['session_seconds']:.2f}s, "
        f"upload {report['upload_seconds']:.2f}s, training {report['train_seconds']:.2f}s)",
    ]
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.server:
        print(run_demo(args.server, args))
    else:
        with local_server() as address:
            print(f"started an in-process server on {address}", file=sys.stderr)
            print(run_demo(address, args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ciphergrad", description="Train models on encrypted data (CKKS).")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="linear regression on a CSV file, encrypted end to end")
    train.add_argument("file", help="CSV file with a header row")
    train.add_argument("--target", required=True, help="column to predict")
    train.add_argument("--features", help="comma-separated feature columns (default: all numeric others)")
    _add_training_flags(train, epochs=50)
    train.set_defaults(handler=cmd_train)
    demo = commands.add_parser("demo", help="Ames: encrypted training through a server vs the torch twin")
    _add_training_flags(demo, epochs=50)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
