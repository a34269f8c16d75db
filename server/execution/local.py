"""The local executor: everything in this process, the whole table as one shard (today's path).

Each call reads its matrices from the blob store; a training job's shard keeps them for the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.engine import Engine
from core.gram import GramPartial, accumulate
from core.shards import InMemoryShards, ShardSource
from core.tensor import EncryptedMatrix
from server.execution import BlockFunction, ExecutionError, StoredTable


class LocalExecutor:
    @contextmanager
    def shards(self, table: StoredTable, engine: Engine) -> Iterator[ShardSource]:
        yield InMemoryShards(_read(engine, table.features), _read(engine, _targets(table)))

    def gram_partial(self, table: StoredTable, engine: Engine) -> GramPartial:
        """Streamed from disk one row block at a time (memory for one block, whatever the rows)."""
        with open(table.features, "rb") as features, open(_targets(table), "rb") as targets:
            blocks = zip(EncryptedMatrix.read_row_blocks(engine, features),
                         EncryptedMatrix.read_row_blocks(engine, targets), strict=True)
            return accumulate(engine, blocks)

    def map_blocks(self, table: StoredTable, function: BlockFunction, engine: Engine) -> EncryptedMatrix:
        return function(_read(engine, table.features))

    def column_sums(self, table: StoredTable, engine: Engine, squares: bool = False) -> EncryptedMatrix:
        X = _read(engine, table.features)
        return (X * X if squares else X).sum(axis=0)

    def close(self) -> None:
        pass


def _read(engine: Engine, path: Path) -> EncryptedMatrix:
    return EncryptedMatrix.from_bytes(engine, path.read_bytes())


def _targets(table: StoredTable) -> Path:
    if table.targets is None:
        raise ExecutionError("this table has no targets: training and the Gram pass need y")
    return table.targets
