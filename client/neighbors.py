"""``EncryptedKNeighborsClassifier``: k-nearest-neighbour classification of encrypted queries on a server."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ciphergrad.client.local import local_server
from ciphergrad.client.sdk import Client
from ciphergrad.core.layout import choose_tile
from ciphergrad.core.params import CKKSParameters


class EncryptedKNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """k-nearest-neighbour classification of encrypted queries against a reference set on a server.

    ``fit`` stores the reference rows (and the optional projection) on the server; the labels stay here.
    ``predict`` encrypts the queries (column-packed), the server returns their encrypted squared distances
    to every reference, and this process decrypts them and takes the majority label of the ``n_neighbors``
    nearest (ties: the smallest label). The server never sees a query or an ordering.

    ``projection``: None, a ``(d, c)`` matrix (e.g. NCA learned in torch) or ``'pca'`` (``n_components``
    principal axes of the reference set, core.neighbors.pca_projection). Without ``server`` a local
    server is started at ``fit`` and stopped by ``close()``.

    ``encrypt_reference=True``: the reference set is encrypted here too (Client.upload_encrypted_reference,
    for query blocks of ``batch_rows``) and any projection is applied here, so the server sees neither the
    queries nor the reference rows -- only ciphertexts and their shapes.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        server: str | None = None,
        tls: bool | str = False,
        projection: Any = None,
        n_components: int | None = None,
        params: CKKSParameters | None = None,
        batch_rows: int = 256,
        encrypt_reference: bool = False,
    ) -> None:
        self.n_neighbors, self.server, self.tls = n_neighbors, server, tls
        self.encrypt_reference = encrypt_reference
        self.projection, self.n_components, self.params, self.batch_rows = projection, n_components, params, batch_rows

    def fit(self, X: Any, y: Any) -> EncryptedKNeighborsClassifier:
        from ciphergrad.core.neighbors import pca_projection
        from ciphergrad.core.params import plan

        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors={self.n_neighbors} must be at least 1")
        reference, labels = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(labels)
        projection = self.projection
        if isinstance(projection, str):
            if projection != "pca" or not self.n_components:
                raise ValueError("projection='pca' needs n_components")
            projection = pca_projection(reference, self.n_components)
        self.close()
        address = self.server
        if address is None:
            self._local = contextlib.ExitStack()
            address = self._local.enter_context(local_server())
        self._client = Client(address, tls=self.tls)
        # One level for the distances, one more for a projection; column packing needs no rotation keys.
        params = self.params or plan(2)
        self._client.create_session(params, tiles=[choose_tile((2, 1), params.slots, "columns")])
        if self.encrypt_reference:
            self.reference_ = self._client.upload_encrypted_reference(
                reference, query_rows=self.batch_rows, projection=projection, display_name="kNN reference"
            )
        else:
            self.reference_ = self._client.upload_reference(reference, projection, display_name="kNN reference")
        self.projection_ = projection
        self.labels_ = labels
        self.classes_ = np.unique(labels)
        return self

    def kneighbors_distances(self, X: Any) -> np.ndarray:
        """Decrypted squared distances ``(references, queries)``."""
        check_is_fitted(self)
        if getattr(self, "_client", None) is None:
            raise RuntimeError("this classifier's session is closed (close() or a copy): call fit() again")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.encrypt_reference:  # the projection is the client's here: applied before encrypting
            return self._client.distances(self.reference_, X, projection=self.projection_)
        return self._client.distances(self.reference_, X, batch_rows=self.batch_rows)

    def predict(self, X: Any) -> np.ndarray:
        from ciphergrad.core.neighbors import knn_vote

        return knn_vote(self.kneighbors_distances(X), self.labels_, self.n_neighbors)

    def close(self) -> None:
        """Delete the session (the reference set with it) and stop the local server, if any."""
        client, local = getattr(self, "_client", None), getattr(self, "_local", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.delete_session()
            client.close()
        if local is not None:
            local.close()
        self._client = self._local = None

    def __enter__(self) -> EncryptedKNeighborsClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
