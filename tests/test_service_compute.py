"""Encrypted statistics and nearest neighbours through ComputeService over 127.0.0.1.

Tolerances (as tests/test_stats.py): means to 1e-6, variances and covariances to 1e-6 times the largest
column mean square, correlations to twice that over the smallest variance (uncentred data: the
variance expansion cancels, see core.stats), MSE/RMSE/R² to 1e-6, MAE equal to the |x|-polynomial twin to 1e-6
and to the exact MAE within the polynomial's documented bound; kNN labels equal scikit-learn's.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from service_support import local_server
from sklearn.datasets import load_iris, load_wine
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from ciphergrad.client import Client, EncryptedKNeighborsClassifier
from ciphergrad.core import plan
from ciphergrad.core.neighbors import pca_projection
from ciphergrad.core.polynomial import fit_abs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with local_server(Path(tmp_path_factory.mktemp("data"))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address) as connected:
        connected.create_session(plan(3))  # every power-of-two rotation key: any tile works
        yield connected


@pytest.fixture(scope="module")
def wine() -> np.ndarray:
    X = load_wine().data
    return X / X.std(axis=0)


def _tol(X: np.ndarray) -> float:
    return 1e-6 * float(np.max(np.mean(X**2, axis=0)))


def test_describe_column_packed(client, wine) -> None:
    X = wine[:, :6]
    dataset = client.upload(X, packing="columns", column_names=[f"c{i}" for i in range(6)])
    assert dataset.features_only and dataset.packing == 2 and (dataset.tile_rows, dataset.tile_cols) == (256, 1)
    got = client.describe(dataset)
    np.testing.assert_allclose(got["mean"], X.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(got["variance"], X.var(axis=0, ddof=1), atol=_tol(X))
    np.testing.assert_allclose(got["std"], X.std(axis=0, ddof=1), atol=_tol(X))
    np.testing.assert_allclose(got["covariance"], np.cov(X, rowvar=False), atol=_tol(X))
    # Correlation = cov / (std std): its error is the covariance's relative to the smallest variance.
    corr_tol = 2 * _tol(X) / float(np.min(X.var(axis=0)))
    np.testing.assert_allclose(got["correlation"], np.corrcoef(X, rowvar=False), atol=corr_tol)


def test_describe_row_packed_and_wrong_layout(server, client, wine) -> None:
    dataset = client.upload(wine, wine[:, 0])  # the training layout: rows side by side
    got = client.describe(dataset.dataset_id, ddof=0)
    assert set(got) == {"mean", "variance", "std"}
    np.testing.assert_allclose(got["mean"], wine.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(got["variance"], wine.var(axis=0), atol=_tol(wine))
    with pytest.raises(grpc.RpcError) as caught:
        client.describe(dataset, correlation=True)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "packing='columns'" in caught.value.details()
    with Client(server.address) as other:
        other.create_session(plan(3), tiles=[client.tile_for(wine.shape)])
        with pytest.raises(grpc.RpcError) as caught:
            other.describe(dataset.dataset_id)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as caught:
            other.metrics(wine[:, 1], dataset=dataset)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_metrics_streamed_and_from_dataset(client, wine) -> None:
    Z = (wine - wine.mean(axis=0)) / wine.std(axis=0)
    y, p = Z[:, 0], 0.6 * Z[:, 1] + 0.2 * Z[:, 2]
    mse = float(np.mean((p - y) ** 2))
    r2 = 1 - mse / float(np.var(y))
    got = client.metrics(p, y, mae_bound=4.0)
    assert abs(got["mse"] - mse) < 1e-6 and abs(got["rmse"] - np.sqrt(mse)) < 1e-6 and abs(got["r2"] - r2) < 1e-6
    poly = fit_abs(6, 4.0)
    assert got["mae_error_bound"] == pytest.approx(poly.max_error)
    assert abs(got["mae"] - float(np.mean(poly(p - y)))) < 1e-6
    assert abs(got["mae"] - float(np.mean(np.abs(p - y)))) <= poly.max_error
    # Targets from an uploaded dataset: the predictions are encrypted in its tile.
    dataset = client.upload(Z[:, 1:4], y)
    from_dataset = client.metrics(p, dataset=dataset)
    assert "mae" not in from_dataset
    assert abs(from_dataset["mse"] - mse) < 1e-6 and abs(from_dataset["r2"] - r2) < 1e-6
    with pytest.raises(grpc.RpcError) as caught:
        client.metrics(p, dataset=client.upload(Z[:, 1:4]))  # features only: no targets
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no targets" in caught.value.details()


def test_default_mae_bound_reaches_the_server_on_the_power_of_two_grid(client, wine, monkeypatch) -> None:
    """The default range is derived from the key holder's residuals: only its power-of-two exponent travels
    (the old 1.25 * max|p - y| sent a real number derived from the data)."""
    from ciphergrad.core.stats import mae_grid_bound
    from ciphergrad.wire.proto_gen.ciphergrad.v1 import compute_service_pb2

    sent: list[float] = []
    real = compute_service_pb2.MetricsSpec

    def spy(**fields):
        sent.append(fields["mae_bound"])
        return real(**fields)

    monkeypatch.setattr(compute_service_pb2, "MetricsSpec", spy)
    Z = (wine - wine.mean(axis=0)) / wine.std(axis=0)
    y, p = Z[:, 0], 0.6 * Z[:, 1] + 0.2 * Z[:, 2]
    largest = float(np.max(np.abs(p - y)))
    got = client.metrics(p, y)
    assert sent == [mae_grid_bound(largest)] and sent[0] != 1.25 * largest
    assert np.log2(sent[0]).is_integer() and 1.25 * largest <= sent[0] < 2.5 * largest
    poly = fit_abs(6, sent[0])
    assert got["mae_error_bound"] == pytest.approx(poly.max_error)
    assert abs(got["mae"] - float(np.mean(np.abs(p - y)))) <= poly.max_error


def _iris():
    data = load_iris()
    Xtr, Xte, ytr, _ = train_test_split(data.data, data.target, test_size=0.2, stratify=data.target, random_state=0)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    return (Xtr - mean) / std, (Xte - mean) / std, ytr


@pytest.mark.parametrize("components", [None, 2])
def test_knn_equals_sklearn_on_iris(server, components: int | None) -> None:
    Xtr, Xte, ytr = _iris()
    projection = "pca" if components else None
    with EncryptedKNeighborsClassifier(5, server=server.address, projection=projection, n_components=components) as knn:
        knn.fit(Xtr, ytr)
        got = knn.predict(Xte)
        distances = knn.kneighbors_distances(Xte[:7])
    P = pca_projection(Xtr, components) if components else np.eye(Xtr.shape[1])
    plain = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(Xtr @ P, ytr)
    np.testing.assert_array_equal(got, plain.predict(Xte @ P))
    want = ((Xtr @ P)[:, None, :] - (Xte[:7] @ P)[None, :, :]) ** 2
    np.testing.assert_allclose(distances, want.sum(axis=2), atol=1e-4)


def test_knn_in_process_server_and_errors(server, client) -> None:
    Xtr, Xte, ytr = _iris()
    with EncryptedKNeighborsClassifier(3, batch_rows=8) as knn:  # in-process server, several query batches
        assert knn.fit(Xtr, ytr).score(Xte, KNeighborsClassifier(3).fit(Xtr, ytr).predict(Xte)) == 1.0
    reference = client.upload_reference(Xtr)
    from ciphergrad.wire.chunks import chunks as _chunks
    from ciphergrad.wire.proto_gen.ciphergrad.v1 import compute_service_pb2

    rows = client.key_holder.encrypt(Xte[:4], packing="rows").to_bytes()

    def requests():
        yield compute_service_pb2.DistancesRequest(model_id=reference.model_id)
        for chunk in _chunks(rows):
            yield compute_service_pb2.DistancesRequest(queries=chunk)

    with pytest.raises(grpc.RpcError) as caught:
        list(client.compute.Distances(requests(), metadata=client.metadata))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "packing='columns'" in caught.value.details()
    with Client(server.address) as other:
        other.create_session(plan(2), tiles=[])
        with pytest.raises(grpc.RpcError) as caught:
            other.distances(reference, Xte[:4])
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("components", [None, 2])
def test_knn_encrypted_reference_equals_sklearn_on_iris(server, components: int | None) -> None:
    Xtr, Xte, ytr = _iris()
    projection = "pca" if components else None
    with EncryptedKNeighborsClassifier(
        5, server=server.address, projection=projection, n_components=components, encrypt_reference=True, batch_rows=16
    ) as knn:
        knn.fit(Xtr, ytr)
        assert knn.reference_.reference_set and knn.reference_.rows == len(Xtr)
        assert knn.reference_.columns == (components or Xtr.shape[1]) and knn.reference_.tile_cols == 16
        got = knn.predict(Xte)  # two query blocks of 16
        distances = knn.kneighbors_distances(Xte[:7])
        assert knn._client.transfer.sent.get("reference upload", 0) > 0
        assert knn._client.list_models() == []  # no plaintext reference set on the server
    P = pca_projection(Xtr, components) if components else np.eye(Xtr.shape[1])
    plain = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(Xtr @ P, ytr)
    np.testing.assert_array_equal(got, plain.predict(Xte @ P))
    want = ((Xtr @ P)[:, None, :] - (Xte[:7] @ P)[None, :, :]) ** 2
    np.testing.assert_allclose(distances, want.sum(axis=2), atol=1e-4 * (1 + want.sum(axis=2).max()))


def test_encrypted_reference_isolation_and_layout_errors(server, client) -> None:
    from ciphergrad.core import Tile
    from ciphergrad.wire.chunks import chunks as _chunks
    from ciphergrad.wire.proto_gen.ciphergrad.v1 import compute_service_pb2, dataset_service_pb2

    Xtr, Xte, _ = _iris()
    reference = client.upload_encrypted_reference(Xtr, query_rows=8, column_names=["a", "b", "c", "d"])
    assert (reference.rows, reference.columns, reference.tile_cols) == (len(Xtr), 4, 8)
    assert [d.reference_set for d in client.list_datasets() if d.dataset_id == reference.dataset_id] == [True]

    def distances(queries: bytes, first: compute_service_pb2.DistancesRequest):
        def requests():
            yield first
            for chunk in _chunks(queries):
                yield compute_service_pb2.DistancesRequest(queries=chunk)

        return list(client.compute.Distances(requests(), metadata=client.metadata))

    by_dataset = compute_service_pb2.DistancesRequest(reference_dataset_id=reference.dataset_id)
    # Queries in blocks of 16 against a reference encrypted for blocks of 8: told which tile to use.
    with pytest.raises(grpc.RpcError) as caught:
        distances(client.key_holder.encrypt(Xte[:10], tile=Tile(16, 1)).to_bytes(), by_dataset)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tile=Tile(8, 1)" in caught.value.details() and "query_rows=16" in caught.value.details()
    # A dataset that is not a reference set.
    plain = client.upload(Xtr, packing="columns")
    with pytest.raises(grpc.RpcError) as caught:
        distances(b"", compute_service_pb2.DistancesRequest(reference_dataset_id=plain.dataset_id))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "upload_encrypted_reference" in caught.value.details()
    # Declared a reference set but not encrypted in its layout: refused at upload, saying how to encrypt it.
    blob = client.key_holder.encrypt(Xtr, packing="columns").to_bytes()

    def upload():
        manifest = dataset_service_pb2.DatasetManifest(
            total_size_bytes=len(blob), features_only=True, reference_set=True
        )
        yield dataset_service_pb2.UploadDatasetRequest(manifest=manifest)
        for chunk in _chunks(blob):
            yield dataset_service_pb2.UploadDatasetRequest(chunk=chunk)

    with pytest.raises(grpc.RpcError) as caught:
        client.datasets.UploadDataset(upload(), metadata=client.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "encrypt_reference" in caught.value.details()
    # Another session can neither read it nor score against it.
    with Client(server.address) as other:
        other.create_session(plan(2), tiles=[])
        with pytest.raises(grpc.RpcError) as caught:
            other.distances(reference, Xte[:4])
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
