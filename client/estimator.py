"""Scikit-learn-style estimators that train on the server without showing it the data."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from client.local import local_server
from client.sdk import Client, default_parameters
from client.session import as_matrix
from core.data import with_intercept
from core.layout import choose_tile
from core.linear import LinearRegressionConfig
from core.linear import shuffle_orders as linear_shuffle_orders
from core.logistic import LogisticRegressionConfig
from core.logistic import shuffle_orders as logistic_shuffle_orders
from core.params import CKKSParameters


def _bar(progress: bool | None, **kwargs: Any) -> tqdm:
    # disable=None lets tqdm switch itself off when stderr is not a terminal (logs, CI).
    return tqdm(disable=None if progress is None else not progress, file=sys.stderr, leave=False, **kwargs)


class _EncryptedGradientDescent:
    """What the gradient-descent estimators share: keys, encryption, upload, remote training with refresh
    answering, decryption and the report. Subclasses name the algorithm and build its core config."""

    algorithm = ""
    _shuffle_orders: Any = None

    def config(self) -> Any:
        raise NotImplementedError

    def _design(self, X: Any) -> np.ndarray:
        X = as_matrix(X)
        return with_intercept(X) if self.fit_intercept else X

    def shuffle_orders(self, rows: int) -> list[np.ndarray]:
        """Row orders of the encrypted copies minibatch training visits (the torch twin needs them too)."""
        return type(self)._shuffle_orders(rows, self.shuffles, self.seed) if self.batch_size else []

    def _target(self, y: Any) -> np.ndarray:
        return as_matrix(y).reshape(-1)

    def fit(self, X: Any, y: Any) -> Any:
        config = self.config()  # validates hyperparameters before any key is made
        design, target = self._design(X), self._target(y)
        if len(design) != len(target):
            raise ValueError(f"X has {len(design)} rows but y has {len(target)}")
        if self.server is None:
            with local_server() as address:
                return self._fit(address, design, target, config)
        return self._fit(self.server, design, target, config)

    def _fit(self, address: str, X: np.ndarray, y: np.ndarray, config: Any) -> Any:
        params = self.params or default_parameters()
        tile = choose_tile(X.shape, params.slots, "rows", block_rows=config.batch_size)
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        with Client(address, tls=self.tls) as client:
            session = client.create_session(params, tiles=[tile], display_name=type(self).__name__)
            timings["session_seconds"] = time.perf_counter() - tick
            tick = time.perf_counter()
            with _bar(self.progress, desc="upload", unit="B", unit_scale=True) as bar:
                orders = self.shuffle_orders(len(X))
                dataset = client.upload(X, y, tile=tile, shuffle_orders=orders, progress=bar.update)
            timings["upload_seconds"] = time.perf_counter() - tick
            with _bar(self.progress, desc="train", total=config.epochs, unit="epoch") as bar:

                def on_epoch(epoch: int, loss: float | None) -> None:
                    bar.update(1)
                    if loss is not None:
                        bar.set_postfix(loss=f"{loss:.6g}")

                run = client.train(dataset.dataset_id, config, algorithm=self.algorithm, on_epoch=on_epoch)
            weights = client.weights(run.model)
            client.delete_session()  # the server keeps nothing of this fit
            transfer = client.transfer
        self.coef_ = weights[1:] if self.fit_intercept else weights
        self.intercept_ = float(weights[0]) if self.fit_intercept else 0.0
        self.history_ = list(run.losses)
        self.report_ = {
            **timings,
            "train_seconds": run.seconds,
            "epoch_seconds": list(run.epoch_seconds),
            "refreshes": run.refreshes,
            "refresh_seconds": run.refresh_seconds,
            "operation_counts": dict(run.operation_counts),
            "bytes_sent": dict(transfer.sent),
            "bytes_received": dict(transfer.received),
            "bytes_total": transfer.total,
            "parameters": params.summary(),
            "context_bytes": session.context_size_bytes,
        }
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """``X @ coef_ + intercept_`` with the decrypted model (the key holder's side; nothing leaves)."""
        return as_matrix(X) @ self.coef_ + self.intercept_


class EncryptedLinearRegression(_EncryptedGradientDescent):
    """Linear regression by encrypted gradient descent on a ciphergrad server.

    ``fit`` makes CKKS keys here, encrypts X and y, uploads them, trains remotely (answering the server's
    masked refresh requests) and decrypts the result. Without ``server`` a temporary local server
    (``client.local_server``) is started. Inputs may be numpy arrays, pandas frames/series or torch tensors;
    keep features and target roughly in [-1, 1] (min-max or standard scaling): CKKS holds only a bounded range.

    After ``fit``: ``coef_``, ``intercept_``, ``history_`` (decrypted loss per epoch) and ``report_``
    (timings, bytes moved, refreshes, HE operation counts).
    """

    algorithm = "linear"
    _shuffle_orders = staticmethod(linear_shuffle_orders)

    def __init__(
        self,
        *,
        server: str | None = None,
        tls: bool | str = False,
        learning_rate: float = 0.5,
        epochs: int = 50,
        l2: float = 0.0,
        momentum: float = 0.0,
        batch_size: int | None = None,
        shuffles: int = 4,
        seed: int = 0,
        init: str = "normal",
        fit_intercept: bool = True,
        params: CKKSParameters | None = None,
        progress: bool | None = None,
    ) -> None:
        self.server, self.tls = server, tls
        self.learning_rate, self.epochs, self.l2, self.momentum = learning_rate, epochs, l2, momentum
        self.batch_size, self.shuffles, self.seed, self.init = batch_size, shuffles, seed, init
        self.fit_intercept, self.params, self.progress = fit_intercept, params, progress

    def config(self) -> LinearRegressionConfig:
        return LinearRegressionConfig(
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            l2=self.l2,
            batch_size=self.batch_size,
            momentum=self.momentum,
            seed=self.seed,
            init=self.init,
            intercept_column=0 if self.fit_intercept else None,
        )

    def predict(self, X: Any) -> np.ndarray:
        """Predictions from the decrypted model (the key holder's side; nothing leaves this process)."""
        return self.decision_function(X)

    def score(self, X: Any, y: Any) -> float:
        """R² of the predictions, as in scikit-learn."""
        target = as_matrix(y).reshape(-1)
        residual = target - self.predict(X)
        centred = target - target.mean()
        return float(1.0 - residual @ residual / (centred @ centred))


class EncryptedLogisticRegression(_EncryptedGradientDescent):
    """Binary logistic regression by encrypted gradient descent on a ciphergrad server.

    The server evaluates the sigmoid as a least-squares polynomial of ``degree`` (3, 5 or 7) on
    ``[-bound, bound]`` (``bound=None``: sized from the feature count, see core.logistic.default_bound);
    standardize the features first. Labels are 0/1 (any two classes are mapped onto them, in sorted
    order, as ``classes_``). ``predict_proba`` applies the exact sigmoid to the decrypted model.

    After ``fit``: ``coef_``, ``intercept_``, ``classes_``, ``history_`` (decrypted per-epoch training loss:
    the mean squared error of the polynomial probabilities, i.e. the Brier score) and ``report_`` (as for
    EncryptedLinearRegression).
    """

    algorithm = "logistic"
    _shuffle_orders = staticmethod(logistic_shuffle_orders)

    def __init__(
        self,
        *,
        server: str | None = None,
        tls: bool | str = False,
        learning_rate: float = 1.0,
        epochs: int = 30,
        degree: int = 3,
        bound: float | None = None,
        l2: float = 0.0,
        momentum: float = 0.0,
        batch_size: int | None = None,
        shuffles: int = 4,
        seed: int = 0,
        fit_intercept: bool = True,
        params: CKKSParameters | None = None,
        progress: bool | None = None,
    ) -> None:
        self.server, self.tls = server, tls
        self.learning_rate, self.epochs, self.degree, self.bound = learning_rate, epochs, degree, bound
        self.l2, self.momentum, self.batch_size, self.shuffles, self.seed = l2, momentum, batch_size, shuffles, seed
        self.fit_intercept, self.params, self.progress = fit_intercept, params, progress

    def config(self) -> LogisticRegressionConfig:
        return LogisticRegressionConfig(
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            degree=self.degree,
            bound=self.bound,
            batch_size=self.batch_size,
            momentum=self.momentum,
            l2=self.l2,
            seed=self.seed,
            intercept_column=0 if self.fit_intercept else None,
        )

    def _target(self, y: Any) -> np.ndarray:
        labels = np.asarray(as_matrix(y).reshape(-1))
        classes = np.unique(labels)
        if len(classes) != 2:
            raise ValueError(f"binary logistic regression needs two classes in y, got {len(classes)}")
        self.classes_ = classes
        return (labels == classes[1]).astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` class probabilities (exact sigmoid of the decrypted model's logit)."""
        positive = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - positive, positive], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy, as in scikit-learn."""
        return float(np.mean(self.predict(X) == np.asarray(as_matrix(y).reshape(-1))))


class EncryptedKNeighborsClassifier:
    """k-nearest-neighbour classification of encrypted queries against a plaintext reference set on a server.

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
        self._client: Client | None = None
        self._local: Any = None

    def fit(self, X: Any, y: Any) -> EncryptedKNeighborsClassifier:
        from core.neighbors import pca_projection
        from core.params import plan

        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors={self.n_neighbors} must be at least 1")
        reference, labels = as_matrix(X), np.asarray(y).reshape(-1)
        if len(reference) != len(labels):
            raise ValueError(f"X has {len(reference)} rows but y has {len(labels)}")
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
        if self._client is None:
            raise RuntimeError("call fit() first")
        if self.encrypt_reference:  # the projection is the client's here: applied before encrypting
            return self._client.distances(self.reference_, X, projection=self.projection_)
        return self._client.distances(self.reference_, X, batch_rows=self.batch_rows)

    def predict(self, X: Any) -> np.ndarray:
        from core.neighbors import knn_vote

        return knn_vote(self.kneighbors_distances(X), self.labels_, self.n_neighbors)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy, as in scikit-learn."""
        return float(np.mean(self.predict(X) == np.asarray(y).reshape(-1)))

    def close(self) -> None:
        """Delete the session (the reference set with it) and stop the local server, if any."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.delete_session()
            self._client.close()
            self._client = None
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> EncryptedKNeighborsClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
