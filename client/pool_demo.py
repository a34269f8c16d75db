"""``ciphergrad demo --pooled``: Ames split across three contributors, one analyst fits on their sealed release.

Four processes besides the server: the analyst (this process: it makes the keys, creates the pool with public
column bounds, invites, seals) and three contributors, each a separate ``ciphergrad contribute`` process that
holds only its own CSV file and its invitation code: it checks the analyst's key fingerprint, computes the
sufficient statistics of its rows and uploads them encrypted with the analyst's public key (never a row,
never a secret key). The server seals the pool's one release; the analyst decrypts it and solves least
squares exactly (``EncryptedLinearRegression.fit_pool``). The fit must reach the R^2 of least squares on the
whole table (float64, numpy) within ``TOLERANCE``, else the demo fails loudly (exit code 1).
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

from ciphergrad.client.estimator import EncryptedLinearRegression
from ciphergrad.client.local import local_server_process
from ciphergrad.client.sdk import Client
from ciphergrad.core.data import load_ames, with_intercept

TOLERANCE = 1e-6  # on R^2
SPLITS = (200, 170, 140)  # rows per contributor; Ames has 510 after the write-up's filtering
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


def public_bounds(values: np.ndarray) -> tuple[float, float]:
    """A column's range widened to a round number of its magnitude: what an analyst would declare in public
    (here derived from Ames by the demo's own stand-in for domain knowledge)."""
    low, high = float(values.min()), float(values.max())
    step = 10.0 ** np.floor(np.log10(max(high - low, 1e-12)))
    return float(np.floor(low / step) * step), float(np.ceil(high / step) * step) + (step if high == low else 0.0)


def run(server_address: str | None = None) -> tuple[list[str], float]:
    """Run the pooled demo; the printed lines and |R^2 pool - R^2 least squares|."""
    data = load_ames()
    names = [*data.feature_names, data.target_name]
    cuts = np.cumsum((0, *SPLITS))
    if cuts[-1] != len(data.X):
        raise RuntimeError(f"Ames has {len(data.X)} rows, the splits {SPLITS} cover {cuts[-1]}")
    bounds = {name: public_bounds(column) for name, column in zip(names, np.column_stack([data.X, data.y]).T,
                                                                      strict=True)}
    with tempfile.TemporaryDirectory(prefix="ciphergrad-pooled-") as scratch, _server(server_address) as address:
        folder = Path(scratch)
        with Client(address) as analyst:
            tick = time.perf_counter()
            pool = analyst.create_pool("ames", data.feature_names, data.target_name, bounds=bounds)
            invitations = [analyst.invite(pool.pool_id, label=f"contributor {i}") for i in (1, 2, 3)]
            parts = []
            for i, invitation in enumerate(invitations):
                path = folder / f"contributor-{i + 1}.csv"  # each contributor's own table, on its own machine
                rows = slice(cuts[i], cuts[i + 1])
                _write_part(path, names, data.X[rows], data.y[rows])
                parts.append((path, invitation.code))
            receipts = _contribute(parts, folder)
            sealed = analyst.seal_pool(pool.pool_id)
            model = EncryptedLinearRegression(progress=False).fit_pool(analyst, pool.pool_id)
            seconds = time.perf_counter() - tick
            analyst_sent, analyst_received = _megabytes(analyst.transfer.sent), _megabytes(analyst.transfer.received)
    design = with_intercept(data.X)
    pool_weights = np.r_[model.intercept_, model.coef_]
    least_squares = np.linalg.lstsq(design, data.y, rcond=None)[0]

    def r2(weights: np.ndarray) -> float:
        residual = data.y - design @ weights
        return float(1 - residual @ residual / np.sum((data.y - data.y.mean()) ** 2))

    difference = abs(r2(pool_weights) - r2(least_squares))
    labels = ["(intercept)", *data.feature_names]
    lines = [
        f"Ames housing ({len(data.X)} rows x {len(data.feature_names)} features) split across 3 contributors "
        f"({', '.join(map(str, SPLITS))} rows), each a separate process holding only its CSV and its invitation.",
        f"Each sent the encrypted sufficient statistics of its rows; the server sealed pool {pool.pool_id}'s one "
        f"release ({sealed.rows} rows, {sealed.contributors} contributors; differential privacy: "
        f"{sealed.mechanism}); the analyst decrypted it and solved least squares here.",
        "",
        *_party_table(receipts, sealed.rows, analyst_sent, analyst_received),
        "",
        f"{'coefficient':>14} {'pool (3 owners)':>18} {'least squares':>18}",
        *(f"{label:>14} {a:>18.9g} {b:>18.9g}"
          for label, a, b in zip(labels, pool_weights, least_squares, strict=True)),
        "",
        f"R² pool {r2(pool_weights):.9f}, least squares on the whole table {r2(least_squares):.9f}: "
        f"difference {difference:.1e} (must be <= {TOLERANCE:.0e})",
        f"pool story (keys, pool, 3 contributions, seal, fit) {seconds:.1f} s",
        "(This process also plays the data owners before the story, writing their three CSV files from Ames, and the",
        "checker after it; in between, the analyst's Client received no row and no contributor's ciphertext.)",
    ]
    return lines, difference


def _party_table(receipts: list[dict[str, Any]], rows: int, sent: float, received: float) -> list[str]:
    header = f"{'party':<15} {'rows seen in plaintext':<34} {'MB sent':>8} {'MB received':>12}  secret key"
    rule = "-" * len(header)
    lines = [header, rule]
    lines.append(
        f"{'analyst':<15} {f'none (one release of {rows})':<34} {sent:>8.1f} {received:>12.1f}  "
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
        f"{'server':<15} {'none (encrypted statistics only)':<34} {server_sent:>8.1f} {server_received:>12.1f}  "
        "never: refuses any context with one"
    )
    lines += [rule, "(the server's bytes are the sum of the parties' counts: everything passes through it)"]
    return lines


def main(server_address: str | None = None) -> int:
    lines, difference = run(server_address)
    print("\n".join(lines))
    if not difference <= TOLERANCE:
        print(
            f"FAILED: the pool's R² differs from least squares on the whole table by {difference:.2e} > "
            f"{TOLERANCE:.0e}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
