"""The pool tables of the store (pools, invitations, contributions): ``Store.pools``, composed with the
``server.store.store.Store`` that owns the connection, the lock and the blob directory.

Blobs of a contribution live in ``blobs/<session>/pools/<pool>/<contribution>/`` (``0.bin``: its encrypted
statistics), published before their row commits like a dataset's; a sealed pool's release is
``blobs/<session>/pools/<pool>/release.bin``, written before the row that says the pool is sealed. Row counts
of pools and invitations are sums over the contributions table, never kept twice. The row cap of an
invitation and the pool's open state are checked in the same locked step that inserts the contribution
(``add_contribution``), so concurrent contributions cannot pass the cap together, nor land after the seal.
Deleting a session cascades to its pools, their invitations and contributions; deleting a pool to its
invitations and contributions.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ciphergrad.server.store.pool_records import ContributionRecord, InvitationRecord, PoolRecord

if TYPE_CHECKING:
    from ciphergrad.server.store.store import Store

POOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    schema_json TEXT NOT NULL,
    params_json TEXT NOT NULL,
    created REAL NOT NULL,
    policy_json TEXT NOT NULL DEFAULT '{}',
    sealed REAL NOT NULL DEFAULT 0,
    noise_std REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS invitations (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    max_rows INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS contributions (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    invitation_id TEXT NOT NULL REFERENCES invitations(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    rows INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    level INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS contributions_by_pool ON contributions(pool_id);
"""

POOL_TABLES = ("pools", "invitations", "contributions")
# Columns added after pools first shipped: (table, column, definition), for data dirs made before them.
POOL_ADDED_COLUMNS = (
    ("pools", "policy_json", "TEXT NOT NULL DEFAULT '{}'"),
    ("pools", "sealed", "REAL NOT NULL DEFAULT 0"),
    ("pools", "noise_std", "REAL NOT NULL DEFAULT 0"),
)

_POOLS = """
SELECT p.*, COALESCE(SUM(c.rows), 0) AS rows, COUNT(c.id) AS contributions,
       COUNT(DISTINCT c.invitation_id) AS contributors, COALESCE(SUM(c.size_bytes), 0) AS size_bytes
FROM pools p LEFT JOIN contributions c ON c.pool_id = p.id
"""
_INVITATIONS = """
SELECT i.*, COALESCE(SUM(c.rows), 0) AS rows, COUNT(c.id) AS contributions
FROM invitations i LEFT JOIN contributions c ON c.invitation_id = i.id
"""


class PoolSealed(Exception):
    """A contribution arrived after its pool was sealed."""


class RowCapExceeded(Exception):
    """A contribution would take its invitation past ``max_rows`` (``rows`` already contributed)."""

    def __init__(self, max_rows: int, rows: int) -> None:
        super().__init__(f"row cap {max_rows} reached with {rows} rows")
        self.max_rows, self.rows = max_rows, rows


