"""Refining the one-pass logistic solution (``solver='quadratic'``, ``refine_steps=k``): Böhning steps.

The quadratic surrogate (``core.quadratic``) is solved once; its weights ``w0`` then warm-start the per-row
trainer (``core.logistic``: polynomial sigmoid, masked refreshes), which takes ``k`` full-batch steps

    w <- w - P (grad L(w) + l2 I' w),        P = (G / 4 + l2 I')^-1,    G = X^T X / n,

where ``L`` is the mean logistic loss with the polynomial sigmoid and ``I'`` spares the intercept.
``G / 4 + l2 I'`` bounds the Hessian of the penalized loss from above (Böhning 1992; Bonte & Vercauteren
2018), so a step of one is never too long and each step is a Newton-like step with a fixed matrix.

Who computes what. ``P`` is the key holder's: in the quadratic round trip it decrypts ``G + ridge I'``
and ``b`` anyway (``core.gram``; ``d(d+1)/2 + d + 1`` numbers), removes the ridge the server named (a
config number), inverts ``G / 4 + l2 I'`` and answers with FRESH encryptions: the warm start ``w0 / bound``
and ``P`` row by row (``d`` ciphertexts, ``(1, d)`` each, in the trainer's weight tile). The server holds
``Enc(P)`` and never a number derived from a decryption.

One step (``RefinedSolver._update``), after the per-row gradient ``s = grad L(w) / bound`` (levels as in
``core.logistic``):
* ``u = s + l2 I' w'`` (``w' = w / bound``; one ct x pt product, 1 level);
* the server draws ``m`` uniform in ``[-B', B')`` from the CSPRNG (``core.randomness``) and sends
  ``u + m`` as a *preconditioned refresh*; the key holder decrypts ``u + m`` (``d`` numbers, the same view
  as a masked refresh, ``core.refresh``) and answers a fresh encryption of ``P (u + m)``;
* the server subtracts ``Enc(P) m = sum_j m_j Enc(P_j)`` (``d`` ct x scalar products, 1 level below the
  top; ``P`` is symmetric, so its rows are its columns): ``w' <- w' - (Enc(P (u + m)) - Enc(P) m)``.
The weights end each step at ``top - 1`` levels at the lowest (fresh minus a level-1 product), which the
next step's ``z = (X * w').sum(axis=1)`` needs (2), so a step costs the per-row trainer's logit refresh
(and residual refresh for degrees 5 and 7) plus this one round trip, and no weight refresh.

The mask range. ``P (u + m)`` must fit what the last level holds (``B = max_abs_value / 4``), and the
server cannot know ``|P|``. For standardized (centred) features ``G`` is block diagonal with the
intercept's entry 1, so ``|P|_2 <= 1 / min(1/4, l2)``; the mask is therefore
``B' = B * min(1/4, l2) / sqrt(d)`` (a public number), which keeps ``|P (u + m)|_inf <= B`` there. The
key holder checks the magnitude before encrypting and refuses (naming l2) otherwise. What ``B'`` hides:
``log2(B' / |u|)`` bits per entry (``core.refresh``'s analysis with ``B'`` for ``B``): at plan(3),
``l2 = 0.1`` and ``d = 31`` ``B' = 1.15`` against ``|u| <= 0.007`` on breast cancer (falling with the
steps): 7 to 9.5 bits.

What it is worth (float64 twin, breast cancer's benchmark split, 455 x 30, measured for issue 18). The steps
descend the penalized logistic loss (tests/test_refine.py) towards the fixed point of the *polynomial*
sigmoid's loss, so the refined model is at best the penalized optimum, and with ``l2 = 0.1`` that optimum
(scikit-learn, ``C = 1 / (n l2)``) scores the quadratic start's test accuracy, 0.965: at no ``k`` can the
predictions change. Distance of the weights to that optimum: 0.49 at the start, 0.40 / 0.34 / 0.29 after
1 / 2 / 3 steps with the exact sigmoid (0.12 after 10: Böhning's bound is loose where most rows are fitted
with confidence), 0.40 / 0.36 / 0.34 with the degree-5 sigmoid on [-8.1, 8.1], which stops there (its fixed
point: logits of the fitted model reach 16). The exact optimum scores 0.974 only for ``l2`` in about
[0.025, 0.06], where the logits reach 19 to 26: there the degree-5 fixed point still scores 0.965 (ranges up
to [-24, 24] alike), and even the exact sigmoid is still at 0.965 after 5 steps (0.974 after 10 at
``l2 = 0.03``, not at 0.04 to 0.06); degrees 3 and 7 on [-8, 8] diverge within 5 to 10 steps, and so does a
curvature of 1/20 instead of 1/4 in ``P``. The refinement is a convergence aid of the penalized fit, not a
route to a weaker penalty.

Invariants: a refinement job needs the whole table in the trainer's row tile at ``core.gram.DATA_LEVELS``
levels (its pass runs on it); binary only; ``l2 > 0``; the key holder's ``P`` lives in the process that
answered the round trip (a job resumed from another process after the round trip fails with a clear error).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol, Self

import numpy as np

from ciphergrad.core import randomness
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.gram import GramStatistics, accumulate, row_blocks
from ciphergrad.core.gram_training import KeyHolderLink
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import Tile
from ciphergrad.core.linear import TorchFit
from ciphergrad.core.logistic import LogisticRegressionConfig, LogisticRowStep, LogisticTrainer
from ciphergrad.core.normal import RightHandSide, normal_system, ridge_vector
from ciphergrad.core.quadratic import fit_torch_quadratic, system_terms
from ciphergrad.core.refresh import Refresh
from ciphergrad.core.shards import RowStep, ShardSource
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.core.training import EpochResult, Shuffles

__all__ = ["Preconditioner", "RefineLink", "RefinedSolver", "answer", "fit_torch_refined", "mask_bound",
           "preconditioner_matrix"]

# The Hessian of the mean logistic loss is at most X^T X / 4n: sigmoid'(z) <= 1/4.
CURVATURE = 0.25


@dataclass(frozen=True)
class Preconditioner:
    """What the server asks for besides the solution (public config numbers only)."""

    system_ridge: float  # the ridge the system's G carries, removed to get X^T X / n
    l2: float  # the penalty of the refined loss
    intercept_column: int | None
    weight_scale: float  # the warm start is encrypted times this (the trainer's 1 / bound)
    tile: Tile  # the trainer's weight tile


class RefineLink(KeyHolderLink, Protocol):
    def solve_refined(self, system: GramStatistics, rhs: RightHandSide,
                      spec: Preconditioner) -> tuple[EncryptedMatrix, list[EncryptedMatrix]]:
        """Fresh encryptions of the warm start ``w0 * weight_scale`` and of ``P``'s ``d`` rows, in ``spec.tile``."""
        ...

    def precondition(self, masked: EncryptedMatrix) -> EncryptedMatrix:
        """A fresh encryption of ``P`` times the decrypted (masked) row, in its tile."""
        ...


