"""Refreshing ciphertexts that ran out of levels, without showing the key holder what they hold.

SEAL has no CKKS bootstrapping, so the key holder decrypts and re-encrypts. Before sending, the computing
party adds a random mask ``m`` it keeps and subtracts it from the fresh ciphertext. CKKS decryption error is
absolute, so the mask costs no precision; its range is limited only by what the last level can hold
(``B = params.max_abs_value / 4``: 64 at the default training parameters ``plan(3)``, 2**17 at ``plan(2)``).

Invariants:
* every mask is drawn from the OS CSPRNG (``core.randomness.uniform``), independently per entry and per
  refresh; there is no seed, so no resume, retry or identical job redraws a mask;
* the mask is uniform in ``[-B, B)`` and never leaves the computing party's process;
* the key holder never sends a decryption back, only a fresh encryption (IND-CPA-D).

What one refresh reveals. The key holder sees ``v = w + m`` with ``m`` uniform in ``[-B, B)``: the view for
``w`` is uniform on ``[w - B, w + B)``, so the views for two values ``w`` and ``w'`` differ in statistical
distance ``|w - w'| / (2B)``. For entries known to lie in ``[-W, W]`` a refresh therefore gives a
distinguishing advantage of at most ``W / B`` per entry: about ``log2(B / W)`` bits of statistical hiding
(6 bits for ``|w| <= 1`` at ``B = 64``), not computational hiding. It is a mask, not encryption: a value
near the edge of the view's range is pinned (``v`` close to ``B + w`` says ``w`` is close to ``v - B``).
Refreshes of related values add up: ``k`` refreshes of values each within ``W`` of the same number give at
most ``k W / B`` (a union bound), so a run of 50 epochs at ``B = 64`` and ``|w| <= 1`` guarantees nothing
about the trajectory. In single-owner training the key holder owns the rows and learns the model anyway;
where the key holder is not the data owner, a per-row refresh is a leak of that size
(docs/threat-model.md, "The masked refresh").
"""

from __future__ import annotations

from collections.abc import Callable

from ciphergrad.core import randomness
from ciphergrad.core.tensor import EncryptedMatrix

Refresh = Callable[[EncryptedMatrix], EncryptedMatrix]


class MaskedRefresh:
    """Wraps the key holder's refresh so that it only ever sees masked values (masks from ``secrets``)."""

    def __init__(self, refresh: Refresh, *, bound: float | None = None) -> None:
        self._refresh = refresh
        self._bound = bound
        self.count = 0

    def bound_for(self, matrix: EncryptedMatrix) -> float:
        # A quarter of the representable range leaves room for the value itself and for noise.
        return self._bound if self._bound is not None else matrix.engine.params.max_abs_value / 4

    def __call__(self, matrix: EncryptedMatrix) -> EncryptedMatrix:
        mask = randomness.uniform(self.bound_for(matrix), matrix.shape)
        fresh = self._refresh(matrix + mask)
        if fresh.shape != matrix.shape or fresh.tile != matrix.tile:
            raise ValueError(
                f"the refreshed ciphertext has shape {fresh.shape}, expected {matrix.shape} in the same layout"
            )
        self.count += 1
        matrix.engine.counts.refreshes += 1
        return fresh - mask
