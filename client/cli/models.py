"""Models kept after ``ciphergrad train``: ``--save FILE.json`` (the decrypted model, here), ``--keep-model``
(the encrypted model stays on the server), ``ciphergrad models`` and ``ciphergrad predict``.

A kept model has a private key directory, ``~/.ciphergrad/models/MODEL_ID`` (``--models-dir`` or
``$CIPHERGRAD_MODELS_DIR`` for another root), written like a pool's (``client.keystore``: mode 0700, files
0600): the session's secret context and token, ``session.json``, and ``model.json`` with what prediction needs
on this side (the feature names, the key holder's scaling, the classes). ``predict`` reads a CSV, scales its
features exactly as training did, encrypts them, has the server evaluate the encrypted model on the encrypted
rows (``ModelService.Predict``), decrypts, maps back to data units and writes a CSV: the server sees neither
the rows nor the predictions.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ciphergrad.client.keystore import KeyDirectory, KeyDirError, SessionRecord
from ciphergrad.client.sdk import Client
from ciphergrad.client.table import TableError, csv_columns, read_csv
from ciphergrad.core.data import with_intercept

MODELS_DIR_ENV = "CIPHERGRAD_MODELS_DIR"
MODEL_FILE = "model.json"


def models_root(given: str | None = None) -> Path:
    return Path(given or os.environ.get(MODELS_DIR_ENV) or "~/.ciphergrad/models").expanduser()


def describe(model: Any, features: list[str], target: str, classes: list[str], metric: tuple[str, float]) -> dict:
    """The decrypted model as JSON-ready data: what ``--save`` writes and a kept model's ``model.json`` holds."""
    scaling = model.scaling_
    found = {
        "format": "ciphergrad-model/1",
        "algorithm": model.algorithm,
        "features": features,
        "target": target,
        "classes": classes,
        "intercept": np.asarray(model.intercept_).tolist(),
        "coef": np.asarray(model.coef_).tolist(),
        "fit_intercept": bool(model.fit_intercept),
        "scaling": {
            "feature_mean": scaling.features.mean.tolist(), "feature_scale": scaling.features.scale.tolist(),
            "target_mean": None if scaling.target is None else float(scaling.target.mean[0]),
            "target_scale": None if scaling.target is None else float(scaling.target.scale[0]),
        },
        "config": model.config_.to_dict(),
        "metric": {"name": metric[0], "value": metric[1]},
        "trained": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    kept = getattr(model, "session_", None)
    if kept is not None:
        found |= {"model_id": kept.model_id, "server": kept.server}
    return found


def save_json(path: str, description: dict) -> None:
    Path(path).write_text(json.dumps(description, indent=2) + "\n")


def keep(model: Any, description: dict, root: str | None) -> Path:
    """Write a kept model's key directory; returns it."""
    kept = model.session_
    directory = KeyDirectory(models_root(root) / kept.model_id)
    record = SessionRecord(kept.server, kept.session_id, tls=kept.tls if isinstance(kept.tls, bool) else False)
    directory.save_session(kept.key_holder, kept.token, record)
    directory.save_file(MODEL_FILE, (json.dumps(description, indent=2) + "\n").encode())
    return directory.path


def _kept(model_id: str, root: str | None) -> tuple[KeyDirectory, SessionRecord, dict]:
    directory = KeyDirectory(models_root(root) / model_id)
    if not directory.exists():
        known = sorted(p.name for p in models_root(root).glob("*") if p.is_dir())
        raise KeyDirError(f"no kept model {model_id!r} in {models_root(root)} (kept there: {', '.join(known) or 'none'}"
                          "); train with --keep-model --server HOST:PORT to keep one")
    return directory, directory.load_record(), json.loads(directory.load_file(MODEL_FILE))


def cmd_models(args: argparse.Namespace) -> int:
    root = models_root(args.models_dir)
    found = sorted(p for p in root.glob("*") if (p / MODEL_FILE).exists())
    if not found:
        print(f"no kept models in {root} (ciphergrad train FILE.csv --target COLUMN --server HOST:PORT --keep-model)")
        return 0
    print(f"{'model':<32}  {'algorithm':<9} {'columns':>7}  {'target':<16} {'metric':<18} {'trained':<20} server")
    for path in found:
        model_id = path.name
        try:
            _, record, description = _kept(model_id, args.models_dir)
        except (KeyDirError, OSError, ValueError) as exc:
            print(f"{model_id:<32}  unreadable: {exc}")
            continue
        metric = description["metric"]
        print(f"{model_id:<32}  {description['algorithm']:<9} {len(description['features']):>7}  "
              f"{description['target'][:16]:<16} {metric['name'] + ' ' + format(metric['value'], '.4f'):<18} "
              f"{description['trained']:<20} {record.server}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    directory, record, description = _kept(args.model_id, args.models_dir)
    features, classes = description["features"], description["classes"]
    table = read_csv(args.file)
    missing = [name for name in features if name not in table.columns]
    if missing:
        raise TableError(f"{args.file}: the model needs column(s) {missing}; the file has {list(table.columns)}")
    hint = "fix the file, or pass --bad-cells impute (feature column mean)"
    clean = csv_columns(table, features, bad_cells=args.bad_cells, hint=hint)
    if clean.notice:
        print(f"note: {clean.notice}", file=sys.stderr)
    scaling = description["scaling"]
    X = (clean.values - np.asarray(scaling["feature_mean"])) / np.asarray(scaling["feature_scale"])
    design = with_intercept(X) if description["fit_intercept"] else X
    with Client(record.server, tls=record.tls) as client:
        client.use_session(record.session_id, directory.load_token(), directory.load_key_holder())
        model = client.get_model(args.model_id)
        outputs = np.asarray(client.predict(model, design))
    header, columns = _outputs(outputs, description, classes)
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*table.columns, *header])
        for row, extra in zip(table.cells, zip(*columns, strict=True), strict=True):
            writer.writerow([*row, *extra])
    print(f"predicted {len(design)} rows of {args.file} with model {args.model_id} on {record.server} (rows and "
          f"predictions encrypted in transit and on the server); wrote {args.out}")
    return 0


