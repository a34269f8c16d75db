"""``ciphergrad pool create|invite|revoke|seal|train|status``: the analyst's side of pools from a shell.

``pool create`` makes the keys and a session on the first pool and keeps them in the key directory
(client.keystore: the secret key never leaves it; the session is made and saved before the pool, so a failure
in between loses no key), with the pool's public bounds and release policy. ``pool invite`` prints a code to
hand to one contributor (who runs ``ciphergrad contribute``, client.cli.contribute), ``pool revoke`` ends one,
``pool seal`` has the server compute the pool's one release, ``pool status`` shows the policy and the rows per
invitation, and ``pool train`` solves the release here and prints the coefficients in data units.

Bad input (an unknown pool name, a loose key file, a malformed duration, flags that do not fit the algorithm)
is one line and exit code 2, never a traceback; a server refusal is one line with its status and exit code 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from typing import Any

import numpy as np

from ciphergrad.client.keystore import KEY_DIR_ENV, KeyDirectory, KeyDirError, SessionRecord, key_dir_for
from ciphergrad.client.pools import pool_keys
from ciphergrad.client.sdk import Client
from ciphergrad.client.table import TableError
from ciphergrad.core.errors import ParameterError
from ciphergrad.core.params import plan

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

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


def parse_bounds(text: str) -> dict[str, tuple[float, float]]:
    """``--bounds "age=0:120,income=0:1e6"`` as ``{column: (lower, upper)}``."""
    found: dict[str, tuple[float, float]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, span = part.partition("=")
        lower, _, upper = span.partition(":")
        try:
            found[name.strip()] = (float(lower), float(upper))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: write COLUMN=LOWER:UPPER, e.g. age=0:120") from None
    return found


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
        client = Client(record.server, tls=record.tls)
        client.use_session(record.session_id, keys.load_token(), holder)
    else:
        if not args.server:
            raise KeyDirError(f"{keys.path} has no session yet: name the server with --server HOST:PORT")
        client = Client(args.server, tls=args.tls or False)
        # The session first, saved at once: should creating the pool fail, the keys of the session are kept.
        # Keys as Client.create_pool makes them for a new session (plan(3), no Galois keys).
        holder = pool_keys(plan(3))
        client.create_session(key_holder=holder, display_name=f"ciphergrad pool {args.name}")
        record = SessionRecord(args.server, client.session_id, tls=args.tls or False, rotations=[])
        keys.save_session(holder, client.token, record)
    with client:
        pool = client.create_pool(
            args.name, features, args.target, bounds=args.bounds, classes=args.classes,
            min_contributors=args.min_contributors, min_rows=args.min_rows, epsilon=args.epsilon,
            delta=args.delta, clip_norm=args.clip_norm,
        )
    record.pools[args.name] = pool.pool_id
    keys.save_record(record)
    print(f"created pool {args.name!r} ({pool.pool_id}) on {record.server}")
    print(f"  features, in order: {', '.join(features)}")
    print(f"  target:             {args.target}" + (f" (classes {', '.join(pool.classes)})" if pool.classes else ""))
    unbounded = [c for c in [*features, *([] if pool.classes else [args.target])] if c not in pool.bounds]
    if unbounded:
        print(f"  used as they are (no --bounds): {', '.join(unbounded)}")
    print(f"  release: at least {pool.min_contributors} contributors of {pool.min_rows}+ rows each; "
          f"differential privacy: {pool.mechanism}")
    print(f"  keys (secret key, session token; never sent): {keys.path}")
    print(f"next: ciphergrad pool invite {args.name} --label NAME_OF_CONTRIBUTOR")
    return 0


def _when(epoch_seconds: float) -> str:
    """Epoch seconds (0: never, as the SDK reports an unset expiry) as UTC minutes."""
    if not epoch_seconds:
        return "never"
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_invite(args: argparse.Namespace) -> int:
    # The key itself, not the server's word for it: the code carries its fingerprint (client.pools).
    client, _, pool_id = _connect(args, with_secret=True)
    with client:
        invitation = client.invite(pool_id, label=args.label, expires_in=args.expires, max_rows=args.max_rows)
    limits = [f"label {args.label!r}" if args.label else "no label"]
    limits.append(f"expires {_when(invitation.expire_time)}")
    limits.append(f"at most {args.max_rows} rows" if args.max_rows else "no row cap")
    print(f"invitation {invitation.invitation_id} to pool {args.name!r} ({'; '.join(limits)})")
    print("Give this code to the contributor. Treat it like a password: whoever holds it can contribute to the pool")
    print("(and nothing else) until it expires or you revoke it. It is shown once. It carries your public key's")
    print("fingerprint: the contributor refuses to encrypt under any other key.")
    print()
    print(f"  {invitation.code}")
    print()
    print("The contributor saves it in a file (say invitation.txt) and runs, on their own machine, with a CSV")
    print("holding the pool's columns (only its statistics leave, encrypted there with your public key):")
    print("  ciphergrad contribute THEIR_FILE.csv --invitation @invitation.txt")
    print(f"Revoke it: ciphergrad pool revoke {args.name} {invitation.invitation_id}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    client, _, _ = _connect(args)
    with client:
        invitation = client.revoke_invitation(args.invitation_id)
    print(
        f"revoked {args.invitation_id} ({invitation.label or 'no label'}): its code no longer works; "
        f"the statistics of the {invitation.rows} rows it contributed stay in the pool"
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
    state = f"sealed {_when(pool.sealed)}" if pool.sealed else "open"
    lines = [
        f"pool {name!r} ({pool.pool_id}), {state}: {pool.rows} rows in {pool.contributions} contributions from "
        f"{pool.contributors} contributors, {pool.size_bytes / 1e6:.2f} MB encrypted statistics",
        f"  features: {', '.join(pool.feature_names)}; target: {pool.target_name}"
        + (f" (classes {', '.join(pool.classes)})" if pool.classes else ""),
        f"  release policy: at least {pool.min_contributors} contributors, {pool.min_rows} rows per contribution",
        f"  differential privacy: {pool.mechanism}"
        + (f"; noise std {pool.noise_std:.4g} per released sum" if pool.noise_std else ""),
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


def cmd_seal(args: argparse.Namespace) -> int:
    client, _, pool_id = _connect(args)
    with client:
        pool = client.seal_pool(pool_id)
    print(f"sealed pool {args.name!r}: one release of {pool.rows} rows from {pool.contributors} contributors; "
          "it takes no more contributions (new data: a new pool)")
    print(f"  differential privacy: {pool.mechanism}")
    print(f"next: ciphergrad pool train {args.name}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    client, _, pool_id = _connect(args, with_secret=True)
    with client:
        pool = client.pool(pool_id)
        algorithm = "logistic" if pool.classes else "linear"
        config = {name: value for name in ("l2", "bound") if (value := getattr(args, name)) is not None}
        if algorithm == "linear" and "bound" in config:
            raise ParameterError("--bound applies to a classification pool's logistic model, not to regression")
        run = client.train(pool_id=pool_id, config=config, algorithm=algorithm)
        release = client.pool_statistics(pool_id)
        weights = np.asarray(client.weights(run.model))
    print("\n".join(training_lines(args.name, pool, algorithm, release, run, weights)))
    return 0


def training_lines(name: str, pool: Any, algorithm: str, release: Any, run: Any, weights: np.ndarray) -> list[str]:
    """The ``pool train`` screen: what was trained from which release, and the coefficients."""
    model = "ridge regression" if algorithm == "linear" else "logistic regression (quadratic surrogate)"
    lines = [
        f"trained {model} on the sealed release of pool {name!r}: {release.rows} rows from {release.contributors} "
        f"contributors x {len(pool.feature_names)} features",
        f"differential privacy: {pool.mechanism}",
        "",
    ]
    blocks = np.asarray(weights).reshape(-1, len(pool.feature_names) + 1)
    heads = list(pool.classes) if len(blocks) > 1 else [pool.classes[1] if pool.classes else "coefficient"]
    lines.append(f"{'feature':>24} {'mean':>12} " + " ".join(f"{str(h)[:16]:>16}" for h in heads))
    means = release.mean
    lines.append(f"{'(intercept)':>24} {'':>12} " + " ".join(f"{b[0]:>16.6g}" for b in blocks))
    for j, feature in enumerate(pool.feature_names):
        lines.append(f"{feature:>24} {means[j]:>12.6g} " + " ".join(f"{b[j + 1]:>16.6g}" for b in blocks))
    if algorithm == "logistic" and len(blocks) == 1:
        lines.append(f"(the log-odds of {pool.classes[1]!r} against {pool.classes[0]!r})")
    lines.append(f"solved here in {run.seconds:.2f}s from one decrypted release; the server saw no row, no "
                 "decryption and no secret key")
    return lines


# -- parsers -------------------------------------------------------------------------------------------
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
    create.add_argument("--bounds", type=parse_bounds, default={},
                        help="public ranges, COLUMN=LOWER:UPPER,...: contributors clip to them and scale to [-1, 1] "
                        "(needed on every column for --epsilon)")
    create.add_argument("--classes", type=parse_columns, default=None,
                        help="a classification pool: the target's labels, comma-separated")
    create.add_argument("--min-contributors", type=int, default=3,
                        help="no release from fewer distinct contributors (default 3)")
    create.add_argument("--min-rows", type=int, default=10, help="rows each contribution needs (default 10)")
    create.add_argument("--epsilon", type=float, default=None,
                        help="differential privacy of the release (with --delta)")
    create.add_argument("--delta", type=float, default=None, help="e.g. 1e-6, below 1/rows")
    create.add_argument("--clip-norm", type=float, default=None,
                        help="DP: clip each row's scaled vector to this L2 norm (default: the bounds')")
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
    seal = actions.add_parser("seal", help="freeze the contributions and compute the pool's one release")
    _add_key_dir(seal)
    seal.set_defaults(handler=cmd_seal)
    train = actions.add_parser("train", help="solve the sealed release here (ridge, or logistic for classes)")
    _add_key_dir(train)
    train.add_argument("--l2", type=float, default=None,
                       help="ridge penalty on standardized features (default 0 for linear, 0.1 for logistic)")
    train.add_argument("--bound", type=float, default=None,
                       help="logistic: logit range of the quadratic surrogate (default 4)")
    train.set_defaults(handler=cmd_train)
    status = actions.add_parser("status", help="rows per invitation; revoked and expired ones")
    _add_key_dir(status)
    status.set_defaults(handler=cmd_status)