def mask_bound(max_abs_value: float, l2: float, features: int) -> float:
    """``B'``: the mask range of a preconditioned refresh (module docstring)."""
    return max_abs_value / 4 * min(CURVATURE, l2) / math.sqrt(features)


def preconditioner_matrix(system_gram: np.ndarray, spec: Preconditioner) -> np.ndarray:
    """Key holder side: ``(G / 4 + l2 I')^-1`` from the decrypted ``G + system_ridge I'``."""
    d = system_gram.shape[0]
    gram = system_gram - np.diag(ridge_vector(d, d, spec.system_ridge, spec.intercept_column))
    return np.linalg.inv(CURVATURE * gram + np.diag(ridge_vector(d, d, spec.l2, spec.intercept_column)))


def answer(holder: KeyHolder, system: GramStatistics, rhs: RightHandSide,
           spec: Preconditioner) -> tuple[np.ndarray, np.ndarray, EncryptedMatrix, list[EncryptedMatrix]]:
    """Key holder side of the round trip: ``(w0, P, Enc(w0 * weight_scale), [Enc(P_j)])``."""
    G, b, _ = system.dense(holder)
    weights = rhs.solve(G, b)
    P = preconditioner_matrix(G, spec)
    start = holder.encrypt(weights[None, :] * spec.weight_scale, tile=spec.tile)
    return weights, P, start, [holder.encrypt(row[None, :], tile=spec.tile) for row in P]


def apply(P: np.ndarray, values: np.ndarray, max_abs_value: float) -> np.ndarray:
    """Key holder side of a preconditioned refresh: ``P v``, refused if it leaves the range CKKS holds."""
    result = np.asarray(values, dtype=np.float64).reshape(1, -1) @ P  # P is symmetric
    if not np.all(np.abs(result) < max_abs_value / 4):
        raise ParameterError(
            f"a preconditioned step reached {np.max(np.abs(result)):.3g}, past +-{max_abs_value / 4:g}: the features "
            "are likely not centred; standardize them, or raise l2"
        )
    return result


