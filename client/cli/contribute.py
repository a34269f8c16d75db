"""``ciphergrad contribute FILE.csv --invitation CODE``: a contributor's side of a pool.

The CSV is read with client.table's validation, its columns are checked against the pool's schema before
anything is encrypted (missing ones are an error naming them; extra ones are left out with a note, never
encrypted, never sent), and the rows' sufficient statistics are computed and encrypted here with the
analyst's PUBLIC key, after checking its fingerprint against the code (``client.contributor``: the contributor
never holds a secret key), and uploaded as one atomic contribution; no row leaves the machine. The code may come from
``--invitation CODE``, ``--invitation @FILE`` (keeps it out of shell history and process listings) or
``$CIPHERGRAD_INVITATION``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ciphergrad.client.contributor import Contributor
from ciphergrad.client.table import BAD_CELL_CHOICES, CsvTable, TableError, csv_columns, read_csv

INVITATION_ENV = "CIPHERGRAD_INVITATION"


def schema_columns(table: CsvTable, feature_names: Sequence[str], target_name: str) -> list[str]:
    """Check a contributor's CSV against the pool's schema; return notices about columns left out.

    Raises TableError naming the missing columns and what the pool needs, before anything is encrypted.
    """
    needed = [*feature_names, target_name]
    missing = [name for name in needed if name not in table.columns]
    if missing:
        raise TableError(
            f"{table.path}: the pool needs column(s) {missing} that the file lacks; the pool's features are "
            f"{list(feature_names)} and its target {target_name!r}; the file has {list(table.columns)}"
        )
    extra = [name for name in table.columns if name not in needed]
    if not extra:
        return []
    return [f"{table.path}: column(s) {extra} are not in the pool's schema: left out (never encrypted, never sent)"]


def _labels_to_indices(table: CsvTable, target: str, classes: Sequence[str]) -> CsvTable:
    """The table with the target's labels as their index in ``classes`` (blank cells stay blank: missing)."""
    index = table.columns.index(target)
    code = {label: str(k) for k, label in enumerate(classes)}
    unknown = sorted({row[index].strip() for row in table.cells if row[index].strip() not in code} - {""})
    if unknown:
        raise TableError(f"{table.path}: column {target!r} holds label(s) {unknown[:5]} that are not among the "
                         f"pool's classes {list(classes)}")
    cells = tuple(tuple(code.get(cell.strip(), "") if i == index else cell for i, cell in enumerate(row))
                  for row in table.cells)
    return dataclasses.replace(table, cells=cells)


def _invitation_code(args: argparse.Namespace) -> str:
    code = args.invitation or os.environ.get(INVITATION_ENV, "")
    if code.startswith("@"):
        try:
            code = open(code[1:]).read()  # noqa: SIM115 (one read)
        except OSError as exc:
            raise TableError(f"--invitation {code}: cannot read the file ({exc.strerror})") from None
    code = code.strip()
    if not code:
        raise TableError(f"no invitation: pass --invitation CODE (or @FILE holding it) or set ${INVITATION_ENV}")
    return code


def cmd_contribute(args: argparse.Namespace) -> int:
    code = _invitation_code(args)
    table = read_csv(args.file)  # a broken file fails here, before any connection
    contributor = Contributor(code)
    args.server = contributor.address  # what an error message names
    schema = contributor.schema
    for notice in schema_columns(table, schema.feature_names, schema.target_name):
        print(f"note: {notice}", file=sys.stderr)
    hint = "fix the file, or pass --bad-cells drop (drop those rows) or --bad-cells impute (feature column mean)"
    if schema.classes:  # labels as text: their index in the schema's classes makes the column numeric
        table = _labels_to_indices(table, schema.target_name, schema.classes)
    columns = [*schema.feature_names, schema.target_name]
    clean = csv_columns(table, columns, bad_cells=args.bad_cells, targets=[schema.target_name], hint=hint)
    if clean.notice:
        print(f"note: {clean.notice}", file=sys.stderr)
    X, y = clean.values[:, :-1], clean.values[:, -1]
    if schema.classes:
        y = np.array([schema.classes[int(k)] for k in y])
    with contributor:
        receipt = contributor.upload(X, y, progress=not (args.no_progress or args.json))
    if args.json:  # one line for scripts (ciphergrad demo --pooled reads it)
        fields = {"file": args.file, "bytes_sent": contributor.bytes_sent, "bytes_received": contributor.bytes_received,
                  "cells_clipped": contributor.clipped}
        print(json.dumps({**dataclasses.asdict(receipt), **fields}))
        return 0
    print(
        f"contributed the statistics of {receipt.rows} rows x {X.shape[1]} features from {args.file} to pool "
        f"{receipt.pool_id}: computed here, encrypted with the analyst's public key (fingerprint checked); no row "
        "left this machine"
    )
    if contributor.clipped:
        print(f"note: {contributor.clipped} value(s) lay outside the pool's bounds and were clipped to them")
    print(
        f"receipt {receipt.contribution_id}: sent {contributor.bytes_sent / 1e6:.2f} MB, received "
        f"{contributor.bytes_received / 1e6:.2f} MB (the pool's schema and public key)"
    )
    return 0


def add_command(commands: Any) -> None:
    """Add ``contribute`` to the CLI's subparsers."""
    contribute = commands.add_parser(
        "contribute", help="summarize a CSV file's rows, encrypt the statistics and add them to a pool"
    )
    contribute.add_argument("file", help="CSV file with a header row holding the pool's columns")
    contribute.add_argument(
        "--invitation", help=f"the code the analyst gave you, or @FILE holding it (default: ${INVITATION_ENV})"
    )
    contribute.add_argument(
        "--bad-cells", choices=BAD_CELL_CHOICES, default="error",
        help="missing or non-numeric cells: error (default), drop (their rows), impute (feature column mean)",
    )  # fmt: skip
    contribute.add_argument("--no-progress", action="store_true", help="no progress bar")
    contribute.add_argument("--json", action="store_true", help="print the receipt as one JSON line")
    contribute.set_defaults(handler=cmd_contribute)
