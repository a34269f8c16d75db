"""The Ray executor: a job's table split by row blocks over Ray actors, stateless fan-out over Ray tasks.

- Training (``shards``): one ``ShardActor`` per range of row blocks (``core.shards.block_ranges``), spread
  over the cluster's nodes, alive for the job. Each loads the session's public context and *its own* blocks
  from the blob store once (paths travel, not bytes: every node must see the data directory, e.g. a shared
  volume), prepares its pre-scaled copies once per job, and per step returns its pending sums. The step's
  weights go into the object store once (``ray.put``) and every actor reads that one object. A refresh a
  step asks for mid-way (the logistic logit) is stacked over shards, refreshed once by the driver's
  ``refresh`` (the key holder's masked round trip) and split back.
- Fan-out (``map_blocks``, ``column_sums``, ``gram_partial``): one task per range of row blocks; a worker
  process keeps the engines it loaded (``_ENGINES``), so repeated calls do not reload the context.

Every ``ray.get`` has a timeout. A dead worker or a cluster that goes away raises ``ExecutionError`` naming
the address and what was running; an address where nothing answers fails at construction, within seconds.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from core.engine import Engine, OpCounts
from core.gram import GramPartial, accumulate, row_blocks
from core.layout import Tile
from core.refresh import Refresh
from core.shards import (
    RowStep,
    StepPartial,
    add_pending,
    block_ranges,
    finish_pending,
    pending_row_sum,
    split_blocks,
    stack_blocks,
)
from core.tensor import EncryptedMatrix, read_block_range
from server.execution import BlockFunction, ExecutionError, StoredTable

SHARD_CPU = 0.001  # what a shard actor reserves (see RayShards)
_ENGINES: dict[str, Engine] = {}  # per worker process: public contexts already loaded


def _engine(context: str) -> Engine:
    if context not in _ENGINES:
        _ENGINES[context] = Engine.from_public_context(Path(context).read_bytes())
    return _ENGINES[context]


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@ray.remote(max_restarts=0, max_task_retries=0)
class ShardActor:
    """Row blocks ``[start, stop)`` of one table, for one job."""

    def __init__(self, context: str, features: str, targets: str, start: int, stop: int) -> None:
        self.engine = Engine.from_public_context(Path(context).read_bytes())
        self.X = read_block_range(self.engine, features, start, stop)
        self.y = read_block_range(self.engine, targets, start, stop)
        self.program: RowStep | None = None
        self._running: Any = None

    def where(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "rows": self.X.shape[0],
                "columns": self.X.shape[1], "tile": (self.X.tile.rows, self.X.tile.cols)}

    def prepare(self, program: RowStep) -> int:
        self.program, self.batch = program, program.prepare(self.X, self.y)
        return self.X.shape[0]

    def begin(self, weights: bytes) -> tuple[str, Any]:
        if self.program is None:
            raise RuntimeError("a shard's step began before prepare(program): call the shard source first")
        self._before = self.engine.counts.snapshot()
        self._running = self.program.partial(self.batch, EncryptedMatrix.from_bytes(self.engine, weights))
        return self._advance(None)

    def resume(self, refreshed: bytes) -> tuple[str, Any]:
        return self._advance(EncryptedMatrix.from_bytes(self.engine, refreshed))

    def _advance(self, value: EncryptedMatrix | None) -> tuple[str, Any]:
        try:
            request = next(self._running) if value is None else self._running.send(value)
        except StopIteration as done:
            partial: StepPartial = done.value
            partial.counts = self.engine.counts.since(self._before)
            return "done", partial.to_state()
        return "refresh", request.to_bytes()

    def usage(self) -> dict[str, float]:
        """This worker's peak resident memory and the CPU seconds it has used (load-independent work)."""
        return {"peak_rss_mb": _peak_rss_mb(), "cpu_s": time.process_time()}


@ray.remote(max_retries=0)
def _map_task(context: str, path: str, start: int, stop: int, function: BlockFunction) -> bytes:
    engine = _engine(context)
    return function(read_block_range(engine, path, start, stop)).to_bytes()


@ray.remote(max_retries=0)
def _gram_task(context: str, features: str, targets: str, start: int, stop: int) -> tuple[dict[str, Any], dict]:
    engine = _engine(context)
    before = engine.counts.snapshot()
    X, y = read_block_range(engine, features, start, stop), read_block_range(engine, targets, start, stop)
    partial = accumulate(engine, row_blocks(X, y))
    return partial.to_state(), engine.counts.since(before).to_dict()


def _column_sum(X: EncryptedMatrix, squares: bool) -> EncryptedMatrix:
    return pending_row_sum(X * X if squares else X)


