"""Long-lived Ray workers that hold public contexts and the row blocks of many jobs at once.

Loading a session's public context (its Galois keys: tens of MB) costs about half a second, and starting a
Ray worker process a second or more: paid per job, they dominated small jobs (a 510-row Ames training spent
1.3-2.4 s opening its shards against about 2 s of epochs). So the executor keeps a fixed ``WorkerPool`` of
``BlockWorker`` actors, one per CPU of the cluster, spread over its nodes, alive as long as the executor:

- A worker keeps the engines it loaded in a small LRU (``ContextCache``), keyed by the context file's path,
  size and modification time, so a session's context is loaded once per worker, not once per job. Each shard
  gets a *fork* of the cached engine (same SEAL context, its own operation counters), so the counts a job
  reports never mix with another job's on the same worker.
- A job's shard is state inside a worker (``open_shard`` ... ``release``), named by a key unique to the
  job's shard; its blocks are read from the blob store once per job. A worker serves one call at a time
  (TenSEAL holds the GIL anyway), so jobs sharing a worker take turns step by step and the cluster's cores
  are never oversubscribed by our own processes.
- Fan-out calls (``map_range``, ``reduce_range``, ``gram_range``) run on the same workers and reuse their
  engines. Inputs are ``MatrixSource``s: a path every node can read, or bytes already in Ray's object store.

A worker that dies (killed, its node gone) fails the calls in flight, which the executor reports as an
``ExecutionError``; the pool replaces dead workers before it hands out shards again. No secret key reaches
a worker: contexts that carry one are refused by ``Engine.from_public_context``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.gram import accumulate, row_blocks
from ciphergrad.core.shards import Batch, RowStep, StepPartial, row_blocks_of
from ciphergrad.core.tensor import EncryptedMatrix, read_block_range

SHARD_CPU = 0.001  # what a worker reserves (see WorkerPool)
CONTEXTS_PER_WORKER = 8  # engines a worker keeps (each holds its Galois keys: ~25 MB for an Ames session)
PING_SECONDS = 5.0  # how long the pool waits to learn whether a worker it suspects is dead

# A matrix a worker can read: a path on the shared data directory, or EncryptedMatrix.to_bytes() bytes
# (usually an object ref, which Ray resolves to the bytes before the call runs).
MatrixSource = str | bytes | ray.ObjectRef


class ContextCache:
    """Engines by context file (path, size, mtime), least recently used evicted past ``size``."""

    def __init__(self, size: int = CONTEXTS_PER_WORKER) -> None:
        self.size, self.loads = size, 0
        self._engines: OrderedDict[tuple[str, int, int], Engine] = OrderedDict()

    def engine(self, context: str) -> Engine:
        """A fork of the cached engine: shares the loaded keys, counts its own operations."""
        stat = os.stat(context)
        key = (context, stat.st_size, stat.st_mtime_ns)
        if key in self._engines:
            self._engines.move_to_end(key)
        else:
            self._engines[key] = Engine.from_public_context(Path(context).read_bytes())
            self.loads += 1
            while len(self._engines) > self.size:
                self._engines.popitem(last=False)
        return dataclasses.replace(self._engines[key], counts=OpCounts())


def read_range(engine: Engine, source: MatrixSource, start: int, stop: int | None) -> EncryptedMatrix:
    """Row blocks ``[start, stop)`` of ``source`` (``stop`` None: all of them)."""
    if isinstance(source, ray.ObjectRef):  # Ray resolves only top-level arguments, not refs inside a dict
        source = ray.get(source)
    if isinstance(source, bytes):
        matrix = EncryptedMatrix.from_bytes(engine, source)
        return matrix if stop is None else row_blocks_of(matrix, start, stop)
    if stop is None:
        return EncryptedMatrix.from_bytes(engine, Path(source).read_bytes())
    return read_block_range(engine, source, start, stop)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclasses.dataclass
class _Shard:
    engine: Engine
    X: EncryptedMatrix
    y: EncryptedMatrix
    program: RowStep | None = None
    batch: Batch | None = None
    running: Any = None
    before: OpCounts | None = None


@ray.remote(max_restarts=0, max_task_retries=0)
class BlockWorker:
    """One process of the pool: cached contexts, the shards of the jobs it serves, fan-out work."""

    def __init__(self, contexts: int = CONTEXTS_PER_WORKER) -> None:
        self.contexts = ContextCache(contexts)
        self.shards: dict[str, _Shard] = {}

    def where(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def warm(self, context: str) -> int:
        """Load ``context`` now (before a job needs it); the number of contexts loaded so far."""
        self.contexts.engine(context)
        return self.contexts.loads

    # -- a job's shard ---------------------------------------------------------------------------------
    def open_shard(self, key: str, context: str, features: str, targets: str, start: int, stop: int
                   ) -> dict[str, Any]:
        engine = self.contexts.engine(context)
        X, y = read_block_range(engine, features, start, stop), read_block_range(engine, targets, start, stop)
        self.shards[key] = _Shard(engine, X, y)
        return self.where() | {"rows": X.shape[0], "columns": X.shape[1], "tile": (X.tile.rows, X.tile.cols)}

    def prepare(self, key: str, program: RowStep) -> int:
        shard = self._shard(key)
        shard.program, shard.batch = program, program.prepare(shard.X, shard.y)
        return shard.X.shape[0]

    def begin(self, key: str, weights: bytes) -> tuple[str, Any]:
        shard = self._shard(key)
        if shard.program is None:
            raise RuntimeError("a shard's step began before prepare(program): call the shard source first")
        shard.before = shard.engine.counts.snapshot()
        shard.running = shard.program.partial(shard.batch, EncryptedMatrix.from_bytes(shard.engine, weights))
        return self._advance(shard, None)

    def resume(self, key: str, refreshed: bytes) -> tuple[str, Any]:
        shard = self._shard(key)
        return self._advance(shard, EncryptedMatrix.from_bytes(shard.engine, refreshed))

    def release(self, key: str) -> None:
        self.shards.pop(key, None)

    def _shard(self, key: str) -> _Shard:
        if key not in self.shards:
            raise RuntimeError(f"shard {key} is not open on worker {os.getpid()} (released, or the worker restarted)")
        return self.shards[key]

    @staticmethod
    def _advance(shard: _Shard, value: EncryptedMatrix | None) -> tuple[str, Any]:
        try:
            request = next(shard.running) if value is None else shard.running.send(value)
        except StopIteration as done:
            partial: StepPartial = done.value
            assert shard.before is not None
            partial.counts = shard.engine.counts.since(shard.before)
            return "done", partial.to_state()
        return "refresh", request.to_bytes()

    # -- fan-out ---------------------------------------------------------------------------------------
    def map_range(self, context: str, sources: list[MatrixSource], start: int, stop: int | None,
                  function: Callable[..., EncryptedMatrix], whole: dict[str, MatrixSource]) -> tuple[bytes, dict]:
        """``function(*row blocks [start, stop) of each source, **whole matrices)`` (``stop`` None: the
        sources whole), serialized, and the operations it took."""
        engine = self.contexts.engine(context)
        blocks = [read_range(engine, source, start, stop) for source in sources]
        operands = {name: read_range(engine, source, 0, None) for name, source in whole.items()}
        return function(*blocks, **operands).to_bytes(), engine.counts.to_dict()

    def gram_range(self, context: str, features: str, targets: str, start: int, stop: int
                   ) -> tuple[dict[str, Any], dict]:
        engine = self.contexts.engine(context)
        X, y = read_block_range(engine, features, start, stop), read_block_range(engine, targets, start, stop)
        return accumulate(engine, row_blocks(X, y)).to_state(), engine.counts.to_dict()

    def usage(self) -> dict[str, float]:
        """This worker's peak resident memory, CPU seconds used (load-independent work), contexts loaded."""
        return {"peak_rss_mb": _peak_rss_mb(), "cpu_s": time.process_time(), "context_loads": self.contexts.loads,
                "open_shards": len(self.shards)}


