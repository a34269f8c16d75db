"""The analyst's key directory (client/keystore.py): private modes, atomic files, refusal of loose ones."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ciphergrad.client.keystore import KEY_DIR_ENV, KeyDirectory, KeyDirError, SessionRecord, key_dir_for
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.params import plan


@pytest.fixture(scope="module")
def holder() -> KeyHolder:
    return KeyHolder(plan(2), rotations=[1, 2])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_session_round_trip_with_private_modes(tmp_path: Path, holder: KeyHolder) -> None:
    keys = KeyDirectory(tmp_path / "keys" / "houses")
    record = SessionRecord("127.0.0.1:5000", "s-1", pools={"houses": "p-1"})
    keys.save_session(holder, "tok-123", record)
    assert _mode(keys.path) == 0o700
    files = sorted(p.name for p in keys.path.iterdir())
    assert files == ["secret-context.bin", "session-token", "session.json"], "no temporary file left behind"
    assert all(_mode(keys.path / name) == 0o600 for name in files)
    assert keys.load_token() == "tok-123"
    assert keys.load_record() == record
    loaded = keys.load_key_holder()
    assert loaded.params == holder.params
    values = np.arange(6.0).reshape(3, 2) / 7
    # What one key holder encrypts, the other decrypts: the same secret key came back from disk.
    assert np.max(np.abs(loaded.decrypt(holder.encrypt(values)) - values)) < 1e-6
    assert np.max(np.abs(holder.decrypt(loaded.encrypt(values)) - values)) < 1e-6
    with pytest.raises(KeyDirError, match="already holds a session"):
        keys.save_session(holder, "other", record)


def test_loose_modes_are_refused_naming_the_chmod(tmp_path: Path, holder: KeyHolder) -> None:
    keys = KeyDirectory(tmp_path / "k")
    keys.save_session(holder, "tok", SessionRecord("a:1", "s"))
    secret = keys.path / "secret-context.bin"
    os.chmod(secret, 0o644)
    with pytest.raises(KeyDirError, match=f"mode 644, should be 600\\): run `chmod 600 {secret}`"):
        keys.load_key_holder()
    os.chmod(secret, 0o600)
    os.chmod(keys.path, 0o755)
    with pytest.raises(KeyDirError, match=f"run `chmod 700 {keys.path}`"):
        keys.load_token()
    os.chmod(keys.path, 0o700)
    assert keys.load_token() == "tok"


def test_missing_and_broken_directories_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeyDirError, match="create the pool first"):
        KeyDirectory(tmp_path / "absent").load_record()
    keys = KeyDirectory(tmp_path / "broken")
    keys.save_record(SessionRecord("a:1", "s"))
    (keys.path / "session.json").write_text("{not json")
    with pytest.raises(KeyDirError, match="not a ciphergrad session file"):
        keys.load_record()
    with pytest.raises(KeyDirError, match="session-token is missing"):
        keys.load_token()
    with pytest.raises(ValueError, match="no secret key"):
        KeyHolder.from_secret_context(KeyHolder(plan(2), rotations=[]).public_context())


def test_key_dir_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert key_dir_for("houses") == tmp_path / ".ciphergrad" / "keys" / "houses"
    assert key_dir_for("houses", tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv(KEY_DIR_ENV, str(tmp_path / "env"))
    assert key_dir_for("houses") == tmp_path / "env"
    monkeypatch.delenv(KEY_DIR_ENV)
    with pytest.raises(KeyDirError, match="cannot name a directory"):
        key_dir_for("../etc")
