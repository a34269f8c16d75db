"""Randomness that protects data: refresh masks and the key holder's row orders, from the OS CSPRNG.

Invariants:
* every value here comes from ``secrets.token_bytes`` (``os.urandom``); there is no seed, so no two calls,
  processes, resumes or identical jobs draw the same values except by chance (2**-53 per float);
* ``uniform`` maps 53 random bits per value to ``[-bound, bound)``: the float64 grid of step
  ``2 * bound / 2**53``, uniform on it (the conversion is exact; numpy only vectorizes it);
* ``permutation`` sorts 64-bit random keys and redraws on a tie, so every order of ``n`` rows is equally
  likely (a Fisher-Yates shuffle over ``secrets.randbelow`` is too, but costs a Python loop per row).

Reproducible randomness (numpy's PCG64 from a seed) stays for what protects nothing: the weight
initialization ``init_seed``, synthetic data and train/test splits in benchmarks and tests.
"""

from __future__ import annotations

import secrets

import numpy as np

__all__ = ["permutation", "shuffle_orders", "uniform"]

_MANTISSA_BITS = 53  # a float64 holds 53 significant bits: k / 2**53 is exact for every k < 2**53


def _words(count: int) -> np.ndarray:
    """``count`` uniform 64-bit words from the OS CSPRNG."""
    return np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64)


def uniform(bound: float, shape: int | tuple[int, ...]) -> np.ndarray:
    """Float64 values uniform in ``[-bound, bound)`` drawn from ``secrets`` (``bound > 0``)."""
    if not bound > 0:
        raise ValueError(f"bound={bound} must be positive")
    size = int(np.prod(shape))
    unit = (_words(size) >> np.uint64(64 - _MANTISSA_BITS)).astype(np.float64) * 2.0**-_MANTISSA_BITS
    return ((2.0 * unit - 1.0) * bound).reshape(shape)


def permutation(rows: int) -> np.ndarray:
    """A uniformly random order of ``range(rows)`` drawn from ``secrets``."""
    while True:
        keys = _words(rows)
        order = np.argsort(keys, kind="stable")
        # A tie (probability about rows**2 / 2**65) would favour the stable sort's order: draw again.
        if rows < 2 or bool(np.all(keys[order][1:] != keys[order][:-1])):
            return order.astype(np.int64)


def shuffle_orders(rows: int, count: int) -> list[np.ndarray]:
    """``count`` row orders for the key holder's encrypted shuffled copies (minibatch training).

    Drawn here, by the key holder, and never sent anywhere: the server receives only the encrypted
    copies, so it cannot tell which stored row is which source row. Keep the orders (the estimators keep
    them in ``shuffle_orders_``) to replay the same batches in a plaintext twin."""
    return [permutation(rows) for _ in range(count)]
