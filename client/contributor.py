"""A pool contributor: ``Contributor(code).upload(X, y)``.

The contributor holds no key of its own. From the invitation code it learns the server's address, its
contributor token and the pool; ``schema`` downloads the pool's column schema and the analyst's public
context stripped to the encryption key (no secret, relinearization or Galois keys), and ``upload`` encrypts
the rows here, with that public key only, in the pool's layout, and sends them in one atomic contribution.
Nobody but the analyst can decrypt them, and the analyst never receives them: it sees only aggregates
(docs/threat-model.md, Pools). The token reaches ContributionService only: this object cannot list, read or
train on anything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from ciphergrad.client.datasets import encrypted_pieces
from ciphergrad.client.pools import decode_invitation
from ciphergrad.client.session import as_matrix
from ciphergrad.core.engine import Engine
from ciphergrad.core.layout import Tile, pool_tile
from ciphergrad.core.params import CKKSParameters
from ciphergrad.wire import chunks
from ciphergrad.wire.chunks import CHANNEL_OPTIONS
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2, pool_service_pb2_grpc, types_pb2

_PACKING_NAMES = {types_pb2.PACKING_ROWS: "rows", types_pb2.PACKING_COLUMNS: "columns"}


@dataclass(frozen=True)
class PoolSchemaInfo:
    pool_id: str
    feature_names: tuple[str, ...]
    target_name: str
    packing: str
    intercept: bool  # a column of ones is prepended here, before encryption
    rows_remaining: int  # 0: no cap
    expire_time: float  # epoch seconds; 0: never
    parameters: CKKSParameters
    context_bytes: int


@dataclass(frozen=True)
class ContributionReceipt:
    contribution_id: str
    pool_id: str
    rows: int
    size_bytes: int
    create_time: float

    @classmethod
    def from_proto(cls, message: pool_service_pb2.Contribution) -> ContributionReceipt:
        return cls(message.contribution_id, message.pool_id, message.rows, message.size_bytes,
                   message.create_time.ToNanoseconds() / 1e9)


class Contributor:
    """One invitation's view of the service. ``root_certificates``: PEM bytes or a path, for a TLS server
    whose certificate the system does not trust (the code says whether the analyst used TLS)."""

    def __init__(self, code: str, *, root_certificates: bytes | str | Path | None = None) -> None:
        found = decode_invitation(code)
        self.address, self.pool_id, self._token = found["address"], found["pool_id"], found["token"]
        if found.get("tls") or root_certificates is not None:
            roots = root_certificates
            if isinstance(roots, (str, Path)):
                roots = Path(roots).read_bytes()
            credentials = grpc.ssl_channel_credentials(roots)
            self.channel = grpc.secure_channel(self.address, credentials, list(CHANNEL_OPTIONS))
        else:
            self.channel = grpc.insecure_channel(self.address, list(CHANNEL_OPTIONS))
        self.stub = pool_service_pb2_grpc.ContributionServiceStub(self.channel)
        self._schema: PoolSchemaInfo | None = None
        self._engine: Engine | None = None
        self.bytes_received = 0  # the schema and public key
        self.bytes_sent = 0  # the encrypted rows

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Contributor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema(self) -> PoolSchemaInfo:
        """The pool's columns and layout (downloaded once, with the public key)."""
        if self._schema is None:
            self._download()
        assert self._schema is not None
        return self._schema

    def _download(self) -> None:
        responses = self.stub.GetPoolSchema(pool_service_pb2.GetPoolSchemaRequest(), metadata=self._metadata)
        header, context = None, bytearray()
        for response in responses:
            if response.WhichOneof("kind") == "header":
                header = response.header
            else:
                context += response.context_chunk
        if header is None:
            raise RuntimeError("the server sent no pool schema")
        self.bytes_received += header.ByteSize() + len(context)
        self._engine = Engine.for_encryption(bytes(context))  # refuses a context carrying a secret key
        schema = header.schema
        self._schema = PoolSchemaInfo(
            pool_id=header.pool_id, feature_names=tuple(schema.feature_names), target_name=schema.target_name,
            packing=_PACKING_NAMES.get(schema.packing, "columns"), intercept=schema.intercept,
            rows_remaining=header.rows_remaining,
            expire_time=header.expire_time.ToNanoseconds() / 1e9 if header.HasField("expire_time") else 0.0,
            parameters=self._engine.params, context_bytes=len(context),
        )

    @property
    def tile(self) -> Tile:
        schema = self.schema
        return pool_tile(schema.packing, len(schema.feature_names) + int(schema.intercept), schema.parameters.slots)

    def design(self, X: Any) -> np.ndarray:
        """``X`` as the pool's features matrix: a DataFrame's columns picked by the schema's names (in its
        order), otherwise the columns in the schema's order; the column of ones first if the pool has one."""
        names = list(self.schema.feature_names)
        if hasattr(X, "columns") and hasattr(X, "loc"):
            missing = [n for n in names if n not in X.columns]
            if missing:
                raise ValueError(f"the table lacks the pool's columns {missing}; it needs {names}")
            X = X[names]
        matrix = as_matrix(X)
        if matrix.shape[1] != len(names):
            raise ValueError(f"X has {matrix.shape[1]} columns; the pool's schema has {len(names)}: {names}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("X holds NaN or infinite values: fill or drop those rows before contributing")
        if self.schema.intercept:
            matrix = np.hstack([np.ones((matrix.shape[0], 1)), matrix])
        return matrix

    def upload(self, X: Any, y: Any, progress: bool | None = True) -> ContributionReceipt:
        """Encrypt ``X`` (n, features in the schema's order) and ``y`` (n,) here and contribute them."""
        design = self.design(X)
        target = as_matrix(y)
        if target.shape != (design.shape[0], 1):
            raise ValueError(f"y has shape {target.shape}; expected {design.shape[0]} values, one per row of X")
        if not np.all(np.isfinite(target)):
            raise ValueError("y holds NaN or infinite values: fill or drop those rows before contributing")
        if len(design) < 2:
            raise ValueError("a contribution needs at least 2 rows")
        engine, tile = self._engine, self.tile
        assert engine is not None
        names = list(self.schema.feature_names)
        manifest = pool_service_pb2.ContributionManifest(rows=len(design), feature_names=names)
        bar = tqdm(disable=None if progress else True, file=sys.stderr, leave=False, desc="contribute", unit="B",
                   unit_scale=True)

        def count(size: int) -> None:
            self.bytes_sent += size
            bar.update(size)

        def requests() -> Iterator[pool_service_pb2.ContributeRequest]:
            yield pool_service_pb2.ContributeRequest(manifest=manifest)
            blobs = (encrypted_pieces(engine, design, tile), encrypted_pieces(engine, target, tile))
            yield from chunks.send(pool_service_pb2.ContributeRequest, "chunk", blobs, count)

        with bar:
            response = self.stub.Contribute(requests(), metadata=self._metadata)
        return ContributionReceipt.from_proto(response.contribution)

    def contributions(self) -> list[ContributionReceipt]:
        """The receipts of this invitation's contributions."""
        found = self.stub.ListContributions(pool_service_pb2.ListContributionsRequest(), metadata=self._metadata)
        return [ContributionReceipt.from_proto(c) for c in found.contributions]
