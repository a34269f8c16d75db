"""A pool contributor: ``Contributor(code).upload(X, y)``.

The contributor holds no key of its own. From the invitation code it learns the server's address, its
contributor token, the pool and the fingerprint of the analyst's public key; ``schema`` downloads the pool's
column schema and the analyst's public context stripped to the encryption key (no secret, relinearization or
Galois keys) and refuses a key whose fingerprint differs from the code's (``KeyMismatchError``: a server that
swapped in its own key would read every contribution). ``upload`` computes the sufficient statistics of the
rows here, in float64 (``core.release.RowSpace.moments``: the rows clipped to the schema's bounds), encrypts
them with that public key and sends them in one atomic contribution: a few ciphertexts, never a row. Nobody
but the analyst can decrypt them, and the analyst only ever sees the pool's sealed release
(docs/threat-model.md, Pools). The token reaches ContributionService only.
"""

from __future__ import annotations

import hmac
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from ciphergrad.client.datasets import encrypted_pieces
from ciphergrad.client.pools import decode_invitation, schema_space
from ciphergrad.client.session import as_matrix
from ciphergrad.core.engine import Engine
from ciphergrad.core.keys import key_fingerprint
from ciphergrad.core.params import CKKSParameters
from ciphergrad.core.release import RowSpace, moment_tile
from ciphergrad.wire import chunks
from ciphergrad.wire.chunks import CHANNEL_OPTIONS
from ciphergrad.wire.proto_gen.ciphergrad.v1 import pool_service_pb2, pool_service_pb2_grpc


class KeyMismatchError(ValueError):
    """The server's public key is not the one the invitation names: nothing is encrypted or sent."""


@dataclass(frozen=True)
class PoolSchemaInfo:
    pool_id: str
    feature_names: tuple[str, ...]
    target_name: str
    bounds: dict[str, tuple[float, float]]
    classes: tuple[str, ...]  # a classification pool's labels; () for regression
    space: RowSpace
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
        self.key_fingerprint: str = found.get("key", "")
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
        self.bytes_sent = 0  # the encrypted statistics
        self.clipped = 0  # cells clipped to the schema's bounds by the last upload (never sent anywhere)

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
        """The pool's columns, bounds and classes (downloaded once, with the public key)."""
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
        engine = Engine.for_encryption(bytes(context))  # refuses a context carrying a secret key
        found = key_fingerprint(bytes(context))
        if not self.key_fingerprint:
            raise KeyMismatchError("the invitation code carries no key fingerprint, so the server's key cannot be "
                                   "checked: ask the analyst for a new code")
        if not hmac.compare_digest(found, self.key_fingerprint):
            raise KeyMismatchError(
                f"the server's public key (fingerprint {found[:16]}...) is not the analyst's "
                f"({self.key_fingerprint[:16]}...): someone between you and the analyst may be trying to read "
                "your data. Nothing was sent; tell the analyst"
            )
        self._engine = engine
        schema = header.schema
        bounds = {name: (b.lower, b.upper) for name, b in schema.bounds.items()}
        self._schema = PoolSchemaInfo(
            pool_id=header.pool_id, feature_names=tuple(schema.feature_names), target_name=schema.target_name,
            bounds=bounds, classes=tuple(schema.classes), space=schema_space(schema, header.policy.clip_norm),
            rows_remaining=header.rows_remaining,
            expire_time=header.expire_time.ToNanoseconds() / 1e9 if header.HasField("expire_time") else 0.0,
            parameters=self._engine.params, context_bytes=len(context),
        )

    def design(self, X: Any) -> np.ndarray:
        """``X`` as the pool's features matrix: a DataFrame's columns picked by the schema's names (in its
        order), otherwise the columns in the schema's order."""
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
        return matrix

    def labels(self, y: Any) -> np.ndarray:
        """``y`` as numbers, or in a classification pool as class indices (labels matched as text to the
        schema's classes, so 1, 1.0 and "1" are one label)."""
        classes = self.schema.classes
        if not classes:
            return as_matrix(y).reshape(-1)
        values = np.asarray(y).reshape(-1)
        index = {label: k for k, label in enumerate(classes)}
        texts = [_label_text(v) for v in values]
        unknown = sorted({t for t in texts if t not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the pool's classes {list(classes)}")
        return np.array([index[t] for t in texts], dtype=np.float64)

    def statistics(self, X: Any, y: Any) -> tuple[int, np.ndarray]:
        """``(rows, mean of upper(v v^T))``: what ``upload`` encrypts, computed here in float64."""
        design, target = self.design(X), self.labels(y)
        if len(target) != len(design):
            raise ValueError(f"y has {len(target)} values; expected {len(design)}, one per row of X")
        rows, moments, self.clipped = self.schema.space.moments(design, target)
        return rows, moments

    def upload(self, X: Any, y: Any, progress: bool | None = True) -> ContributionReceipt:
        """Summarize ``X`` (n, features in the schema's order) and ``y`` (n,) here, encrypt the statistics and
        contribute them. Rows outside the schema's bounds are clipped (``self.clipped`` counts the cells)."""
        rows, moments = self.statistics(X, y)
        engine = self._engine
        assert engine is not None
        names = list(self.schema.feature_names)
        manifest = pool_service_pb2.ContributionManifest(rows=rows, feature_names=names)
        tile = moment_tile(engine.params.slots)
        bar = tqdm(disable=None if progress else True, file=sys.stderr, leave=False, desc="contribute", unit="B",
                   unit_scale=True)

        def count(size: int) -> None:
            self.bytes_sent += size
            bar.update(size)

        def requests() -> Iterator[pool_service_pb2.ContributeRequest]:
            yield pool_service_pb2.ContributeRequest(manifest=manifest)
            blobs = (encrypted_pieces(engine, moments[:, None], tile),)
            yield from chunks.send(pool_service_pb2.ContributeRequest, "chunk", blobs, count)

        with bar:
            response = self.stub.Contribute(requests(), metadata=self._metadata)
        return ContributionReceipt.from_proto(response.contribution)

    def contributions(self) -> list[ContributionReceipt]:
        """The receipts of this invitation's contributions."""
        found = self.stub.ListContributions(pool_service_pb2.ListContributionsRequest(), metadata=self._metadata)
        return [ContributionReceipt.from_proto(c) for c in found.contributions]


def _label_text(value: Any) -> str:
    """One text per label: 1, 1.0 and "1" alike; other texts as they are (stripped)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text
