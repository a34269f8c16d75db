"""Refreshing ciphertexts that ran out of levels, without showing the key holder what they hold.

SEAL has no CKKS bootstrapping, so the key holder decrypts and re-encrypts. Before sending, the computing
party adds a uniform random mask it keeps and subtracts it from the fresh ciphertext: the key holder
decrypts ``w + m`` and learns about ``w`` only through the edges of the mask's range (for |w| much smaller
than the bound B, a refresh reveals about |w|/B). CKKS decryption error is absolute, so the mask costs no
precision; its range is limited only by what the last level can hold (``params.max_abs_value``).
The key holder never sends a decryption to the computing party, only a fresh encryption (IND-CPA-D).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ciphergrad.core.tensor import EncryptedMatrix

Refresh = Callable[[EncryptedMatrix], EncryptedMatrix]


class MaskedRefresh:
    """Wraps the key holder's refresh so that it only ever sees masked values."""

    def __init__(self, refresh: Refresh, *, bound: float | None = None, seed: int | None = None) -> None:
        self._refresh = refresh
        self._bound = bound
        self._rng = np.random.default_rng(seed)
        self.count = 0

    def bound_for(self, matrix: EncryptedMatrix) -> float:
        # A quarter of the representable range leaves room for the value itself and for noise.
        return self._bound if self._bound is not None else matrix.engine.params.max_abs_value / 4

    def __call__(self, matrix: EncryptedMatrix) -> EncryptedMatrix:
        bound = self.bound_for(matrix)
        mask = self._rng.uniform(-bound, bound, size=matrix.shape)
        fresh = self._refresh(matrix + mask)
        if fresh.shape != matrix.shape or fresh.tile != matrix.tile:
            raise ValueError(
                f"the refreshed ciphertext has shape {fresh.shape}, expected {matrix.shape} in the same layout"
            )
        self.count += 1
        matrix.engine.counts.refreshes += 1
        return fresh - mask
