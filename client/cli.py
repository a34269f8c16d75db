"""``ciphergrad``: train on a CSV file through a server, pooled training, or run the Ames demo.

ciphergrad train FILE.csv --target COLUMN --server HOST:PORT [--bad-cells error|drop|impute]
ciphergrad pool create|invite|revoke|train|status NAME ...   # client.pool_cli: the analyst's side
ciphergrad contribute FILE.csv --invitation CODE             # client.contribute_cli: a contributor's side
ciphergrad demo [--server HOST:PORT]      # starts a local server when none is given
ciphergrad demo --pooled                  # three contributor processes, one analyst (client.pool_demo)
ciphergrad compare [TASK ...] [--quick] [--scaling] [--server HOST:PORT] [--out DIR]   # client.compare
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from ciphergrad.client import contribute_cli, pool_cli
from ciphergrad.client.estimator import EncryptedLinearRegression
from ciphergrad.client.local import local_server
from ciphergrad.client.table import BAD_CELL_CHOICES, BadCells, TableError, csv_columns, read_csv, text_columns
from ciphergrad.core import algorithms, linear
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.data import with_intercept

# Command-specific defaults and help for some hyperparameters; every field of the config becomes a flag.
_FLAG_HELP = {
    "learning_rate": "default: 1/largest eigenvalue of X^T X / n",
    "batch_size": "power-of-two minibatch (default: full batch)",
    "init": "initial weights: normal (N(0, 1) from --seed) or zeros",
    "solver": "gd (per-row gradient descent), gram (encrypted X^T X, the default without --batch-size) or normal "
    "(this process solves the decrypted X^T X / n once)",
}
# Where the CLI's default is not the config's: no --solver means the service's choice (gram, or gd for minibatches).
_FLAG_DEFAULTS: dict[str, Any] = {"solver": None}
_FLAG_CHOICES = {"solver": linear.SOLVERS}


def _add_training_flags(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """Connection flags plus one flag per field of the linear algorithm's config (``core.algorithms``)."""
    parser.add_argument("--server", help="HOST:PORT of a ciphergrad server (default: start a local one)")
    parser.add_argument("--tls", metavar="CA.pem", help="use TLS, trusting this CA certificate")
    for spec in _flag_fields():
        default = defaults.get(spec.name, _FLAG_DEFAULTS.get(spec.name, spec.default))
        kind = str(spec.type)
        flag = "--" + spec.name.replace("_", "-")
        parse = str if "str" in kind else int if "int" in kind and "float" not in kind else float
        parser.add_argument(
            flag, type=parse, default=default, choices=_FLAG_CHOICES.get(spec.name), help=_FLAG_HELP.get(spec.name)
        )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _flag_fields() -> list[dataclasses.Field]:
    """The linear config's fields that are flags: not ``intercept_column`` (the CLI always fits an intercept)
    nor the ones holding lists (``standardization``: the SDK's, from a pool's statistics)."""
    return [spec for spec in dataclasses.fields(algorithms.get("linear").config)
            if spec.name != "intercept_column" and "tuple" not in str(spec.type)]


def _estimator(args: argparse.Namespace, server: str | None) -> EncryptedLinearRegression:
    names = [spec.name for spec in _flag_fields()]
    hyperparameters = {name: getattr(args, name) for name in names}
    return EncryptedLinearRegression(
        server=server,
        tls=args.tls or False,
        progress=False if args.no_progress else None,
        **hyperparameters,
    )