class WorkerPool:
    """``size`` ``BlockWorker``s spread over the cluster's nodes, and how many open shards each serves.

    Workers reserve a token CPU (``SHARD_CPU``), not one: Ray's ``SPREAD`` spreads actors over nodes only
    when they ask for a resource, and a whole CPU each would let a pool larger than the cluster wait forever.
    Shards go to the least busy workers, a job's shards to distinct ones."""

    def __init__(self, size: int, contexts: int = CONTEXTS_PER_WORKER) -> None:
        self.contexts = contexts
        self.workers = [self._start() for _ in range(size)]
        self.busy = [0] * size
        self._lock = threading.Lock()
        self._suspect = False
        self._turn = 0  # which of equally busy workers least_busy() names first

    def _start(self) -> Any:
        return BlockWorker.options(scheduling_strategy="SPREAD", num_cpus=SHARD_CPU).remote(self.contexts)

    def __len__(self) -> int:
        return len(self.workers)

    def suspect(self) -> None:
        """A call failed: check the workers before handing any out again."""
        self._suspect = True

    def acquire(self, count: int) -> list[int]:
        """Indices of ``count`` distinct workers, least busy first, counted busy until ``release``."""
        self._replace_dead()
        with self._lock:
            chosen = sorted(range(len(self.workers)), key=lambda i: (self.busy[i], i))[:count]
            for index in chosen:
                self.busy[index] += 1
            return chosen

    def release(self, indices: list[int]) -> None:
        with self._lock:
            for index in indices:
                self.busy[index] = max(0, self.busy[index] - 1)

    def least_busy(self, count: int) -> list[Any]:
        """``count`` workers for short fan-out calls (not counted busy): the least busy first, round robin.
        Equally busy workers take turns from call to call, so that calls running at once (the batches of a
        request stream, each a call of its own) land on different workers."""
        self._replace_dead()
        with self._lock:
            size, turn = len(self.workers), self._turn
            self._turn += 1
            order = sorted(range(size), key=lambda i: (self.busy[i], (i - turn) % size))
            return [self.workers[order[k % size]] for k in range(count)]

    def _replace_dead(self) -> None:
        if not self._suspect:
            return
        with self._lock:
            self._suspect = False
            pings = {worker.where.remote(): index for index, worker in enumerate(self.workers)}
            # A busy worker answers late but is alive; a dead one's ping fails at once.
            ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=PING_SECONDS)
            for ref in ready:
                try:
                    ray.get(ref)
                except RayActorError:
                    index = pings[ref]
                    self.workers[index], self.busy[index] = self._start(), 0

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
