"""The report's PNGs (matplotlib, headless ``Agg``): loss curves, time ratios, metrics, scaling.

Encrypted is always the solid blue line or bar with circles, plaintext (torch) the dashed orange line or
hatched bar, so the two stay distinguishable in greyscale too; every figure is 7.5 in wide at 120 dpi
(900 px), legible at README width. Each function writes one file and returns its name.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from ciphergrad.client.compare.result import TaskResult

ENCRYPTED = {"color": "#1f5fa8", "label": "encrypted (CKKS, through the server)"}
PLAIN = {"color": "#e07b00", "label": "plaintext twin (torch / numpy / scikit-learn)"}
WIDTH, DPI = 7.5, 120


def _save(fig: plt.Figure, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def loss_curve(result: TaskResult, out: Path) -> str:
    """Per-epoch training loss, encrypted and torch overlaid; below it their absolute difference."""
    encrypted, torch = np.asarray(result.losses["encrypted"]), np.asarray(result.losses["torch"])
    epochs = np.arange(1, len(torch) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    every = max(1, len(epochs) // 25)
    top.plot(epochs, encrypted, "-o", markevery=every, markersize=5, linewidth=2.5, **ENCRYPTED)
    top.plot(epochs, torch, "--", linewidth=1.6, color=PLAIN["color"], label="torch twin (float64)")
    if result.loss_optimum is not None:
        top.axhline(result.loss_optimum, color="#555555", linestyle=":", linewidth=1.4, label="least-squares optimum")
    top.set_yscale("log")
    top.set_ylabel(textwrap.fill(result.loss_name, 34))
    top.set_title(f"{result.dataset}: {result.title}", fontsize=10)
    top.legend(loc="best", fontsize=9)
    top.grid(True, which="both", alpha=0.3)
    bottom.semilogy(epochs, np.abs(encrypted - torch) + 1e-18, color="#555555", linewidth=1.2)
    bottom.set_ylabel("|encrypted − torch|\n(same units)", fontsize=9)
    bottom.set_xlabel("epoch (full pass over the training rows)")
    bottom.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    bottom.grid(True, which="both", alpha=0.3)
    return _save(fig, out, f"loss_{result.name}.png")


def time_ratios(results: list[TaskResult], out: Path) -> str:
    """Encrypted / plaintext wall time per task, log scale."""
    names = [r.name for r in results][::-1]
    ratios = [r.time_ratio for r in results][::-1]
    fig, ax = plt.subplots(figsize=(WIDTH, 0.42 * len(names) + 1.4))
    bars = ax.barh(names, ratios, color=ENCRYPTED["color"])
    ax.set_xscale("log")
    ax.set_xlabel("encrypted wall time / plaintext wall time (×, log scale)")
    ax.set_title("How much slower encrypted is, end to end (keys, upload, compute, decrypt)", fontsize=10)
    for bar, ratio in zip(bars, ratios, strict=True):
        ax.text(bar.get_width() * 1.08, bar.get_y() + bar.get_height() / 2, f"{ratio:,.0f}×", va="center", fontsize=8)
    ax.set_xlim(1, max(ratios) * 8)  # bars start at 1×: equal time
    ax.grid(True, axis="x", which="major", alpha=0.3)
    return _save(fig, out, "time_ratios.png")


def metrics(results: list[TaskResult], out: Path) -> str:
    """Each task's metric, encrypted and plaintext side by side."""
    names = [f"{r.name}\n{r.metric}" for r in results][::-1]
    enc = [r.encrypted_metric for r in results][::-1]
    plain = [r.plain_metric for r in results][::-1]
    y, height = np.arange(len(names)), 0.38
    fig, ax = plt.subplots(figsize=(WIDTH, 0.55 * len(names) + 1.4))
    ax.barh(y + height / 2, enc, height, color=ENCRYPTED["color"], label=ENCRYPTED["label"])
    ax.barh(y - height / 2, plain, height, color=PLAIN["color"], hatch="//", edgecolor="white", label=PLAIN["label"])
    for i, (e, p) in enumerate(zip(enc, plain, strict=True)):
        ax.text(max(e, 0) + 0.01, i + height / 2, f"{e:.4f}", va="center", fontsize=7)
        ax.text(max(p, 0) + 0.01, i - height / 2, f"{p:.4f}", va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(min(0.0, *enc, *plain) * 1.1, 1.18)  # an unconverged R² can be negative
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("metric value (R² or accuracy, unitless; 1 is perfect)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.set_title("Metrics, encrypted vs plaintext", fontsize=10, pad=24)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, out, "metrics.png")


def scaling(sweep: dict[str, Any], out: Path) -> str:
    """Epoch time, upload size and server memory against rows, log-log, one line per solver with its
    fitted exponent."""
    panels = [
        ("epoch_seconds", "epoch time (s)"),
        ("upload_mb", "upload (MB, 10⁶ bytes)"),
        ("server_data_mb", "server memory above idle (MiB)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 3.4))
    markers = ["-o", "--s", ":^"]
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(f"rows (× {sweep['features']} features)")
        ax.set_ylabel(label)
        titles = []
        for (solver, slopes), style in zip(sweep["slopes"].items(), markers, strict=False):
            runs = [run for run in sweep["runs"] if run["solver"] == solver]
            if slopes[key] is None:
                continue
            ax.loglog([run["rows"] for run in runs], [run[key] for run in runs], style, label=solver)
            titles.append(f"{solver} {round(slopes[key], 2) + 0.0:.2f}")  # + 0.0: no "-0.00"
        if not titles:
            ax.text(0.5, 0.5, "not measured\n(--server)", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title("slope " + ", ".join(titles), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Encrypted linear regression through the server: scaling in rows (log-log)", fontsize=10)
    return _save(fig, out, "scaling.png")


def privacy(dp: dict[str, Any], out: Path) -> str:
    """Each table's held-out metric against epsilon (log axis), noise draws' spread shaded, the exact release
    (no noise) dotted."""
    finite = [e for e in dp["epsilons"] if e is not None]
    fig, axes = plt.subplots(1, len(dp["tables"]), figsize=(WIDTH, 2.9))
    for ax, (name, found) in zip(np.atleast_1d(axes), dp["tables"].items(), strict=True):
        pairs = [(m, s) for e, m, s in zip(dp["epsilons"], found["mean"], found["std"], strict=True) if e is not None]
        mean, spread = np.array([m for m, _ in pairs]), np.array([s for _, s in pairs])
        ax.semilogx(finite, mean, "-o", color=ENCRYPTED["color"], label="noisy release")
        ax.fill_between(finite, mean - spread, mean + spread, color=ENCRYPTED["color"], alpha=0.15)
        exact = found["mean"][dp["epsilons"].index(None)] if None in dp["epsilons"] else None
        if exact is not None:
            ax.axhline(exact, linestyle=":", color=PLAIN["color"], label="exact release")
        low = 0.4 if "accuracy" in found["metric"] else -1.0
        ax.set_ylim(max(min(float(np.min(mean - spread)) - 0.05, exact or 0.0), low), 1.0)
        ax.set_xlabel("ε")
        ax.set_ylabel(found["metric"])
        ax.set_title(f"{name} ({found['rows']} rows)", fontsize=9)
        ax.set_xticks(finite)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(True, alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Pools: utility of a differentially private release (δ = {dp['delta']:g})", fontsize=10)
    return _save(fig, out, "privacy.png")
