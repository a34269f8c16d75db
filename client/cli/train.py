"""``ciphergrad train FILE.csv --target COLUMN``: linear or logistic regression on a CSV file, encrypted end to end.

The estimator conditions the problem on this side before encrypting (standardized features and target) and maps
the coefficients back to data units; its exact solvers are the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ciphergrad.client.cli import models
from ciphergrad.client.estimator import EncryptedLinearRegression, EncryptedLogisticRegression
from ciphergrad.client.table import (
    BAD_CELL_CHOICES,
    BadCells,
    CsvTable,
    TableError,
    csv_columns,
    read_csv,
    text_columns,
)
from ciphergrad.core import algorithms

# Command-specific help for some hyperparameters; every field of either config becomes a flag.
_FLAG_HELP = {
    "learning_rate": "step of the iterative solvers (default: derived from the data so it cannot diverge)",
    "batch_size": "power-of-two minibatch (default: full batch)",
    "init": "linear: initial weights for gd/gram, normal (N(0, 1) from --init-seed) or zeros",
    "solver": "linear: normal (default: exact, one round trip), gram (gradient descent on the encrypted X^T X) or "
    "gd (per row); logistic: quadratic (default: one pass, one round trip) or gd (per row)",
    "degree": "logistic gd: degree of the sigmoid polynomial (3, 5 or 7)",
    "bound": "logistic: logit range of the polynomial approximations",
    "refine_steps": "logistic quadratic: per-row steps preconditioned by (X^T X / 4n + l2 I')^-1 after the "
    "one-pass solution (default: 0)",
    "l2": "ridge penalty on the mean loss (default: 0 for linear, 0.1 for logistic)",
}
_MODELS = {"linear": EncryptedLinearRegression, "logistic": EncryptedLogisticRegression}


def add_training_flags(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """Connection flags plus one flag per field of the linear and logistic configs (``core.algorithms``);
    a flag left out means the estimator's default (``defaults`` overrides that, for the demo)."""
    parser.add_argument("--server", help="HOST:PORT of a ciphergrad server (default: start a local one)")
    parser.add_argument("--tls", metavar="CA.pem", help="use TLS, trusting this CA certificate")
    for spec in _flag_fields():
        kind = str(spec.type)
        flag = "--" + spec.name.replace("_", "-")
        parse = str if "str" in kind else int if "int" in kind and "float" not in kind else float
        parser.add_argument(flag, type=parse, default=defaults.get(spec.name), help=_FLAG_HELP.get(spec.name))
    parser.add_argument("--no-standardize", action="store_true", default=defaults.get("standardize") is False,
                        help="encrypt features and target as they are (default: standardize here, map back)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _flag_fields() -> list[dataclasses.Field]:
    """The configs' fields that are flags: not ``intercept_column`` (the CLI always fits an intercept) nor
    the ones holding lists (``standardization``: the SDK's, from a pool's statistics)."""
    seen: dict[str, dataclasses.Field] = {}
    for name in ("linear", "logistic"):
        for spec in dataclasses.fields(algorithms.get(name).config):
            if spec.name != "intercept_column" and "tuple" not in str(spec.type):
                seen.setdefault(spec.name, spec)
    return list(seen.values())


def estimator_from(args: argparse.Namespace, server: str | None, model: str = "linear") -> Any:
    estimator = _MODELS[model]
    accepted = set(estimator().get_params())
    given = {spec.name: getattr(args, spec.name) for spec in _flag_fields() if getattr(args, spec.name) is not None}
    wrong = sorted(set(given) - accepted)
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        raise ValueError(f"{flags} do(es) not apply to --model {model}; drop it or pick the other model")
    return estimator(server=server, tls=args.tls or False, progress=False if args.no_progress else None,
                     standardize=not args.no_standardize, keep_session=getattr(args, "keep_model", False), **given)


def _read_csv(
    path: str, target: str, features: str | None, bad_cells: BadCells, labels: bool = False
) -> tuple[list[str], np.ndarray, np.ndarray, list[str], list[str]]:
    """Feature and target columns of a CSV file as finite floats, the notices to print, and the class names
    (``labels``: the target's distinct texts in sorted order, the target becoming their indices).

    Without ``features``, every other column holding at least one number is a feature; columns of text only
    (no number at all) are left out with a notice. Bad cells in used columns follow ``bad_cells``.
    """
    table = read_csv(path)
    if target not in table.columns:
        raise TableError(f"{path}: no column {target!r} to predict; the header has {list(table.columns)}")
    classes: list[str] = []
    if labels:
        table, classes = _labels_to_codes(table, target)
    notices = []
    if features:
        names = [c.strip() for c in features.split(",") if c.strip() and c.strip() != target]
    else:
        others = [c for c in table.columns if c != target]
        skipped = text_columns(table, others)
        names = [c for c in others if c not in skipped]
        if skipped:
            notices.append(f"{path}: left out column(s) {skipped}: no numeric values (pick columns with --features)")
    if not names:
        raise TableError(f"{path}: no numeric feature columns besides {target!r}; name them with --features")
    hint = "fix the file, or pass --bad-cells drop (drop those rows) or --bad-cells impute (feature column mean)"
    clean = csv_columns(table, [*names, target], bad_cells=bad_cells, targets=[target], hint=hint)
    if clean.notice:
        notices.append(clean.notice)
    return names, clean.values[:, :-1], clean.values[:, -1], notices, classes


def _labels_to_codes(table: CsvTable, target: str) -> tuple[CsvTable, list[str]]:
    """The table with the target's labels (any text; blank cells stay blank, i.e. missing) as class indices."""
    index = table.columns.index(target)
    classes = sorted({row[index].strip() for row in table.cells if row[index].strip()})
    if len(classes) < 2:
        raise TableError(f"{table.path}: column {target!r} holds {len(classes)} distinct label(s); a classifier "
                         "needs two")
    code = {label: str(k) for k, label in enumerate(classes)}
    cells = tuple(tuple(code.get(cell.strip(), "") if i == index else cell for i, cell in enumerate(row))
                  for row in table.cells)
    return dataclasses.replace(table, cells=cells), classes


def cmd_train(args: argparse.Namespace) -> int:
    logistic = args.model == "logistic"
    if args.keep_model and not args.server:
        raise ValueError("--keep-model keeps the model on a server you name: add --server HOST:PORT (the default "
                         "local server is thrown away after training)")
    features, X, y, notices, classes = _read_csv(args.file, args.target, args.features, args.bad_cells, logistic)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    if len(X) < 2:
        print(f"error: {args.file} has fewer than 2 usable rows", file=sys.stderr)
        return 2
    # The estimator conditions the problem on this side before encrypting (standardized features and target,
    # a step that cannot diverge) and maps the coefficients back to data units.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = estimator_from(args, args.server, args.model).fit(X, y)
    config = model.config_
    print(f"trained {args.model} regression on {len(X)} rows x {len(features)} features through "
          f"{args.server or 'a local server'}")
    loss = "Brier score" if logistic else "MSE"
    last = f"final training {loss} (scaled): {model.history_[-1]:.6g}   " if model.history_ else ""
    if logistic:
        predicted = model.predict(X)
        print(f"solver {config.solver}; {last}accuracy: {np.mean(predicted == y):.4f}")
        print(f"{'class':>24} {'rows':>8} {'predicted':>10} {'correct':>8}")
        for k, label in enumerate(classes):
            mine = y == k
            print(f"{label:>24} {int(mine.sum()):>8} {int((predicted == k).sum()):>10} "
                  f"{int((predicted[mine] == k).sum()):>8}")
        if len(classes) == 2:
            print(f"coefficients of the log-odds of {classes[1]!r} (vs {classes[0]!r}):")
        else:
            print(f"coefficients of each class's log-odds against the rest ({len(classes)} one-vs-rest models):")
    else:
        print(f"solver {config.solver}; {last}R^2: {model.score(X, y):.4f}")
    intercepts, coefs = np.atleast_1d(model.intercept_), np.atleast_2d(model.coef_)
    heads = classes if len(intercepts) > 1 else ["coefficient"]
    print(f"{'feature':>24} " + " ".join(f"{str(head)[:16]:>16}" for head in heads))
    print(f"{'(intercept)':>24} " + " ".join(f"{value:>16.6g}" for value in intercepts))
    for j, name in enumerate(features):
        print(f"{name:>24} " + " ".join(f"{value:>16.6g}" for value in coefs[:, j]))
    report = model.report_
    print(
        f"time: session {report['session_seconds']:.2f}s, upload {report['upload_seconds']:.2f}s, "
        f"training {report['train_seconds']:.2f}s; refreshes {report['refreshes']}; "
        f"bytes moved {report['bytes_total'] / 1e6:.1f} MB"
    )
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
    metric = ("accuracy", float(np.mean(model.predict(X) == y))) if logistic else ("R^2", float(model.score(X, y)))
    description = models.describe(model, features, args.target, classes, metric)
    if args.save:
        models.save_json(args.save, description)
        print(f"saved the decrypted model to {args.save}")
    if args.keep_model:
        where = models.keep(model, description, args.models_dir)
        print(f"kept model {model.session_.model_id} on {args.server} (keys in {where}); predict with:")
        print(f"  ciphergrad predict {model.session_.model_id} FILE.csv --out predictions.csv")
    return 0


def add_command(commands: Any) -> None:
    train = commands.add_parser("train", help="linear or logistic regression on a CSV file, encrypted end to end")
    train.add_argument("file", help="CSV file with a header row")
    train.add_argument("--target", required=True, help="column to predict")
    train.add_argument("--model", choices=sorted(_MODELS), default="linear",
                       help="linear regression (default) or logistic: a classifier of any label column, text too")
    train.add_argument("--features", help="comma-separated feature columns (default: all numeric others)")
    train.add_argument(
        "--bad-cells",
        choices=BAD_CELL_CHOICES,
        default="error",
        help="missing or non-numeric cells: error (default, names them), drop (their rows), "
        "impute (feature column mean)",
    )
    add_training_flags(train)
    train.add_argument("--save", metavar="MODEL.json", help="write the decrypted model here (this machine only)")
    train.add_argument("--keep-model", action="store_true",
                       help="keep the encrypted model on --server for ciphergrad predict (keys in a private "
                       "directory under --models-dir)")
    train.add_argument("--models-dir", help="root of the kept models (default: $CIPHERGRAD_MODELS_DIR, else "
                       "~/.ciphergrad/models)")
    train.set_defaults(handler=cmd_train)