class RayShards:
    """The ``core.shards.ShardSet`` of one job: its actors, and the driver's side of a step."""

    def __init__(self, executor: RayExecutor, table: StoredTable) -> None:
        self.executor, self.table = executor, table
        self.ranges = executor.ranges(table)
        targets = str(_targets(table))
        # A token CPU reservation, not one CPU: jobs running at once would each hold part of the CPUs while
        # waiting for the rest (two 2-shard jobs on 2 CPUs: one actor each, both waiting forever); the OS
        # shares the cores. Not zero: "SPREAD" spreads actors over nodes only when they ask for a resource.
        spread = {"scheduling_strategy": "SPREAD", "num_cpus": SHARD_CPU}
        self.actors = [
            ShardActor.options(**spread).remote(str(table.context), str(table.features), targets, start, stop)
            for start, stop in self.ranges
        ]
        self.placement = executor.get([a.where.remote() for a in self.actors], "loading the shards")
        self.rows = [place["rows"] for place in self.placement]
        self.shape, self.tile = (table.rows, self.placement[0]["columns"]), Tile(*self.placement[0]["tile"])

    def __call__(self, program: RowStep) -> RayShards:
        self.executor.get([a.prepare.remote(program) for a in self.actors], "preparing the shards")
        return self

    def step(self, weights: EncryptedMatrix, refresh: Refresh) -> StepPartial:
        engine, get = weights.engine, self.executor.get
        weights_ref = ray.put(weights.to_bytes())
        replies = get([a.begin.remote(weights_ref) for a in self.actors], "a training step")
        while replies[0][0] == "refresh":
            if any(kind != "refresh" for kind, _ in replies):
                raise ExecutionError("shards disagree about a refresh: were they loaded at different levels?")
            stacked = stack_blocks([EncryptedMatrix.from_bytes(engine, data) for _, data in replies])
            fresh = split_blocks(refresh(stacked), self.rows)
            replies = get([a.resume.remote(part.to_bytes()) for a, part in zip(self.actors, fresh, strict=True)],
                          "a training step after a refresh")
        partials = [StepPartial.from_state(engine, state) for _, state in replies]
        return functools.reduce(lambda a, b: a + b, partials)

    def usage(self) -> list[dict[str, float]]:
        return self.executor.get([a.usage.remote() for a in self.actors], "reading worker usage")

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


class RayExecutor:
    """Connects to Ray (``address`` None: a local Ray on this machine's cores, capped by ``num_cpus``;
    ``"auto"`` or ``host:port``: an existing cluster). ``shards`` caps the shards per table (default: the
    cluster's CPUs); ``timeout`` bounds every wait on a worker, in seconds."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, shards: int | None = None,
                 timeout: float = 600.0, connect_timeout: float = 10.0) -> None:
        self.address, self.timeout = address or "local", timeout
        if address and address != "auto":
            _check_reachable(address, connect_timeout)
        try:
            ray.init(address=address or None, num_cpus=None if address else num_cpus, include_dashboard=False,
                     logging_level="ERROR", log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutionError(f"cannot join the Ray cluster at {self.address}: {exc}") from exc
        self.max_shards = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def get(self, refs: list[Any], what: str) -> list[Any]:
        try:
            return ray.get(refs, timeout=self.timeout)
        except GetTimeoutError as exc:
            raise ExecutionError(
                f"Ray at {self.address}: no answer from the workers within {self.timeout:g} s during {what}; "
                "is the cluster overloaded or gone? (raise the executor's timeout for very large shards)"
            ) from exc
        except RayError as exc:
            raise ExecutionError(
                f"Ray at {self.address}: a worker failed during {what} ({type(exc).__name__}): "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}"
            ) from exc

    def ranges(self, table: StoredTable) -> list[tuple[int, int]]:
        return block_ranges(table.rows, table.tile_rows, self.max_shards)

    @contextmanager
    def shards(self, table: StoredTable, engine: Engine) -> Iterator[RayShards]:
        shards = RayShards(self, table)
        try:
            yield shards
        finally:
            shards.close()

    def gram_partial(self, table: StoredTable, engine: Engine) -> GramPartial:
        args = (str(table.context), str(table.features), str(_targets(table)))
        replies = self.get([_gram_task.remote(*args, start, stop) for start, stop in self.ranges(table)],
                           "the Gram pass")
        _count(engine, [counts for _, counts in replies])
        partials = [GramPartial.from_state(engine, state) for state, _ in replies]
        return functools.reduce(lambda a, b: a + b, partials)

    def map_blocks(self, table: StoredTable, function: BlockFunction, engine: Engine) -> EncryptedMatrix:
        """``function`` of every range of row blocks, stacked back in row order."""
        return stack_blocks(self._map(table, function, engine, "a fan-out over row blocks"))

    def column_sums(self, table: StoredTable, engine: Engine, squares: bool = False) -> EncryptedMatrix:
        parts = self._map(table, functools.partial(_column_sum, squares=squares), engine, "column sums")
        return finish_pending(functools.reduce(add_pending, parts), table.rows)

    def _map(self, table: StoredTable, function: BlockFunction, engine: Engine, what: str) -> list[EncryptedMatrix]:
        refs = [_map_task.remote(str(table.context), str(table.features), start, stop, function)
                for start, stop in self.ranges(table)]
        return [EncryptedMatrix.from_bytes(engine, data) for data in self.get(refs, what)]

    def close(self) -> None:
        ray.shutdown()


def _count(engine: Engine, deltas: list[dict[str, int]]) -> None:
    for delta in deltas:
        for name, value in OpCounts(**delta).to_dict().items():
            setattr(engine.counts, name, getattr(engine.counts, name) + value)


def _check_reachable(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutionError(f"Ray address {address!r} is not 'auto' or host:port (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutionError(f"no Ray cluster answers at {address}: {exc}") from exc


def _targets(table: StoredTable) -> Path:
    if table.targets is None:
        raise ExecutionError("this table has no targets: training and the Gram pass need y")
    return table.targets
