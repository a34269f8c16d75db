"""``ciphergrad pool ...`` and ``ciphergrad contribute``: pooled training from a shell.

The analyst runs ``pool create`` (keys and a session are made on the first pool and kept in the key
directory, client.keystore: the secret key never leaves it), ``pool invite`` (prints a code to hand to a
contributor), ``pool revoke``, ``pool train`` and ``pool status``. A contributor runs ``contribute FILE.csv
--invitation CODE``: the CSV is read with client.table's validation, its columns are checked against the
pool's schema before anything is encrypted, and the rows are encrypted here with the analyst's PUBLIC key
(the contributor never holds a secret key) and uploaded.

Bad input (a missing column, a loose key file, an unknown pool name, a malformed duration) is one line and
exit code 2, never a traceback; a server refusal (revoked invitation, row cap, ...) is one line and exit 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from client import training
from client.contributor import Contributor
from client.keystore import KEY_DIR_ENV, KeyDirectory, KeyDirError, SessionRecord, key_dir_for
from client.table import BAD_CELL_CHOICES, CsvTable, TableError, csv_columns, read_csv
from core import algorithms, linear
from core.errors import ParameterError

INVITATION_ENV = "CIPHERGRAD_INVITATION"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Hyperparameters a pool job takes: every config field of both algorithms except what pools fix
# (full batch: no batch_size; the intercept is the schema's).
_FIXED = {"batch_size", "intercept_column", "standardization"}
# Defaults as a pool job sees them where the config's own default is not what runs.
# The pool command's own defaults (as `ciphergrad train` has its own): start from zero and use heavy-ball
# momentum, which the safe learning rate (1/trace) keeps stable.
_POOL_DEFAULTS: dict[str, dict[str, Any]] = {"linear": {"init": "zeros", "momentum": 0.9}}
_SHOWN_DEFAULTS = {"solver": "gram (normal: one decrypted solve here; gd: per-row)", "bound": "sized from the features"}


def parse_duration(text: str) -> int | None:
    """``'7d'``, ``'12h'``, ``'30m'``, ``'90s'``, ``'2w'`` as seconds; ``'never'`` or ``'0'`` as None."""
    if text.strip().lower() in {"never", "0"}:
        return None
    match = _DURATION.match(text.lower())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a positive number and a unit s, m, h, d or w (e.g. 7d, 12h), or 'never'"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_columns(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one column, e.g. --columns rooms,area,age")
    return names


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


# -- the analyst's side --------------------------------------------------------------------------------
def _keys(args: argparse.Namespace) -> KeyDirectory:
    return KeyDirectory(key_dir_for(args.name, args.key_dir))


def _connect(keys: KeyDirectory, name: str, *, with_secret: bool = False) -> tuple[Any, SessionRecord, str]:
    """A Client on the key directory's session, its record and the pool id of ``name``."""
    from client.sdk import Client

    record = keys.load_record()
    pool_id = record.pools.get(name)
    if pool_id is None:
        known = ", ".join(sorted(record.pools)) or "none"
        raise KeyDirError(f"no pool named {name!r} in {keys.path} (pools there: {known}); check the name or --key-dir")
    client = Client(record.server, tls=record.tls)
    holder = keys.load_key_holder() if with_secret else None
    client.use_session(record.session_id, keys.load_token(), holder)  # type: ignore[arg-type]
    return client, record, pool_id


def cmd_create(args: argparse.Namespace) -> int:
    from client.sdk import Client

    features = [c for c in args.columns if c != args.target]
    if not features:
        raise TableError(f"--columns names no feature besides the target {args.target!r}")
    keys = _keys(args)
    if keys.exists():
        record = keys.load_record()
        if args.name in record.pools:
            raise KeyDirError(f"{keys.path} already has a pool named {args.name!r} ({record.pools[args.name]})")
        if args.server and args.server != record.server:
            raise KeyDirError(
                f"{keys.path} holds a session on {record.server}, not {args.server}; use another --key-dir"
            )
        client = Client(record.server, tls=record.tls)
        client.use_session(record.session_id, keys.load_token(), keys.load_key_holder())
    else:
        if not args.server:
            raise KeyDirError(f"{keys.path} has no session yet: name the server with --server HOST:PORT")
        record = SessionRecord(args.server, "", tls=args.tls or False)
        client = Client(args.server, tls=args.tls or False)
    with client:
        pool = client.create_pool(args.name, features, args.target)
        if not record.session_id:  # create_pool made the keys and the session: keep them
            record.session_id = client.session_id
            record.pools[args.name] = pool.pool_id
            keys.save_session(client.key_holder, client.token, record)
        else:
            record.pools[args.name] = pool.pool_id
            keys.save_record(record)
    print(f"created pool {args.name!r} ({pool.pool_id}) on {record.server}")
    print(f"  features, in order: {', '.join(features)}")
    print(f"  target:             {args.target}")
    print(f"  keys (secret key, session token; never sent): {keys.path}")
    print(f"next: ciphergrad pool invite {args.name} --label NAME_OF_CONTRIBUTOR")
    return 0


