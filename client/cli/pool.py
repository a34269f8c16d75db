"""``ciphergrad pool create|invite|revoke|train|status``: the analyst's side of pooled training from a shell.

``pool create`` makes the keys and a session on the first pool and keeps them in the key directory
(client.keystore: the secret key never leaves it; the session is made and saved before the pool, so a failure
in between loses no key), ``pool invite`` prints a code to hand to one contributor (who runs ``ciphergrad
contribute``, client.cli.contribute), ``pool revoke`` ends one, ``pool status`` shows the rows per invitation
and ``pool train`` trains on every contributed row and prints the coefficients in raw units.

Bad input (an unknown pool name, a loose key file, a malformed duration, flags that do not fit the algorithm)
is one line and exit code 2, never a traceback; a server refusal is one line with its status and exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ciphergrad.client import training
from ciphergrad.client.keystore import KEY_DIR_ENV, KeyDirectory, KeyDirError, SessionRecord, key_dir_for
from ciphergrad.client.pools import pool_keys
from ciphergrad.client.sdk import Client
from ciphergrad.client.table import TableError
from ciphergrad.core import algorithms, gram, linear
from ciphergrad.core.errors import ParameterError
from ciphergrad.core.layout import pool_tile, rotation_steps
from ciphergrad.core.params import plan

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Hyperparameters a pool job takes: every config field of both algorithms except what pools fix
# (full batch: no batch_size; the intercept is the schema's).
_FIXED = {"batch_size", "intercept_column", "standardization"}
# The pool command's own defaults (as `ciphergrad train` has its own): start from zero and use heavy-ball
# momentum, which the safe learning rate (1/trace) keeps stable.
_POOL_DEFAULTS: dict[str, dict[str, Any]] = {"linear": {"init": "zeros", "momentum": 0.9}}
# Defaults shown in --help where the config's own default is not what runs.
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


# -- the analyst's side --------------------------------------------------------------------------------
def _keys(args: argparse.Namespace) -> KeyDirectory:
    return KeyDirectory(key_dir_for(args.name, args.key_dir))


def _connect(args: argparse.Namespace, *, with_secret: bool = False) -> tuple[Client, SessionRecord, str]:
    """A Client on the key directory's session, its record and the pool id of ``args.name``; ``args.server``
    becomes the session's server (what an error message names)."""
    keys, name = _keys(args), args.name
    record = keys.load_record()
    args.server = record.server
    pool_id = record.pools.get(name)
    if pool_id is None:
        known = ", ".join(sorted(record.pools)) or "none"
        raise KeyDirError(f"no pool named {name!r} in {keys.path} (pools there: {known}); check the name or --key-dir")
    client = Client(record.server, tls=record.tls)
    holder = keys.load_key_holder() if with_secret else None
    client.use_session(record.session_id, keys.load_token(), holder)  # type: ignore[arg-type]
    return client, record, pool_id


def pool_rotations(columns: int, slots: int) -> list[int]:
    """The rotation steps a column-packed pool of ``columns`` encrypted columns needs: what
    client.pools.pool_keys makes Galois keys for (the tile's and the Gram solver's)."""
    tile = pool_tile("columns", columns, slots)
    steps = {*rotation_steps(tile), *gram.rotation_steps(gram.weight_period(columns, tile), slots)}
    return sorted(s for s in steps if s % slots)


def cmd_create(args: argparse.Namespace) -> int:
    features = [c for c in args.columns if c != args.target]
    if not features:
        raise TableError(f"--columns names no feature besides the target {args.target!r}")
    keys = _keys(args)
    if keys.exists():
        record = keys.load_record()
        if args.name in record.pools:
            raise KeyDirError(f"{keys.path} already has a pool named {args.name!r} ({record.pools[args.name]})")
        if args.server and args.server != record.server:
            where = f"{keys.path} holds a session on {record.server}, not {args.server}"
            raise KeyDirError(f"{where}; use another --key-dir")
        args.server = record.server
        holder = keys.load_key_holder()
        if not set(pool_rotations(len(features) + 1, holder.params.slots)) <= set(record.rotations):
            raise KeyDirError(
                f"the keys in {keys.path} were made for pools of another width and lack rotations that "
                f"{len(features)} features need; give this pool its own --key-dir"
            )
        client = Client(record.server, tls=record.tls)
        client.use_session(record.session_id, keys.load_token(), holder)
    else:
        if not args.server:
            raise KeyDirError(f"{keys.path} has no session yet: name the server with --server HOST:PORT")
        client = Client(args.server, tls=args.tls or False)
        # The session first, saved at once: should creating the pool fail, the keys of the session are kept.
        # Keys as Client.create_pool makes them for a new session (plan(3), column packing).
        holder = pool_keys(plan(3), len(features) + 1, "columns")
        client.create_session(key_holder=holder, display_name=f"ciphergrad pool {args.name}")
        steps = pool_rotations(len(features) + 1, holder.params.slots)
        record = SessionRecord(args.server, client.session_id, tls=args.tls or False, rotations=steps)
        keys.save_session(holder, client.token, record)
    with client:
        pool = client.create_pool(args.name, features, args.target)
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
    client, _, pool_id = _connect(args)
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
    print("The contributor saves it in a file (say invitation.txt) and runs, on their own machine, with a CSV")
    print("holding the pool's columns (the rows are encrypted there, with your public key):")
    print("  ciphergrad contribute THEIR_FILE.csv --invitation @invitation.txt")
    print(f"Revoke it: ciphergrad pool revoke {args.name} {invitation.invitation_id}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    client, _, _ = _connect(args)
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
    client, _, pool_id = _connect(args)
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
    client, _, pool_id = _connect(args, with_secret=True)
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
        f"training {run.seconds:.2f}s; {run.refreshes} masked refreshes answered; "
        "the server never saw a row or the secret key"
    )
    return lines


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
    """Add ``pool`` (create, invite, revoke, train, status) to the CLI's subparsers."""
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
