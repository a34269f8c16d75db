"""How a table's row blocks and a session's public context reach the Ray workers: through Ray's object store
(``object-store``, the default: no node but the server's needs the data directory) or by path (``path``: every
node mounts the data directory at the same path, which saves one copy).

Object store (``BlockFeeder``): the server cuts each worker's range of row blocks into pieces with
``core.blocks.block_range_bytes`` (file I/O only: the ciphertexts' bytes are copied, never parsed, so this
costs the server no CKKS work), ``ray.put``s each piece once and hands the ref to the worker call that owns the
range; the worker parses the piece and keeps it (a training job's shard, for the job's life) or consumes it (a
fan-out call). Every block of the table is read once per call (once per job for shards).

Memory bound: the block bytes put and not yet taken by a worker never exceed ``budget`` (over every call of
the executor at once; a call with nothing in flight still sends one piece, so concurrent calls may pass it by
one piece each, and a row block larger than the budget goes alone). A table whose X and y fit goes at once,
one piece per range. A larger table streams: pieces of about ``budget / ranges`` bytes, interleaved over the
ranges, each new piece put only after the oldest one's call returned; the server drops each ref as its call
returns, so Ray frees the object then. ``peak_bytes`` records the most held at once (the benchmarks report it).

Contexts (``ContextRefs``): by path, or put once per session (keyed by the file's path, size and mtime) and
kept for the most recent sessions within ``CONTEXT_MB`` (an Ames training session's context is 32 MB; with
room for 4 only, eight sessions at once re-read and re-put their contexts call after call, ~0.5 s of this
process's CPU per session); a worker fetches the object only on a miss of its own context cache, so a cached
session costs one small ref per call.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from ciphergrad.core.blocks import block_range_bytes

MODES = ("object-store", "path")
BUDGET_MB = 256  # default --ray-object-store-mb: half a compose node's 512 MiB object store
CONTEXT_MB = 1024  # public contexts kept in the object store, most recent sessions first (at least one)

# A worker's view of a range of blocks: a ref to its bytes (Ray resolves a top-level argument to the bytes
# before the call runs) or, in path mode, (path, start, stop) for the worker to read.
BlockSource = Any


class ContextRefs:
    """What a worker call names a public context by: its path (path mode) or ``(key, [ref])`` (object store).

    The ref travels inside a list so that Ray does not fetch it for every call; a worker ``ray.get``s it only
    when its own cache misses (``ray_workers.ContextCache``)."""

    def __init__(self, mode: str, budget_bytes: int = CONTEXT_MB * 2**20) -> None:
        self.mode, self.budget = mode, budget_bytes
        self._refs: collections.OrderedDict[tuple[str, int, int], Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def handle(self, context: Path, final: Path | None = None, data: bytes | None = None) -> Any:
        """``final``: the path the file will be renamed to (same size and mtime), which names it in object-store
        mode, so that a context checked before it is stored is the one its session's calls find cached;
        ``data``: the file's bytes when the caller has read them already (a context is tens of MB)."""
        if self.mode == "path":
            return str(context)
        stat = os.stat(context)
        key = (str(final or context), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._refs:
                self._refs.move_to_end(key)
                return key, [self._refs[key]]
        ref = ray.put(Path(context).read_bytes() if data is None else data)
        with self._lock:
            self._refs[key] = ref
            while len(self._refs) > 1 and sum(size for _, size, _ in self._refs) > self.budget:
                self._refs.popitem(last=False)
        return key, [ref]

    def forget(self, context: Path) -> None:
        """Drop the object of a context that was refused (it will never be named again)."""
        with self._lock:
            for key in [key for key in self._refs if key[0] == str(context)]:
                del self._refs[key]


class BlockFeeder:
    """Hands ranges of row blocks of stored matrices to worker calls, within the object-store budget."""

    def __init__(self, mode: str, budget_bytes: int) -> None:
        if mode not in MODES:
            raise ValueError(f"ray blocks mode {mode!r} is not one of {', '.join(MODES)} (--ray-blocks)")
        if budget_bytes < 1:
            raise ValueError(f"object-store budget {budget_bytes} bytes must be positive (--ray-object-store-mb)")
        self.mode, self.budget = mode, budget_bytes
        self.peak_bytes = 0  # the most block bytes held in the object store at once, over every call
        self._held = 0
        self._lock = threading.Lock()

    def pieces(self, paths: Sequence[Path], ranges: list[tuple[int, int]], one_row_last: bool = False
               ) -> list[tuple[int, int, int]]:
        """``(range index, start, stop)`` of each piece, in the order they are sent: one per range when the
        matrices fit the budget (or by path), else pieces of about ``budget / len(ranges)`` bytes, round robin
        over the ranges so that every worker has work while the next pieces are read. ``one_row_last``: the table's
        last block holds one row, which then rides with the block before it (as in ``core.shards.block_ranges``)."""
        blocks = ranges[-1][1]
        table_bytes = sum(os.path.getsize(path) for path in paths)
        if self.mode == "path" or table_bytes <= self.budget:
            return [(index, start, stop) for index, (start, stop) in enumerate(ranges)]
        per_block = max(1, table_bytes // blocks)
        step = max(1, self.budget // (len(ranges) * per_block))
        queues = [_split(index, start, stop, step) for index, (start, stop) in enumerate(ranges)]
        if one_row_last and len(queues[-1]) > 1 and queues[-1][-1][2] - queues[-1][-1][1] == 1:
            (index, start, _), (_, _, stop) = queues[-1][-2:]
            queues[-1][-2:] = [(index, start, stop)]
        return _round_robin(queues)

    def feed(self, paths: Sequence[Path], ranges: list[tuple[int, int]],
             submit: Callable[[int, list[BlockSource]], Any], get: Callable[[list[Any], str], list[Any]],
             what: str, one_row_last: bool = False) -> list[list[Any]]:
        """``submit(range index, [source of each matrix])`` for every piece (a worker call's ref); the calls'
        results grouped by range, in piece order. At most ``budget`` bytes of pieces are in flight."""
        results: list[list[Any]] = [[] for _ in ranges]
        in_flight: collections.deque[tuple[Any, int, int]] = collections.deque()

        def settle() -> None:
            ref, index, size = in_flight.popleft()
            try:
                results[index].append(get([ref], what)[0])
            finally:
                self._release(size)

        try:
            for index, start, stop in self.pieces(paths, ranges, one_row_last):
                if self.mode == "path":
                    in_flight.append((submit(index, [(str(p), start, stop) for p in paths]), index, 0))
                    continue
                data = [block_range_bytes(path, start, stop) for path in paths]
                size = sum(len(part) for part in data)
                while in_flight and self._held_now() + size > self.budget:
                    settle()
                refs = [ray.put(part) for part in data]
                del data
                self._hold(size)
                in_flight.append((submit(index, refs), index, size))
                del refs  # the worker call holds them now; Ray frees each once its call returns
            while in_flight:
                settle()
        finally:
            for _, _, size in in_flight:  # a failed call: what was still in flight is dropped
                self._release(size)
        return results

    def feed_files(self, paths: Sequence[Path], submit: Callable[[int, BlockSource], Any],
                   get: Callable[[list[Any], str], list[Any]], what: str) -> list[Any]:
        """``submit(index, source)`` for each whole file (its bytes put once, or its path in path mode); the
        calls' results in order, at most ``budget`` bytes in flight (a file larger than that goes alone)."""
        results: list[Any] = []
        in_flight: collections.deque[tuple[Any, int]] = collections.deque()

        def settle() -> None:
            ref, size = in_flight.popleft()
            try:
                results.append(get([ref], what)[0])
            finally:
                self._release(size)

        try:
            for index, path in enumerate(paths):
                if self.mode == "path":
                    in_flight.append((submit(index, str(path)), 0))
                    continue
                size = os.path.getsize(path)
                while in_flight and self._held_now() + size > self.budget:
                    settle()
                ref = ray.put(Path(path).read_bytes())
                self._hold(size)
                in_flight.append((submit(index, ref), size))
                del ref
            while in_flight:
                settle()
        finally:
            for _, size in in_flight:
                self._release(size)
        return results

    def _held_now(self) -> int:
        with self._lock:
            return self._held

    def _hold(self, size: int) -> None:
        with self._lock:
            self._held += size
            self.peak_bytes = max(self.peak_bytes, self._held)

    def _release(self, size: int) -> None:
        with self._lock:
            self._held -= size


def _round_robin(queues: list[list[tuple[int, int, int]]]) -> list[tuple[int, int, int]]:
    """The first piece of each queue, then the second of each, ..."""
    return [queue[k] for k in range(max(map(len, queues))) for queue in queues if k < len(queue)]


def _split(index: int, start: int, stop: int, step: int) -> list[tuple[int, int, int]]:
    """``[start, stop)`` in pieces of ``step`` blocks."""
    bounds = [*range(start, stop, step), stop]
    return [(index, a, b) for a, b in itertools.pairwise(bounds)]