class PoolTables:
    """The pool tables, on the connection, lock and blob directory of their ``Store``."""

    def __init__(self, store: Store) -> None:
        self._db: sqlite3.Connection = store._db
        self._lock: threading.RLock = store._lock
        self._insert, self._delete = store._insert, store._delete
        self.session_dir, self.remove, self.write_blob = store.session_dir, store.remove, store.write_blob

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    # -- pools -----------------------------------------------------------------------------------------
    def add(self, pool: PoolRecord) -> None:
        self._insert("pools", pool.to_row())

    def get(self, pool_id: str) -> PoolRecord | None:
        rows = self._query(_POOLS + " WHERE p.id = ? GROUP BY p.id", (pool_id,))
        return PoolRecord.from_row(rows[0]) if rows else None

    def for_session(self, session_id: str) -> list[PoolRecord]:
        rows = self._query(_POOLS + " WHERE p.session_id = ? GROUP BY p.id ORDER BY p.created", (session_id,))
        return [PoolRecord.from_row(r) for r in rows]

    def delete(self, pool: PoolRecord) -> None:
        """The row (cascading to invitations and contributions), then the blobs."""
        self._delete("pools", pool.id)
        self.remove(self.pool_dir(pool.session_id, pool.id))

    def pool_dir(self, session_id: str, pool_id: str) -> Path:
        return self.session_dir(session_id) / "pools" / pool_id

    def release_path(self, pool: PoolRecord) -> Path:
        return self.pool_dir(pool.session_id, pool.id) / "release.bin"

    def seal(self, pool: PoolRecord, release: bytes, noise_std: float, sealed: float) -> bool:
        """Write the release, then mark the pool sealed (one transaction); False if it already was (the first
        seal stands: its release is the pool's only one)."""
        with self._lock:
            current = self._db.execute("SELECT sealed FROM pools WHERE id = ?", (pool.id,)).fetchone()
            if current is None or current["sealed"]:
                return False
            self.write_blob(self.release_path(pool), release)
            self._db.execute("UPDATE pools SET sealed = ?, noise_std = ? WHERE id = ?", (sealed, noise_std, pool.id))
            return True

    def encryption_context_path(self, session_id: str) -> Path:
        """The session's public context stripped to its encryption key (what contributors download)."""
        return self.session_dir(session_id) / "encryption_context.bin"

    # -- invitations -----------------------------------------------------------------------------------
    def add_invitation(self, invitation: InvitationRecord) -> None:
        self._insert("invitations", invitation.to_row())

    def invitation(self, invitation_id: str) -> InvitationRecord | None:
        rows = self._query(_INVITATIONS + " WHERE i.id = ? GROUP BY i.id", (invitation_id,))
        return InvitationRecord.from_row(rows[0]) if rows else None

    def invitation_by_token_hash(self, digest: str) -> InvitationRecord | None:
        rows = self._query(_INVITATIONS + " WHERE i.token_hash = ? GROUP BY i.id", (digest,))
        return InvitationRecord.from_row(rows[0]) if rows else None

    def invitations(self, pool_id: str) -> list[InvitationRecord]:
        rows = self._query(_INVITATIONS + " WHERE i.pool_id = ? GROUP BY i.id ORDER BY i.created", (pool_id,))
        return [InvitationRecord.from_row(r) for r in rows]

    def revoke_invitation(self, invitation_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE invitations SET revoked = 1 WHERE id = ?", (invitation_id,))

    # -- contributions ---------------------------------------------------------------------------------
    def contribution_dir(self, contribution: ContributionRecord) -> Path:
        return self.pool_dir(contribution.session_id, contribution.pool_id) / contribution.id

    def add_contribution(self, contribution: ContributionRecord, max_rows: int) -> None:
        """Insert the row unless it takes its invitation past ``max_rows`` (0: no cap): RowCapExceeded.

        Check and insert happen under the store's lock in one transaction, so two contributions of one
        invitation racing for the last rows cannot both commit."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                pool = (contribution.pool_id,)
                found = self._db.execute("SELECT sealed FROM pools WHERE id = ?", pool).fetchone()
                if found is not None and found[0]:
                    raise PoolSealed
                (done,) = self._db.execute(
                    "SELECT COALESCE(SUM(rows), 0) FROM contributions WHERE invitation_id = ?",
                    (contribution.invitation_id,),
                ).fetchone()
                if max_rows and done + contribution.rows > max_rows:
                    raise RowCapExceeded(max_rows, int(done))
                row = contribution.to_row()
                self._db.execute(
                    f"INSERT INTO contributions ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                    tuple(row.values()),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def contributions(self, pool_id: str, invitation_id: str = "") -> list[ContributionRecord]:
        """A pool's contributions in the order they were made (only ``invitation_id``'s if given)."""
        if invitation_id:
            rows = self._query(
                "SELECT * FROM contributions WHERE pool_id = ? AND invitation_id = ? ORDER BY created, id",
                (pool_id, invitation_id),
            )
        else:
            rows = self._query("SELECT * FROM contributions WHERE pool_id = ? ORDER BY created, id", (pool_id,))
        return [ContributionRecord.from_row(r) for r in rows]

    def sweep_orphans(self, session: Path) -> None:
        """Contribution directories (and pools) no committed row refers to."""
        pools = {r["id"] for r in self._query("SELECT id FROM pools WHERE session_id = ?", (session.name,))}
        known = {r["id"] for r in self._query("SELECT id FROM contributions WHERE session_id = ?", (session.name,))}
        for pool in (session / "pools").glob("*"):
            if pool.name not in pools:
                self.remove(pool)
                continue
            for item in pool.glob("*"):
                if item.name not in known and item.name != "release.bin":
                    self.remove(item)
