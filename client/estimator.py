"""scikit-learn estimators that train on a ciphergrad server without showing it the data.

They are ``sklearn.base.BaseEstimator``s with the regressor or classifier mixin, so ``clone``,
``get_params``/``set_params``, ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` work. The gradient-
descent estimators take their hyperparameters from the algorithm's core config (``core.algorithms``): the
constructor's keyword parameters are the config's fields (``fit_intercept`` stands for ``intercept_column``)
plus the connection settings, so a new config field is a new estimator parameter without code here.

``fit`` makes CKKS keys in this process, encrypts, uploads, trains remotely (answering masked refresh
requests) and decrypts the model; ``predict`` then runs on the decrypted model here. Without ``server`` a
throwaway local server (``client.local_server``) is started for the fit. ``fit_pool(client, pool_id)`` trains
instead on the rows several contributors encrypted into a pool of the client's session (client.pools): this
process then never holds the rows, only the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm import tqdm

from ciphergrad.client.local import local_server
from ciphergrad.client.sdk import Client, Transfer, default_parameters, training_layout
from ciphergrad.core import algorithms
from ciphergrad.core.data import with_intercept
from ciphergrad.core.layout import choose_tile
from ciphergrad.core.params import CKKSParameters

# Estimator parameters beyond the algorithm's hyperparameters, with their defaults.
_CONNECTION = {"server": None, "tls": False, "shuffles": 4, "fit_intercept": True, "params": None, "progress": None}
# Hyperparameters whose estimator default differs from the config's: solver None is the service's choice
# (core.algorithms.Algorithm.default_solver: "gram" for full batch, "gd" with batch_size).
_SERVICE_DEFAULTS = {"solver": None}


def _init_for(algorithm: algorithms.Algorithm) -> Callable[..., None]:
    """An ``__init__`` whose keyword parameters are ``_CONNECTION`` and the algorithm config's fields, stored
    as given (scikit-learn reads them back through the signature, as for any estimator)."""
    names = [f for f in dataclasses.fields(algorithm.config) if f.name != "intercept_column"]
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in _CONNECTION.items()]
    parameters += [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_SERVICE_DEFAULTS.get(f.name, f.default))
        for f in names
    ]
    signature = inspect.Signature(parameters)

    def __init__(self: Any, **params: Any) -> None:
        bound = signature.bind(self, **params)  # an unknown name raises TypeError naming it
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return __init__


def _bar(progress: bool | None, **kwargs: Any) -> tqdm:
    # disable=None lets tqdm switch itself off when stderr is not a terminal (logs, CI).
    return tqdm(disable=None if progress is None else not progress, file=sys.stderr, leave=False, **kwargs)


class _EncryptedGradientDescent(BaseEstimator):
    """What the gradient-descent estimators share: keys, encryption, upload, remote training with refresh
    answering, decryption and the report. Subclasses name the algorithm and how targets are encoded."""

    algorithm = ""

    def config(self) -> Any:
        """The core config of this estimator's hyperparameters (validates them)."""
        entry = algorithms.get(self.algorithm)
        values = {name: getattr(self, name) for name in entry.config_fields() if name != "intercept_column"}
        return entry.service_config({**values, "intercept_column": 0 if self.fit_intercept else None})

    def shuffle_orders(self, rows: int) -> list[np.ndarray]:
        """Row orders of the encrypted copies minibatch training visits (the torch twin needs them too)."""
        if not self.batch_size:
            return []
        return algorithms.get(self.algorithm).shuffle_orders(rows, self.shuffles, self.seed)

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        return y

    def fit(self, X: Any, y: Any) -> Any:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=not self._is_classifier())
        config = self.config()  # validates hyperparameters before any key is made
        design = with_intercept(X) if self.fit_intercept else X
        target = self._encode_target(y)
        if self.server is None:
            with local_server() as address:
                return self._fit(address, design, target, config)
        return self._fit(self.server, design, target, config)

    def _is_classifier(self) -> bool:
        return isinstance(self, ClassifierMixin)

    def _fit(self, address: str, X: np.ndarray, y: np.ndarray, config: Any) -> Any:
        params = self.params or default_parameters(self.algorithm)
        tile, rotations = training_layout(X.shape, params.slots, config)
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        with Client(address, tls=self.tls) as client:
            session = client.create_session(params, tiles=[tile], rotations=rotations, display_name=type(self).__name__)
            timings["session_seconds"] = time.perf_counter() - tick
            tick = time.perf_counter()
            with _bar(self.progress, desc="upload", unit="B", unit_scale=True) as bar:
                orders = self.shuffle_orders(len(X))
                dataset = client.upload(X, y, tile=tile, shuffle_orders=orders, progress=bar.update)
            timings["upload_seconds"] = time.perf_counter() - tick
            run = self._train(client, config, dataset_id=dataset.dataset_id)
            weights = client.weights(run.model)
            client.delete_session()  # the server keeps nothing of this fit
        self._store(weights, run, client.transfer, timings)
        self.report_.update(parameters=params.summary(), context_bytes=session.context_size_bytes)
        return self

    def fit_pool(self, client: Client, pool_id: str, *, standardize: bool = False) -> Any:
        """Train on every row contributed to the pool ``pool_id``; ``client`` holds the pool's session (the
        analyst's ``Client`` after ``create_pool``, or one restored with ``use_session``).

        The rows never reach this process: contributors encrypted them under this session's public key, the
        server trains on the concatenation of their contributions, and only the model (plus masked refreshes)
        is decrypted here. Pools train full batch (``batch_size`` must be None; the ``shuffles``, ``server``,
        ``tls`` and ``params`` parameters do not apply) and ``fit_intercept`` must match the pool's schema.
        A logistic pool's targets are 0/1, so ``classes_`` is ``[0.0, 1.0]``.

        Features are used as contributed (keep them roughly within [-1, 1]) unless ``standardize``: linear
        regression with the "gram" or "normal" solver then decrypts the pool's statistics (count, column means
        and variances: aggregates, never a row), and the server applies the standardization they give (every
        feature and the target to mean 0, deviation 1) inside its Gram statistics, so it learns those means and
        deviations (docs/threat-model.md, Pools). ``coef_`` and ``intercept_`` are mapped back to raw units,
        so ``predict`` takes raw features; ``report_["standardization"]`` holds the (scale, shift) used.
        After it: ``coef_``, ``intercept_``, ``n_features_in_``, ``feature_names_`` (the pool's schema),
        ``history_`` (losses in standardized units when standardized) and ``report_``, as after ``fit``; the
        pool stays on the server.
        """
        if self.batch_size is not None:
            raise ValueError(f"batch_size={self.batch_size}: pools train full batch; leave batch_size=None")
        if standardize and "standardization" not in algorithms.get(self.algorithm).config_fields():
            raise ValueError(f"standardize=True needs linear regression (gram or normal), not {self.algorithm}")
        pool = client.pool(pool_id)
        if bool(getattr(pool, "intercept", True)) != bool(self.fit_intercept):
            has = "has" if getattr(pool, "intercept", True) else "has no"
            raise ValueError(f"pool {pool_id} {has} an intercept column: set fit_intercept={not self.fit_intercept}")
        config = self.config()
        before = (dict(client.transfer.sent), dict(client.transfer.received))
        report: dict[str, Any] = {"pool_rows": pool.rows, "pool_contributions": pool.contributions}
        stats = None
        if standardize:
            stats = client.pool_statistics(pool_id)
            report["standardization"] = stats.standardization(target=True)
            config = dataclasses.replace(config, standardization=report["standardization"])  # checks the solver
        run = self._train(client, config, pool_id=pool_id)
        weights = client.weights(run.model)
        if stats is not None:
            weights = stats.raw_weights(weights, report["standardization"])
        transfer = Transfer(
            {k: v - before[0].get(k, 0) for k, v in client.transfer.sent.items()},
            {k: v - before[1].get(k, 0) for k, v in client.transfer.received.items()},
        )
        self._store(weights, run, transfer, report)
        self.n_features_in_ = len(pool.feature_names)
        self.feature_names_ = list(pool.feature_names)
        if self._is_classifier():
            self.classes_ = np.array([0.0, 1.0])
        return self

    def _train(self, client: Client, config: Any, **source: str) -> Any:
        """One training job on a dataset (``dataset_id=``) or a pool (``pool_id=``), with a progress bar."""
        with _bar(self.progress, desc="train", total=config.epochs, unit="epoch") as bar:

            def on_epoch(epoch: int, loss: float | None) -> None:
                bar.update(1)
                if loss is not None:
                    bar.set_postfix(loss=f"{loss:.6g}")

            return client.train(config=config, algorithm=self.algorithm, on_epoch=on_epoch, **source)

    def _store(self, weights: np.ndarray, run: Any, transfer: Transfer, report: dict[str, Any]) -> None:
        self.coef_ = weights[1:] if self.fit_intercept else weights
        self.intercept_ = float(weights[0]) if self.fit_intercept else 0.0
        self.history_ = list(run.losses)
        self.report_ = {
            **report,
            "train_seconds": run.seconds,
            "epoch_seconds": list(run.epoch_seconds),
            "refreshes": run.refreshes,
            "refresh_seconds": run.refresh_seconds,
            "operation_counts": dict(run.operation_counts),
            "bytes_sent": dict(transfer.sent),
            "bytes_received": dict(transfer.received),
            "bytes_total": transfer.total,
        }

    def _linear_output(self, X: Any) -> np.ndarray:
        """``X @ coef_ + intercept_`` with the decrypted model (the key holder's side; nothing leaves)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_ + self.intercept_


class EncryptedLinearRegression(RegressorMixin, _EncryptedGradientDescent):
    """Linear regression by encrypted gradient descent on a ciphergrad server.

    Parameters: ``server`` (``HOST:PORT``; None starts a local one), ``tls``, ``shuffles`` (encrypted row
    orders for minibatches), ``fit_intercept``, ``params`` (CKKS parameters; None: the planner's), ``progress``,
    and the fields of ``core.linear.LinearRegressionConfig`` (learning_rate, epochs, l2, batch_size, momentum,
    seed, init, solver, ...). ``solver``: "gram" (the default without ``batch_size``: one encrypted pass to
    ``X^T X / n`` and ``X^T y / n``, then epochs that cost the same for any number of rows; uploads column-
    packed), "normal" (one round trip: this process decrypts those aggregates and solves exactly) or "gd"
    (per-row gradient descent, the default with ``batch_size``). Keep features and target roughly in [-1, 1]
    (or standardized): CKKS holds a bounded range.

    After ``fit``: ``coef_``, ``intercept_``, ``n_features_in_``, ``history_`` (decrypted loss per epoch) and
    ``report_`` (timings, bytes moved, refreshes, HE operation counts). ``score`` is R², as in scikit-learn.
    """

    algorithm = "linear"
    __init__ = _init_for(algorithms.get("linear"))

    def predict(self, X: Any) -> np.ndarray:
        """Predictions from the decrypted model (the key holder's side; nothing leaves this process)."""
        return self._linear_output(X)


class EncryptedLogisticRegression(ClassifierMixin, _EncryptedGradientDescent):
    """Binary logistic regression by encrypted gradient descent on a ciphergrad server.

    Parameters as for EncryptedLinearRegression, with the fields of ``core.logistic.LogisticRegressionConfig``
    (``degree`` 3, 5 or 7 of the sigmoid polynomial on ``[-bound, bound]``; ``bound=None`` sizes it from the
    feature count). Standardize the features first. Any two labels are mapped onto 0/1 in sorted order
    (``classes_``); ``predict_proba`` applies the exact sigmoid to the decrypted model's logit.

    After ``fit``: ``coef_``, ``intercept_``, ``classes_``, ``history_`` (per-epoch Brier score of the
    polynomial probabilities) and ``report_``. ``score`` is the accuracy.
    """

    algorithm = "logistic"
    __init__ = _init_for(algorithms.get("logistic"))

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        check_classification_targets(y)
        kind = type_of_target(y, input_name="y")
        classes = np.unique(y)
        if kind == "multiclass":
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {kind}: y holds "
                f"{len(classes)} classes; train one model per class (one-vs-rest) for more"
            )
        if len(classes) != 2:
            raise ValueError(f"binary logistic regression needs two classes in y; got 1 class: {classes}")
        self.classes_ = classes
        return (y == classes[1]).astype(np.float64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def decision_function(self, X: Any) -> np.ndarray:
        """The logit ``X @ coef_ + intercept_`` of the decrypted model."""
        return self._linear_output(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` class probabilities (exact sigmoid of the decrypted model's logit)."""
        positive = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - positive, positive], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        positive = self.decision_function(X) > 0  # checks that the model is fitted before classes_ is read
        return self.classes_[positive.astype(int)]


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
