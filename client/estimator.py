"""scikit-learn estimators that train on a ciphergrad server without showing it the data.

They are ``sklearn.base.BaseEstimator``s with the regressor or classifier mixin, so ``clone``,
``get_params``/``set_params``, ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` work. Their
``__init__`` spells out every parameter: the connection settings and the fields of the algorithm's core
config (``core.algorithms``; ``fit_intercept`` stands for ``intercept_column``).

Safe by default: ``fit`` standardizes the rows it owns before encrypting them (and maps the model back),
refuses values CKKS cannot hold, runs the exact one-round-trip solver unless told otherwise, derives a step
that cannot diverge for the iterative ones, stops a run whose decrypted loss stops making sense
(``core.convergence``) and warns when an iterative run ends unconverged. It makes CKKS keys in this
process, encrypts, uploads, trains remotely (answering masked refresh requests) and decrypts the model;
``predict`` then runs on the decrypted model here. Without ``server`` a
throwaway local server (``client.local_server``) is started for the fit. ``fit_pool(client, pool_id)`` trains
instead on the rows several contributors encrypted into a pool of the client's session (client.pools): this
process then never holds the rows, only the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm import tqdm

from ciphergrad.client.local import local_server
from ciphergrad.client.sdk import Client, Transfer, default_parameters, training_layout
from ciphergrad.core import algorithms, randomness
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.convergence import CONVERGED_BELOW, LossWatch, gradient_norm, safe_learning_rate
from ciphergrad.core.data import with_intercept
from ciphergrad.core.layout import choose_tile
from ciphergrad.core.params import CKKSParameters


def _bar(progress: bool | None, **kwargs: Any) -> tqdm:
    # disable=None lets tqdm switch itself off when stderr is not a terminal (logs, CI).
    return tqdm(disable=None if progress is None else not progress, file=sys.stderr, leave=False, **kwargs)


@dataclass(frozen=True)
class _Scaling:
    """The key holder's conditioning of its own rows: features centred (with an intercept) and divided by
    their deviation, a regression target likewise; ``model`` maps the weights learned on them back."""

    features: Standardizer
    target: Standardizer | None

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray | None, center: bool) -> _Scaling:
        def standardizer(values: np.ndarray) -> Standardizer:
            found = Standardizer.fit(values)
            if center:
                return found
            scale = np.sqrt(np.mean(values**2, axis=0))
            return Standardizer(np.zeros(values.shape[1]), np.where(scale > 0, scale, 1.0))

        return cls(standardizer(X), None if y is None else standardizer(y[:, None]))

    @classmethod
    def identity(cls, features: int, target: bool) -> _Scaling:
        return cls(Standardizer(np.zeros(features), np.ones(features)),
                   Standardizer(np.zeros(1), np.ones(1)) if target else None)

    def rows(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Xs = self.features.transform(X)
        return Xs, (y if self.target is None else self.target.transform(y[:, None])[:, 0])

    def model(self, weights: np.ndarray, fit_intercept: bool) -> tuple[float, np.ndarray]:
        """``(intercept, coef)`` on the original units for ``weights`` learned on the scaled rows."""
        intercept, coef = (float(weights[0]), weights[1:]) if fit_intercept else (0.0, weights)
        intercept, coef = self.features.original_weights(intercept, coef)
        if self.target is not None:
            scale, shift = float(self.target.scale[0]), float(self.target.mean[0])
            intercept, coef = scale * intercept + shift, scale * coef
        return intercept, coef


class _EncryptedGradientDescent(BaseEstimator):
    """What the trained linear models share: scaling, keys, encryption, upload, remote training (answering
    refreshes, watching the decrypted losses), decryption, the model mapped back and the report. Subclasses
    name the algorithm, their exact and iterative solvers and how targets are encoded."""

    algorithm = ""
    _divergence_hint = ""  # what to change when the decrypted loss stops making sense
    exact_solver = ""  # the one-round-trip solver: the default without batch_size

    # -- hyperparameters --------------------------------------------------------------------------
    def _solver(self) -> str:
        if self.solver is not None:
            return self.solver
        return self.exact_solver if self.batch_size is None else "gd"

    def _iterative(self) -> bool:
        return self._solver() in ("gd", "gram")

    def config(self, learning_rate: float | None = None) -> Any:
        """The core config of this estimator's hyperparameters (validates them). ``learning_rate`` stands in
        for a ``learning_rate=None`` (``fit`` derives one from the data); else the config's default."""
        entry = algorithms.get(self.algorithm)
        values = {name: getattr(self, name) for name in entry.config_fields() if hasattr(self, name)}
        values.pop("intercept_column", None)
        values["solver"] = self._solver()
        rate = self.learning_rate if self.learning_rate is not None else learning_rate
        if rate is None:
            values.pop("learning_rate")
        else:
            values["learning_rate"] = rate
        return entry.service_config({**values, "intercept_column": 0 if self.fit_intercept else None})

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        return y

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> Any:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=not self._is_classifier())
        self.config()  # validates hyperparameters before any key is made
        target = self._encode_target(y)
        params = self.params or default_parameters(self.algorithm)
        if self.standardize:
            scaling = _Scaling.fit(X, None if self._is_classifier() else target, center=self.fit_intercept)
        else:
            scaling = _Scaling.identity(X.shape[1], not self._is_classifier())
        Xs, ys = scaling.rows(X, target)
        _check_range(Xs, ys, params.max_abs_value / 4, self.standardize)
        design = with_intercept(Xs) if self.fit_intercept else Xs
        rate = safe_learning_rate(design, logistic=self._is_classifier()) if self._iterative() else None
        config = self._with_classes(self.config(rate))
        table, column = self._table(design, ys)
        if self.server is None:
            with local_server() as address:
                self._fit(address, params, table, column, config)
        else:
            self._fit(self.server, params, table, column, config)
        models = self.weights_.reshape(-1, design.shape[1])  # one row per class (one-vs-rest), else one
        mapped = [scaling.model(weights, self.fit_intercept) for weights in models]
        if len(mapped) == 1:
            self.intercept_, self.coef_ = mapped[0]
        else:
            self.intercept_ = np.array([intercept for intercept, _ in mapped])
            self.coef_ = np.stack([coef for _, coef in mapped])
        self.config_ = config
        self._report_convergence(design, ys, models[0], config)
        return self

    def _with_classes(self, config: Any) -> Any:
        return config

    def _table(self, design: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What is encrypted and uploaded: the design and one target column."""
        return design, target

    def _report_convergence(self, design: np.ndarray, target: np.ndarray, weights: np.ndarray, config: Any) -> None:
        """Iterative solvers: the gradient norm at the decrypted model on the scaled rows (the key holder's own
        plaintext), and a ConvergenceWarning when it is not small."""
        if not self._iterative():
            self.report_.update(converged=True, gradient_norm=None)
            return
        norm = gradient_norm(design, target, weights, logistic=self._is_classifier(), l2=config.l2,
                             intercept_column=config.intercept_column)
        converged = norm <= CONVERGED_BELOW
        self.report_.update(converged=converged, gradient_norm=norm)
        if not converged:
            warnings.warn(
                f"{type(self).__name__}(solver={config.solver!r}) stopped after {config.epochs} epochs unconverged: "
                f"gradient norm {norm:.3g} > {CONVERGED_BELOW:g} on the scaled rows; raise epochs, or use "
                f"solver={self.exact_solver!r} (exact, one round trip)",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _is_classifier(self) -> bool:
        return isinstance(self, ClassifierMixin)

    def _fit(self, address: str, params: CKKSParameters, X: np.ndarray, y: np.ndarray, config: Any) -> None:
        tile, rotations = training_layout(X.shape, params.slots, config)
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        with Client(address, tls=self.tls) as client:
            session = client.create_session(params, tiles=[tile], rotations=rotations, display_name=type(self).__name__)
            timings["session_seconds"] = time.perf_counter() - tick
            tick = time.perf_counter()
            with _bar(self.progress, desc="upload", unit="B", unit_scale=True) as bar:
                # Drawn from the CSPRNG here and kept here: the server gets the encrypted copies, never the orders.
                orders = randomness.shuffle_orders(len(X), self.shuffles) if self.batch_size else []
                self.shuffle_orders_ = orders  # the batches the run visited, for a plaintext twin to replay
                dataset = client.upload(X, y, tile=tile, shuffle_orders=orders, progress=bar.update)
            timings["upload_seconds"] = time.perf_counter() - tick
            run = self._train(client, config, dataset_id=dataset.dataset_id)
            weights = client.weights(run.model)
            client.delete_session()  # the server keeps nothing of this fit
        self._store(weights, run, client.transfer, timings)
        self.report_.update(parameters=params.summary(), context_bytes=session.context_size_bytes)

    def fit_pool(self, client: Client, pool_id: str) -> Any:
        """Fit to the sealed release of the pool ``pool_id``; ``client`` holds the pool's session (the
        analyst's ``Client`` after ``create_pool``, or one restored with ``use_session``).

        No row reaches this process or the server: contributors sent encrypted sufficient statistics, the
        server sealed their one release, and this key holder decrypts it and solves exactly (ridge for the
        regressor, the quadratic logistic surrogate one-vs-rest for the classifier; ``l2`` and ``bound`` apply,
        on features standardized with the released means and deviations, here). The weights go back freshly
        encrypted as the server's model. ``coef_`` and ``intercept_`` are in data units; ``classes_`` are the
        pool's labels; ``report_["release"]`` holds the release's rows, contributors and privacy.
        """
        pool = client.pool(pool_id)
        if self._is_classifier() != bool(pool.classes):
            kind = "a classification" if pool.classes else "a regression"
            raise ValueError(f"pool {pool_id} is {kind} pool: use Encrypted"
                             f"{'LogisticRegression' if pool.classes else 'LinearRegression'}")
        if not self.fit_intercept:
            raise ValueError("a pool's model always has an intercept: set fit_intercept=True")
        before = (dict(client.transfer.sent), dict(client.transfer.received))
        settings = {"l2": self.l2, **({"bound": self.bound} if self._is_classifier() else {})}
        run = client.train(pool_id=pool_id, config={k: v for k, v in settings.items() if v is not None},
                           algorithm="logistic" if pool.classes else "linear")
        weights = np.asarray(client.weights(run.model), dtype=np.float64).reshape(-1, len(pool.feature_names) + 1)
        transfer = Transfer(
            {k: v - before[0].get(k, 0) for k, v in client.transfer.sent.items()},
            {k: v - before[1].get(k, 0) for k, v in client.transfer.received.items()},
        )
        release = {"rows": pool.rows, "contributions": pool.contributions, "contributors": pool.contributors,
                   "mechanism": pool.mechanism, "epsilon": pool.epsilon, "delta": pool.delta}
        self._store(weights.reshape(-1), run, transfer, {"release": release})
        if len(weights) == 1:
            self.intercept_, self.coef_ = float(weights[0, 0]), weights[0, 1:]
        else:
            self.intercept_, self.coef_ = weights[:, 0], weights[:, 1:]
        self.config_ = self.config()
        self.n_features_in_ = len(pool.feature_names)
        self.feature_names_ = list(pool.feature_names)
        if self._is_classifier():
            self.classes_ = np.array(pool.classes)
        return self

    def _train(self, client: Client, config: Any, **source: str) -> Any:
        """One training job on a dataset (``dataset_id=``) or a pool (``pool_id=``), with a progress bar."""
        with _bar(self.progress, desc="train", total=config.epochs, unit="epoch") as bar:

            def on_epoch(epoch: int, loss: float | None) -> None:
                bar.update(1)
                if loss is not None:
                    bar.set_postfix(loss=f"{loss:.6g}")

            watch = LossWatch(hint=self._divergence_hint)
            return client.train(config=config, algorithm=self.algorithm, on_epoch=on_epoch, watch=watch, **source)

    def _store(self, weights: np.ndarray, run: Any, transfer: Transfer, report: dict[str, Any]) -> None:
        self.weights_ = np.asarray(weights, dtype=np.float64)
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


def _fitted_copy(estimator: Any, target: Any) -> Any:
    """``target`` (an unfitted scikit-learn model) carrying ``estimator``'s decrypted coefficients."""
    check_is_fitted(estimator)
    target.coef_ = np.array(estimator.coef_, dtype=np.float64)
    target.intercept_ = np.array(estimator.intercept_, dtype=np.float64) if np.ndim(estimator.intercept_) else \
        float(estimator.intercept_)
    target.n_features_in_ = estimator.n_features_in_
    if hasattr(estimator, "feature_names_in_"):
        target.feature_names_in_ = estimator.feature_names_in_
    return target


def _check_range(X: np.ndarray, y: np.ndarray, limit: float, standardized: bool) -> None:
    """A value CKKS cannot hold at these parameters is an error naming it, never a silently wrong model."""
    for values, what in ((X, "feature"), (y.reshape(len(y), -1), "target")):
        if values.size == 0:
            continue
        row, column = np.unravel_index(np.argmax(np.abs(values)), values.shape)
        largest = float(values[row, column])
        if abs(largest) >= limit:
            where = f"feature column {column}" if what == "feature" else "the target"
            units = "standard deviations from its mean " if standardized else ""
            raise ValueError(
                f"{where}, row {row}: {largest:.4g} {units}is past what CKKS holds at these parameters "
                f"(|v| < {limit:g}): clip or transform that column (e.g. log), or pass params with a larger first "
                "prime (CKKSParameters.integer_bits)" + ("" if standardized else ", or keep standardize=True")
            )


_COMMON_DOC = """
    Parameters
    ----------
    server : str or None
        ``HOST:PORT`` of a ciphergrad server; None starts a throwaway local one for the fit.
    tls : bool or str
        False (plaintext: loopback), True (system roots) or the path of a PEM CA certificate.
    solver : str or None
        None: {exact!r} (exact, one round trip) without ``batch_size``, "gd" with it. {solvers}
    learning_rate : float or None
        Step of the iterative solvers; None derives one that cannot diverge from the scaled rows (1/L rounded
        down to a power of two, L the gradient's Lipschitz constant). The server receives it, so it learns
        ``floor(log2 L)`` of these rows (docs/threat-model.md: under 3 bits for 80 standardized features);
        pass a number to send nothing derived from the data. Unused by {exact!r}.
    epochs, l2, batch_size, momentum
        Gradient descent: passes, ridge penalty (mean loss + l2/2 |w|^2, intercept unpenalized), power-of-two
        minibatch (None: full batch), momentum. ``l2`` applies to {exact!r} too. Minibatches visit
        ``shuffles`` encrypted copies of the rows in orders drawn here from a CSPRNG (``core.randomness``);
        the orders never leave this process (``shuffle_orders_`` after ``fit``) and no seed reproduces them.
    standardize : bool
        Centre (with an intercept) and scale features{target} here before encrypting, and map the model back:
        ``coef_`` and ``intercept_`` are in the original units. Values past what CKKS holds are an error.
    fit_intercept, shuffles, params, progress
        A column of ones; encrypted row orders for minibatches; CKKS parameters (None: the planner's);
        progress bars (None: when stderr is a terminal).
"""


class EncryptedLinearRegression(RegressorMixin, _EncryptedGradientDescent):
    """Linear regression trained on a ciphergrad server that never sees the data.

    ``fit`` standardizes, makes CKKS keys in this process, encrypts, uploads, trains remotely and decrypts
    the model. The default solver, "normal", is exact like scikit-learn's ``LinearRegression``: one
    encrypted pass to ``X^T X / n`` and ``X^T y / n``, which this process decrypts and solves. Iterative
    solvers stop with ``DivergenceError`` when a decrypted loss stops making sense and warn
    (``ConvergenceWarning``) when they end unconverged.
    {common}
    init, init_seed
        "gd"/"gram": initial weights N(0, 1) from ``init_seed`` (reproducible: a starting point protects
        nothing) or "zeros".

    After ``fit``: ``coef_``, ``intercept_``, ``n_features_in_``, ``config_`` (the core config that ran),
    ``history_`` (decrypted loss per epoch, scaled units) and ``report_`` (timings, bytes moved, refreshes,
    HE operation counts, ``converged`` and ``gradient_norm``). ``score`` is R², as in scikit-learn.
    """

    algorithm = "linear"
    exact_solver = "normal"
    _divergence_hint = "lower learning_rate (None derives a step from the data), or use solver='normal' (exact)"

    def __init__(
        self,
        *,
        server: str | None = None,
        tls: bool | str = False,
        solver: str | None = None,
        learning_rate: float | None = None,
        epochs: int = 50,
        l2: float = 0.0,
        batch_size: int | None = None,
        momentum: float = 0.0,
        init: str = "normal",
        init_seed: int = 0,
        standardize: bool = True,
        fit_intercept: bool = True,
        shuffles: int = 4,
        params: CKKSParameters | None = None,
        progress: bool | None = None,
    ) -> None:
        self.server, self.tls, self.solver, self.learning_rate = server, tls, solver, learning_rate
        self.epochs, self.l2, self.batch_size, self.momentum = epochs, l2, batch_size, momentum
        self.init, self.init_seed, self.standardize, self.fit_intercept = init, init_seed, standardize, fit_intercept
        self.shuffles, self.params, self.progress = shuffles, params, progress

    def predict(self, X: Any) -> np.ndarray:
        """Predictions from the decrypted model (the key holder's side; nothing leaves this process)."""
        return self._linear_output(X)

    def to_sklearn(self) -> Any:
        """The decrypted model as a fitted scikit-learn ``LinearRegression`` (same predictions; no server)."""
        from sklearn.linear_model import LinearRegression

        return _fitted_copy(self, LinearRegression(fit_intercept=self.fit_intercept))


class EncryptedLogisticRegression(ClassifierMixin, _EncryptedGradientDescent):
    """Logistic regression trained on a ciphergrad server that never sees the data.

    The default solver, "quadratic", costs what linear regression costs: one encrypted pass to
    ``X^T X / n`` and ``X^T y / n`` and one round trip, in which this process solves the logistic loss's
    quadratic surrogate on ``[-bound, bound]`` (``core.quadratic``). More than two classes train one-vs-rest
    on that one pass: the 0/1 indicators of all classes but the last are encrypted beside the features, so K
    classes cost one pass plus K right-hand sides; ``coef_`` is then ``(K, n_features)``. "gd" is per-row
    gradient descent with a polynomial sigmoid of ``degree`` 3, 5 or 7 (two classes). Labels of any kind are
    sorted into ``classes_``; ``predict_proba`` applies the exact sigmoid to the decrypted logits.
    {common}
    degree, bound
        The sigmoid polynomial's degree ("gd") and the logit range of the polynomial approximations (None:
        4 for "quadratic", 8 and up with the feature count for "gd").

    After ``fit``: ``coef_``, ``intercept_``, ``classes_``, ``config_``, ``history_`` ("gd": per-epoch Brier
    score of the polynomial probabilities) and ``report_``. ``score`` is the accuracy.
    """

    algorithm = "logistic"
    exact_solver = "quadratic"
    _divergence_hint = (
        "logits likely left the sigmoid polynomial's range [-bound, bound] (separable classes grow the weights): "
        "raise l2 (e.g. 0.01) or bound, lower learning_rate, or use solver='quadratic'"
    )

    def __init__(
        self,
        *,
        server: str | None = None,
        tls: bool | str = False,
        solver: str | None = None,
        learning_rate: float | None = None,
        epochs: int = 30,
        l2: float = 0.1,
        batch_size: int | None = None,
        momentum: float = 0.0,
        degree: int = 3,
        bound: float | None = None,
        standardize: bool = True,
        fit_intercept: bool = True,
        shuffles: int = 4,
        params: CKKSParameters | None = None,
        progress: bool | None = None,
    ) -> None:
        self.server, self.tls, self.solver, self.learning_rate = server, tls, solver, learning_rate
        self.epochs, self.l2, self.batch_size, self.momentum = epochs, l2, batch_size, momentum
        self.degree, self.bound, self.standardize, self.fit_intercept = degree, bound, standardize, fit_intercept
        self.shuffles, self.params, self.progress = shuffles, params, progress

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"logistic regression needs at least two classes in y; got 1 class: {classes}")
        if len(classes) > 2 and self._solver() != "quadratic":
            raise ValueError(
                f"y holds {len(classes)} classes: one-vs-rest trains them from one pass with solver='quadratic' "
                f"(the default); solver={self._solver()!r} is binary"
            )
        self.classes_ = classes
        if len(classes) == 2:
            return codes.astype(np.float64)
        return np.eye(len(classes))[codes]  # one-hot: one 0/1 target per class

    def _with_classes(self, config: Any) -> Any:
        return dataclasses.replace(config, classes=len(self.classes_)) if len(self.classes_) > 2 else config

    def _table(self, design: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Several classes: the indicators of all but the last ride along as columns after the design, so one
        pass gives X^T X and every class's X^T y (core.quadratic, one-vs-rest)."""
        if target.ndim == 1:
            return design, target
        return np.hstack([design, target[:, :-1]]), target[:, -1]

    def decision_function(self, X: Any) -> np.ndarray:
        """The logit ``X @ coef_ + intercept_`` of the decrypted model: ``(n,)``, or ``(n, K)`` per class."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ np.asarray(self.coef_).T + self.intercept_

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, K)`` class probabilities: the exact sigmoid of each logit (one-vs-rest: normalized over the
        classes, as scikit-learn's one-vs-rest does)."""
        logits = self.decision_function(X)
        positive = 1.0 / (1.0 + np.exp(-logits))
        if positive.ndim == 1:
            return np.stack([1.0 - positive, positive], axis=1)
        return positive / positive.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        logits = self.decision_function(X)  # checks that the model is fitted before classes_ is read
        if logits.ndim == 1:
            return self.classes_[(logits > 0).astype(int)]
        return self.classes_[np.argmax(logits, axis=1)]

    def to_sklearn(self) -> Any:
        """The decrypted model as a fitted scikit-learn ``LogisticRegression``: the same ``decision_function``
        and ``predict``, and for two classes the same ``predict_proba``. With more classes scikit-learn takes
        the softmax of the one-vs-rest logits, where ``predict_proba`` here normalizes their sigmoids."""
        from sklearn.linear_model import LogisticRegression

        model = _fitted_copy(self, LogisticRegression(C=1.0 / self.l2 if self.l2 else np.inf,
                                                      fit_intercept=self.fit_intercept))
        model.coef_, model.intercept_ = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
        model.classes_ = np.array(self.classes_)
        return model


_SOLVERS_DOC = {
    "linear": '"normal", "gram" (gradient descent on the encrypted X^T X / n) or "gd" (per row).',
    "logistic": '"quadratic" or "gd" (per row, polynomial sigmoid).',
}
for _estimator in (EncryptedLinearRegression, EncryptedLogisticRegression):
    _estimator.__doc__ = _estimator.__doc__.format(common=_COMMON_DOC.format(
        exact=_estimator.exact_solver, solvers=_SOLVERS_DOC[_estimator.algorithm],
        target=" and the target" if _estimator.algorithm == "linear" else "",
    ))


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
