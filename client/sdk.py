"""The key holder's side of ciphergrad's gRPC API.

``Client`` keeps the secret key in this process (``core.keys.KeyHolder``) and sends the server only the
public context and ciphertexts. During training it answers the server's masked refresh requests with
fresh encryptions (never decryptions, which would let the server recover the key: IND-CPA-D attacks; see
docs/threat-model.md) and decrypts the per-epoch loss.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from core import algorithms
from core.inference import MLP
from core.keys import KeyHolder
from core.layout import Tile, choose_tile, next_pow2, rotation_steps
from core.linear import LinearRegressionConfig
from core.logistic import LogisticRegressionConfig
from core.params import CKKSParameters, plan
from core.polynomial import Polynomial
from core.tensor import EncryptedMatrix
from wire import chunks, codec
from wire.chunks import CHANNEL_OPTIONS, CHUNK_BYTES
from wire.proto_gen.ciphergrad.v1 import (
    compute_service_pb2,
    compute_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
    types_pb2,
)

JobState = training_service_pb2.JobState
# The response field that carries the chunked results of each streaming request type.
_RESULT_FIELDS = {"PredictRequest": "predictions", "DistancesRequest": "distances"}
PACKINGS = {"rows": types_pb2.PACKING_ROWS, "columns": types_pb2.PACKING_COLUMNS}


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


@dataclass
class TrainingRun:
    """What a Train stream produced, decrypted where the key holder may decrypt."""

    job: Any = None
    model: Any = None
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    refreshes: int = 0
    refresh_seconds: float = 0.0
    operation_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def default_parameters(algorithm: str = "linear") -> CKKSParameters:
    """The planner's choice for training ``algorithm``: one step's levels, refresh in between."""
    return plan(algorithms.get(algorithm).levels_per_step, slots=1)


def _as_matrix(values: Any) -> np.ndarray:
    """numpy, pandas or torch input as a float64 2-D array."""
    if hasattr(values, "detach"):  # torch.Tensor
        values = values.detach().cpu().numpy()
    elif hasattr(values, "to_numpy"):  # pandas
        values = values.to_numpy()
    array = np.asarray(values, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


class Client:
    """A connection to a ciphergrad server plus the key holder of one session.

    ``tls``: False for plaintext (loopback, tests), True for TLS with the system roots, or the path of a
    PEM CA certificate to trust.
    """

    def __init__(self, address: str, *, tls: bool | str | Path = False) -> None:
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
        self.key_holder: KeyHolder | None = None
        self.session_id = ""
        self.token = ""
        self.transfer = Transfer()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
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
        display_name: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> session_service_pb2.Session:
        """Make keys (planner defaults unless ``params``) and register their public half.

        ``tiles``: the layouts you will encrypt with; only their rotation keys are generated, which keeps
        the context small. Without tiles every power-of-two rotation key is made.
        """
        if key_holder is None:
            if isinstance(params, dict):
                params = CKKSParameters.from_dict(params)
            params = params or default_parameters()
            key_holder = KeyHolder.for_tiles(params, tiles) if tiles else KeyHolder(params)
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

    def delete_session(self) -> None:
        self.sessions.DeleteSession(session_service_pb2.DeleteSessionRequest(), metadata=self.metadata)

    # -- datasets -----------------------------------------------------------------------------------
    def tile_for(self, shape: tuple[int, int], batch_size: int | None = None) -> Tile:
        slots = self._holder().params.slots
        return choose_tile(shape, slots, "rows", block_rows=batch_size)

    def upload(
        self,
        X: Any,
        y: Any = None,
        *,
        tile: Tile | None = None,
        packing: str = "rows",
        shuffle_orders: Sequence[np.ndarray] = (),
        column_names: Sequence[str] = (),
        display_name: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> dataset_service_pb2.Dataset:
        """Encrypt ``X`` (n, d) and ``y`` (n,) and upload them, plus one copy per row order.

        Without ``y`` only the features go up (``features_only``: for ``describe``, not for training).
        ``packing``: 'rows' (training, the default) or 'columns' (one ciphertext per column: what the
        covariance/correlation of ``describe`` needs); an explicit ``tile`` overrides it.
        """
        holder = self._holder()
        X = _as_matrix(X)
        if packing not in PACKINGS:
            raise ValueError(f"packing={packing!r}: use 'rows' or 'columns'")
        if tile is None:
            tile = self.tile_for(X.shape) if packing == "rows" else choose_tile(X.shape, holder.params.slots, packing)
        if tile.cols == 1 and X.shape[1] > 1:
            packing = "columns"
        features_only = y is None
        if features_only:
            if len(shuffle_orders):
                raise ValueError("shuffle_orders need targets: pass y")
            blobs = [holder.encrypt(X, tile=tile).to_bytes()]
        else:
            y = _as_matrix(y)
            pairs = [(X, y)] + [(X[order], y[order]) for order in shuffle_orders]
            blobs = []
            for Xs, ys in pairs:
                blobs.append(holder.encrypt(Xs, tile=tile).to_bytes())
                blobs.append(holder.encrypt(ys, tile=tile).to_bytes())
        total = sum(len(b) for b in blobs)

        def requests() -> Iterator[dataset_service_pb2.UploadDatasetRequest]:
            manifest = dataset_service_pb2.DatasetManifest(
                display_name=display_name,
                column_names=list(column_names),
                shuffle_count=len(shuffle_orders),
                total_size_bytes=total,
                packing=PACKINGS[packing],
                features_only=features_only,
            )
            yield dataset_service_pb2.UploadDatasetRequest(manifest=manifest)
            yield from chunks.send(dataset_service_pb2.UploadDatasetRequest, "chunk", blobs, progress)

        response = self.datasets.UploadDataset(requests(), metadata=self.metadata)
        self.transfer.add("sent", "data upload", total)
        return response.dataset

    def list_datasets(self) -> list[dataset_service_pb2.Dataset]:
        request = dataset_service_pb2.ListDatasetsRequest()
        return list(self.datasets.ListDatasets(request, metadata=self.metadata).datasets)

    def delete_dataset(self, dataset_id: str) -> None:
        request = dataset_service_pb2.DeleteDatasetRequest(dataset_id=dataset_id)
        self.datasets.DeleteDataset(request, metadata=self.metadata)

    # -- training -----------------------------------------------------------------------------------
    def train(
        self,
        dataset_id: str = "",
        config: LinearRegressionConfig | LogisticRegressionConfig | dict | None = None,
        *,
        algorithm: str | None = None,
        job_id: str = "",
        on_epoch: Callable[[int, float], None] | None = None,
        on_refresh: Callable[[np.ndarray], None] | None = None,
    ) -> TrainingRun:
        """Run (or with ``job_id``, resume) a training job, answering refreshes until it ends.

        ``algorithm``: 'linear' or 'logistic' (by default the kind of ``config``, else linear).
        ``on_epoch(epoch, loss)`` gets each decrypted training loss (MSE for linear, the Brier score of the
        polynomial probabilities for logistic); ``on_refresh(values)`` the (masked) values the key holder
        decrypted.
        """
        holder = self._holder()
        if job_id:
            first = training_service_pb2.TrainRequest(attach=training_service_pb2.AttachJob(job_id=job_id))
        else:
            known = algorithms.for_config(config)
            entry = algorithms.get(algorithm or (known.name if known else "linear"))
            if known is not None:
                config = config.to_dict()
            spec = training_service_pb2.JobSpec(dataset_id=dataset_id, algorithm=codec.algorithm_to_proto(entry))
            spec.hyperparameters.update(dict(config or {}))
            first = training_service_pb2.TrainRequest(start=spec)
        outbox: queue.Queue = queue.Queue()
        outbox.put(first)

        def requests() -> Iterator[training_service_pb2.TrainRequest]:
            # The request stream stays open until training ends: closing it means "client gone".
            while (item := outbox.get()) is not None:
                yield item

        run = TrainingRun()
        start = time.perf_counter()
        responses = self.training.Train(requests(), metadata=self.metadata)
        try:
            for response in responses:
                kind = response.WhichOneof("event")
                if kind == "job":
                    run.job = response.job
                elif kind == "epoch":
                    event = response.epoch
                    self.transfer.add("received", "losses", event.ByteSize())
                    loss = None
                    if codec.has_matrix(event.loss):
                        loss = float(holder.decrypt(self._matrix(event.loss))[0, 0]) * event.loss_scale
                        run.losses.append(loss)
                    run.epoch_seconds.append(event.seconds)
                    for key, value in event.operation_counts.items():
                        run.operation_counts[key] = run.operation_counts.get(key, 0) + value
                    if on_epoch:
                        on_epoch(event.epoch, loss)
                elif kind == "refresh_request":
                    tick = time.perf_counter()
                    reply = self._refresh(response.refresh_request, on_refresh)
                    outbox.put(training_service_pb2.TrainRequest(refresh_reply=reply))
                    run.refreshes += 1
                    run.refresh_seconds += time.perf_counter() - tick
                elif kind == "result":
                    run.job, run.model = response.result.job, response.result.model
                    self.transfer.add("received", "model", response.result.model.ByteSize())
        finally:
            outbox.put(None)
            if run.model is None:
                responses.cancel()  # we are leaving early: the server pauses the job at its checkpoint
        run.seconds = time.perf_counter() - start
        return run

    def _matrix(self, message: types_pb2.EncryptedMatrix) -> EncryptedMatrix:
        return codec.matrix_from_proto(self._holder().engine, message)

    def _refresh(
        self, request: training_service_pb2.RefreshRequest, observe: Callable[[np.ndarray], None] | None
    ) -> training_service_pb2.RefreshReply:
        holder = self._holder()
        masked = self._matrix(request.masked)
        values = holder.decrypt(masked)
        if observe:
            observe(values)
        fresh = codec.matrix_to_proto(holder.encrypt(values, tile=masked.tile))
        self.transfer.add("received", "refreshes", request.ByteSize())
        self.transfer.add("sent", "refreshes", fresh.ByteSize())
        return training_service_pb2.RefreshReply(refresh_id=request.refresh_id, refreshed=fresh)

    def get_job(self, job_id: str) -> training_service_pb2.Job:
        request = training_service_pb2.GetJobRequest(job_id=job_id)
        return self.training.GetJob(request, metadata=self.metadata).job

    def list_jobs(self) -> list[training_service_pb2.Job]:
        return list(self.training.ListJobs(training_service_pb2.ListJobsRequest(), metadata=self.metadata).jobs)

    def cancel_job(self, job_id: str) -> training_service_pb2.Job:
        request = training_service_pb2.CancelJobRequest(job_id=job_id)
        return self.training.CancelJob(request, metadata=self.metadata).job

    # -- models -------------------------------------------------------------------------------------
    def get_model(self, model_id: str) -> model_service_pb2.Model:
        request = model_service_pb2.GetModelRequest(model_id=model_id)
        model = self.models.GetModel(request, metadata=self.metadata).model
        self.transfer.add("received", "model", model.ByteSize())
        return model

    def list_models(self) -> list[model_service_pb2.Model]:
        return list(self.models.ListModels(model_service_pb2.ListModelsRequest(), metadata=self.metadata).models)

    def weights(self, model: model_service_pb2.Model) -> np.ndarray:
        """The model's decrypted coefficients (one per feature column, the intercept column included)."""
        entry = codec.algorithm_from_proto(model.algorithm)
        if entry is None or model.server_owned:
            raise ValueError(f"model {model.model_id} is server-owned: its plaintext weights stay on the server")
        return entry.decode(self._holder().decrypt(self._matrix(model.weights)), model.weight_scale)

    def upload_model(
        self,
        model: Any,
        bias: Any = None,
        *,
        logistic: bool = False,
        sigmoid_degree: int = 3,
        sigmoid_bound: float = 8.0,
        display_name: str = "",
    ) -> model_service_pb2.Model:
        """Register a plaintext model the server owns; predictions then take column-packed encrypted rows.

        ``model``: weights ``(d,)`` or ``(d, k)`` (with ``bias``; ``logistic=True`` for a binary logistic
        model, whose server-side sigmoid, when asked, is the degree-``sigmoid_degree`` polynomial on
        ``[-sigmoid_bound, sigmoid_bound]``), a torch ``nn.Linear``, an ``nn.Sequential`` of linear layers and
        polynomial activations (exported with ``core.inference.mlp_from_torch``) or a ``core.inference.MLP``.
        """
        request = model_service_pb2.UploadModelRequest(display_name=display_name)
        if _is_torch_module(model):
            from torch import nn

            from core.inference import mlp_from_torch

            if isinstance(model, nn.Linear):
                weights = model.weight.detach().double().numpy().T
                bias = model.bias.detach().double().numpy() if model.bias is not None else None
                return self.upload_model(
                    weights,
                    bias,
                    logistic=logistic,
                    display_name=display_name,
                    sigmoid_degree=sigmoid_degree,
                    sigmoid_bound=sigmoid_bound,
                )
            model = mlp_from_torch(model)
        if isinstance(model, MLP):
            layers = [
                model_service_pb2.MlpLayer(weights=codec.plain_to_proto(w), bias=np.asarray(b).reshape(-1).tolist())
                for w, b in model.layers
            ]
            activations = [
                model_service_pb2.MlpActivation(polynomial=_polynomial(a) if a is not None else None)
                for a in model.activations
            ]
            request.mlp.CopyFrom(model_service_pb2.MlpModel(layers=layers, activations=activations))
        elif logistic:
            weights = np.asarray(model, dtype=np.float64).reshape(-1)
            request.logistic.CopyFrom(
                model_service_pb2.LogisticModel(
                    weights=weights.tolist(),
                    bias=float(0.0 if bias is None else np.asarray(bias).reshape(-1)[0]),
                    sigmoid_degree=sigmoid_degree,
                    sigmoid_bound=sigmoid_bound,
                )
            )
        else:
            weights = np.asarray(model, dtype=np.float64)
            weights = weights[:, None] if weights.ndim == 1 else weights
            values = [] if bias is None else np.broadcast_to(np.asarray(bias, float), (weights.shape[1],)).tolist()
            request.linear.CopyFrom(model_service_pb2.LinearModel(weights=codec.plain_to_proto(weights), bias=values))
        return self.models.UploadModel(request, metadata=self.metadata).model

    def upload_reference(self, reference: Any, projection: Any = None, *, display_name: str = "") -> Any:
        """Store a plaintext nearest-neighbour reference set (server-owned) with an optional ``(d, c)``
        projection applied to queries and references; ``distances`` then scores encrypted queries."""
        neighbors = model_service_pb2.NeighborsModel(reference=codec.plain_to_proto(_as_matrix(reference)))
        if projection is not None:
            neighbors.projection.CopyFrom(codec.plain_to_proto(_as_matrix(projection)))
        request = model_service_pb2.UploadModelRequest(display_name=display_name, neighbors=neighbors)
        return self.models.UploadModel(request, metadata=self.metadata).model

    def upload_encrypted_reference(
        self,
        reference: Any,
        *,
        query_rows: int = 256,
        projection: Any = None,
        column_names: Sequence[str] = (),
        display_name: str = "",
    ) -> dataset_service_pb2.Dataset:
        """Encrypt a ``(K, d)`` nearest-neighbour reference set here and store it as a dataset: the server
        sees neither it nor the queries. ``query_rows``: rows per query block (q, rounded up to a power of
        two; ``distances`` then sends queries in blocks of q). ``projection`` (d, c) is applied here before
        encrypting; pass the same one to ``distances``. See core.neighbors.encrypt_reference for the layout."""
        from core.neighbors import encrypt_reference

        holder = self._holder()
        query_rows = max(1, min(int(query_rows), holder.params.slots))
        blob = encrypt_reference(holder, _as_matrix(reference), query_rows, projection).to_bytes()

        def requests() -> Iterator[dataset_service_pb2.UploadDatasetRequest]:
            manifest = dataset_service_pb2.DatasetManifest(
                display_name=display_name,
                column_names=list(column_names),
                total_size_bytes=len(blob),
                features_only=True,
                reference_set=True,
            )
            yield dataset_service_pb2.UploadDatasetRequest(manifest=manifest)
            yield from chunks.send(dataset_service_pb2.UploadDatasetRequest, "chunk", [blob])

        response = self.datasets.UploadDataset(requests(), metadata=self.metadata)
        self.transfer.add("sent", "reference upload", len(blob))
        return response.dataset

    def _input_tile(self, model: model_service_pb2.Model, batch_rows: int | None) -> Tile:
        """Client-owned models take rows in their weights' tile; server-owned ones column-packed rows."""
        if model.server_owned:
            return Tile(min(self._holder().params.slots, next_pow2(batch_rows or self._holder().params.slots)), 1)
        return self._matrix(model.weights).tile

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

    def predict(
        self,
        model: model_service_pb2.Model,
        X: Any,
        *,
        server_sigmoid: bool = False,
        batch_rows: int | None = None,
    ) -> np.ndarray:
        """Encrypted inference: rows go out encrypted, predictions come back encrypted and are decrypted.

        Returns ``(n,)`` for one output (the logit for logistic models, or with ``server_sigmoid`` the
        server's polynomial sigmoid of it), ``(n, k)`` for several (an MLP).
        """
        X = _as_matrix(X)
        tile = self._input_tile(model, batch_rows)
        batch_rows = batch_rows or (tile.rows if model.server_owned else max(tile.rows * 16, 1))
        options = model_service_pb2.PredictOptions(model_id=model.model_id, server_sigmoid=server_sigmoid)
        first = model_service_pb2.PredictRequest(options=options)
        scale = 1.0 if (server_sigmoid or model.server_owned or not model.weight_scale) else model.weight_scale
        out = [
            r / scale
            for r in self._stream_batches(self.models.Predict, first, "rows", X, tile, batch_rows, "predict rows")
        ]
        if not out:
            return np.empty(0)
        result = np.concatenate(out, axis=0)
        return result.reshape(-1) if result.shape[1] == 1 else result

    def predict_proba(
        self, model: model_service_pb2.Model, X: Any, *, server_sigmoid: bool = False, **kw: Any
    ) -> np.ndarray:
        """Positive-class probabilities of a logistic model: the exact sigmoid of the decrypted logit, or
        (``server_sigmoid``) the server's polynomial approximation, decrypted."""
        if server_sigmoid:
            return self.predict(model, X, server_sigmoid=True, **kw)
        return 1.0 / (1.0 + np.exp(-self.predict(model, X, **kw)))

    # -- statistics and nearest neighbours (ComputeService) -------------------------------------------
    def _dataset(self, dataset: dataset_service_pb2.Dataset | str) -> dataset_service_pb2.Dataset:
        if isinstance(dataset, str):
            request = dataset_service_pb2.GetDatasetRequest(dataset_id=dataset)
            return self.datasets.GetDataset(request, metadata=self.metadata).dataset
        return dataset

    def describe(
        self, dataset: dataset_service_pb2.Dataset | str, *, ddof: int = 1, correlation: bool | None = None
    ) -> dict[str, np.ndarray]:
        """Encrypted column statistics of a dataset's features, decrypted and finished here.

        Returns ``mean``, ``variance`` and ``std`` (``(d,)``), plus ``covariance`` and ``correlation``
        (``(d, d)``) when ``correlation`` is true; by default when the dataset is column-packed
        (``upload(X, packing='columns')``), which the covariance needs. ``ddof=1``: sample statistics.
        """
        from core.stats import finish_correlation, finish_std

        holder = self._holder()
        dataset = self._dataset(dataset)
        if correlation is None:
            correlation = dataset.packing == types_pb2.PACKING_COLUMNS
        request = compute_service_pb2.DescribeRequest(dataset_id=dataset.dataset_id, ddof=ddof, covariance=correlation)
        out: dict[str, np.ndarray] = {}
        for response in self.compute.Describe(request, metadata=self.metadata):
            self.transfer.add("received", "statistics", response.ByteSize())
            value = holder.decrypt(self._matrix(response.value))
            out[response.statistic] = value if response.statistic == "covariance" else value.reshape(-1)
        out["std"] = finish_std(out["variance"])
        if "covariance" in out:
            out["correlation"] = finish_correlation(out["covariance"])
        return out

    def metrics(
        self,
        predictions: Any,
        targets: Any = None,
        *,
        dataset: dataset_service_pb2.Dataset | str | None = None,
        mae_bound: float | None = None,
        mae_degree: int = 6,
    ) -> dict[str, float]:
        """MSE, RMSE, R² and MAE between encrypted predictions and encrypted targets, computed by the server.

        ``targets`` are encrypted here and sent along, or (``dataset``) the server uses the targets of an
        uploaded dataset (the predictions are then encrypted in its tile). The MAE uses a least-squares
        |x| polynomial on ``[-mae_bound, mae_bound]`` (residuals must lie inside; by default 1.25 times the
        largest residual when the targets are given here, else no MAE); ``mae_error_bound`` is its
        documented worst-case error.
        """
        from core.stats import finish_r2

        holder = self._holder()
        P = _as_matrix(predictions)
        if dataset is not None:
            dataset = self._dataset(dataset)
            tile = Tile(dataset.tile_rows, dataset.tile_cols) if dataset.tile_rows else self.tile_for((len(P), 1))
            blobs = [holder.encrypt(P, tile=tile).to_bytes()]
        else:
            if targets is None:
                raise ValueError("pass the targets, or a dataset whose targets the server should use")
            Y = _as_matrix(targets)
            tile = choose_tile(P.shape, holder.params.slots, "columns")
            blobs = [holder.encrypt(P, tile=tile).to_bytes(), holder.encrypt(Y, tile=tile).to_bytes()]
            if mae_bound is None:
                mae_bound = 1.25 * float(np.max(np.abs(P - Y))) or 1.0
        spec = compute_service_pb2.MetricsSpec(
            dataset_id=dataset.dataset_id if dataset is not None else "",
            mae_bound=mae_bound or 0.0,
            mae_degree=mae_degree,
        )

        def requests() -> Iterator[compute_service_pb2.MetricsRequest]:
            yield compute_service_pb2.MetricsRequest(spec=spec)
            yield from chunks.send(compute_service_pb2.MetricsRequest, "chunk", blobs)

        self.transfer.add("sent", "metrics input", sum(len(blob) for blob in blobs))

        values: dict[str, float] = {}
        error_bound = None
        for response in self.compute.Metrics(requests(), metadata=self.metadata):
            values[response.metric] = float(holder.decrypt(self._matrix(response.value))[0, 0])
            if response.metric == "mae":
                error_bound = response.max_error
        out = {
            "mse": values["mse"],
            "rmse": float(np.sqrt(max(values["mse"], 0.0))),
            "r2": finish_r2(values["mse"], values["target_variance"]),
        }
        if error_bound is not None:
            out.update(mae=values["mae"], mae_error_bound=error_bound)
        return out

    def distances(
        self,
        reference: model_service_pb2.Model | dataset_service_pb2.Dataset,
        queries: Any,
        *,
        batch_rows: int = 256,
        projection: Any = None,
    ) -> np.ndarray:
        """Squared distances ``(references, queries)`` from encrypted queries to a reference set, decrypted.

        ``reference``: a server-held plaintext set (``upload_reference``; the queries travel column-packed in
        batches of ``batch_rows``) or a client-encrypted one (``upload_encrypted_reference``; the batches are
        then its ``query_rows``, and ``projection``, if it was uploaded with one, is applied to the queries
        here before they are encrypted)."""
        Q = _as_matrix(queries)
        if isinstance(reference, dataset_service_pb2.Dataset):
            if not reference.reference_set:
                raise ValueError(f"dataset {reference.dataset_id} is not a reference set (upload_encrypted_reference)")
            if projection is not None:
                Q = Q @ np.asarray(projection, dtype=np.float64)
            tile = Tile(reference.tile_cols, 1)  # the query block the reference was encrypted for
            first = compute_service_pb2.DistancesRequest(reference_dataset_id=reference.dataset_id)
            empty = (reference.rows, 0)
        else:
            if projection is not None:
                raise ValueError("a server-held reference set carries its projection (upload_reference)")
            batch_rows = max(1, min(batch_rows, self._holder().params.slots))
            tile = Tile(next_pow2(min(batch_rows, len(Q))), 1)
            first = compute_service_pb2.DistancesRequest(model_id=reference.model_id)
            empty = (reference.output_columns, 0)
        parts = list(self._stream_batches(self.compute.Distances, first, "queries", Q, tile, tile.rows, "queries"))
        return np.concatenate(parts, axis=1) if parts else np.empty(empty)


def _is_torch_module(value: Any) -> bool:
    return type(value).__module__.startswith("torch") or hasattr(value, "named_parameters")


def _polynomial(poly: Polynomial) -> model_service_pb2.Polynomial:
    return model_service_pb2.Polynomial(
        coefficients=list(poly.coefficients), bound=poly.bound, name=poly.name, max_error=poly.max_error
    )


__all__ = ["Client", "JobState", "TrainingRun", "Transfer", "default_parameters", "rotation_steps"]
