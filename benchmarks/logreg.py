"""B4: encrypted logistic regression on breast cancer (455 x 30 after a stratified 80/20 split), through a
local server: the one-pass quadratic solver next to the per-row solver, in the same run.

- quadratic: ``EncryptedLogisticRegression()`` with its defaults (standardized here, the quadratic surrogate
  of the logistic loss on [-4, 4], l2 0.1): one encrypted pass to X^T X and X^T y, one round trip.
- per-row: ``solver="gd"`` tuned as before (Nesterov momentum 0.8, learning rate 0.3, degree-5 sigmoid on
  [-8, 8], 20 epochs, no penalty): every epoch re-reads every row and refreshes masked values.
- refined: the quadratic solution plus ``k`` per-row steps preconditioned by (X^T X / 4n + l2 I')^-1
  (``refine_steps``, core.refine; degree-5 sigmoid on the default range), k = 0, 1, 3, 5 in ``refine_sweep``;
  ``refined_*`` is k = ``REFINE_STEPS``. Target from issue 18: accuracy >= the per-row solver's - 0.005
  (``refined_accuracy_margin`` >= 0) in at most half its Train time (``refined_time_ratio`` <= 0.5). The
  accuracy is the same at every k: with l2 0.1 the exact penalized optimum scores what the quadratic start
  scores on this split (core.refine, "What it is worth"); the per-row solver's one more test row comes
  from its unpenalized, early-stopped fit, whose settings stay as they are.
- scikit-learn's exact ``LogisticRegression`` on the same split, for reference.
- digits (10 classes, 64 features) and wine (3 classes, 13): one-vs-rest from one pass, the defaults.
- ``rows_1m_32f`` (about 4 minutes here; ``--skip-rows-1m`` leaves it out, ``--only-rows-1m`` runs it alone,
  ``--rows-1m 100000`` runs the same section on fewer rows): 1,000,000 rows x 32 features from a known logistic
  model (seeded), ``EncryptedLogisticRegression(l2=0.01)`` (quadratic, otherwise the defaults) against a
  ciphergrad server in a child process (``--executor local`` by default; ``--rows-1m-executor ray`` starts it
  with ``--executor ray`` on all cores, and ``executor`` in the section says which ran): keys -> encrypted
  upload -> one pass -> one round trip -> decrypted model. ``total_s`` is that whole fit;
  ``server_peak_rss_mb`` the child's VmHWM; with Ray also ``ray_workers_peak_rss_mb`` (the pool workers'
  VmHWM summed; RSS counts the object store's shared pages in each worker, so an upper bound) and
  ``ray_other_peak_rss_mb`` (GCS, raylet, agents); ``accuracy`` on the same rows next to scikit-learn's exact
  ``LogisticRegression`` (``sklearn_accuracy``). Targets (issue 18, only when the section runs at 1,000,000
  rows): total_s <= 300, |accuracy - sklearn_accuracy| <= 0.01, server RSS < 4096 MiB.

``*_train_s`` is the Train call (the pass and the key holder's round trips), as the estimator reports it;
``*_total_s`` adds keys, session and upload. Targets (exit 1 when one is missed): quadratic test accuracy
>= 0.95 with the Train call <= 3 s; digits accuracy >= 0.92.

    .venv/bin/python benchmarks/logreg.py --json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from processes import descendants, peak_rss_mb
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from targets import finish

from ciphergrad import EncryptedLogisticRegression, local_server
from ciphergrad.core.data import standardized_split

TARGETS = {"quadratic_accuracy": (">=", 0.95), "quadratic_train_s": ("<=", 3.0),
           "digits_multiclass_accuracy": (">=", 0.92), "refined_accuracy_margin": (">=", 0.0),
           "refined_time_ratio": ("<=", 0.5)}
REFINE_STEPS = 3  # the benchmark's default k
REFINED = {"solver": "quadratic", "degree": 5}
PER_ROW = {"solver": "gd", "learning_rate": 0.3, "momentum": 0.8, "degree": 5, "bound": 8.0, "epochs": 20, "l2": 0.0}


def _fit(address: str, X: np.ndarray, y: np.ndarray, **settings: object) -> tuple[EncryptedLogisticRegression, float]:
    start = time.perf_counter()
    model = EncryptedLogisticRegression(server=address, progress=False, **settings).fit(X, y)
    return model, time.perf_counter() - start


def _multiclass(address: str, name: str, loader: object) -> dict:
    """One-vs-rest from one pass on a stratified 80/20 split, next to scikit-learn's exact fit."""
    X, y = loader(return_X_y=True)  # type: ignore[operator]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    model, total = _fit(address, Xtr, ytr)
    exact = LogisticRegression(max_iter=10_000).fit(Xtr, ytr)
    return {
        f"{name}_multiclass_accuracy": float(model.score(Xte, yte)),
        f"{name}_sklearn_accuracy": float(exact.score(Xte, yte)),
        f"{name}_train_s": round(model.report_["train_seconds"], 3),
        f"{name}_total_s": round(total, 3),
        f"{name}_shape": [len(Xtr), X.shape[1], len(model.classes_)],
    }


