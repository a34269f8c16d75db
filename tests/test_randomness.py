"""core.randomness: masks and row orders from the OS CSPRNG, never from a seed or numpy's PCG64.

Statistical checks use fixed tolerances far outside chance (the probability of a false failure is below
1e-9 for each): a mean within 6 standard errors, every one of 16 bins within 20% of its expected count.
"""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from ciphergrad.core import randomness


def test_uniform_stays_in_range_and_is_flat() -> None:
    values = randomness.uniform(64.0, (250, 400))
    assert values.shape == (250, 400) and values.dtype == np.float64
    assert values.min() >= -64.0 and values.max() < 64.0
    # Uniform on [-B, B): mean 0, standard deviation B / sqrt(3).
    assert abs(values.mean()) < 6 * (64.0 / np.sqrt(3)) / np.sqrt(values.size)
    counts, _ = np.histogram(values, bins=16, range=(-64.0, 64.0))
    assert np.all(np.abs(counts / (values.size / 16) - 1) < 0.2)
    with pytest.raises(ValueError):
        randomness.uniform(0.0, 3)


def test_draws_come_from_secrets_not_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Would fail on a numpy generator: every draw goes through ``secrets.token_bytes``."""
    calls: list[int] = []
    real = secrets.token_bytes

    def counted(n: int) -> bytes:
        calls.append(n)
        return real(n)

    def refuse(*args, **kwargs):
        raise AssertionError("protective randomness must not come from numpy")

    monkeypatch.setattr(secrets, "token_bytes", counted)
    monkeypatch.setattr(np.random, "default_rng", refuse)
    randomness.uniform(1.0, 5)
    randomness.permutation(7)
    assert calls == [8 * 5, 8 * 7]


def test_two_draws_differ() -> None:
    assert not np.array_equal(randomness.uniform(1.0, 64), randomness.uniform(1.0, 64))
    first, second = randomness.shuffle_orders(64, 2)
    again = randomness.shuffle_orders(64, 1)[0]
    # Two equal orders of 64 rows by chance: 1 / 64! (about 1e-89).
    assert not np.array_equal(first, second) and not np.array_equal(first, again)


def test_orders_are_permutations_and_every_position_moves() -> None:
    orders = randomness.shuffle_orders(10, 2000)
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert randomness.permutation(0).size == 0 and list(randomness.permutation(1)) == [0]
    # Row 0 lands at each of the 10 positions with probability 1/10: 200 +- 13.4 per position.
    where = np.array([int(np.flatnonzero(order == 0)[0]) for order in orders])
    counts = np.bincount(where, minlength=10)
    assert np.all(np.abs(counts - 200) < 6 * 13.5)


def test_a_tie_among_keys_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([np.array([5, 5, 1], dtype=np.uint64), np.array([9, 2, 4], dtype=np.uint64)])
    monkeypatch.setattr(randomness, "_words", lambda count: next(draws))
    assert list(randomness.permutation(3)) == [1, 2, 0]
