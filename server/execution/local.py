"""The local executor: everything in this process, the whole table as one shard (today's path).

Each call reads its matrices from the blob store (or a request's scratch file); a training job's shard keeps
them for the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.gram import GramPartial, accumulate
from ciphergrad.core.params import CKKSParameters
from ciphergrad.core.shards import InMemoryShards, ShardSource
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.server.execution import (
    NO_OPERANDS,
    BlockFunction,
    ExecutionError,
    FileCheck,
    FilesFunction,
    MatrixSource,
    StoredTable,
    SumsFunction,
    rows_function,
)


class LocalExecutor:
    parallelism = 1  # TenSEAL holds the GIL: a second call at once would only wait

    @contextmanager
    def shards(self, table: StoredTable, engine: Engine) -> Iterator[ShardSource]:
        yield InMemoryShards(_read(engine, table.features), _read(engine, _targets(table)))

    def gram_partial(self, table: StoredTable, engine: Engine) -> GramPartial:
        """Streamed from disk one row block at a time (memory for one block, whatever the rows)."""
        with open(table.features, "rb") as features, open(_targets(table), "rb") as targets:
            blocks = zip(EncryptedMatrix.read_row_blocks(engine, features),
                         EncryptedMatrix.read_row_blocks(engine, targets), strict=True)
            return accumulate(engine, blocks)

    def map_blocks(self, table: StoredTable, function: BlockFunction, engine: Engine, *, with_targets: bool = False,
                   operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> EncryptedMatrix:
        return _apply(engine, table, function, with_targets, operands)

    def column_sums(self, table: StoredTable, engine: Engine, squares: bool = False, *,
                    function: BlockFunction | None = None, with_targets: bool = False,
                    operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> EncryptedMatrix:
        function = rows_function(function, squares)
        if function is None:
            return _read(engine, table.features).sum(axis=0)
        return _apply(engine, table, function, with_targets, operands).sum(axis=0)

    def map_batches(self, context: Path, batches: Iterable[MatrixSource], function: BlockFunction, engine: Engine, *,
                    operands: Mapping[str, MatrixSource] = NO_OPERANDS) -> Iterator[EncryptedMatrix]:
        whole = {name: _read(engine, source) for name, source in operands.items()}
        for batch in batches:
            yield function(_read(engine, batch), **whole)

    def warm(self, context: Path) -> None:
        pass  # nothing to load ahead: each call reads what it needs

    def inspect_context(self, context: Path, final: Path | None = None) -> CKKSParameters:
        return Engine.from_public_context(Path(context).read_bytes()).params

    def check_files(self, context: Path, paths: Sequence[Path], check: FileCheck,
                    engine: Callable[[], Engine]) -> list[Any]:
        loaded = engine()
        results = []
        for index, path in enumerate(paths):
            with open(path, "rb") as handle:
                results.append(check(loaded, handle, index))
        return results

    def run_files(self, context: Path, paths: Sequence[Path], function: FilesFunction, engine: Callable[[], Engine],
                  *, operands: Mapping[str, MatrixSource] = NO_OPERANDS, counts: OpCounts | None = None) -> Any:
        """``function`` here, on ``engine()`` (whose counters count its operations: ``counts`` is not used)."""
        loaded = engine()
        whole = {name: _read(loaded, source) for name, source in operands.items()}
        with ExitStack() as stack:
            files = [stack.enter_context(open(path, "rb")) for path in paths]
            return function(loaded, files, **whole)

    def finish_sums(self, table: StoredTable, finish: SumsFunction, engine: Callable[[], Engine], *,
                    sums: Sequence[BlockFunction | None] = (None,), files: Sequence[Path] = (),
                    counts: OpCounts | None = None) -> Any:
        """``finish`` here, on ``engine()`` (whose counters count its operations: ``counts`` is not used)."""
        loaded = engine()
        totals = [self.column_sums(table, loaded, function=function) for function in sums]
        with ExitStack() as stack:
            return finish(loaded, [stack.enter_context(open(path, "rb")) for path in files], totals)

    def close(self) -> None:
        pass


def _apply(engine: Engine, table: StoredTable, function: BlockFunction, with_targets: bool,
           operands: Mapping[str, MatrixSource]) -> EncryptedMatrix:
    inputs = [_read(engine, table.features)] + ([_read(engine, _targets(table))] if with_targets else [])
    return function(*inputs, **{name: _read(engine, source) for name, source in operands.items()})


def _read(engine: Engine, source: MatrixSource) -> EncryptedMatrix:
    if isinstance(source, EncryptedMatrix):
        return source
    if isinstance(source, bytes):
        return EncryptedMatrix.from_bytes(engine, source)
    with open(source, "rb") as handle:
        return EncryptedMatrix.from_file(engine, handle)  # one ciphertext's bytes at a time


def _targets(table: StoredTable) -> Path:
    if table.targets is None:
        raise ExecutionError("this table has no second matrix: training, the Gram pass and with_targets need y")
    return table.targets
