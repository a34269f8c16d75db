"""What the encrypted estimators share: the scikit-learn base class that conditions the rows it owns, fits
through a server (or a pool's release) and decrypts the model (``EncryptedGradientDescent``), the key holder's
scaling (``Scaling``) and the shared parameter documentation.

Safe by default: ``fit`` standardizes the rows it owns before encrypting them (and maps the model back),
refuses values CKKS cannot hold, runs the exact one-round-trip solver unless told otherwise, derives a step
that cannot diverge for the iterative ones, stops a run whose decrypted loss stops making sense
(``core.convergence``) and warns when an iterative run ends unconverged.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm import tqdm

from ciphergrad.client.local import local_server
from ciphergrad.client.sdk import Client, Transfer, default_parameters, training_layout
from ciphergrad.core import algorithms, randomness
from ciphergrad.core.conditioning import Standardizer
from ciphergrad.core.convergence import CONVERGED_BELOW, LossWatch, gradient_norm, safe_learning_rate
from ciphergrad.core.data import with_intercept
from ciphergrad.core.params import CKKSParameters


def _bar(progress: bool | None, **kwargs: Any) -> tqdm:
    # disable=None lets tqdm switch itself off when stderr is not a terminal (logs, CI).
    return tqdm(disable=None if progress is None else not progress, file=sys.stderr, leave=False, **kwargs)


@dataclass(frozen=True)
class Scaling:
    """The key holder's conditioning of its own rows: features centred (with an intercept) and divided by
    their deviation, a regression target likewise; ``model`` maps the weights learned on them back."""

    features: Standardizer
    target: Standardizer | None

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray | None, center: bool) -> Scaling:
        def standardizer(values: np.ndarray) -> Standardizer:
            found = Standardizer.fit(values)
            if center:
                return found
            scale = np.sqrt(np.mean(values**2, axis=0))
            return Standardizer(np.zeros(values.shape[1]), np.where(scale > 0, scale, 1.0))

        return cls(standardizer(X), None if y is None else standardizer(y[:, None]))

    @classmethod
    def identity(cls, features: int, target: bool) -> Scaling:
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


@dataclass(frozen=True)
class KeptSession:
    """What reaches a model kept on the server after ``fit(keep_session=True)``: the session's token and its
    key holder, SECRET key included. Keep it as secret as the data (``ciphergrad train --keep-model`` writes
    it to a key directory readable by its owner only); ``Client.use_session`` reopens it."""

    server: str
    tls: bool | str
    session_id: str
    token: str = field(repr=False)
    key_holder: Any = field(repr=False)
    model_id: str = ""
    dataset_id: str = ""


class EncryptedGradientDescent(BaseEstimator):
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
            scaling = Scaling.fit(X, None if self._is_classifier() else target, center=self.fit_intercept)
        else:
            scaling = Scaling.identity(X.shape[1], not self._is_classifier())
        if self.keep_session and self.server is None:
            raise ValueError("keep_session=True keeps the model on a server you name (server='HOST:PORT'): a "
                             "throwaway local server forgets it when fit returns")
        self.scaling_ = scaling
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
        # A session deleted after the fit gets the training's Galois keys only (a smaller context to make,
        # send and load); a kept one also those of Predict and the other calls on its data and model.
        tile, rotations = training_layout(X.shape, params.slots, config, serving=self.keep_session)
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        with Client(address, tls=self.tls) as client:
            session = client.create_session(params, tiles=[tile] if self.keep_session else [], rotations=rotations,
                                            display_name=type(self).__name__)
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
            if self.keep_session:
                self.session_ = KeptSession(address, self.tls, client.session_id, client.token, client.key_holder,
                                            run.model.model_id, dataset.dataset_id)
            else:
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


def fitted_copy(estimator: Any, target: Any) -> Any:
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


COMMON_DOC = """
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
    keep_session : bool
        Keep the session, the encrypted rows and the encrypted model on ``server`` after ``fit`` (default: the
        session is deleted). ``session_`` then holds its token and key holder, secret key included
        (``ciphergrad train --keep-model`` stores them in a private key directory for ``ciphergrad predict``).
"""
