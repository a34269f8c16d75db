"""Encrypted training next to its torch twin, in one process: the key holder and the computing party
are separate objects and exchange only bytes (public context, ciphertexts), as they would over gRPC.

``per_sample_epochs`` is the published peer: the one-ciphertext-per-sample method of TenSEAL's tutorial."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from ciphergrad.core import gram
from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.gram_training import GramTrainer, fit_torch_gram
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import choose_tile, rotation_steps
from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer, decode_weights, fit_torch
from ciphergrad.core.params import CKKSParameters, plan
from ciphergrad.core.tensor import EncryptedMatrix


@dataclass
class LinearComparison:
    config: LinearRegressionConfig
    params: CKKSParameters
    encrypted_weights: np.ndarray
    torch_weights: np.ndarray
    encrypted_losses: list[float]
    torch_losses: list[float]
    epoch_seconds: list[float]
    torch_epoch_seconds: list[float]
    counts: OpCounts
    refreshes: int
    bytes_moved: dict[str, int] = field(default_factory=dict)
    setup_seconds: float = 0.0

    @property
    def max_abs_weight_diff(self) -> float:
        return float(np.max(np.abs(self.encrypted_weights - self.torch_weights)))

    @property
    def max_rel_loss_diff(self) -> float:
        enc, ref = np.asarray(self.encrypted_losses), np.asarray(self.torch_losses)
        return float(np.max(np.abs(enc - ref) / np.abs(ref)))

    def per_epoch(self, count: int) -> float:
        return count / self.config.epochs

    def table(self, every: int = 10) -> str:
        lines = [
            f"CKKS: {self.params.summary()}",
            "",
            f"{'epoch':>5} | {'encrypted MSE':>14} | {'torch MSE':>14} | {'rel. diff':>9}",
            f"{'-' * 5}-+-{'-' * 14}-+-{'-' * 14}-+-{'-' * 9}",
        ]
        for i, (enc, ref) in enumerate(zip(self.encrypted_losses, self.torch_losses, strict=True)):
            if i % every == 0 or i == len(self.torch_losses) - 1:
                lines.append(f"{i + 1:>5} | {enc:>14.8f} | {ref:>14.8f} | {abs(enc - ref) / abs(ref):>9.1e}")
        med, tmed = float(np.median(self.epoch_seconds)), float(np.median(self.torch_epoch_seconds))
        c = self.counts
        lines += [
            "",
            f"{'':28} {'encrypted':>14} {'torch':>14}",
            f"{'epoch time (median)':28} {med * 1e3:>12.1f}ms {tmed * 1e3:>12.3f}ms   ratio {med / tmed:,.0f}x",
            f"{'total training time':28} {sum(self.epoch_seconds):>13.2f}s {sum(self.torch_epoch_seconds):>13.4f}s",
            f"{'max |weight difference|':28} {self.max_abs_weight_diff:>14.2e}",
            f"{'max relative loss difference':28} {self.max_rel_loss_diff:>14.2e}",
            f"{'HE ops per epoch':28} {self.per_epoch(c.multiplications):.0f} ct*ct, "
            f"{self.per_epoch(c.plain_multiplications):.0f} ct*plain, {self.per_epoch(c.rotations):.0f} rotations, "
            f"{self.per_epoch(self.refreshes):.1f} refreshes",
            "bytes moved: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in self.bytes_moved.items()),
            "",
            "weights (encrypted | torch):",
        ]
        for enc, ref in zip(self.encrypted_weights, self.torch_weights, strict=True):
            lines.append(f"  {enc:>+12.6f} | {ref:>+12.6f}")
        return "\n".join(lines)


def compare_linear_regression(
    X: np.ndarray,
    y: np.ndarray,
    config: LinearRegressionConfig,
    params: CKKSParameters | None = None,
    packing: str = "rows",
) -> LinearComparison:
    """Train encrypted (key holder <-> computing party through bytes) and with the torch twin.

    ``config.solver`` picks per-row gradient descent ("gd") or the Gram solver ("gram", core.gram_training)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    start = time.perf_counter()
    params = params or plan(3, slots=1)
    tile = choose_tile(X.shape, params.slots, packing)
    steps = set(rotation_steps(tile))
    if config.solver == "gram":
        steps |= set(gram.rotation_steps(gram.weight_period(X.shape[1], tile), params.slots))
    holder = KeyHolder(params, rotations=steps)
    public = holder.public_context()
    engine = Engine.from_public_context(public)
    X_bytes = holder.encrypt(X, tile=tile).to_bytes()
    y_bytes = holder.encrypt(y, tile=tile).to_bytes()
    Xe, ye = EncryptedMatrix.from_bytes(engine, X_bytes), EncryptedMatrix.from_bytes(engine, y_bytes)
    moved = {"public context": len(public), "data upload": len(X_bytes) + len(y_bytes), "refreshes": 0}

    def refresh(matrix: EncryptedMatrix) -> EncryptedMatrix:
        request = matrix.to_bytes()
        answer = holder.refresh(EncryptedMatrix.from_bytes(holder.engine, request)).to_bytes()
        moved["refreshes"] += len(request) + len(answer)
        return EncryptedMatrix.from_bytes(engine, answer)

    trainer = (GramTrainer if config.solver == "gram" else LinearTrainer)(engine, Xe, ye, config, refresh)
    setup = time.perf_counter() - start
    losses, seconds, refreshes = [], [], 0
    while not trainer.done:
        tick = time.perf_counter()
        result = trainer.run_epoch()
        seconds.append(time.perf_counter() - tick)
        refreshes += result.refreshes
        losses.append(float(holder.decrypt(result.loss)[0, 0]) * result.loss_scale)
    weights = decode_weights(holder.decrypt(trainer.weights), trainer.weight_scale)
    twin = (fit_torch_gram if config.solver == "gram" else fit_torch)(X, y, config)
    return LinearComparison(
        config=config,
        params=params,
        encrypted_weights=weights,
        torch_weights=twin.weights,
        encrypted_losses=losses,
        torch_losses=twin.losses,
        epoch_seconds=seconds,
        torch_epoch_seconds=twin.epoch_seconds,
        counts=trainer.counts,
        refreshes=refreshes,
        bytes_moved=moved,
        setup_seconds=setup,
    )