def _when(epoch_seconds: float) -> str:
    """Epoch seconds (0: never, as the SDK reports an unset expiry) as UTC minutes."""
    if not epoch_seconds:
        return "never"
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_invite(args: argparse.Namespace) -> int:
    client, _, pool_id = _connect(_keys(args), args.name)
    with client:
        invitation = client.invite(pool_id, label=args.label, expires_in=args.expires, max_rows=args.max_rows)
    limits = [f"label {args.label!r}" if args.label else "no label"]
    limits.append(f"expires {_when(invitation.expire_time)}")
    limits.append(f"at most {args.max_rows} rows" if args.max_rows else "no row cap")
    print(f"invitation {invitation.invitation_id} to pool {args.name!r} ({'; '.join(limits)})")
    print("Give this code to the contributor. Treat it like a password: whoever holds it can add rows to the pool")
    print("(and nothing else) until it expires or you revoke it. It is shown once.")
    print()
    print(f"  {invitation.code}")
    print()
    print("The contributor runs (their CSV needs the pool's columns; the rows are encrypted on their machine):")
    print(f"  ciphergrad contribute THEIR_FILE.csv --invitation {invitation.code}")
    print(f"Revoke it: ciphergrad pool revoke {args.name} {invitation.invitation_id}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    client, _, _ = _connect(_keys(args), args.name)
    with client:
        invitation = client.revoke_invitation(args.invitation_id)
    print(
        f"revoked {args.invitation_id} ({invitation.label or 'no label'}): its code no longer works; "
        f"the {invitation.rows} rows it contributed stay in the pool"
    )
    return 0


def _invitation_state(invitation: Any, now: dt.datetime) -> str:
    if invitation.revoked:
        return "revoked"
    if invitation.expire_time and invitation.expire_time <= now.timestamp():
        return "expired"
    return "active"


def status_lines(name: str, pool: Any, now: dt.datetime | None = None) -> list[str]:
    """The ``pool status`` screen for a PoolInfo (schema, totals, one row per invitation)."""
    now = now or dt.datetime.now(dt.UTC)
    lines = [
        f"pool {name!r} ({pool.pool_id}): {pool.rows} rows in {pool.contributions} contributions, "
        f"{pool.size_bytes / 1e6:.1f} MB encrypted",
        f"  features: {', '.join(pool.feature_names)}; target: {pool.target_name}",
        "",
    ]
    wide = max([len("invitation"), *(len(inv.invitation_id) for inv in pool.invitations)])
    label = max([len("label"), *(len(inv.label) for inv in pool.invitations)])
    columns = f"{'state':<8} {'rows':>8} {'uploads':>7} {'row cap':>8}  expires"
    lines.append(f"{'invitation':<{wide}}  {'label':<{label}}  {columns}")
    for inv in pool.invitations:
        cap = str(inv.max_rows) if inv.max_rows else "-"
        lines.append(
            f"{inv.invitation_id:<{wide}}  {inv.label or '-':<{label}}  {_invitation_state(inv, now):<8} "
            f"{inv.rows:>8} {inv.contributions:>7} {cap:>8}  {_when(inv.expire_time)}"
        )
    if not pool.invitations:
        lines.append(f"(no invitations yet: ciphergrad pool invite {name})")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    client, _, pool_id = _connect(_keys(args), args.name)
    with client:
        pool = client.pool(pool_id)
    print("\n".join(status_lines(args.name, pool)))
    return 0


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    entry = algorithms.get(args.algorithm)
    given = {name: getattr(args, name) for name in entry.config_fields() if getattr(args, name, None) is not None}
    given = {**_POOL_DEFAULTS.get(args.algorithm, {}), **given}
    others = sorted(n for n in _training_fields() if n not in entry.config_fields() and getattr(args, n) is not None)
    if others:
        flags = ", ".join("--" + n.replace("_", "-") for n in others)
        raise ParameterError(f"{flags} do(es) not apply to --algorithm {args.algorithm}; remove it")
    if args.standardize and "standardization" not in entry.config_fields():
        raise ParameterError(f"--standardize applies to --algorithm linear (gram or normal), not {args.algorithm}")
    solver = getattr(entry.service_config(given), "solver", "gd")  # a bad combination fails before connecting
    if args.standardize and solver not in training.ONE_PASS_SOLVERS:
        raise ParameterError(
            f"--standardize works with --solver gram or normal (the server folds it into the Gram statistics), "
            f"not {solver}"
        )
    return given


def safe_learning_rate(stats: Any, standardized: bool) -> float:
    """``1 / trace(X^T X / n)`` over the design with its intercept column: the trace bounds the largest
    eigenvalue, so gradient descent with this step cannot diverge. From aggregates only (count, means, variances);
    standardized features have second moment 1 (0 for a constant column)."""
    second_moments = (stats.std > 0).astype(float) if standardized else stats.variance + stats.mean**2
    return float(1.0 / (1.0 + np.sum(second_moments)))


def cmd_train(args: argparse.Namespace) -> int:
    values = _hyperparameters(args)
    entry = algorithms.get(args.algorithm)
    client, _, pool_id = _connect(_keys(args), args.name, with_secret=True)
    notes = []
    with client:
        pool = client.pool(pool_id)
        solver = getattr(entry.service_config(values), "solver", "gd")
        wants_rate = args.algorithm == "linear" and "learning_rate" not in values and solver != "normal"
        stats = client.pool_statistics(pool_id) if args.standardize or wants_rate else None
        if args.standardize:
            values["standardization"] = stats.standardization(target=True)
            notes.append(
                "standardized: every feature and the target to mean 0 and deviation 1 with the pool's decrypted "
                "means and deviations (the server applies them inside the Gram statistics, so it learns them)"
            )
        if wants_rate:
            values["learning_rate"] = safe_learning_rate(stats, args.standardize)
            notes.append(f"learning rate {values['learning_rate']:.4g} = 1/trace(X^T X / n), from the pool statistics")
        config = entry.service_config(values)
        run = client.train(pool_id=pool_id, config=config, algorithm=args.algorithm)
        weights = client.weights(run.model)
        if args.standardize:
            weights = stats.raw_weights(weights, values["standardization"])
    print("\n".join(training_lines(args.name, pool, args.algorithm, config, run, weights, notes)))
    return 0


def training_lines(
    name: str, pool: Any, algorithm: str, config: Any, run: Any, weights: np.ndarray, notes: Sequence[str] = ()
) -> list[str]:
    """The ``pool train`` screen: what was trained, the loss per epoch and the coefficients."""
    solver = getattr(config, "solver", "gd")
    lines = [
        f"trained {algorithm} regression ({solver}) on pool {name!r}: {pool.rows} rows from "
        f"{pool.contributions} contributions x {len(pool.feature_names)} features",
        *notes,
        "",
    ]
    if run.losses:
        kind = "MSE" if algorithm == "linear" else "Brier score"
        every = max(1, len(run.losses) // 10)
        lines.append(f"{'epoch':>7} | {kind + ' (encrypted, decrypted here)':>34}")
        lines += [
            f"{i + 1:>7} | {loss:>34.8g}"
            for i, loss in enumerate(run.losses)
            if i % every == 0 or i == len(run.losses) - 1
        ]
    else:
        lines.append("(no epochs: this process solved the decrypted normal system once)")
    names = ["(intercept)", *pool.feature_names] if len(weights) == len(pool.feature_names) + 1 else pool.feature_names
    lines += ["", f"{'coefficient':>24} {'value (raw units)':>18}"]
    lines += [f"{label:>24} {value:>18.8g}" for label, value in zip(names, weights, strict=True)]
    lines.append(
        f"training {run.seconds:.2f}s; {run.refreshes} masked refreshes answered; the server never saw a row or a key"
    )
    return lines


# -- the contributor's side ----------------------------------------------------------------------------
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
    schema = contributor.schema
    for notice in schema_columns(table, schema.feature_names, schema.target_name):
        print(f"note: {notice}", file=sys.stderr)
    hint = "fix the file, or pass --bad-cells drop (drop those rows) or --bad-cells impute (feature column mean)"
    columns = [*schema.feature_names, schema.target_name]
    clean = csv_columns(table, columns, bad_cells=args.bad_cells, targets=[schema.target_name], hint=hint)
    if clean.notice:
        print(f"note: {clean.notice}", file=sys.stderr)
    X, y = clean.values[:, :-1], clean.values[:, -1]
    with contributor:
        receipt = contributor.upload(X, y, progress=not (args.no_progress or args.json))
    if args.json:  # one line for scripts (ciphergrad demo --pooled reads it)
        fields = {"file": args.file, "bytes_sent": contributor.bytes_sent, "bytes_received": contributor.bytes_received}
        print(json.dumps({**dataclasses.asdict(receipt), **fields}))
        return 0
    print(
        f"contributed {receipt.rows} rows x {X.shape[1]} features from {args.file} to pool {receipt.pool_id}, "
        "encrypted here with the analyst's public key (this machine holds no secret key)"
    )
    print(
        f"receipt {receipt.contribution_id}: {receipt.size_bytes / 1e6:.1f} MB stored; "
        f"sent {contributor.bytes_sent / 1e6:.1f} MB, received {contributor.bytes_received / 1e6:.2f} MB "
        "(the pool's schema and public key)"
    )
    return 0


# -- parsers -------------------------------------------------------------------------------------------
def _training_fields() -> list[str]:
    names: list[str] = []
    for entry in algorithms.ALGORITHMS.values():
        names += [n for n in entry.config_fields() if n not in _FIXED and n not in names]
    return names


def _add_key_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the pool's name (also names its key directory)")
    parser.add_argument(
        "--key-dir",
        metavar="DIR",
        help=f"the analyst's key directory (default: ${KEY_DIR_ENV}, else ~/.ciphergrad/keys/NAME)",
    )


def add_commands(commands: Any) -> None:
    """Add ``pool`` (create, invite, revoke, train, status) and ``contribute`` to the CLI's subparsers."""
    pool = commands.add_parser("pool", help="pooled training: several contributors, one analyst (pool --help)")
    actions = pool.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a pool (and keys plus a session, if the key dir has none)")
    _add_key_dir(create)
    create.add_argument("--columns", type=parse_columns, required=True, help="comma-separated feature columns")
    create.add_argument("--target", required=True, help="the column to predict")
    create.add_argument("--server", help="HOST:PORT of the ciphergrad server (needed when the key dir is new)")
    create.add_argument("--tls", metavar="CA.pem", help="use TLS, trusting this CA certificate")
    create.set_defaults(handler=cmd_create)
    invite = actions.add_parser("invite", help="make an invitation code for one contributor")
    _add_key_dir(invite)
    invite.add_argument("--label", default="", help="who it is for (shown in pool status)")
    invite.add_argument("--expires", type=parse_duration, default=None, help="e.g. 7d, 12h, 30m (default: never)")
    invite.add_argument("--max-rows", type=int, default=None, help="rows it may contribute in total (default: no cap)")
    invite.set_defaults(handler=cmd_invite)
    revoke = actions.add_parser("revoke", help="stop an invitation's code working (its rows stay)")
    _add_key_dir(revoke)
    revoke.add_argument("invitation_id", help="the id pool invite printed (see pool status)")
    revoke.set_defaults(handler=cmd_revoke)
    train = actions.add_parser("train", help="train on every contributed row; prints weights and losses")
    _add_key_dir(train)
    train.add_argument("--algorithm", choices=sorted(algorithms.ALGORITHMS), default="linear", help="default linear")
    train.add_argument(
        "--standardize",
        action="store_true",
        help="linear, solver gram or normal: standardize features and target with the pool's decrypted means and "
        "deviations (applied by the server); coefficients are printed in raw units",
    )
    for field_name in _training_fields():
        _training_flag(train, field_name)
    train.set_defaults(handler=cmd_train)
    status = actions.add_parser("status", help="rows per invitation; revoked and expired ones")
    _add_key_dir(status)
    status.set_defaults(handler=cmd_status)
    contribute = commands.add_parser("contribute", help="encrypt a CSV file's rows and add them to a pool")
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


def _training_flag(parser: argparse.ArgumentParser, name: str) -> None:
    """``--name`` for a config field of one or both algorithms; its help says which and their defaults."""
    owners = {
        entry.name: spec
        for entry in algorithms.ALGORITHMS.values()
        for spec in dataclasses.fields(entry.config)
        if spec.name == name
    }
    spec = next(iter(owners.values()))
    kind = str(spec.type)
    parse = str if "str" in kind else int if "int" in kind and "float" not in kind else float
    shown = {
        algorithm: _POOL_DEFAULTS.get(algorithm, {}).get(name, _SHOWN_DEFAULTS.get(name, field.default))
        for algorithm, field in owners.items()
    }
    if len(set(shown.values())) == 1:
        defaults = f"default {next(iter(shown.values()))}"
    else:
        defaults = "default " + ", ".join(f"{value} ({algorithm})" for algorithm, value in shown.items())
    only = f"{next(iter(owners))} only; " if len(owners) == 1 else ""
    choices = {"solver": linear.SOLVERS, "init": ("normal", "zeros")}.get(name)
    parser.add_argument(
        "--" + name.replace("_", "-"), type=parse, default=None, choices=choices, help=f"{only}{defaults}"
    )