class RefinedSolver(LogisticTrainer):
    """``solver='quadratic'`` with ``refine_steps=k``: "epoch" 1 is the one-pass solve (one round trip, which
    also brings ``Enc(P)``), epochs 2..k+1 are preconditioned per-row steps (module docstring)."""

    shardable = False  # the pass and the steps run on the whole table in this process
    needs_pass = True  # the runner checks the data can feed core.gram's pass

    def __init__(self, engine: Engine, X: EncryptedMatrix, y: EncryptedMatrix, config: LogisticRegressionConfig,
                 refresh: Refresh, shuffles: Shuffles = (), *, weights: EncryptedMatrix | None = None,
                 velocity: EncryptedMatrix | None = None, epoch: int = 0,
                 preconditioner: list[EncryptedMatrix] | None = None, shards: ShardSource | None = None) -> None:
        if config.solver != "quadratic" or not config.refine_steps:
            raise ParameterError(f"RefinedSolver runs solver='quadratic' with refine_steps >= 1, got "
                                 f"solver={config.solver!r}, refine_steps={config.refine_steps}")
        if shards is not None or shuffles or config.batch_size is not None:
            raise ParameterError("refine_steps runs full batch on the stored table in one process: no shards, "
                                 "shuffles or batch_size")
        if X is None or y is None:
            raise ShapeError("RefinedSolver needs the encrypted X and y (its pass and its steps read them)")
        self.link: Any = refresh
        self._data = (X, y)
        self._rows = preconditioner
        super().__init__(engine, X, y, config, refresh, (), weights=weights, epoch=epoch)
        self._tile = X.tile
        self._ridge_row = ridge_vector(self.features, self.features, config.l2, config.intercept_column)[None, :]
        self._mask = mask_bound(engine.params.max_abs_value, config.l2, self.features)

    @staticmethod
    def epochs_of(config: LogisticRegressionConfig) -> int:
        return config.refine_steps + 1

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.refine_steps + 1

    @classmethod
    def resume(cls, engine: Engine, X: Any, y: Any, config: LogisticRegressionConfig, refresh: Refresh,
               state: dict[str, Any], shuffles: Shuffles = (), *, shards: ShardSource | None = None) -> Self:
        rows = [state[key] for key in sorted((k for k in state if k.startswith("preconditioner_")),
                                             key=lambda k: int(k.rsplit("_", 1)[1]))]
        # Only the preconditioner (a stop between its write and the first step's checkpoint): start again.
        return cls(engine, X, y, config, refresh, shuffles, weights=state.get("weights"),
                   epoch=int(state.get("epoch", 0)), preconditioner=rows or None, shards=shards)

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "weights": self.weights, **self.fixed_state()}

    def fixed_state(self) -> dict[str, Any]:
        """``Enc(P)``'s rows once the round trip brought them: a job runner writes them once, not every step."""
        return {f"preconditioner_{j}": row for j, row in enumerate(self._rows or [])}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "solver": "quadratic", "refine_steps": self.config.refine_steps}

    def _setup(self) -> None:
        super()._setup()
        self._shrink = None  # the penalty enters the preconditioned gradient instead

    def row_step(self, rows: int) -> RowStep:
        # Step length one (the Hessian bound makes it safe), no momentum: s = grad L / bound.
        return LogisticRowStep(rows, 1.0 / self.bound / self._loss_factor, self._loss_factor, self._scaled_poly,
                               self.bound)

    def run_epoch(self) -> EpochResult:
        if self.epoch > 0:
            return super().run_epoch()
        start = time.perf_counter()
        before = self.engine.counts.snapshot()
        ridge, rhs = system_terms(self.config)
        system = normal_system(accumulate(self.engine, row_blocks(*self._data)), ridge, self.config.intercept_column)
        spec = Preconditioner(ridge, self.config.l2, self.config.intercept_column, self.weight_scale, self._tile)
        weights, rows = self.link.solve_refined(system, rhs, spec)
        expected = (1, self.features)
        if weights.shape != expected or len(rows) != self.features or any(r.shape != expected for r in rows):
            raise ShapeError(f"the key holder's answer has weights {weights.shape} and {len(rows)} preconditioner "
                             f"rows; expected {expected} and {self.features} rows of {expected}")
        self.weights, self._rows, self.epoch = weights, rows, 1
        delta = self.engine.counts.since(before)
        return EpochResult(1, delta, 0, time.perf_counter() - start, None, 0.0)

    def _update(self, step: EncryptedMatrix) -> None:  # step: grad L / bound
        if self._rows is None:
            raise ShapeError("no encrypted preconditioner: the quadratic round trip has not run")
        weights = self.weights
        direction = step + weights * self._ridge_row
        mask = randomness.uniform(self._mask, direction.shape)
        fresh = self.link.precondition(direction + mask)
        if fresh.shape != direction.shape or fresh.tile != direction.tile:
            raise ShapeError(f"the preconditioned refresh has shape {fresh.shape}, expected {direction.shape}")
        masked = None
        for row, value in zip(self._rows, mask.reshape(-1), strict=True):
            term = row * float(value)
            masked = term if masked is None else masked + term
        self.engine.counts.refreshes += 1
        self.weights = weights - (fresh - masked)


def fit_torch_refined(X: np.ndarray, y: np.ndarray, config: LogisticRegressionConfig) -> TorchFit:
    """The twin: the float64 quadratic solution, then the same ``refine_steps`` preconditioned steps with the
    same polynomial sigmoid."""
    import torch

    start = fit_torch_quadratic(X, y, config)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(-1))
    rows, features = Xt.shape
    ridge = torch.as_tensor(ridge_vector(features, features, config.l2, config.intercept_column))
    P = torch.linalg.inv(CURVATURE * (Xt.T @ Xt) / rows + torch.diag(ridge))
    poly = config.polynomial(features)
    w = torch.as_tensor(start.weights)
    fit = TorchFit(weights=np.empty(0), epoch_seconds=list(start.epoch_seconds))
    for _ in range(config.refine_steps):
        tick = time.perf_counter()
        residual = poly(Xt @ w) - yt
        fit.losses.append(float((residual**2).mean()))
        w = w - P @ (Xt.T @ residual / rows + ridge * w)
        fit.epoch_seconds.append(time.perf_counter() - tick)
    fit.weights = w.numpy()
    return fit
