"""The one registry of trainable algorithms: adding one means its core module (config, trainer, twin) and a
line in ``ALGORITHMS``. The wire enum, the server's job runner, the SDK, the estimators and the CLI read it.

Each entry names its config dataclass, the trainer class for a config (``trainer_for``: an algorithm may
offer several solvers, each with its twin, ``twin_for``, and the service picks one when a job names none,
``service_config``), the plaintext twin (torch, imported only when called), how decrypted weights become
coefficients and the levels one step needs between refreshes (what ``default_parameters`` plans for).
Trainers report their own model metadata (``metadata()``). Row orders of encrypted shuffles belong to no
algorithm and to no config: the key holder draws and keeps them (``core.randomness.shuffle_orders``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ciphergrad.core import gram_training, linear, logistic, quadratic, refine
from ciphergrad.core.errors import ParameterError
from ciphergrad.core.training import GradientDescentConfig, GradientTrainer


@dataclass(frozen=True)
class Algorithm:
    name: str  # what users type: Client.train(algorithm=...), the CLI
    wire_name: str  # the ciphergrad.v1.Algorithm enum value's name
    config: type[GradientDescentConfig]
    trainer: type[GradientTrainer]
    twin: Callable[..., Any]  # fit_torch(X, y, config, orders): the float64 torch twin
    decode: Callable[[np.ndarray, float], np.ndarray]  # (decrypted weights, Model.weight_scale) -> coefficients
    levels_per_step: int
    # Trainers by ``config.solver`` for algorithms with several solvers; ``trainer`` runs any other config.
    solvers: Mapping[str, type] = field(default_factory=dict)
    twins: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # by ``config.solver``, like ``solvers``
    # The service's solver when a job names none, from ``batch_size`` (None: the algorithm has one solver).
    default_solver: Callable[[int | None], str] | None = None

    def trainer_for(self, config: GradientDescentConfig) -> type[GradientTrainer]:
        """The trainer class that runs ``config``."""
        return self.solvers.get(solver_key(config), self.trainer)

    def twin_for(self, config: GradientDescentConfig) -> Callable[..., Any]:
        """The plaintext twin of ``trainer_for(config)``: ``twin(X, y, config)``."""
        return self.twins.get(solver_key(config), self.twin)

    def service_config(self, values: Mapping[str, Any]) -> GradientDescentConfig:
        """The config a service job runs for these hyperparameters: ``solver``, when the algorithm has
        several and none is named, is ``default_solver(batch_size)``; naming one where there is no choice
        is a ``ParameterError`` that lists the choices."""
        values = dict(values)
        if "solver" in values and not self.solvers:
            raise ParameterError(f"{self.name} has one solver (gradient descent): remove solver={values['solver']!r}")
        if self.default_solver is not None and values.get("solver") is None:
            values["solver"] = self.default_solver(values.get("batch_size"))
        return self.config.from_dict(values)

    def config_fields(self) -> tuple[str, ...]:
        """The hyperparameters, in declaration order (``intercept_column`` included)."""
        return tuple(f.name for f in fields(self.config))


def solver_key(config: Any) -> str:
    """The ``solvers``/``twins`` key of ``config``: its solver, ``"<solver>+refine"`` with ``refine_steps``."""
    solver = getattr(config, "solver", "")
    return f"{solver}+refine" if getattr(config, "refine_steps", 0) else solver


ALGORITHMS: dict[str, Algorithm] = {
    entry.name: entry
    for entry in (
        Algorithm(
            "linear",
            "ALGORITHM_LINEAR_REGRESSION",
            linear.LinearRegressionConfig,
            linear.LinearTrainer,
            linear.fit_torch,
            linear.decode_weights,
            linear.LEVELS_PER_STEP,
            solvers={"gram": gram_training.GramTrainer, "normal": gram_training.NormalSolver},
            twins={"gram": gram_training.fit_torch_gram, "normal": gram_training.fit_torch_normal},
            default_solver=linear.service_solver,
        ),
        Algorithm(
            "logistic",
            "ALGORITHM_LOGISTIC_REGRESSION",
            logistic.LogisticRegressionConfig,
            logistic.LogisticTrainer,
            logistic.fit_torch,
            logistic.decode_model,
            logistic.LEVELS_PER_STEP,
            solvers={"quadratic": quadratic.QuadraticSolver, "quadratic+refine": refine.RefinedSolver},
            twins={"quadratic": quadratic.fit_torch_quadratic, "quadratic+refine": refine.fit_torch_refined},
        ),
    )
}


def get(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ParameterError(f"algorithm={name!r}: use one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def for_config(config: Any) -> Algorithm | None:
    """The algorithm whose config ``config`` is (None for a dict or None)."""
    for entry in ALGORITHMS.values():
        if type(config) is entry.config:
            return entry
    return None


def by_wire_name(wire_name: str) -> Algorithm | None:
    for entry in ALGORITHMS.values():
        if entry.wire_name == wire_name:
            return entry
    return None
