"""Training on a pool: its sealed release, solved by the key holder in one round trip.

A pool holds no rows, only its contributors' encrypted statistics and, once sealed, their one release
(``core.release``). So a job on a pool is a single exchange: the server sends the release (the same bytes
``PoolStatistics`` returns), the key holder decrypts it, solves ridge (``linear``, solver ``normal``) or the
quadratic logistic surrogate (``logistic``, solver ``quadratic``), and answers with a fresh encryption of the
weights, which the server stores as the job's model. Per-row solvers (``gd``, ``gram``) and per-row
algorithms would need rows or per-row refreshes: they are FAILED_PRECONDITION, naming the aggregate solvers.

A ``PoolView`` is a ``DatasetRecord`` with the pool's id and its model's columns (intercept first), so job
records, hyperparameter validation and model records treat it like a dataset.

Where the ciphertexts are touched: the seal's arithmetic (``seal_files``) and the check of the key holder's
weights (``release_weights``) run through ``Executor.run_files``, on a pool worker holding the session's
context with ``--executor ray`` (this process then loads no context), in this process with the local one; the
release itself goes out as the stored bytes (``release_proto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

from ciphergrad.core.engine import Engine
from ciphergrad.core.flat import FlatMatrix
from ciphergrad.core.layout import Tile
from ciphergrad.core.release import moment_tile, seal
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.rpc import validation
from ciphergrad.server.rpc.access import Access
from ciphergrad.server.rpc.errors import invalid, precondition
from ciphergrad.server.store.pool_records import PoolRecord
from ciphergrad.server.store.records import DatasetLayout, DatasetRecord, SessionRecord
from ciphergrad.server.store.store import Store
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2 as pool_pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2 as training_pb

# The one solver per algorithm that needs nothing but the release.
AGGREGATE_SOLVERS = {"linear": "normal", "logistic": "quadratic"}


@dataclass(frozen=True)
class PoolView(DatasetRecord):
    """A sealed pool as the job runner sees it: no rows, one release."""

    pool: PoolRecord | None = None


def pool_view(pool: PoolRecord) -> PoolView:
    tile = moment_tile(pool.params.slots)
    return PoolView(
        id=pool.id, session_id=pool.session_id, display_name=pool.display_name, column_names=pool.column_names,
        rows=pool.rows, columns=pool.columns, shuffle_count=0, matrices=0, size_bytes=pool.size_bytes, level=0,
        created=pool.created, layout=DatasetLayout.of(tile, features_only=False), pool=pool,
    )


def training_source(store: Store, access: Access, spec: training_pb.JobSpec, session: SessionRecord) -> DatasetRecord:
    """What a JobSpec trains on: its dataset, or its sealed pool as a ``PoolView`` (exactly one of the two)."""
    if spec.dataset_id and spec.pool_id:
        raise invalid("JobSpec names both dataset_id and pool_id: set exactly one")
    if not spec.pool_id:
        return access.dataset(spec.dataset_id, session)
    pool = access.pool(spec.pool_id, session)
    algorithm = codec.algorithm_from_proto(spec.algorithm)
    name = algorithm.name if algorithm is not None else "this algorithm"
    choices = ", ".join(f"{a} (solver {s!r})" for a, s in AGGREGATE_SOLVERS.items())
    if name not in AGGREGATE_SOLVERS:
        raise precondition(f"a pool releases only aggregates, so it trains {choices}; not {name}")
    fields = spec.hyperparameters.fields
    solver = fields["solver"].string_value if "solver" in fields else ""
    if solver and solver != AGGREGATE_SOLVERS[name]:
        raise precondition(f"solver {solver!r} needs rows or per-row refreshes, which a pool never gives out: "
                           f"pools train {choices}")
    fields["solver"].string_value = AGGREGATE_SOLVERS[name]
    if "batch_size" in fields and fields["batch_size"].WhichOneof("kind") != "null_value":
        raise precondition("batch_size has no meaning on a pool's release: leave it unset")
    if name == "logistic" and not pool.classes:
        raise precondition(f"pool {pool.id} is a regression pool (no schema.classes): train linear on it")
    if name == "linear" and pool.classes:
        raise precondition(f"pool {pool.id} is a classification pool ({len(pool.classes)} classes): train logistic")
    if name == "logistic":
        fields["classes"].number_value = len(pool.classes)
    if not pool.sealed:
        raise precondition(f"pool {pool.id} is open: seal it first (SealPool; its policy needs "
                           f"{pool.policy.min_contributors} contributors); a pool trains only on its release")
    return pool_view(pool)


def release_proto(store: Store, pool: PoolRecord) -> pool_pb.PoolRelease:
    """The sealed release of ``pool`` as sent to the analyst (FAILED_PRECONDITION while it is open): the stored
    matrix relayed as it was written at the seal (``FlatMatrix``), parsed by no one here."""
    if not pool.sealed:
        raise precondition(
            f"pool {pool.id} is open ({pool.contributors} contributor(s), {pool.rows} rows): seal it first "
            f"(SealPool; its policy needs {pool.policy.min_contributors} contributors); nothing is released before"
        )
    matrix = FlatMatrix(store.pools.release_path(pool).read_bytes())
    return pool_pb.PoolRelease(
        pool_id=pool.id, rows=pool.rows, contributions=pool.contributions, contributors=pool.contributors,
        moments=codec.matrix_to_proto(matrix), noise_std=pool.noise_std, epsilon=pool.policy.epsilon,
        delta=pool.policy.delta, schema=pool.schema_proto(), clip_norm=pool.policy.clip_norm,
    )


# -- where the session's context is loaded (``Executor.run_files``: a Ray worker, or this process) ----------------
def seal_files(engine: Engine, files: list[BinaryIO], *, rows: list[int], noise_std: float) -> bytes:
    """The one release (``core.release.seal``) of the contributions' stored matrices (``files``, with their
    ``rows``): the sum and the Gaussian noise, drawn from ``secrets`` here, where the arithmetic runs."""
    parts = [(count, EncryptedMatrix.from_file(engine, handle)) for count, handle in zip(rows, files, strict=True)]
    return seal(parts, noise_std).to_bytes()


def release_weights(engine: Engine, files: list[BinaryIO], *, reply: bytes, shape: tuple[int, int],
                    tile: Tile) -> bytes:
    """The key holder's solved weights (a serialized ``EncryptedMatrix`` proto) checked against the session's
    context and the pool's model (``shape`` in ``tile``): the matrix's bytes, to store as the job's model."""
    weights = validation.reply_matrix(engine, reply, "the solved weights")
    if weights.shape != shape or weights.tile != tile:
        raise invalid(f"the solved weights have shape {weights.shape} in tile {weights.tile.rows}x"
                      f"{weights.tile.cols}; the pool's model is {shape} in tile {tile.rows}x{tile.cols}")
    return weights.to_bytes()


@dataclass(frozen=True)
class ReleaseFit:
    """What the job runner records for a model solved from a release (the trainer's ``metadata`` role)."""

    config: Any
    features: int  # model columns: the intercept and the pool's features
    weight_scale: float = 1.0

    def metadata(self) -> dict[str, Any]:
        found: dict[str, Any] = {"intercept_column": 0, "features": self.features, "solver": self.config.solver,
                                 "pool": True}
        if self.config.solver == "quadratic":
            poly = self.config.polynomial(self.features)
            found |= {"classes": self.config.classes, "bound": poly.bound, "degree": poly.degree,
                      "sigmoid": poly.to_dict()}
        return found
