"""Long-lived Ray workers that hold public contexts and the row blocks of many jobs at once.

Loading a session's public context (its Galois keys: tens of MB) costs about half a second, and starting a
Ray worker process a second or more: paid per job, they dominated small jobs (a 510-row Ames training spent
1.3-2.4 s opening its shards against about 2 s of epochs). So the executor keeps a fixed ``WorkerPool`` of
``BlockWorker`` actors, one per CPU of the cluster, spread over its nodes, alive as long as the executor:

- A worker keeps the engines it loaded in a small LRU (``ContextCache``), keyed by the context file's path,
  size and modification time, so a session's context is loaded once per worker, not once per job. Each shard
  gets a *fork* of the cached engine (same SEAL context, its own operation counters), so the counts a job
  reports never mix with another job's on the same worker.
- A job's shard is state inside a worker (``load_blocks`` per piece, ``open_shard`` ... ``release``), named
  by a key unique to the job's shard; its blocks arrive once per job, as object refs (``ray_blocks``) or, in
  path mode, as ranges of a blob file the worker reads. A worker serves one call at a time
  (TenSEAL holds the GIL anyway), so jobs sharing a worker take turns step by step and the cluster's cores
  are never oversubscribed by our own processes.
- The pool's *driver* (``WorkerPool.driver``) is one more ``BlockWorker``, started on first use, that serves
  no shard and runs calls on threads (``DRIVER_JOBS``): it drives full-batch trainers over shards
  (``ray_jobs``), each job's trainer on a thread of its own waiting on the job's shards.
- Fan-out calls (``map_range``; ``gram_add`` per piece, then ``gram_take``) run on the same workers and
  reuse their engines. Inputs are ``MatrixSource``s: bytes already in Ray's object store, or (path mode) a
  path every node can read.

A worker that dies (killed, its node gone) fails the calls in flight, which the executor reports as an
``ExecutionError``; the pool replaces dead workers before it hands out shards again. No secret key reaches
a worker: contexts that carry one are refused by ``Engine.from_public_context``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import ray
from ray.exceptions import RayActorError

from ciphergrad.core.blocks import read_block_range
from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.gram import GramPartial, accumulate, row_blocks
from ciphergrad.core.shards import Batch, RowStep, StepPartial, add_pending, finish_pending, stack_blocks
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution.ray_trainers import TrainerHost

SHARD_CPU = 0.001  # what a worker reserves (see WorkerPool)
CONTEXTS_PER_WORKER = 8  # engines a worker keeps (each holds its Galois keys: ~25 MB for an Ames session)
DRIVER_JOBS = 256  # calls a driver runs at once: a job's trainer holds one while its step waits on shards
PING_SECONDS = 5.0  # how long the pool waits to learn whether a worker it suspects is dead

# A matrix a worker can read: EncryptedMatrix.to_bytes() bytes (usually an object ref, which Ray resolves to the
# bytes before the call runs when it is a top-level argument), or, in path mode, a path on the shared data
# directory, whole or as (path, start block, stop block).
MatrixSource = str | bytes | tuple[str, int, int] | ray.ObjectRef
# A public context: its path (path mode) or ((path, size, mtime), [ref to its bytes]) (ray_blocks.ContextRefs).
ContextHandle = str | tuple[tuple[str, int, int], list[ray.ObjectRef]]


class ContextCache:
    """Engines by context (path, size, mtime), least recently used evicted past ``size``.

    A context is named by its path (path mode: read here) or by ``(key, [ref])`` (object store: the key the
    server made from the same path, size and mtime; the ref fetched only on a miss)."""

    def __init__(self, size: int = CONTEXTS_PER_WORKER) -> None:
        self.size, self.loads = size, 0
        self._engines: OrderedDict[tuple[str, int, int], Engine] = OrderedDict()
        self._lock = threading.Lock()  # a driver (WorkerPool.driver) serves several jobs' threads at once

    def engine(self, context: ContextHandle) -> Engine:
        """A fork of the cached engine: shares the loaded keys, counts its own operations."""
        if isinstance(context, str):
            stat = os.stat(context)
            key: tuple[str, int, int] = (context, stat.st_size, stat.st_mtime_ns)
        else:
            key = tuple(context[0])  # type: ignore[assignment]
        with self._lock:
            if key in self._engines:
                self._engines.move_to_end(key)
            else:
                data = Path(context).read_bytes() if isinstance(context, str) else ray.get(context[1][0])
                self._engines[key] = Engine.from_public_context(data)
                self.loads += 1
                while len(self._engines) > self.size:
                    self._engines.popitem(last=False)
            return dataclasses.replace(self._engines[key], counts=OpCounts())


def read_source(engine: Engine, source: MatrixSource) -> EncryptedMatrix:
    """A matrix from what a call was given: bytes (or a ref to them), a whole file's path, or
    ``(path, start, stop)``: row blocks of a stored matrix (path mode)."""
    if isinstance(source, ray.ObjectRef):  # Ray resolves only top-level arguments, not refs inside a list
        source = ray.get(source)
    if isinstance(source, bytes):
        return EncryptedMatrix.from_bytes(engine, source)
    if isinstance(source, tuple | list):
        path, start, stop = source
        return read_block_range(engine, path, start, stop)
    return EncryptedMatrix.from_bytes(engine, Path(source).read_bytes())


def _open_files(stack: contextlib.ExitStack, sources: Iterable[MatrixSource]) -> list[BinaryIO]:
    """Each whole file a call was given, readable: its bytes (Ray resolved the ref), or in path mode its path,
    opened on ``stack``."""
    return [io.BytesIO(source) if isinstance(source, bytes) else stack.enter_context(open(str(source), "rb"))
            for source in sources]


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
        # shards and whole tables being loaded: their engine and pieces (X, y, then any shuffled copies' X, y)
        self.loading: dict[str, tuple[Engine, list[tuple[EncryptedMatrix, ...]]]] = {}
        self.grams: dict[str, tuple[GramPartial, OpCounts]] = {}  # Gram partials being added up
        self.trainers: dict[str, TrainerHost] = {}  # the trainers of the jobs it hosts (ray_trainers)
        self.forbidden_opens = 0

    def where(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def warm(self, context: ContextHandle) -> int:
        """Load ``context`` now (before a job needs it); the number of contexts loaded so far."""
        self.contexts.engine(context)
        return self.contexts.loads

    def inspect(self, context: ContextHandle) -> Any:
        """Load ``context`` (kept in the cache) and return its parameters (``Engine.from_public_context``'s
        checks: no secret key, a CKKS context with a usable scale)."""
        return self.contexts.engine(context).params

    # -- a job's shard ---------------------------------------------------------------------------------
    def load_blocks(self, key: str, context: ContextHandle, *matrices: MatrixSource) -> None:
        """One piece of the rows of a shard (X, y) or of a job's whole table (X, y and its shuffled copies),
        the same rows of each matrix (pieces arrive in row order: calls from one caller run in order). The
        pieces share one engine fork, whose counters then report the job's operations."""
        engine, pieces = self.loading.setdefault(key, (self.contexts.engine(context), []))
        pieces.append(tuple(read_source(engine, matrix) for matrix in matrices))

    def open_shard(self, key: str) -> dict[str, Any]:
        """The shard of the pieces loaded under ``key``, kept for the job (until ``release``)."""
        engine, pieces = self.loading.pop(key)
        X, y = (stack_blocks([piece[k] for piece in pieces]) for k in (0, 1))
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
        self.loading.pop(key, None)
        self.grams.pop(key, None)
        host = self.trainers.pop(key, None)
        if host is not None:
            host.stop()

    # -- a job's trainer (ray_trainers, ray_jobs) ------------------------------------------------------------
    def trainer_open(self, key: str, context: ContextHandle, trainer_type: Any, config: Any,
                     checkpoints: list[bytes], shards: Any = None) -> dict[str, Any]:
        """The job's trainer from its checkpoints and, if blocks were loaded under ``key`` (``load_blocks``: a
        per-row trainer's whole table), on them, or on ``shards`` (a ``ray_jobs.ShardGroup``: this worker is
        the pool's driver); kept under ``key`` until ``release``."""
        if key in self.loading:
            engine, pieces = self.loading.pop(key)
            data = tuple(stack_blocks([piece[k] for piece in pieces]) for k in range(len(pieces[0])))
            self.trainers[key] = TrainerHost(engine, trainer_type, config, checkpoints, data)
        else:
            self.trainers[key] = TrainerHost(self.contexts.engine(context), trainer_type, config, checkpoints,
                                             shards=shards)
        return self.trainers[key].summary()

    def trainer_step(self, key: str, action: str, answer: bytes | None) -> tuple[str, Any]:
        if key not in self.trainers:
            raise RuntimeError(f"trainer {key} is not open on worker {os.getpid()} (released, or the worker restarted)")
        return self.trainers[key].step(action, answer)

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
    def map_range(self, context: ContextHandle, sources: list[MatrixSource], function: Callable[..., EncryptedMatrix],
                  whole: dict[str, MatrixSource]) -> tuple[bytes, dict]:
        """``function(*sources, **whole matrices)`` (the sources: row blocks of a table, or a request's batch),
        serialized, and the operations it took."""
        engine = self.contexts.engine(context)
        blocks = [read_source(engine, source) for source in sources]
        operands = {name: read_source(engine, source) for name, source in whole.items()}
        return function(*blocks, **operands).to_bytes(), engine.counts.to_dict()

    def check_file(self, context: ContextHandle, source: MatrixSource, check: Callable[[Engine, Any, int], Any],
                   index: int) -> Any:
        """``check(engine, file, index)`` of a whole file (its bytes, or in path mode its path): an upload's
        checks (``server.execution.check_files``), on the worker that holds the session's context."""
        engine = self.contexts.engine(context)
        with contextlib.ExitStack() as stack:
            (handle,) = _open_files(stack, [source])
            return check(engine, handle, index)

    def run_files(self, context: ContextHandle, function: Callable[..., Any], whole: dict[str, MatrixSource],
                  *sources: MatrixSource) -> tuple[Any, dict]:
        """``function(engine, [files], **whole matrices)`` (``server.execution.run_files``: a request's spooled
        files, each its bytes or in path mode its path; ``function`` parses and checks them), and the
        operations it took."""
        engine = self.contexts.engine(context)
        operands = {name: read_source(engine, source) for name, source in whole.items()}
        with contextlib.ExitStack() as stack:
            return function(engine, _open_files(stack, sources), **operands), engine.counts.to_dict()

    def finish_sums(self, context: ContextHandle, finish: Callable[..., Any], parts: list[list[MatrixSource]],
                    rows: int, *sources: MatrixSource) -> tuple[Any, dict]:
        """``finish(engine, [files], [column sums])`` (``server.execution.finish_sums``): each sum the ranges'
        partial sums in ``parts`` (``pending_row_sum``'s, serialized) added up and finished over ``rows`` rows;
        the files are whole (their bytes, or in path mode their paths). With the operations it took."""
        engine = self.contexts.engine(context)
        totals = [finish_pending(functools.reduce(add_pending, [read_source(engine, part) for part in sums]), rows)
                  for sums in parts]
        with contextlib.ExitStack() as stack:
            return finish(engine, _open_files(stack, sources), totals), engine.counts.to_dict()

    def gram_add(self, key: str, context: ContextHandle, X: MatrixSource, y: MatrixSource) -> None:
        """Add one piece's Gram products to the partial kept under ``key`` (``gram_take`` returns it)."""
        engine = self.contexts.engine(context)
        before = self.grams.get(key)
        part = accumulate(engine, row_blocks(read_source(engine, X), read_source(engine, y)),
                          into=before[0] if before is not None else None)  # in place on the kept partial
        if before is not None:
            engine.counts.absorb(before[1])
        self.grams[key] = (part, engine.counts)

    def gram_take(self, key: str) -> tuple[dict[str, Any], dict]:
        partial, counts = self.grams.pop(key)
        return partial.to_state(), counts.to_dict()

    def gram_finish(self, context: ContextHandle, states: list[Any], finish: Callable[[GramPartial], dict]
                    ) -> tuple[dict[str, Any], dict]:
        """``finish`` of the sum of the ranges' partials (``gram_take`` replies, by reference): e.g. the
        statistics' rotations (``server.execution.one_pass_state``); matrices in the result as bytes."""
        engine = self.contexts.engine(context)
        replies = ray.get(states)
        for _, counts in replies:
            engine.counts.absorb(OpCounts(**counts))
        partials = [GramPartial.from_state(engine, state) for state, _ in replies]
        total = partials[0]
        for partial in partials[1:]:
            total = total.absorb(partial)  # in place: the loaded partials are this call's own
        state = finish(total)
        portable = {key: value.to_bytes() if isinstance(value, EncryptedMatrix) else value
                    for key, value in state.items()}
        return portable, engine.counts.to_dict()

    def forbid_reads(self, directory: str) -> None:
        """From now on, any open of a path under ``directory`` in this worker raises PermissionError and is
        counted (``usage()['forbidden_opens']``): proof that the object-store mode needs no shared disk
        (tests/test_execution_object_store.py). An audit hook: it stays for the process's life."""
        root = os.path.realpath(directory) + os.sep

        def hook(event: str, args: tuple) -> None:
            if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
                path = os.path.realpath(os.fsdecode(args[0]))
                if path.startswith(root):
                    self.forbidden_opens += 1
                    raise PermissionError(f"worker {os.getpid()} opened {path}: blocks must come by object ref")

        sys.addaudithook(hook)

    def usage(self) -> dict[str, float]:
        """This worker's peak resident memory, CPU seconds used (load-independent work), contexts loaded."""
        return {"peak_rss_mb": _peak_rss_mb(), "cpu_s": time.process_time(), "context_loads": self.contexts.loads,
                "open_shards": len(self.shards), "forbidden_opens": self.forbidden_opens}


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
        self._driver: Any = None

    def _start(self) -> Any:
        return BlockWorker.options(scheduling_strategy="SPREAD", num_cpus=SHARD_CPU).remote(self.contexts)

    def __len__(self) -> int:
        return len(self.workers)

    def driver(self) -> Any:
        """The pool's driver (started now if none runs): a ``BlockWorker`` outside ``workers`` that runs
        ``DRIVER_JOBS`` calls at once and is never given a shard, so a trainer it drives can wait on any
        worker's shard without ever waiting on itself (``ray_jobs``)."""
        self._replace_dead()
        with self._lock:
            if self._driver is None:
                self._driver = BlockWorker.options(num_cpus=SHARD_CPU, max_concurrency=DRIVER_JOBS).remote(
                    self.contexts)
            return self._driver

    def suspect(self) -> None:
        """A call failed: check the workers before handing any out again."""
        self._suspect = True

    def acquire(self, count: int, prefer: Collection[int] = ()) -> list[int]:
        """Indices of ``count`` distinct workers, least busy first (of equally busy ones, those in ``prefer``:
        they hold the job's context), counted busy until ``release``. A holder one job busier loses to another
        worker: a context load there (~0.5 CPU s) costs less than one worker running one whole job more than
        the others (an Ames job is ~1.3 CPU s; eight at once could split 5 : 3 over two workers when holders
        could be one job busier, and the busier worker sets the wall: B11)."""
        self._replace_dead()
        with self._lock:
            chosen = sorted(range(len(self.workers)), key=lambda i: (self.busy[i], i not in prefer, i))[:count]
            for index in chosen:
                self.busy[index] += 1
            return chosen

    def release(self, indices: list[int]) -> None:
        with self._lock:
            for index in indices:
                self.busy[index] = max(0, self.busy[index] - 1)

    def least_busy(self, count: int, prefer: Collection[int] = ()) -> list[Any]:
        """``count`` workers for short fan-out calls (not counted busy): the least busy first, round robin.
        Equally busy workers take turns from call to call, so that calls running at once (the batches of a
        request stream, each a call of its own) land on different workers; of equally busy workers those in
        ``prefer`` (holding the call's context) come first."""
        self._replace_dead()
        with self._lock:
            size, turn = len(self.workers), self._turn
            self._turn += 1
            order = sorted(range(size), key=lambda i: (self.busy[i], i not in prefer, (i - turn) % size))
            return [self.workers[order[k % size]] for k in range(count)]

    def _replace_dead(self) -> None:
        if not self._suspect:
            return
        with self._lock:
            self._suspect = False
            pings = {worker.where.remote(): index for index, worker in enumerate(self.workers)}
            if self._driver is not None:
                pings[self._driver.where.remote()] = -1
            # A busy worker answers late but is alive; a dead one's ping fails at once.
            ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=PING_SECONDS)
            for ref in ready:
                try:
                    ray.get(ref)
                except RayActorError:
                    index = pings[ref]
                    if index < 0:
                        self._driver = None  # the next job that needs one starts it
                    else:
                        self.workers[index], self.busy[index] = self._start(), 0

    def shutdown(self) -> None:
        for worker in self.workers + ([self._driver] if self._driver is not None else []):
            ray.kill(worker)
