"""ComputeService calls: encrypted statistics and metrics, and nearest-neighbour distances; the key holder
finishes square roots, divisions and the top-k after decryption."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ciphergrad.client.datasets import DatasetCalls
from ciphergrad.client.session import as_matrix
from ciphergrad.core.layout import Tile, choose_tile, next_pow2
from ciphergrad.wire import chunks
from ciphergrad.wire.proto_gen.ciphergrad.v1 import (
    compute_service_pb2,
    dataset_service_pb2,
    model_service_pb2,
    types_pb2,
)


class ComputeCalls(DatasetCalls):
    # -- statistics and nearest neighbours (ComputeService) -------------------------------------------
    def describe(
        self, dataset: dataset_service_pb2.Dataset | str, *, ddof: int = 1, correlation: bool | None = None
    ) -> dict[str, np.ndarray]:
        """Encrypted column statistics of a dataset's features, decrypted and finished here.

        Returns ``mean``, ``variance`` and ``std`` (``(d,)``), plus ``covariance`` and ``correlation``
        (``(d, d)``) when ``correlation`` is true; by default when the dataset is column-packed
        (``upload(X, packing='columns')``), which the covariance needs. ``ddof=1``: sample statistics.
        """
        from ciphergrad.core.stats import finish_correlation, finish_std

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
        |x| polynomial on ``[-mae_bound, mae_bound]`` (residuals must lie inside); ``mae_error_bound`` is its
        documented worst-case error. The server receives ``mae_bound`` in plaintext: by default, when the
        targets are given here, it is 1.25 times the largest residual rounded UP to a power of two
        (``core.stats.mae_grid_bound``), so the server learns one exponent in -4..19 of these residuals
        (at most 4.6 bits, docs/threat-model.md), never the residual itself; without targets here there is
        no MAE unless ``mae_bound`` is given. A ``mae_bound`` you pass is sent as it is: take it from public
        knowledge (the target's unit and range), not from the data.
        """
        from ciphergrad.core.stats import finish_r2, mae_grid_bound

        holder = self._holder()
        P = as_matrix(predictions)
        if dataset is not None:
            dataset = self._dataset(dataset)
            tile = Tile(dataset.tile_rows, dataset.tile_cols) if dataset.tile_rows else self.tile_for((len(P), 1))
            blobs = [holder.encrypt(P, tile=tile).to_bytes()]
        else:
            if targets is None:
                raise ValueError("pass the targets, or a dataset whose targets the server should use")
            Y = as_matrix(targets)
            tile = choose_tile(P.shape, holder.params.slots, "columns")
            blobs = [holder.encrypt(P, tile=tile).to_bytes(), holder.encrypt(Y, tile=tile).to_bytes()]
            if mae_bound is None:
                # P and Y are the key holder's plaintexts: only their exponent on a public grid may travel.
                mae_bound = mae_grid_bound(float(np.max(np.abs(P - Y))) if P.size else 0.0)
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
        Q = as_matrix(queries)
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

