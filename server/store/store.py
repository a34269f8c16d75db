"""Embedded storage: SQLite for metadata, a directory tree for ciphertext blobs.

Crash safety (SIGKILL included) comes from ordering: blobs are written to ``tmp/``, fsynced and renamed
into place *before* the metadata row that points at them is committed; deletions commit the metadata
first and remove blobs after. A crash therefore leaves at worst unreferenced blobs, which the next
start sweeps away, never a row pointing at a missing or half-written file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ciphergrad.core.engine import Engine
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import StoredTable
from ciphergrad.server.store.pool_tables import POOL_ADDED_COLUMNS, POOL_SCHEMA, POOL_TABLES, PoolTables
from ciphergrad.server.store.records import DatasetRecord, JobRecord, JobState, ModelRecord, SessionRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    params_json TEXT NOT NULL,
    context_size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    column_names_json TEXT NOT NULL,
    rows INTEGER NOT NULL,
    columns INTEGER NOT NULL,
    shuffle_count INTEGER NOT NULL,
    matrices INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    level INTEGER NOT NULL,
    created REAL NOT NULL,
    layout_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    dataset_id TEXT NOT NULL,
    algorithm INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    state INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    epochs INTEGER NOT NULL,
    refreshes INTEGER NOT NULL DEFAULT 0,
    model_id TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    job_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    algorithm INTEGER NOT NULL,
    weight_scale REAL NOT NULL,
    metadata_json TEXT NOT NULL,
    column_names_json TEXT NOT NULL,
    created REAL NOT NULL
);
"""

_TABLES = ("sessions", "datasets", "jobs", "models", *POOL_TABLES)
# Columns added after the first release: (table, column, definition) for data dirs made before them.
_ADDED_COLUMNS = (
    ("datasets", "layout_json", "TEXT NOT NULL DEFAULT '{}'"),
    ("sessions", "token_issued", "REAL NOT NULL DEFAULT 0"),
    ("jobs", "pool_id", "TEXT NOT NULL DEFAULT ''"),
    *POOL_ADDED_COLUMNS,
)


_INT32_MAX = 2**31 - 1
_FAILED = JobState.JOB_STATE_FAILED


def new_id() -> str:
    return uuid.uuid4().hex


