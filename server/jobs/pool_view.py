"""Training on a pool: its contributions seen as one table (``PoolView``), so ``server.jobs.runner`` runs the same
algorithms and solvers on them as on a dataset.

A ``PoolView`` is a ``DatasetRecord`` with the pool's id, columns, total rows, layout and lowest level, plus
the ``StoredTable`` of each contribution. The job runner hands those tables to the executor one by one and
adds what comes back (``server.execution.pooled_shards``, ``pooled_gram_partial``): the zero-padded rows at
the end of each contribution's last block contribute nothing to the sums, and the step divides by the
pool's total rows. Pools train full batch: contributors upload no shuffled copies, so ``batch_size`` is
refused with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from ciphergrad.server.execution import StoredTable
from ciphergrad.server.rpc.access import Access
from ciphergrad.server.rpc.errors import invalid, precondition
from ciphergrad.server.store.pool_records import ContributionRecord, PoolRecord
from ciphergrad.server.store.records import DatasetLayout, DatasetRecord, SessionRecord
from ciphergrad.server.store.store import Store, matrix_file
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2 as training_pb


@dataclass(frozen=True)
class PoolView(DatasetRecord):
    """A pool as the job runner sees it: one table made of its contributions' tables."""

    tables: tuple[StoredTable, ...] = ()


def contribution_tables(store: Store, pool: PoolRecord, until: float | None = None) -> list[StoredTable]:
    """The stored (X, y) of each contribution (recorded by time ``until``, if given), in the order they were made."""
    context = store.context_path(pool.session_id)
    tables = []
    for contribution in _contributions(store, pool.id, until):
        folder = store.contribution_dir(contribution)
        tables.append(StoredTable(context, folder / matrix_file(0), folder / matrix_file(1), contribution.rows,
                                  pool.tile.rows))
    return tables


def _contributions(store: Store, pool_id: str, until: float | None) -> list[ContributionRecord]:
    found = store.contributions(pool_id)
    return found if until is None else [c for c in found if c.created <= until]


def pool_view(store: Store, pool_id: str, until: float | None = None) -> PoolView | None:
    """The pool as one table; ``until``: only the contributions recorded by then (a job's creation time, so
    a job, paused and resumed, always trains on the rows it started with)."""
    pool = store.pool(pool_id)
    if pool is None:
        return None
    contributions = _contributions(store, pool.id, until)
    return PoolView(
        id=pool.id, session_id=pool.session_id, display_name=pool.display_name, column_names=pool.column_names,
        rows=sum(c.rows for c in contributions), columns=pool.columns, shuffle_count=0, matrices=2,
        size_bytes=sum(c.size_bytes for c in contributions), level=min((c.level for c in contributions), default=0),
        created=pool.created, layout=DatasetLayout.of(pool.tile, features_only=False),
        tables=tuple(contribution_tables(store, pool, until)),
    )


def training_source(store: Store, access: Access, spec: training_pb.JobSpec, session: SessionRecord) -> DatasetRecord:
    """What a JobSpec trains on: its dataset, or its pool as a ``PoolView`` (exactly one of the two)."""
    if spec.dataset_id and spec.pool_id:
        raise invalid("JobSpec names both dataset_id and pool_id: set exactly one")
    if not spec.pool_id:
        return access.dataset(spec.dataset_id, session)
    pool = access.pool(spec.pool_id, session)
    fields = spec.hyperparameters.fields
    if "batch_size" in fields and fields["batch_size"].WhichOneof("kind") != "null_value":
        raise invalid("pools train full batch (contributors upload no shuffled copies): leave batch_size unset")
    if not pool.intercept and "intercept_column" not in fields:
        fields["intercept_column"].null_value = 0  # no column of ones in this pool: nothing unpenalized
    view = pool_view(store, pool.id)
    if view is None or not view.tables:
        raise precondition(f"pool {pool.id} has no contributions yet: invite contributors (CreateInvitation)")
    return view
