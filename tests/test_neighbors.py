"""Encrypted nearest neighbours against the torch twin and plaintext kNN (scikit-learn).

Tolerance: squared distances within 1e-4 * (1 + distance) of torch; classification equal to
scikit-learn's KNeighborsClassifier (brute force) with the same k and projection on every query.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from ciphergrad.core import KeyHolder, Tile, plan
from ciphergrad.core.errors import ShapeError
from ciphergrad.core.neighbors import (
    encrypt_reference,
    knn_vote,
    pca_projection,
    squared_distances,
    squared_distances_encrypted_torch,
    squared_distances_torch,
)


@pytest.fixture(scope="module")
def kh() -> KeyHolder:
    return KeyHolder(plan(2))


def _split(loader, queries: int | None = None):
    data = loader()
    Xtr, Xte, ytr, _ = train_test_split(data.data, data.target, test_size=0.2, stratify=data.target, random_state=0)
    mean, std = Xtr.mean(axis=0), np.maximum(Xtr.std(axis=0), 1e-9)
    Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std
    return Xtr, (Xte[:queries] if queries else Xte), ytr


@pytest.mark.parametrize(
    ("loader", "k", "components", "queries"),
    [
        (load_iris, 5, None, None),
        (load_wine, 3, None, None),
        (load_digits, 5, 16, 64),
    ],
)
def test_knn_equals_plaintext(kh: KeyHolder, loader, k: int, components: int | None, queries: int | None) -> None:
    Xtr, Xte, ytr = _split(loader, queries)
    P = pca_projection(Xtr, components) if components else None
    q = 1 << int(np.ceil(np.log2(len(Xte))))
    E = kh.encrypt(Xte, tile=Tile(q, 1))
    D = squared_distances(E, Xtr, P)
    assert D.shape == (len(Xtr), len(Xte))
    got = kh.decrypt(D)
    want = squared_distances_torch(Xte, Xtr, P)
    assert np.all(np.abs(got - want) <= 1e-4 * (1 + want))
    plain = KNeighborsClassifier(n_neighbors=k, algorithm="brute")
    plain.fit(Xtr if P is None else Xtr @ P, ytr)
    expected = plain.predict(Xte if P is None else Xte @ P)
    np.testing.assert_array_equal(knn_vote(got, ytr, k), expected)


def test_rejects_row_packed_queries(kh: KeyHolder) -> None:
    with pytest.raises(ShapeError, match="column-packed"):
        squared_distances(kh.encrypt(np.ones((4, 3))), np.ones((5, 3)))


@pytest.mark.parametrize(("loader", "k"), [(load_iris, 5), (load_wine, 3)])
def test_knn_encrypted_reference_equals_plaintext(kh: KeyHolder, loader, k: int) -> None:
    Xtr, Xte, ytr = _split(loader)
    q = 1 << int(np.ceil(np.log2(len(Xte))))
    E = kh.encrypt(Xte, tile=Tile(q, 1))
    R = encrypt_reference(kh.engine, Xtr, len(Xte))  # the public key is enough
    assert R.tile == Tile(kh.params.slots // q, q) and R.shape == (len(Xtr), Xtr.shape[1] * q)
    D = squared_distances(E, R)
    assert D.shape == (len(Xtr), len(Xte)) and D.level == E.level - 1
    got = kh.decrypt(D)
    want = squared_distances_torch(Xte, Xtr)
    np.testing.assert_allclose(squared_distances_encrypted_torch(Xte, Xtr), want, rtol=1e-12, atol=1e-12)
    assert np.all(np.abs(got - want) <= 1e-4 * (1 + want))
    expected = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(Xtr, ytr).predict(Xte)
    np.testing.assert_array_equal(knn_vote(got, ytr, k), expected)


def test_encrypted_reference_with_projection(kh: KeyHolder) -> None:
    Xtr, Xte, _ = _split(load_wine, 16)
    P = pca_projection(Xtr, 3)
    E = kh.encrypt(Xte @ P, tile=Tile(16, 1))  # the client owns both: it projects before encrypting
    got = kh.decrypt(squared_distances(E, encrypt_reference(kh, Xtr, Tile(16, 1), projection=P)))
    want = squared_distances_torch(Xte, Xtr, P)
    assert np.all(np.abs(got - want) <= 1e-4 * (1 + want))
    # Or the server projects the encrypted queries (one more level); the reference is projected already.
    served = kh.decrypt(squared_distances(kh.encrypt(Xte, tile=Tile(16, 1)), encrypt_reference(kh, Xtr @ P, 16), P))
    assert np.all(np.abs(served - want) <= 1e-4 * (1 + want))


def test_encrypted_reference_layout_errors(kh: KeyHolder) -> None:
    X = np.arange(12.0).reshape(4, 3)
    queries = kh.encrypt(X, tile=Tile(4, 1))
    with pytest.raises(ShapeError, match=r"tile=Tile\(8, 1\)"):
        squared_distances(queries, encrypt_reference(kh, X, 8))
    with pytest.raises(ShapeError, match="encrypt_reference"):
        squared_distances(queries, kh.encrypt(X, packing="columns"))
    with pytest.raises(ShapeError, match="2 features but the queries have 3"):
        squared_distances(queries, encrypt_reference(kh, X[:, :2], 4))