def r2_score(X: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    residual = np.asarray(y).reshape(-1) - np.asarray(X) @ np.asarray(weights).reshape(-1)
    centred = np.asarray(y).reshape(-1) - np.mean(y)
    return float(1 - residual @ residual / (centred @ centred))


def per_sample_epochs(X: np.ndarray, y: np.ndarray, lr: float, epochs: int, seed: int) -> list[float]:
    """TenSEAL tutorial style: each row its own CKKS vector, prediction by enc_x.dot(w), weights
    re-encrypted by the key holder after every epoch. Its own parameters, as in the tutorial."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 21, 21, 21, 21, 21, 21, 40])
    context.global_scale = 2**21
    context.generate_galois_keys()
    rows = [ts.ckks_vector(context, row.tolist()) for row in X]
    targets = [ts.ckks_vector(context, [float(v)]) for v in y]
    weights = np.random.default_rng(seed).normal(size=X.shape[1])
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        enc_w = ts.ckks_vector(context, weights.tolist())
        delta = None
        for enc_x, enc_y in zip(rows, targets, strict=True):
            residual = enc_x.dot(enc_w) - enc_y
            term = enc_x * residual
            delta = term if delta is None else delta + term
        enc_w = enc_w - delta * (lr / len(rows))
        weights = np.asarray(enc_w.decrypt())  # the tutorial's refresh: decrypt and re-encrypt next epoch
        seconds.append(time.perf_counter() - start)
    return seconds
