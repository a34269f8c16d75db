"""``ciphergrad``: train on a CSV file through a server, pooled training, or run the Ames demo.

ciphergrad train FILE.csv --target COLUMN [--model linear|logistic] [--server HOST:PORT] [--bad-cells ...]
ciphergrad pool create|invite|revoke|train|status NAME ...   # client.cli.pool: the analyst's side
ciphergrad contribute FILE.csv --invitation CODE             # client.cli.contribute: a contributor's side
ciphergrad models; ciphergrad predict MODEL_ID FILE.csv --out OUT.csv   # client.cli.models: kept models
ciphergrad demo [--server HOST:PORT]      # starts a local server when none is given
ciphergrad demo --pooled                  # three contributor processes, one analyst (client.pool_demo)
ciphergrad compare [TASK ...] [--quick] [--scaling] [--server HOST:PORT] [--out DIR]   # client.compare
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from ciphergrad.client.cli import contribute, demo, models, pool, train


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
    train.add_command(commands)
    demo.add_command(commands)
    models.add_commands(commands)
    pool.add_commands(commands)
    contribute.add_command(commands)
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