class Store:
    """Thread-safe metadata and blob storage rooted at one data directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blob_root = self.root / "blobs"
        self.tmp = self.root / "tmp"
        for path in (self.root, self.blob_root):
            path.mkdir(parents=True, exist_ok=True)
        # Anything in tmp/ is an upload that never completed.
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "metadata.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA + POOL_SCHEMA)
        self._migrate()
        self.pools = PoolTables(self)
        self._sweep_orphans()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        for table, column, definition in _ADDED_COLUMNS:
            present = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})").fetchall()}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        # Jobs stored before request validation with epochs beyond the API's int32 made every ListJobs of
        # their session fail: they could never have run, so they are recorded as failed and clamped.
        self._db.execute(
            "UPDATE jobs SET state = ?, epochs = ?, error = ? WHERE epochs > ?",
            (_FAILED, _INT32_MAX, "epochs beyond the API's range: start a new job", _INT32_MAX),
        )

    # -- rows (private: the typed methods below name what they return) ---------------------------------
    def _insert(self, table: str, row: dict[str, Any]) -> None:
        assert table in _TABLES
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._lock:
            self._db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))

    def _get(self, table: str, row_id: str) -> dict[str, Any] | None:
        assert table in _TABLES
        with self._lock:
            found = self._db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()
        return dict(found) if found else None

    def _list(self, table: str, session_id: str) -> list[dict[str, Any]]:
        assert table in _TABLES
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM {table} WHERE session_id = ? ORDER BY created", (session_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def _delete(self, table: str, row_id: str) -> None:
        assert table in _TABLES
        with self._lock:
            self._db.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))

    # -- sessions --------------------------------------------------------------------------------------
    def add_session(self, session: SessionRecord) -> None:
        self._insert("sessions", session.to_row())

    def session(self, session_id: str) -> SessionRecord | None:
        row = self._get("sessions", session_id)
        return SessionRecord.from_row(row) if row else None

    def session_by_token_hash(self, digest: str) -> SessionRecord | None:
        with self._lock:
            found = self._db.execute("SELECT * FROM sessions WHERE token_hash = ?", (digest,)).fetchone()
        return SessionRecord.from_row(dict(found)) if found else None

    def replace_token(self, session_id: str, digest: str, issued: float) -> None:
        """The session's token is now the one hashing to ``digest``; the old one stops working at once."""
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET token_hash = ?, token_issued = ? WHERE id = ?", (digest, issued, session_id)
            )

    def delete_session(self, session_id: str) -> None:
        """The row (cascading to its datasets, jobs, models and pools), then its blobs."""
        self._delete("sessions", session_id)
        self.remove(self.session_dir(session_id))

    # -- datasets --------------------------------------------------------------------------------------
    def add_dataset(self, dataset: DatasetRecord) -> None:
        self._insert("datasets", dataset.to_row())

    def dataset(self, dataset_id: str) -> DatasetRecord | None:
        row = self._get("datasets", dataset_id)
        return DatasetRecord.from_row(row) if row else None

    def datasets(self, session_id: str) -> list[DatasetRecord]:
        return [DatasetRecord.from_row(r) for r in self._list("datasets", session_id)]

    def delete_dataset(self, dataset: DatasetRecord) -> None:
        self._delete("datasets", dataset.id)
        self.remove(self.dataset_dir(dataset.session_id, dataset.id))

    def matrix_path(self, dataset: DatasetRecord, index: int) -> Path:
        """Stored matrix ``index`` (0: features, 1: targets, then (X, y) of each shuffle)."""
        return self.dataset_dir(dataset.session_id, dataset.id) / matrix_file(index)

    def read_matrix(self, dataset: DatasetRecord, index: int, engine: Engine) -> EncryptedMatrix:
        with open(self.matrix_path(dataset, index), "rb") as handle:
            return EncryptedMatrix.from_file(engine, handle)  # one ciphertext's bytes at a time

    def matrix_size(self, dataset: DatasetRecord, index: int) -> int:
        """Bytes of stored matrix ``index`` (about what it takes in memory once parsed)."""
        return self.matrix_path(dataset, index).stat().st_size

    def table(self, dataset: DatasetRecord, targets: bool = True) -> StoredTable:
        """The dataset as an executor reads it: its features (and targets, and shuffled copies) where they are
        stored."""
        copies = tuple(self.matrix_path(dataset, index) for index in range(2, dataset.matrices)) if targets else ()
        return StoredTable(self.context_path(dataset.session_id), self.matrix_path(dataset, 0),
                           self.matrix_path(dataset, 1) if targets else None, dataset.rows, dataset.layout.tile[0],
                           copies)

    def read_matrices(self, dataset: DatasetRecord, engine: Engine) -> list[EncryptedMatrix]:
        return [self.read_matrix(dataset, index, engine) for index in range(dataset.matrices)]

    # -- jobs ------------------------------------------------------------------------------------------
    def add_job(self, job: JobRecord) -> None:
        self._insert("jobs", job.to_row())

    def job(self, job_id: str) -> JobRecord | None:
        row = self._get("jobs", job_id)
        return JobRecord.from_row(row) if row else None

    def jobs(self, session_id: str) -> list[JobRecord]:
        return [JobRecord.from_row(r) for r in self._list("jobs", session_id)]

    def jobs_in_states(self, states: tuple[int, ...]) -> list[JobRecord]:
        marks = ", ".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks})", states).fetchall()
        return [JobRecord.from_row(dict(r)) for r in rows]

    def job_counts(self) -> dict[int, int]:
        """How many jobs are in each state (JobState value -> count), all sessions together."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {int(state): int(count) for state, count in rows}

    def update_job(self, job_id: str, **values: Any) -> JobRecord | None:
        """Set columns of a job (``updated`` too); the job as it now is, or None if it was deleted."""
        values.setdefault("updated", time.time())
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))
        return self.job(job_id)

    # -- models ----------------------------------------------------------------------------------------
    def add_model(self, model: ModelRecord, blob: bytes) -> None:
        """Blob before row: a crash in between leaves an orphan file, swept at the next start."""
        self.write_blob(self.model_path(model.session_id, model.id), blob)
        self._insert("models", model.to_row())

    def model(self, model_id: str) -> ModelRecord | None:
        row = self._get("models", model_id)
        return ModelRecord.from_row(row) if row else None

    def models(self, session_id: str) -> list[ModelRecord]:
        return [ModelRecord.from_row(r) for r in self._list("models", session_id)]

    def model_blob(self, model: ModelRecord) -> bytes:
        return self.model_path(model.session_id, model.id).read_bytes()

    def delete_model(self, model: ModelRecord) -> None:
        self._delete("models", model.id)
        self.remove(self.model_path(model.session_id, model.id))

    # -- blob paths ---------------------------------------------------------------------------
    def session_dir(self, session_id: str) -> Path:
        return self.blob_root / session_id

    def context_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / "context.bin"

    def dataset_dir(self, session_id: str, dataset_id: str) -> Path:
        return self.session_dir(session_id) / "datasets" / dataset_id

    def model_path(self, session_id: str, model_id: str) -> Path:
        return self.session_dir(session_id) / "models" / f"{model_id}.bin"

    def checkpoint_path(self, session_id: str, job_id: str) -> Path:
        return self.session_dir(session_id) / "jobs" / f"{job_id}.ckpt"

    def fixed_checkpoint_path(self, session_id: str, job_id: str) -> Path:
        """The part of a job's checkpoint written once (a one-pass solver's statistics)."""
        return self.session_dir(session_id) / "jobs" / f"{job_id}.fixed"

    # -- atomic blob writes -------------------------------------------------------------------
    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch directory that is removed unless its contents were moved into place."""
        path = self.tmp / new_id()
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, staged: Path, final: Path) -> None:
        """Move a fully written file or directory into place (fsynced, then renamed)."""
        for item in [staged, *staged.rglob("*")] if staged.is_dir() else [staged]:
            if item.is_file():
                _fsync(item)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(staged, final)
        _fsync_dir(final.parent)

    def write_blob(self, final: Path, data: bytes) -> None:
        """Write ``data`` to ``final`` atomically: readers see the old file or the whole new one."""
        staged = self.tmp / new_id()
        with open(staged, "wb") as handle:
            handle.write(data)
        self.publish(staged, final)

    def remove(self, path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    # -- recovery -----------------------------------------------------------------------------
    def _sweep_orphans(self) -> None:
        """Remove blobs no committed row refers to (a crash between rename and commit)."""
        sessions = {r["id"] for r in self._all("sessions")}
        datasets = {r["id"] for r in self._all("datasets")}
        models = {r["id"] for r in self._all("models")}
        jobs = {r["id"] for r in self._all("jobs")}
        for session in self.blob_root.iterdir():
            if session.name not in sessions:
                self.remove(session)
                continue
            for item in (session / "datasets").glob("*"):
                if item.name not in datasets:
                    self.remove(item)
            for item in (session / "models").glob("*.bin"):
                if item.stem not in models:
                    self.remove(item)
            for item in [*(session / "jobs").glob("*.ckpt"), *(session / "jobs").glob("*.fixed")]:
                if item.stem not in jobs:
                    self.remove(item)
            self.pools.sweep_orphans(session)

    def _all(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(f"SELECT id FROM {table}").fetchall()]


def matrix_file(index: int) -> str:
    """The file name of a dataset's matrix ``index`` inside its directory."""
    return f"{index}.bin"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Some filesystems refuse fsync on directories; the rename is still atomic there.
    with contextlib.suppress(OSError):
        _fsync(path)
