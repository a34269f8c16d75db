"""``ciphergrad demo``: Ames through a server (a local child process when none is named) next to its torch twin;
``--pooled`` runs the three-contributor pool story (``client.pool_demo``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from ciphergrad.client.cli.train import add_training_flags, estimator_from
from ciphergrad.client.local import local_server


def run_demo(server: str, args: argparse.Namespace) -> str:
    """Ames through the service, next to the torch twin; returns the comparison table."""
    from ciphergrad.core.compare import LinearComparison, r2_score
    from ciphergrad.core.data import load_ames, with_intercept
    from ciphergrad.core.engine import OpCounts
    from ciphergrad.core.linear import fit_torch
    from ciphergrad.core.params import plan

    data = load_ames()
    model = estimator_from(args, server)
    start = time.perf_counter()
    model.fit(data.X, data.y)
    elapsed = time.perf_counter() - start
    config, X = model.config_, with_intercept(data.X)
    twin = fit_torch(X, data.y, config, model.shuffle_orders_ or None)
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
        f"learning rate {config.learning_rate}, {config.epochs} epochs, "
        f"weights ~ N(0, 1) (init_seed {config.init_seed})",
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


def add_command(commands: Any) -> None:
    demo = commands.add_parser("demo", help="Ames: encrypted training through a server vs the torch twin")
    # The original write-up's setup: plain gradient descent, learning rate 0.5, N(0, 1) initial weights.
    add_training_flags(demo, epochs=50, learning_rate=0.5, momentum=0.0, init="normal", solver="gd",
                        standardize=False)
    demo.add_argument(
        "--pooled",
        action="store_true",
        help="Ames split across three contributor processes; the analyst trains on the pool (client.pool_demo; "
        "ignores the training flags)",
    )
    demo.set_defaults(handler=cmd_demo)
