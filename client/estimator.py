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

import dataclasses
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ciphergrad.client.estimator_base import COMMON_DOC, EncryptedGradientDescent, fitted_copy
from ciphergrad.client.neighbors import EncryptedKNeighborsClassifier
from ciphergrad.core.params import CKKSParameters

__all__ = ["EncryptedKNeighborsClassifier", "EncryptedLinearRegression", "EncryptedLogisticRegression"]


class EncryptedLinearRegression(RegressorMixin, EncryptedGradientDescent):
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
        keep_session: bool = False,
    ) -> None:
        self.server, self.tls, self.solver, self.learning_rate = server, tls, solver, learning_rate
        self.epochs, self.l2, self.batch_size, self.momentum = epochs, l2, batch_size, momentum
        self.init, self.init_seed, self.standardize, self.fit_intercept = init, init_seed, standardize, fit_intercept
        self.shuffles, self.params, self.progress = shuffles, params, progress
        self.keep_session = keep_session

    def predict(self, X: Any) -> np.ndarray:
        """Predictions from the decrypted model (the key holder's side; nothing leaves this process)."""
        return self._linear_output(X)

    def to_sklearn(self) -> Any:
        """The decrypted model as a fitted scikit-learn ``LinearRegression`` (same predictions; no server)."""
        from sklearn.linear_model import LinearRegression

        return fitted_copy(self, LinearRegression(fit_intercept=self.fit_intercept))


class EncryptedLogisticRegression(ClassifierMixin, EncryptedGradientDescent):
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
    refine_steps
        "quadratic", two classes: after the one-pass solution take this many per-row steps preconditioned by
        ``(X^T X / 4n + l2 I')^-1`` (Böhning's fixed Hessian bound; ``core.refine``), with the sigmoid
        polynomial of ``degree`` on ``[-bound, bound]`` (None: 8 and up, as "gd"). 0 (default): none.

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
        refine_steps: int = 0,
        standardize: bool = True,
        fit_intercept: bool = True,
        shuffles: int = 4,
        params: CKKSParameters | None = None,
        progress: bool | None = None,
        keep_session: bool = False,
    ) -> None:
        self.server, self.tls, self.solver, self.learning_rate = server, tls, solver, learning_rate
        self.epochs, self.l2, self.batch_size, self.momentum = epochs, l2, batch_size, momentum
        self.degree, self.bound, self.standardize, self.fit_intercept = degree, bound, standardize, fit_intercept
        self.refine_steps = refine_steps
        self.shuffles, self.params, self.progress = shuffles, params, progress
        self.keep_session = keep_session

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

        model = fitted_copy(self, LogisticRegression(C=1.0 / self.l2 if self.l2 else np.inf,
                                                      fit_intercept=self.fit_intercept))
        model.coef_, model.intercept_ = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
        model.classes_ = np.array(self.classes_)
        return model


_SOLVERS_DOC = {
    "linear": '"normal", "gram" (gradient descent on the encrypted X^T X / n) or "gd" (per row).',
    "logistic": '"quadratic" or "gd" (per row, polynomial sigmoid).',
}
for _estimator in (EncryptedLinearRegression, EncryptedLogisticRegression):
    _estimator.__doc__ = _estimator.__doc__.format(common=COMMON_DOC.format(
        exact=_estimator.exact_solver, solvers=_SOLVERS_DOC[_estimator.algorithm],
        target=" and the target" if _estimator.algorithm == "linear" else "",
    ))
