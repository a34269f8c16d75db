"""The comparison tasks, as data: one entry per task in ``TASKS``, nothing else to register.

A task's ``run(address, **options)`` runs one algorithm encrypted through the server at ``address`` and
as its plaintext twin on the same data, and returns a ``TaskResult``. ``Task.options`` are the default
run's keyword arguments; ``Task.quick`` overrides them for ``--quick`` (small data). Linear regression to
convergence is one task per solver in ``LINEAR_SOLVERS`` (settings in ``SOLVER_SETTINGS``): a new solver
is one entry there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ciphergrad.client.compare import compute, training
from ciphergrad.client.compare.result import TaskResult


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[..., TaskResult]
    options: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)


# Per-row gradient descent, gradient descent on the encrypted X^T X / n (core.gram), the exact normal solver.
LINEAR_SOLVERS: tuple[str, ...] = ("gd", "gram", "normal")
# Per solver: the hyperparameters that bring Ames to the least-squares optimum (key-holder standardized).
SOLVER_SETTINGS: dict[str, dict[str, Any]] = {
    "gd": {"learning_rate": 0.5, "momentum": 0.5, "epochs": 40, "init": "zeros"},
    "gram": {"learning_rate": 0.7, "momentum": 0.3, "epochs": 30, "init": "zeros"},
    "normal": {},
}

TASKS: tuple[Task, ...] = (
    Task("ames-writeup", training.ames_writeup, {"epochs": 50, "peer_epochs": 1}, {"epochs": 5, "peer_epochs": 0}),
    *(
        Task(f"ames-converged-{solver}", training.ames_converged, {"solver": solver, **SOLVER_SETTINGS[solver]})
        for solver in LINEAR_SOLVERS
    ),
    Task("logistic-cancer", training.logistic_cancer, {"epochs": 20}, {"epochs": 4}),
    Task("logistic-cancer-quadratic", training.logistic_cancer_quadratic),
    Task("inference-linear", compute.inference_linear, {"rows": 4096}, {"rows": 256}),
    Task("inference-logistic", compute.inference_logistic, {"rows": 4096}, {"rows": 256}),
    Task("inference-mlp", compute.inference_mlp, {"rows": 1797}, {"rows": 256}),
    Task("stats-wine", compute.statistics, {"dataset": "wine"}),
    Task("stats-diabetes", compute.statistics, {"dataset": "diabetes"}),
    Task("knn-digits", compute.knn, {"dataset": "digits"}, {"queries": 32}),
    Task("knn-iris", compute.knn, {"dataset": "iris"}),
    Task("knn-wine", compute.knn, {"dataset": "wine"}),
)
TASK_NAMES: tuple[str, ...] = tuple(task.name for task in TASKS)


def select(names: list[str]) -> list[Task]:
    """The tasks named (all when ``names`` is empty), in registry order; ValueError names unknown ones."""
    unknown = [name for name in names if name not in TASK_NAMES]
    if unknown:
        raise ValueError(f"unknown task {', '.join(map(repr, unknown))}; valid tasks: {', '.join(TASK_NAMES)}")
    return [task for task in TASKS if not names or task.name in names]
