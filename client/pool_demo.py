"""``ciphergrad demo --pooled``: Ames split across three contributors, one analyst trains on the union.

Four processes besides the server: the analyst (this process: it makes the keys, creates the pool, invites)
and three contributors, each a separate ``ciphergrad contribute`` process that holds only its own CSV file
and its invitation code (never a secret key: it downloads the analyst's public key and encrypts with it).
The analyst then trains on the pool (``EncryptedLinearRegression.fit_pool``) without ever receiving a row
or a contributor's ciphertext, and the weights are checked against training on the whole table uploaded as
one dataset by a single owner (``fit``, a separate session): they must agree within ``TOLERANCE``, else the
demo fails loudly (exit code 1). The torch twin on the concatenated plaintext is printed next to them.

Standardization without seeing a row: the analyst decrypts the pool statistics (count, column means and
variances: aggregates) and the server applies the standardization they give inside its Gram statistics; the
weights are mapped back to raw units here. The one-dataset run uses the same standardization, the settings
are the converged Gram run of ``make demo`` (client.compare.tasks.SOLVER_SETTINGS).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ciphergrad.client.compare.tasks import SOLVER_SETTINGS
from ciphergrad.client.estimator import EncryptedLinearRegression
from ciphergrad.client.local import local_server_process
from ciphergrad.client.sdk import Client, default_parameters, training_layout
from ciphergrad.core import algorithms, standardize
from ciphergrad.core.data import load_ames, with_intercept

TOLERANCE = 1e-6
SPLITS = (200, 170, 140)  # rows per contributor; Ames has 510 after the write-up's filtering
SETTINGS = {"solver": "gram", **SOLVER_SETTINGS["gram"]}
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def _server(address: str | None) -> Iterator[str]:
    if address:
        yield address
        return
    with local_server_process() as server:
        yield server.address


def _write_part(path: Path, names: Sequence[str], X: np.ndarray, y: np.ndarray) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(np.column_stack([X, y]).tolist())


def _contribute(parts: list[tuple[Path, str]], folder: Path) -> list[dict[str, Any]]:
    """One ``ciphergrad contribute`` child process per (CSV, code), all at once; their JSON receipts."""
    children = []
    for index, (csv_path, code) in enumerate(parts, start=1):
        code_path = folder / f"invitation-{index}.txt"  # a file, not argv: other users can read argv (ps)
        code_path.write_text(code)
        os.chmod(code_path, 0o600)
        command = [
            sys.executable, "-m", "ciphergrad.client.cli", "contribute", str(csv_path),
            "--invitation", f"@{code_path}", "--json", "--no-progress",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    receipts = []
    for index, child in enumerate(children, start=1):
        out, err = child.communicate(timeout=600)
        if child.returncode != 0:
            raise RuntimeError(f"contributor {index} failed (exit {child.returncode}): {err.strip()}")
        receipts.append({**json.loads(out.strip().splitlines()[-1]), "pid": child.pid})
    return receipts


def _megabytes(book: dict[str, int]) -> float:
    return sum(book.values()) / 1e6


def run(server_address: str | None = None) -> tuple[list[str], float]:
    """Run the pooled demo; the printed lines and the max |pool weights - one-dataset weights|."""
    data = load_ames()
    names = [*data.feature_names, data.target_name]
    bounds = np.cumsum((0, *SPLITS))
    if bounds[-1] != len(data.X):
        raise RuntimeError(f"Ames has {len(data.X)} rows, the splits {SPLITS} cover {bounds[-1]}")
    with tempfile.TemporaryDirectory(prefix="ciphergrad-pooled-") as scratch, _server(server_address) as address:
        folder = Path(scratch)
        with Client(address) as analyst:
            tick = time.perf_counter()
            pool = analyst.create_pool("ames", data.feature_names, data.target_name)
            invitations = [analyst.invite(pool.pool_id, label=f"contributor {i}") for i in (1, 2, 3)]
            parts = []
            for i, invitation in enumerate(invitations):
                path = folder / f"contributor-{i + 1}.csv"  # each contributor's own table, on its own machine
                rows = slice(bounds[i], bounds[i + 1])
                _write_part(path, names, data.X[rows], data.y[rows])
                parts.append((path, invitation.code))
            receipts = _contribute(parts, folder)
            pooled = analyst.pool(pool.pool_id)
            model = EncryptedLinearRegression(progress=False, **SETTINGS)
            model.fit_pool(analyst, pool.pool_id, standardize=True)
            seconds = time.perf_counter() - tick
            analyst_sent, analyst_received = _megabytes(analyst.transfer.sent), _megabytes(analyst.transfer.received)
            stats = analyst.pool_statistics(pool.pool_id)  # for the comparisons below, not for the story
        scaling = model.report_["standardization"]
        config = model.config_
        # The reference: one owner holding the whole table, the same config (the pool's standardization too).
        whole_scaled = _one_owner(address, with_intercept(data.X), data.y, config)
    design_s, target_s = standardize.apply(with_intercept(data.X), data.y, scaling, 0)
    twin = algorithms.get("linear").twin_for(config)(design_s, target_s, config)
    pool_weights = np.r_[model.intercept_, model.coef_]
    whole_weights = stats.raw_weights(whole_scaled, scaling)
    twin_weights = stats.raw_weights(twin.weights, scaling)
    difference = float(np.max(np.abs(pool_weights - whole_weights)))
    design = with_intercept(data.X)
    least_squares = np.linalg.lstsq(design, data.y, rcond=None)[0]

    def r2(weights: np.ndarray) -> float:
        residual = data.y - design @ weights
        return float(1 - residual @ residual / np.sum((data.y - data.y.mean()) ** 2))

    labels = ["(intercept)", *data.feature_names]
    lines = [
        f"Ames housing ({len(data.X)} rows x {len(data.feature_names)} features) split across 3 contributors "
        f"({', '.join(map(str, SPLITS))} rows), each a separate process holding only its CSV and its invitation.",
        f"The analyst trained linear regression on pool {pool.pool_id} ({pooled.rows} rows, "
        f"{pooled.contributions} contributions): solver {config.solver}, {config.epochs} epochs, learning rate "
        f"{config.learning_rate}, momentum {config.momentum}, standardized with the decrypted pool statistics.",
        "",
        *_party_table(receipts, pooled.rows, analyst_sent, analyst_received),
        "",
        f"{'coefficient':>14} {'pool (3 owners)':>16} {'one dataset':>16} {'torch twin':>16}",
        *(
            f"{label:>14} {a:>16.9f} {b:>16.9f} {c:>16.9f}"
            for label, a, b, c in zip(labels, pool_weights, whole_weights, twin_weights, strict=True)
        ),
        "",
        f"max |pool - one dataset| = {difference:.2e} (must be <= {TOLERANCE:.0e}); "
        f"max |pool - torch twin| = {np.max(np.abs(pool_weights - twin_weights)):.2e}",
        f"R² pool {r2(pool_weights):.4f}, one dataset {r2(whole_weights):.4f}, least squares {r2(least_squares):.4f}; "
        f"pool story (keys, pool, 3 uploads, training) {seconds:.1f} s",
        "(This process also plays the data owners before the story, writing their three CSV files from Ames, and the",
        "checker after it, training on the whole table; in between, the analyst's Client received no row.)",
    ]
    return lines, difference


def _one_owner(address: str, design: np.ndarray, target: np.ndarray, config: Any) -> np.ndarray:
    """The whole table uploaded by one owner and trained with ``config``: the decrypted weights."""
    params = default_parameters("linear")
    tile, rotations = training_layout(design.shape, params.slots, config)
    with Client(address) as owner:
        owner.create_session(params, tiles=[tile], rotations=rotations, display_name="one owner, whole table")
        dataset = owner.upload(design, target, tile=tile)
        weights = owner.weights(owner.train(dataset.dataset_id, config).model)
        owner.delete_session()
    return weights


def _party_table(receipts: list[dict[str, Any]], rows: int, sent: float, received: float) -> list[str]:
    header = f"{'party':<15} {'rows seen in plaintext':<34} {'MB sent':>8} {'MB received':>12}  secret key"
    rule = "-" * len(header)
    lines = [header, rule]
    lines.append(
        f"{'analyst':<15} {f'none (trained on {rows} encrypted)':<34} {sent:>8.1f} {received:>12.1f}  "
        "yes: its own, in this process only"
    )
    for index, receipt in enumerate(receipts, start=1):
        seen = f"its own {receipt['rows']} (pid {receipt['pid']})"
        lines.append(
            f"{f'contributor {index}':<15} {seen:<34} {receipt['bytes_sent'] / 1e6:>8.1f} "
            f"{receipt['bytes_received'] / 1e6:>12.2f}  never: public key only"
        )
    server_received = sent + sum(r["bytes_sent"] for r in receipts) / 1e6
    server_sent = received + sum(r["bytes_received"] for r in receipts) / 1e6
    lines.append(
        f"{'server':<15} {f'none ({rows} rows stored encrypted)':<34} {server_sent:>8.1f} {server_received:>12.1f}  "
        "never: refuses any context with one"
    )
    lines += [rule, "(the server's bytes are the sum of the parties' counts: everything passes through it)"]
    return lines


def main(server_address: str | None = None) -> int:
    lines, difference = run(server_address)
    print("\n".join(lines))
    if not difference <= TOLERANCE:
        print(
            f"FAILED: the pooled weights differ from training on the whole table by {difference:.2e} > {TOLERANCE:.0e}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