BIG_FEATURES = 32
# The default l2 = 0.1 (chosen for breast cancer's conditioning) shrinks this imbalanced (58/42) problem's
# boundary: accuracy 0.010 below the exact fit at 200,000 rows (float64 twin); 0.01 gives 0.0003.
BIG_L2 = 0.01
BIG_TARGETS = {"rows_1m_32f.total_s": ("<=", 300.0), "rows_1m_32f.accuracy_gap": ("<=", 0.01),
               "rows_1m_32f.server_peak_rss_mb": ("<=", 4096.0)}


def _synthetic_logistic(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian features (a shared factor), labels drawn from a known logistic model."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=BIG_FEATURES) / np.sqrt(BIG_FEATURES) * 2.0
    X = rng.normal(size=(rows, BIG_FEATURES)) + 0.5 * rng.normal(size=(rows, 1))
    p = 1.0 / (1.0 + np.exp(-(0.5 + X @ w)))
    return X, (rng.random(rows) < p).astype(np.float64)


def _ray_peaks(server_pid: int) -> dict:
    """VmHWM summed over the server's Ray pool workers (``ray::BlockWorker``) and over its other Ray
    processes; RSS counts the object store's shared pages in every process that maps them, so the sums are
    upper bounds."""
    workers, other, count = 0.0, 0.0, 0
    for pid in descendants(server_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            peak = peak_rss_mb(pid)
        except (OSError, RuntimeError):
            continue
        if title.startswith("ray::") and not title.rstrip().endswith("Agent"):
            workers, count = workers + peak, count + 1
        else:
            other += peak
    return {"ray_workers": count, "ray_workers_peak_rss_mb": round(workers, 1),
            "ray_other_peak_rss_mb": round(other, 1)}


def rows_1m_32f(rows: int, executor: str = "local") -> dict:
    """The ``rows_1m_32f`` section: one-pass logistic regression on ``rows`` x 32 through a child server
    (``executor``: its ``--executor``; ray: a local Ray on this machine's cores, its pool started with the server)."""
    import os

    from ciphergrad.client.local import local_server_process

    X, y = _synthetic_logistic(rows)
    cpus = os.cpu_count() or 1
    flags = ("--executor", "ray", "--ray-num-cpus", str(cpus)) if executor == "ray" else ()
    with local_server_process(*flags, startup_seconds=180) as server:
        start = time.perf_counter()
        model = EncryptedLogisticRegression(server=server.address, progress=False, l2=BIG_L2).fit(X, y)
        total = time.perf_counter() - start
        peak = peak_rss_mb(server.pid)
        ray = _ray_peaks(server.pid) if executor == "ray" else {}
    accuracy = float(model.score(X, y))
    exact = float(LogisticRegression(max_iter=1000).fit(X, y).score(X, y))
    report = model.report_
    return {
        "rows": rows, "features": BIG_FEATURES, "total_s": round(total, 1), "accuracy": accuracy,
        "sklearn_accuracy": exact, "accuracy_gap": round(abs(accuracy - exact), 5),
        "server_peak_rss_mb": round(peak, 1), **ray,
        "upload_s": round(report.get("upload_seconds", float("nan")), 1),
        "train_s": round(report.get("train_seconds", float("nan")), 1),
        "parameters": report.get("parameters"), "l2": BIG_L2,
        "executor": f"ray ({cpus} CPUs, local Ray of the child server)" if executor == "ray"
        else "local (child server process)",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--rows-1m", type=int, default=1_000_000, metavar="ROWS",
                        help="rows of the rows_1m_32f section (default 1,000,000: about 4.5 minutes here)")
    parser.add_argument("--skip-rows-1m", action="store_true", help="leave out the rows_1m_32f section")
    parser.add_argument("--only-rows-1m", action="store_true", help="run the rows_1m_32f section alone")
    parser.add_argument("--rows-1m-executor", choices=("local", "ray"), default="local",
                        help="the rows_1m_32f server's --executor (ray: the Gram pass on a local Ray, all cores)")
    args = parser.parse_args(argv)
    if args.skip_rows_1m:
        args.rows_1m = 0
    targets = dict(TARGETS)
    if args.rows_1m:
        section = rows_1m_32f(args.rows_1m, args.rows_1m_executor)
        if args.rows_1m == 1_000_000:
            targets = BIG_TARGETS if args.only_rows_1m else {**targets, **BIG_TARGETS}
        elif args.only_rows_1m:
            targets = {}
        if args.only_rows_1m:
            result = {"rows_1m_32f": section}
            if finish(result, targets, args.json):
                sys.exit(1)
            return result

    data = load_breast_cancer()
    Xtr, Xte, ytr, yte = standardized_split(data.data, data.target, 0)
    result: dict = {"rows": len(Xtr), "features": Xtr.shape[1]}
    if args.rows_1m:
        result["rows_1m_32f"] = section
    with local_server() as address:
        _fit(address, Xtr[:50], ytr[:50])  # warm-up: imports and the server's first session
        quadratic, quadratic_total = _fit(address, Xtr, ytr)
        per_row, per_row_total = _fit(address, Xtr, ytr, standardize=False, **PER_ROW)
        sweep = {}
        for k in (0, 1, 3, 5):
            refined, _ = _fit(address, Xtr, ytr, refine_steps=k, **REFINED)
            sweep[k] = {"accuracy": float(refined.score(Xte, yte)),
                        "train_s": round(refined.report_["train_seconds"], 3)}
        for name, loader in (("digits", load_digits), ("wine", load_wine)):
            result.update(_multiclass(address, name, loader))
    exact = LogisticRegression(max_iter=10_000).fit(Xtr, ytr)
    result.update(
        quadratic_accuracy=float(quadratic.score(Xte, yte)),
        quadratic_train_s=round(quadratic.report_["train_seconds"], 3),
        quadratic_total_s=round(quadratic_total, 3),
        perrow_accuracy=float(per_row.score(Xte, yte)),
        perrow_train_s=round(per_row.report_["train_seconds"], 3),
        perrow_total_s=round(per_row_total, 3),
        perrow_refreshes=per_row.report_["refreshes"],
        sklearn_accuracy=float(exact.score(Xte, yte)),
        refined_accuracy=sweep[REFINE_STEPS]["accuracy"],
        refined_train_s=sweep[REFINE_STEPS]["train_s"],
        refined_steps=REFINE_STEPS,
        refine_sweep={str(k): v for k, v in sweep.items()},
        refined_accuracy_margin=round(sweep[REFINE_STEPS]["accuracy"] - (float(per_row.score(Xte, yte)) - 0.005), 4),
        refined_time_ratio=round(sweep[REFINE_STEPS]["train_s"] / per_row.report_["train_seconds"], 3),
        train_speedup=round(per_row.report_["train_seconds"] / quadratic.report_["train_seconds"], 2),
        quadratic_config=quadratic.config_.to_dict(),
        perrow_config=per_row.config_.to_dict(),
    )
    if finish(result, targets, args.json):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
