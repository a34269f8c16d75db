"""The measured tables of the README and docs/benchmarks.md, generated from the benchmarks' own JSON.

``make bench`` keeps each benchmark's JSON line in ``benchmarks/results/NAME.json``; ``make figures`` (this
script) rewrites every table between ``<!-- measured:TABLE -->`` and ``<!-- /measured:TABLE -->`` from those
files, so refreshing a figure is re-running its benchmark, not editing prose. ``--check`` rewrites nothing
and exits 1 when a table differs from what the JSON gives (``tests/test_docs.py`` runs it).

A row whose benchmark has no JSON yet keeps a dash and names the command that fills it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md")


@dataclass(frozen=True)
class Row:
    what: str
    benchmark: str  # benchmarks/NAME.py, results/NAME.json
    value: Callable[[dict[str, Any]], str]
    target: str


def _pools_1m(r: dict[str, Any]) -> str:
    m = r["rows_1m_100f_10_contributors"]
    return (f"{m['total_s']:.1f} s; {m['contributor_upload_bytes'] / 1e6:.2f} MB per contributor; ridge R² gap "
            f"{m['r2_diff']:.1e}, logistic {m['logistic_accuracy']:.4f} (scikit-learn {m['sklearn_accuracy']:.4f})")


def _dp(r: dict[str, Any]) -> str:
    eps = r["dp"]["epsilons"]
    cells = []
    for name, table in r["dp"]["tables"].items():
        pairs = ", ".join(f"{'∞' if e is None else f'{e:g}'}: {m:.2f}" for e, m in zip(eps, table["mean"], strict=True))
        cells.append(f"{name} ({table['metric']}) {pairs}")
    return "; ".join(cells)


TABLES: dict[str, list[Row]] = {
    "readme": [
        Row("Ames epoch, 510 × 10, masked refresh included; vs one ciphertext per sample", "ames",
            lambda r: f"{r['epoch_s_median'] * 1e3:.1f} ms; {r['speedup_vs_per_sample']:.0f}× faster",
            "≤ 100 ms; ≥ 200×"),
        Row("breast cancer, `EncryptedLogisticRegression()`: test accuracy, Train call (per-row solver, same run)",
            "logreg", lambda r: f"{r['quadratic_accuracy']:.3f} in {r['quadratic_train_s']:.1f} s "
            f"({r['perrow_accuracy']:.3f} in {r['perrow_train_s']:.1f} s)", "≥ 0.95, ≤ 3 s"),
        Row("digits, 10 classes, one pass: test accuracy (scikit-learn)", "logreg",
            lambda r: f"{r['digits_multiclass_accuracy']:.3f} ({r['digits_sklearn_accuracy']:.3f})", "≥ 0.92"),
        Row("breast cancer, quadratic then 3 preconditioned per-row steps (`refine_steps=3`): test accuracy, Train "
            "call", "logreg", lambda r: f"{r['refined_accuracy']:.3f} in {r['refined_train_s']:.1f} s "
            f"({r['refined_time_ratio']:.2f} of per-row's time)",
            "≥ per-row − 0.005 in ≤ half its time"),
        Row("1M × 32 logistic, one pass, keys to decrypted model: total, accuracy (scikit-learn), server peak",
            "logreg", lambda r: f"{r['rows_1m_32f']['total_s']:.0f} s, {r['rows_1m_32f']['accuracy']:.4f} "
            f"({r['rows_1m_32f']['sklearn_accuracy']:.4f}), {r['rows_1m_32f']['server_peak_rss_mb']:,.0f} MiB"
            + (f" (+ Ray workers ≤ {r['rows_1m_32f']['ray_workers_peak_rss_mb']:,.0f} MiB)"
               if "ray_workers_peak_rss_mb" in r["rows_1m_32f"] else ""),
            "≤ 300 s, within 0.01, < 4 GB"),
        Row("Ames to convergence: R² vs least squares", "ames",
            lambda r: f"{r['r2_encrypted_converged']:.6f} vs {r['r2_least_squares']:.6f} in "
            f"{r['converged_train_s_total']:.1f} s", "within 0.005, ≤ 10 s"),
        Row("encrypted inference, linear model", "inference", lambda r: f"{r['ms_per_row_linear']:.4f} ms per row",
            "≤ 0.1 ms"),
        Row("1,000,000 × 10 through gRPC: encrypt, upload, one pass, train", "million",
            lambda r: f"{r['total_s']:.1f} s; R² gap {abs(r['r2_least_squares'] - r['r2_encrypted']):.1e}",
            "≤ 300 s"),
        Row("pool of 10 contributor processes, 1,000,000 × 100: statistics, seal, ridge and logistic", "pools",
            _pools_1m, "≤ 30 s"),
        Row("health latency with 64 stalled streams: alone, while a client trains; timeouts", "hostile",
            lambda r: f"max {r['stalled_max_ms']:.0f} ms, {r['training_max_ms']:.0f} ms; {r['timeouts']}",
            "0 timeouts"),
    ],
    "pools": [
        Row("Ames over 3 contributors: R² from the sealed release vs least squares", "pools",
            lambda r: f"{r['ames']['r2_pool']:.9f} vs {r['ames']['r2_least_squares']:.9f} "
            f"(gap {r['ames']['r2_diff']:.1e})", "≤ 1e-6"),
        Row("wine over 3 contributors, one-vs-rest from the release: accuracy (scikit-learn exact)", "pools",
            lambda r: f"{r['wine']['accuracy']:.3f} ({r['wine']['sklearn_accuracy']:.3f})", "reported"),
        Row("1,000,000 × 100 from 10 contributor processes to two sealed releases and two models", "pools",
            _pools_1m, "≤ 30 s"),
        Row("differential privacy: held-out metric against ε (δ = 1e-6, mean of 20 releases)", "pools", _dp,
            "reported"),
        Row("the release's noise: \\|empirical σ / calibrated σ − 1\\| over 200 releases", "pools",
            lambda r: f"{r['dp_noise_rel_error']:.3f}", "≤ 0.1"),
    ],
}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def render(table: str) -> str:
    lines = ["| what | command | value | target |", "|---|---|---|---|"]
    for row in TABLES[table]:
        result = load(row.benchmark)
        value = row.value(result) if result is not None else f"— (run `make bench`: no results/{row.benchmark}.json)"
        lines.append(f"| {row.what} | `benchmarks/{row.benchmark}.py` | {value} | {row.target} |")
    return "\n".join(lines)


def rewrite(text: str) -> str:
    def block(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- measured:{name} -->\n{render(name)}\n<!-- /measured:{name} -->"

    return re.sub(r"<!-- measured:(\w+) -->\n.*?\n<!-- /measured:\1 -->", block, text, flags=re.DOTALL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in DOCUMENTS:
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    for path in stale:
        print(f"{path.relative_to(ROOT)}: {'out of date with benchmarks/results' if args.check else 'rewritten'}",
              file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