def _minmax(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return (values - low) / span, low, span


def _read_csv(
    path: str, target: str, features: str | None, bad_cells: BadCells
) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Feature and target columns of a CSV file as finite floats, and the notices to print.

    Without ``features``, every other column holding at least one number is a feature; columns of text only
    (no number at all) are left out with a notice. Bad cells in used columns follow ``bad_cells``.
    """
    table = read_csv(path)
    if target not in table.columns:
        raise TableError(f"{path}: no column {target!r} to predict; the header has {list(table.columns)}")
    notices = []
    if features:
        names = [c.strip() for c in features.split(",") if c.strip() and c.strip() != target]
    else:
        others = [c for c in table.columns if c != target]
        skipped = text_columns(table, others)
        names = [c for c in others if c not in skipped]
        if skipped:
            notices.append(f"{path}: left out column(s) {skipped}: no numeric values (pick columns with --features)")
    if not names:
        raise TableError(f"{path}: no numeric feature columns besides {target!r}; name them with --features")
    hint = "fix the file, or pass --bad-cells drop (drop those rows) or --bad-cells impute (feature column mean)"
    clean = csv_columns(table, [*names, target], bad_cells=bad_cells, targets=[target], hint=hint)
    if clean.notice:
        notices.append(clean.notice)
    return names, clean.values[:, :-1], clean.values[:, -1], notices


def cmd_train(args: argparse.Namespace) -> int:
    features, X, y, notices = _read_csv(args.file, args.target, args.features, args.bad_cells)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    if len(X) < 2:
        print(f"error: {args.file} has fewer than 2 usable rows", file=sys.stderr)
        return 2
    # The key holder conditions the problem before encrypting: standardized features (CKKS holds a bounded
    # range, and gradient descent converges at a rate set by the conditioning), target scaled to [0, 1], and a
    # step size from the plaintext spectrum. Coefficients are mapped back to data units afterwards.
    scaler = Standardizer.fit(X)
    Xs = scaler.transform(X)
    ys, y_low, y_span = _minmax(y[:, None])
    if args.learning_rate is None:
        design = with_intercept(Xs)
        args.learning_rate = float(1.0 / np.linalg.eigvalsh(design.T @ design / len(design))[-1])
    model = _estimator(args, args.server).fit(Xs, ys[:, 0])
    intercept, coef = scaler.original_weights(model.intercept_, model.coef_)
    intercept, coef = y_low[0] + y_span[0] * intercept, y_span[0] * coef
    print(f"trained on {len(X)} rows x {len(features)} features through {args.server or 'a local server'}")
    # The normal solver has no epochs, so no training loss to show.
    mse = f"final training MSE (scaled): {model.history_[-1]:.6g}   " if model.history_ else ""
    print(f"solver {model.config().solver}; {mse}R^2: {model.score(Xs, ys[:, 0]):.4f}")
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
    from ciphergrad.core.compare import LinearComparison, r2_score
    from ciphergrad.core.data import load_ames, with_intercept
    from ciphergrad.core.engine import OpCounts
    from ciphergrad.core.linear import fit_torch
    from ciphergrad.core.params import plan

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
    if args.pooled:
        from ciphergrad.client import pool_demo

        return pool_demo.main(args.server)
    if args.server:
        print(run_demo(args.server, args))
    else:
        with local_server() as address:
            print(f"started a local server on {address}", file=sys.stderr)
            print(run_demo(address, args))
    return 0


def cmd_compare(arguments: Sequence[str]) -> int:
    # Imported on demand: the report needs the torch twins and matplotlib, which a plain client install lacks.
    try:
        from ciphergrad.client.compare.command import main as compare_main
    except ImportError as exc:
        print(f"ciphergrad: error: compare needs {exc.name}: pip install 'ciphergrad[torch,report]'", file=sys.stderr)
        return 2
    return compare_main(arguments)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ciphergrad", description="Train models on encrypted data (CKKS).")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="linear regression on a CSV file, encrypted end to end")
    train.add_argument("file", help="CSV file with a header row")
    train.add_argument("--target", required=True, help="column to predict")
    train.add_argument("--features", help="comma-separated feature columns (default: all numeric others)")
    train.add_argument(
        "--bad-cells",
        choices=BAD_CELL_CHOICES,
        default="error",
        help="missing or non-numeric cells: error (default, names them), drop (their rows), "
        "impute (feature column mean)",
    )
    _add_training_flags(train, epochs=60, learning_rate=None, momentum=0.5, init="zeros")
    train.set_defaults(handler=cmd_train)
    demo = commands.add_parser("demo", help="Ames: encrypted training through a server vs the torch twin")
    # The original write-up's setup: plain gradient descent, learning rate 0.5, N(0, 1) initial weights.
    _add_training_flags(demo, epochs=50, learning_rate=0.5, momentum=0.0, init="normal", solver="gd")
    demo.add_argument(
        "--pooled",
        action="store_true",
        help="Ames split across three contributor processes; the analyst trains on the pool (client.pool_demo; "
        "ignores the training flags)",
    )
    demo.set_defaults(handler=cmd_demo)
    pool_cli.add_commands(commands)
    contribute_cli.add_command(commands)
    commands.add_parser(  # listed in --help; main() hands its arguments to client.compare
        "compare",
        help="every algorithm encrypted vs plaintext, written as a report (ciphergrad compare --help)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:  # its own parser (client.compare.command) reads the rest
        return cmd_compare(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as exc:
        # A newcomer's mistake (a wrong path, a messy table, hyperparameters that do not fit together, a loose
        # key file, a damaged invitation code: TableError, ParameterError, KeyDirError, ...) deserves one line,
        # not a traceback.
        print(f"ciphergrad: error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        # The server's status already says what went wrong (unreachable, refused, invalid argument).
        code, details = getattr(exc, "code", lambda: None)(), getattr(exc, "details", lambda: "")()
        local = args.command in ("train", "demo")  # the commands that start a server when none is named
        where = getattr(args, "server", None) or ("the local server" if local else "the server")
        print(f"ciphergrad: error: {where}: {code.name if code else 'RPC failed'}: {details}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
