"""Writing the report: ``compare.json`` (everything measured), ``compare.md`` (tables) and ``index.html``
(the same tables with the plots). The tables are built once as rows of strings and rendered twice.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ciphergrad.client.compare import plots
from ciphergrad.client.compare.result import TaskResult

Table = tuple[list[str], list[list[str]]]  # header, rows


def _mb(size: float) -> str:
    return f"{size / 1e6:,.1f}"


def _operations(ops: dict[str, int] | None) -> str:
    if not ops:
        return "not reported"
    return f"{ops.get('multiplications', 0)} ct×ct, {ops.get('rotations', 0)} rot, {ops.get('refreshes', 0)} refresh"


def _peak(mb: float | None, start_mb: float | None = None) -> str:
    if mb is None:
        return "not measured"
    return f"{mb:,.0f}" if start_mb is None else f"{mb:,.0f} ({start_mb:,.0f})"


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1e3:.2f} ms"


def summary_table(results: list[TaskResult]) -> Table:
    header = [
        "task",
        "data (rows × features)",
        "metric",
        "encrypted",
        "plaintext",
        "max abs diff (of)",
        "time enc / plain",
        "ratio",
        "HE ops",
        "MB up / down",
        "server peak MiB (at start)",
    ]
    rows = [
        [
            r.name,
            f"{r.dataset} ({r.rows} × {r.features})",
            r.metric,
            f"{r.encrypted_metric:.4f}",
            f"{r.plain_metric:.4f}",
            f"{r.max_abs_diff:.1e} ({r.diff_of})",
            f"{_seconds(r.encrypted_seconds)} / {_seconds(r.plain_seconds)}",
            f"{r.time_ratio:,.0f}×",
            _operations(r.operations),
            f"{_mb(r.bytes_up)} / {_mb(r.bytes_down)}",
            _peak(r.server_peak_mb, r.server_start_mb),
        ]
        for r in results
    ]
    return header, rows


def training_table(results: list[TaskResult]) -> Table:
    header = [
        "task",
        "epochs",
        "final loss encrypted",
        "final loss torch",
        "epoch enc (ms)",
        "epoch torch (ms)",
        "epoch ratio",
        "published peer, same run",
    ]
    rows = []
    for r in results:
        if not r.losses:
            continue
        enc, torch = r.epoch_seconds["encrypted"], r.epoch_seconds["torch"]
        peer = (
            f"{r.peer['name']}: {r.peer['epoch_seconds']:.2f} s/epoch, {r.peer['slowdown_vs_ours']:,.0f}× slower"
            if r.peer
            else "—"
        )
        rows.append(
            [
                r.name,
                str(len(r.losses["torch"])),
                f"{r.losses['encrypted'][-1]:.8f}",
                f"{r.losses['torch'][-1]:.8f}",
                f"{enc * 1e3:.1f}",
                f"{torch * 1e3:.3f}",
                f"{enc / torch:,.0f}×",
                peer,
            ]
        )
    return header, rows


def scaling_table(sweep: dict[str, Any]) -> Table:
    header = ["solver", "rows", "epoch (s)", "train call (s)", "upload (MB)", "upload time (s)", "server peak MiB",
              "above idle MiB"]
    rows = [
        [
            run["solver"],
            f"{run['rows']:,}",
            f"{run['epoch_seconds']:.3f}",
            f"{run['train_seconds']:.2f}",
            f"{run['upload_mb']:,.1f}",
            f"{run['upload_seconds']:.2f}",
            _peak(run["server_peak_mb"]),
            _peak(run["server_data_mb"]),
        ]
        for run in sweep["runs"]
    ]
    for solver, slopes in sweep["slopes"].items():
        rows.append(
            [
                solver,
                "fitted log-log slope",
                _slope(slopes["epoch_seconds"]),
                "",
                _slope(slopes["upload_mb"]),
                "",
                "",
                _slope(slopes["server_data_mb"]),
            ]
        )
    return header, rows


def privacy_table(dp: dict[str, Any]) -> Table:
    labels = ["∞ (exact)" if e is None else f"{e:g}" for e in dp["epsilons"]]
    header = ["table", "metric", "rows", "features", *(f"ε = {label}" for label in labels)]
    rows = [
        [name, found["metric"], str(found["rows"]), str(found["features"]),
         *(f"{m:.3f} ± {s:.3f}" for m, s in zip(found["mean"], found["std"], strict=True))]
        for name, found in dp["tables"].items()
    ]
    return header, rows


def _slope(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write(out: Path, results: list[TaskResult], sweep: dict[str, Any] | None, meta: dict[str, Any]) -> list[Path]:
    """Write compare.json, compare.md, the PNGs and index.html into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(
        json.dumps({**meta, "tasks": [r.to_dict() for r in results], "scaling": sweep}, indent=2) + "\n"
    )
    images: list[tuple[str, str]] = []
    if results:
        images += [(plots.loss_curve(r, out), f"Loss per epoch: {r.name}") for r in results if r.losses]
        images += [(plots.time_ratios(results, out), "Time ratios"), (plots.metrics(results, out), "Metrics")]
    sections: list[tuple[str, Table]] = []
    if results:
        sections += [
            ("Every task, encrypted vs plaintext", summary_table(results)),
            ("Training: per-epoch figures", training_table(results)),
        ]
    if sweep:
        images.append((plots.scaling(sweep, out), "Scaling"))
        sections.append(
            (f"Scaling: {sweep['features']} features, {sweep['epochs']} epochs per size", scaling_table(sweep))
        )
    dp = meta.get("privacy")
    if dp:
        images.append((plots.privacy(dp, out), "Pools: differential privacy's cost"))
        sections.append((f"Pools with differential privacy: held-out metric against ε (δ = {dp['delta']:g}, "
                         f"{dp['contributors']} contributors, mean ± sd of {dp['repeats']} releases)",
                         privacy_table(dp)))
    notes = [f"{r.name}: {r.notes}" for r in results if r.notes]
    intro = (
        f"ciphergrad compare — {meta['mode']} run against {meta['server']}, {meta['created']}, "
        f"tasks {meta['task_seconds']:.0f} s"
        + (f", scaling {meta['scaling_seconds']:.0f} s" if sweep else "")
        + f". Server memory: {meta['memory']}."
    )
    md = [f"# Encrypted vs plaintext\n\n{intro}\n"]
    md += [f"## {title}\n\n{markdown(table)}\n" for title, table in sections]
    md += ["## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"] if notes else []
    md += ["## Plots\n\n" + "\n".join(f"![{alt}]({name})" for name, alt in images) + "\n"]
    (out / "compare.md").write_text("\n".join(md))
    page = [f"<h1>Encrypted vs plaintext</h1><p>{html.escape(intro)}</p>"]
    page += [f"<h2>{html.escape(title)}</h2>{html_table(table)}" for title, table in sections]
    page += ["<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"] if notes else []
    page += ["<h2>Plots</h2>"] + [
        f'<figure><img src="{name}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'
        for name, alt in images
    ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee}"
        "img{max-width:100%}figure{margin:1em 0}"
    )
    (out / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>ciphergrad compare</title>"
        f"<style>{style}</style></head><body>{''.join(page)}</body></html>\n"
    )
    return [out / "compare.json", out / "compare.md", out / "index.html", *(out / name for name, _ in images)]
