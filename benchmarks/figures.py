"""The measured tables of the README and docs/benchmarks.md, generated from the benchmarks' own JSON.

``make bench`` keeps each benchmark's JSON line in ``benchmarks/results/NAME.json``; ``make figures`` (this
script) rewrites every table between ``<!-- measured:TABLE -->`` and ``<!-- /measured:TABLE -->`` from those
files, so refreshing a figure is re-running its benchmark, not editing prose. The ``compare`` block is the
comparison report's tables (``make compare-figures`` runs ``ciphergrad compare --scaling`` and keeps its
``compare.md`` and ``compare.json`` in ``benchmarks/results/compare/``). ``--check`` rewrites nothing
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
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "ray.md")


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


def _refine(r: dict[str, Any]) -> str:
    sweep = "; ".join(f"k = {k}: {v['accuracy']:.3f} in {v['train_s']:.1f} s" for k, v in r["refine_sweep"].items())
    return (f"{sweep}; per-row {r['perrow_accuracy']:.3f} in {r['perrow_train_s']:.1f} s; k = {r['refined_steps']}: "
            f"margin {r['refined_accuracy_margin']:+.4f}, time ratio {r['refined_time_ratio']:.2f}")


def _rows_1m_32f(r: dict[str, Any]) -> str:
    m = r["rows_1m_32f"]
    workers = f", Ray workers' peak {m['ray_workers_peak_rss_mb']:,.0f} MiB" if "ray_workers_peak_rss_mb" in m else ""
    return (f"{m['total_s']:.0f} s (upload {m['upload_s']:.0f} s, Train {m['train_s']:.0f} s; {m['executor']}); "
            f"accuracy {m['accuracy']:.5f} vs scikit-learn {m['sklearn_accuracy']:.5f}; server peak "
            f"{m['server_peak_rss_mb']:,.0f} MiB{workers}")


def _neighbors(r: dict[str, Any]) -> str:
    names = ("digits", "iris", "wine")
    equal = all(r[n]["labels_equal"] and r[n]["encref_labels_equal"] for n in names)
    per_query = " / ".join(f"{r[n]['ms_per_query']:.1f}" for n in names)
    encref = " / ".join(f"{r[n]['encref_ms_per_query']:.1f}" for n in names)
    return f"{'equal' if equal else 'NOT equal'}; {per_query} ms per query (encrypted reference: {encref})"


def _stats(r: dict[str, Any]) -> str:
    cells = []
    for name in ("wine", "diabetes"):
        t = r[name]
        worst = max(t["max_abs_err_mean"], t["max_abs_err_variance"], t["max_abs_err_covariance"],
                    t["max_abs_err_correlation"], t["r2_abs_err"])
        cells.append(f"{name} ≤ {worst:.1e} (MAE within its bound: {'yes' if t['mae_within_bound'] else 'NO'})")
    return "; ".join(cells)


def _scaling(r: dict[str, Any]) -> str:
    sizes = f"{r['sizes'][0] // 1000}k → {r['sizes'][-1] // 1000}k rows"
    return (f"{sizes}: {r['s_per_1k_rows']:.3f} s per 1k rows (linear fit R² {r['linear_fit_r2']:.4f}); "
            f"peak RSS {r['peak_rss_mb']:,.0f} MiB")


SCALEOUT = [
    Row("100k × 10 per-row epoch, 2 Ray workers vs 1, same run; weights vs the local executor", "scaleout",
        lambda r: f"{r['speedup_2_vs_1']:.2f}×; {r['max_abs_weight_diff_vs_local']:.1e}", "≥ 1.7×; ≤ 1e-6"),
    Row("8 concurrent Ames trainings through one `--executor ray` server, wall over one alone", "scaleout",
        lambda r: f"{r['concurrency_ratio']:.2f}", "≤ 4.5"),
    Row("whole client lifecycles (keys, session, upload, fit), each a process: server-process CPU per lifecycle; "
        "8 at once over one alone (what the cores allow)", "scaleout",
        lambda r: f"{r['server_cpu_s_per_lifecycle']:.2f} CPU s; {r['lifecycle_concurrency_ratio']:.2f} "
        f"({r['lifecycle_cpu_floor_ratio']:.2f})", "≤ 1 s; ≤ 4.5"),
    Row("Gram pass over 1,000,000 × 10 on 2 workers: blocks through the object store vs by path; object-store peak",
        "scaleout", lambda r: f"{r['gram_pass_1m_object_store_s']:.0f} s vs {r['gram_pass_1m_path_s']:.0f} s "
        f"({r['gram_pass_1m_object_store_vs_path']:.2f}×); {r['gram_pass_1m_object_store_peak_bytes'] / 2**20:.0f} "
        f"MiB (budget {r['object_store_budget_bytes'] / 2**20:.0f})", "≤ 1.3×"),
]

TABLES: dict[str, list[Row]] = {
    "benchmarks": [
        Row("B1: Ames epoch, 510 × 10, masked refresh through bytes included, median; speed-up over one "
            "ciphertext per sample (TenSEAL's tutorial), same run", "ames",
            lambda r: f"{r['epoch_s_median'] * 1e3:.1f} ms; {r['speedup_vs_per_sample']:.0f}×",
            "≤ 100 ms; ≥ 200×"),
        Row("B2: HE operations per epoch; encrypted over torch epoch time", "ames",
            lambda r: f"{r['ct_mults_per_epoch']:.0f} ct×ct, {r['plain_mults_per_epoch']:.0f} ct×plain, "
            f"{r['rotations_per_epoch']:.0f} rotations, 1 refresh; {r['encrypted_vs_torch_epoch_ratio']:,.0f}×",
            "reported"),
        Row("B6: max \\|weight − torch\\| after 50 epochs; max relative loss difference", "ames",
            lambda r: f"{r['max_abs_weight_diff']:.1e}; {r['max_rel_loss_diff']:.1e}", "≤ 1e-4 each"),
        Row("B7: key-holder standardization + momentum to convergence: R² vs least squares", "ames",
            lambda r: f"{r['r2_encrypted_converged']:.6f} vs {r['r2_least_squares']:.6f} in "
            f"{r['converged_train_s_total']:.1f} s", "within 0.005, ≤ 10 s"),
        Row("Ames epoch with the `gram` solver (sufficient statistics) vs per-row, same run; weights vs its twin",
            "ames", lambda r: f"{r['epoch_s_median_gram'] * 1e3:.1f} ms vs {r['epoch_s_median'] * 1e3:.1f} ms; "
            f"{r['rotations_per_epoch_gram']:.0f} vs {r['rotations_per_epoch']:.0f} rotations; "
            f"{r['gram_max_abs_weight_diff']:.1e}", "reported"),
        Row("B4: breast cancer 455 × 30, `EncryptedLogisticRegression()` (quadratic, one pass) vs per-row `gd` "
            "(degree-5 sigmoid, 20 epochs), same run: test accuracy, Train call", "logreg",
            lambda r: f"quadratic {r['quadratic_accuracy']:.3f} in {r['quadratic_train_s']:.2f} s; per-row "
            f"{r['perrow_accuracy']:.3f} in {r['perrow_train_s']:.2f} s ({r['perrow_refreshes']} refreshes); "
            f"scikit-learn {r['sklearn_accuracy']:.3f}", "≥ 0.95 and ≤ 3 s (quadratic)"),
        Row("one-vs-rest from one pass, stratified 80/20: digits (1,437 × 64, 10 classes), wine (142 × 13, 3): "
            "test accuracy (scikit-learn), Train call", "logreg",
            lambda r: f"digits {r['digits_multiclass_accuracy']:.3f} ({r['digits_sklearn_accuracy']:.3f}), "
            f"{r['digits_train_s']:.1f} s; wine {r['wine_multiclass_accuracy']:.3f} "
            f"({r['wine_sklearn_accuracy']:.3f}), {r['wine_train_s']:.1f} s", "digits ≥ 0.92"),
        Row("breast cancer, quadratic + k per-row steps preconditioned by (XᵀX/4n + λI')⁻¹ (`refine_steps`), "
            "same run: test accuracy, Train call", "logreg", _refine,
            "accuracy ≥ per-row − 0.005 (margin ≥ 0) in ≤ ½ its time"),
        Row("`rows_1m_32f`: 1,000,000 × 32 synthetic logistic model, keys → upload → pass → round trip → "
            "decrypted model", "logreg", _rows_1m_32f, "≤ 300 s, within 0.01, < 4 GiB"),
        Row("B3: linear model over 10,000 encrypted rows; max difference to torch", "inference",
            lambda r: f"{r['ms_per_row_linear']:.4f} ms per row; {r['max_abs_diff_linear']:.1e}",
            "≤ 0.1 ms, ≤ 1e-3"),
        Row("MLP 64-32-10, square activation, digits; max difference to torch", "inference",
            lambda r: f"{r['ms_per_row_mlp']:.2f} ms per row; {r['max_abs_diff_mlp']:.1e}", "≤ 1e-3"),
        Row("B5: per-row epoch time against rows × 10 features; peak memory", "scaling", _scaling,
            "linear, < 4 GiB"),
        Row("B8: Ames through gRPC over in-process; upload of 100k × 10 on loopback", "service",
            lambda r: f"{r['service_overhead_ratio']:.2f}×; {r['upload_mb']:.0f} MB at "
            f"{r['upload_mb_per_s']:.0f} MB/s", "≤ 1.2×; ≥ 100 MB/s"),
        Row("kNN on digits (PCA 16), iris, wine: labels vs scikit-learn; server time per query", "neighbors",
            _neighbors, "equal"),
        Row("wine and diabetes: mean, variance, covariance, correlation, R² vs numpy (largest error)", "stats",
            _stats, "stated per test"),
        Row("B12: 1,000,000 × 10 through gRPC: encrypt, upload, one-pass Gram statistics, train to convergence",
            "million", lambda r: f"{r['total_s']:.1f} s (upload {r['upload_s']:.0f} s, pass {r['gram_s']:.0f} s); "
            f"R² gap {abs(r['r2_least_squares'] - r['r2_encrypted']):.1e}; server peak "
            f"{r['server_peak_rss_mb']:,.0f} MiB", "≤ 300 s, ≤ 1e-4, < 4 GiB"),
        *SCALEOUT,
        Row("B13: health latency with 64 stalled streams: alone, while a client trains; timeouts", "hostile",
            lambda r: f"max {r['stalled_max_ms']:.0f} ms (median {r['stalled_median_ms']:.1f}), "
            f"{r['training_max_ms']:.0f} ms (median {r['training_median_ms']:.1f}); {r['timeouts']}",
            "< 1 s; 0 timeouts"),
    ],
    "ray": SCALEOUT,
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
        command = f"python benchmarks/{row.benchmark}.py --json"
        if result is None:
            value = f"— (no results/{row.benchmark}.json: `make bench` or `{command}`)"
        else:
            try:
                value = row.value(result)
            except KeyError as missing:  # a partial run (e.g. scaleout.py --only-lifecycle)
                value = f"— ({missing} not in results/{row.benchmark}.json: `{command}`)"
        lines.append(f"| {row.what} | `benchmarks/{row.benchmark}.py` | {value} | {row.target} |")
    return "\n".join(lines)


def compare_section() -> str:
    """The comparison report's tables (``make compare-figures`` keeps its ``compare.md``), headings demoted
    under the page's own and without its plot list (the page shows two of the plots itself)."""
    path = RESULTS / "compare" / "compare.md"
    if not path.exists():
        return "— (no results/compare/compare.md: `make compare-figures`)"
    text = path.read_text().split("\n## Plots", 1)[0]
    lines = text.strip().splitlines()[1:]  # without the report's own title
    return "\n".join(f"#{line}" if line.startswith("## ") else line for line in lines).strip()


def rewrite(text: str) -> str:
    def block(match: re.Match[str]) -> str:
        name = match.group(1)
        body = compare_section() if name == "compare" else render(name)
        return f"<!-- measured:{name} -->\n{body}\n<!-- /measured:{name} -->"

    return re.sub(r"<!-- measured:(\w+) -->\n(?:.*?\n)?<!-- /measured:\1 -->", block, text, flags=re.DOTALL)


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
