"""The analyst's local key directory: what ``ciphergrad pool ...`` commands need between two runs.

One directory holds one session: the CKKS context WITH its secret key (``secret-context.bin``, under 1 MB:
TenSEAL stores the secret key and remakes the relinearization keys from it on loading; the loaded context
has no Galois keys, while the server keeps the session's public context from its creation), the session's
bearer token (``session-token``) and ``session.json`` (server address, TLS setting, session id, the pools
made in that session by name and the rotation steps of the session's Galois keys).
The default is ``~/.ciphergrad/keys/<pool name>`` (one session per pool); ``--key-dir DIR`` or
``$CIPHERGRAD_KEY_DIR`` name a directory that several pools can share.

Invariants: the directory is mode 0700 and every file in it 0600, owned by the current user; files are
written atomically (a temporary file renamed into place), so a crash leaves the old file or the new one.
Reading refuses a directory or file that others could read or write, naming the ``chmod`` that fixes it:
a secret key that others could have copied is no longer secret, and a token others could change could
point the CLI at someone else's session. Nothing here is ever sent to a server except the token (as the
bearer credential) and, via ``KeyHolder.public_context``, the public half of the keys.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ciphergrad.core.errors import CipherGradError
from ciphergrad.core.keys import KeyHolder

KEY_DIR_ENV = "CIPHERGRAD_KEY_DIR"
DEFAULT_ROOT = Path("~/.ciphergrad/keys")
SECRET_FILE = "secret-context.bin"
TOKEN_FILE = "session-token"
SESSION_FILE = "session.json"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


class KeyDirError(CipherGradError, ValueError):
    """A key directory that is missing, incomplete, unreadable or readable by others; the message says what to do."""


@dataclass
class SessionRecord:
    """``session.json``: where the session lives, the pools it holds (name -> pool id) and the rotation steps
    its public context (on the server) has Galois keys for."""

    server: str
    session_id: str
    tls: bool | str = False
    pools: dict[str, str] = field(default_factory=dict)
    rotations: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, path: Path) -> SessionRecord:
        try:
            data: Any = json.loads(text)
            pools, rotations = dict(data["pools"]), [int(s) for s in data.get("rotations", [])]
            return cls(str(data["server"]), str(data["session_id"]), data.get("tls", False), pools, rotations)
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"{path}: not a ciphergrad session file ({exc})"
            raise KeyDirError(f"{problem}; restore it or remove the directory") from None


def key_dir_for(name: str, key_dir: str | Path | None = None) -> Path:
    """``key_dir`` if given, else ``$CIPHERGRAD_KEY_DIR``, else ``~/.ciphergrad/keys/<name>``."""
    chosen = key_dir or os.environ.get(KEY_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    if not name or "/" in name or name in {".", ".."}:
        raise KeyDirError(f"pool name {name!r} cannot name a directory; use letters, digits, '-' or '_'")
    return DEFAULT_ROOT.expanduser() / name


class KeyDirectory:
    """One analyst session on disk (see the module docstring); ``exists()`` before ``load_*``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / SESSION_FILE).exists()

    # -- writing ------------------------------------------------------------------------------------
    def save_session(self, holder: KeyHolder, token: str, record: SessionRecord) -> None:
        """Write the secret context, the token and the record (a new session: nothing there yet)."""
        if self.exists():
            raise KeyDirError(f"{self.path} already holds a session; use another --key-dir or remove it first")
        self._make_dir()
        self._write(SECRET_FILE, holder.secret_context())
        self._write(TOKEN_FILE, token.encode())
        self.save_record(record)

    def save_record(self, record: SessionRecord) -> None:
        self._make_dir()
        self._write(SESSION_FILE, record.to_json().encode())

    def save_token(self, token: str) -> None:
        self._write(TOKEN_FILE, token.encode())

    def save_file(self, name: str, data: bytes) -> None:
        """Another private file beside the keys (a kept model's ``model.json``)."""
        self._make_dir()
        self._write(name, data)

    def load_file(self, name: str) -> bytes:
        return self._read(name)

    def _make_dir(self) -> None:
        self.path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.path, _DIR_MODE)  # mkdir's mode is masked by the umask, and an existing dir keeps its own

    def _write(self, name: str, data: bytes) -> None:
        target = self.path / name
        scratch = self.path / f".{name}.{os.getpid()}.tmp"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        try:
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(scratch, target)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise

    # -- reading ------------------------------------------------------------------------------------
    def load_record(self) -> SessionRecord:
        path = self.path / SESSION_FILE
        return SessionRecord.from_json(self._read(SESSION_FILE).decode(), path)

    def load_token(self) -> str:
        return self._read(TOKEN_FILE).decode().strip()

    def load_key_holder(self) -> KeyHolder:
        return KeyHolder.from_secret_context(self._read(SECRET_FILE))

    def _read(self, name: str) -> bytes:
        if not self.path.is_dir():
            raise KeyDirError(
                f"no key directory at {self.path}: create the pool first (ciphergrad pool create), "
                "or point --key-dir / $CIPHERGRAD_KEY_DIR at the directory that holds its keys"
            )
        self._check_private(self.path, _DIR_MODE, "700")
        path = self.path / name
        if not path.is_file():
            raise KeyDirError(f"{path} is missing: the key directory {self.path} is incomplete")
        self._check_private(path, _FILE_MODE, "600")
        return path.read_bytes()

    @staticmethod
    def _check_private(path: Path, mode: int, chmod: str) -> None:
        info = path.stat()
        if info.st_uid != os.getuid():
            owner = f"user id {info.st_uid}, not to you ({os.getuid()})"
            raise KeyDirError(f"{path} belongs to {owner}; refusing to use it")
        loose = stat.S_IMODE(info.st_mode) & 0o077
        if loose:
            raise KeyDirError(
                f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):o}, "
                f"should be {mode:o}): run `chmod {chmod} {path}`"
            )
