"""The client's session core: one channel to a server, the bearer token of one session, the key holder
(the secret key stays in this process) and the bytes moved. The per-service parts (``client.datasets``,
``client.training``, ``client.models``, ``client.compute``) build on it; ``client.Client`` joins them.

The server sees only the public context and ciphertexts. Results arrive encrypted and are decrypted here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ciphergrad.core import algorithms
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import Tile
from ciphergrad.core.params import CKKSParameters, plan
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.wire import chunks, codec
from ciphergrad.wire.chunks import CHANNEL_OPTIONS, CHUNK_BYTES
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    compute_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    model_service_pb2_grpc,
    pool_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    training_service_pb2_grpc,
    types_pb2,
)

# The response field that carries the chunked results of each streaming request type.
_RESULT_FIELDS = {"PredictRequest": "predictions", "DistancesRequest": "distances"}


@dataclass
class Transfer:
    """Bytes sent and received through this client, by purpose."""

    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)

    def add(self, direction: str, what: str, size: int) -> None:
        book = self.sent if direction == "sent" else self.received
        book[what] = book.get(what, 0) + size

    @property
    def total(self) -> int:
        return sum(self.sent.values()) + sum(self.received.values())


def default_parameters(algorithm: str = "linear") -> CKKSParameters:
    """The planner's choice for training ``algorithm``: one step's levels, refresh in between."""
    return plan(algorithms.get(algorithm).levels_per_step, slots=1)


def as_matrix(values: Any) -> np.ndarray:
    """numpy, pandas or torch input as a float64 2-D array."""
    if hasattr(values, "detach"):  # torch.Tensor
        values = values.detach().cpu().numpy()
    elif hasattr(values, "to_numpy"):  # pandas
        values = values.to_numpy()
    array = np.asarray(values, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


class Connection:
    """A channel to a ciphergrad server plus the key holder and token of one session.

    ``tls``: False for plaintext (loopback, tests), True for TLS with the system roots, or the path of a
    PEM CA certificate to trust.
    """

    def __init__(self, address: str, *, tls: bool | str | Path = False) -> None:
        self.address, self.tls = address, tls  # the address goes into pool invitation codes
        options = list(CHANNEL_OPTIONS)
        if tls:
            roots = Path(tls).read_bytes() if isinstance(tls, (str, Path)) else None
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(roots), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.sessions = session_service_pb2_grpc.SessionServiceStub(self.channel)
        self.datasets = dataset_service_pb2_grpc.DatasetServiceStub(self.channel)
        self.training = training_service_pb2_grpc.TrainingServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.compute = compute_service_pb2_grpc.ComputeServiceStub(self.channel)
        self.pools_stub = pool_service_pb2_grpc.PoolServiceStub(self.channel)
        self.key_holder: KeyHolder | None = None
        self.session_id = ""
        self.token = ""
        self.transfer = Transfer()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def _holder(self) -> KeyHolder:
        if self.key_holder is None:
            raise RuntimeError("no session: call create_session() (or use_session()) first")
        return self.key_holder

    # -- sessions -----------------------------------------------------------------------------------
    def create_session(
        self,
        params: CKKSParameters | dict | None = None,
        *,
        key_holder: KeyHolder | None = None,
        tiles: Sequence[Tile] = (),
        rotations: Sequence[int] = (),
        display_name: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> session_service_pb2.Session:
        """Make keys (planner defaults unless ``params``) and register their public half.

        ``tiles``: the layouts you will encrypt with; only their rotation keys are generated, plus the steps
        in ``rotations`` (``training_layout`` gives both for a training config), which keeps the context
        small. Without tiles or rotations every power-of-two rotation key is made.
        """
        if key_holder is None:
            if isinstance(params, dict):
                params = CKKSParameters.from_dict(params)
            params = params or default_parameters()
            key_holder = KeyHolder.for_tiles(params, tiles, rotations) if tiles or rotations else KeyHolder(params)
        context = key_holder.public_context()

        def requests() -> Iterator[session_service_pb2.CreateSessionRequest]:
            manifest = session_service_pb2.SessionManifest(display_name=display_name, context_size_bytes=len(context))
            yield session_service_pb2.CreateSessionRequest(manifest=manifest)
            for start in range(0, len(context), CHUNK_BYTES):
                piece = context[start : start + CHUNK_BYTES]
                yield session_service_pb2.CreateSessionRequest(context_chunk=piece)
                if progress:
                    progress(len(piece))

        response = self.sessions.CreateSession(requests())
        self.transfer.add("sent", "public context", len(context))
        self.key_holder, self.session_id, self.token = key_holder, response.session.session_id, response.token
        return response.session

    def use_session(self, session_id: str, token: str, key_holder: KeyHolder) -> None:
        """Continue an existing session (e.g. after reconnecting) with its key holder."""
        self.session_id, self.token, self.key_holder = session_id, token, key_holder

    def get_session(self) -> session_service_pb2.Session:
        return self.sessions.GetSession(session_service_pb2.GetSessionRequest(), metadata=self.metadata).session

    def revoke_token(self) -> str:
        """Revoke this session's token and continue with the new one the server returns."""
        request = session_service_pb2.RevokeTokenRequest()
        self.token = self.sessions.RevokeToken(request, metadata=self.metadata).token
        return self.token

    def delete_session(self) -> None:
        self.sessions.DeleteSession(session_service_pb2.DeleteSessionRequest(), metadata=self.metadata)

    # -- what the service parts share ---------------------------------------------------------------
    def _matrix(self, message: types_pb2.EncryptedMatrix) -> EncryptedMatrix:
        return codec.matrix_from_proto(self._holder().engine, message)

    def _stream_batches(self, call: Any, first: Any, field: str, X: np.ndarray, tile: Tile, batch_rows: int, what: str):
        """Encrypt ``X`` in batches, stream them through a bidirectional ``call``; yield the decrypted results."""
        holder = self._holder()
        batches = [X[i : i + batch_rows] for i in range(0, len(X), batch_rows)]

        def encrypted() -> Iterator[bytes]:
            for batch in batches:
                data = holder.encrypt(batch, tile=tile).to_bytes()
                self.transfer.add("sent", what, len(data))
                yield data

        def requests() -> Iterator[Any]:
            yield first
            yield from chunks.send(type(first), field, encrypted())

        responses = call(requests(), metadata=self.metadata)
        for data in chunks.receive(responses, _RESULT_FIELDS[type(first).__name__], f"{what} results"):
            self.transfer.add("received", f"{what} results", len(data))
            yield holder.decrypt(EncryptedMatrix.from_bytes(holder.engine, data))

    def _dataset(self, dataset: dataset_service_pb2.Dataset | str) -> dataset_service_pb2.Dataset:
        if isinstance(dataset, str):
            request = dataset_service_pb2.GetDatasetRequest(dataset_id=dataset)
            return self.datasets.GetDataset(request, metadata=self.metadata).dataset
        return dataset