def _outputs(values: np.ndarray, description: dict, classes: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and columns to append: a regression's prediction in data units, or a class and its probability."""
    scaling = description["scaling"]
    if not classes:
        predicted = values * scaling["target_scale"] + scaling["target_mean"]
        return [f"predicted_{description['target']}"], [[f"{v:.10g}" for v in predicted]]
    probability = 1.0 / (1.0 + np.exp(-values))
    labels = [classes[int(p > 0.5)] for p in probability]
    return ([f"predicted_{description['target']}", f"probability_{classes[1]}"],
            [labels, [f"{p:.6f}" for p in probability]])


def add_commands(commands: Any) -> None:
    listing = commands.add_parser("models", help="the models kept with train --keep-model, and where they live")
    listing.add_argument("--models-dir", help=f"root of the kept models (default: ${MODELS_DIR_ENV}, else "
                         "~/.ciphergrad/models)")
    listing.set_defaults(handler=cmd_models)
    predict = commands.add_parser("predict", help="encrypted prediction of a kept model on a CSV file")
    predict.add_argument("model_id", help="a model id from ciphergrad models")
    predict.add_argument("file", help="CSV file with the model's feature columns")
    predict.add_argument("--out", required=True, help="CSV to write: the input rows plus the predictions")
    predict.add_argument("--bad-cells", choices=("error", "impute"), default="error",
                         help="missing or non-numeric cells: error (default) or impute (feature column mean)")
    predict.add_argument("--models-dir", help=f"root of the kept models (default: ${MODELS_DIR_ENV})")
    predict.set_defaults(handler=cmd_predict)

