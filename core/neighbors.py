"""Encrypted nearest neighbours: squared Euclidean distances from encrypted queries to a reference set.

Layout: the client encrypts the queries column-packed with ``tile=Tile(q, 1)`` (q >= a power of two
covering a block of queries): ciphertext (i, j) holds feature j of queries ``i*q .. i*q+q-1``, repeated
every q slots. Read with tile ``(slots / q, q)`` the same ciphertext is a ``(1, m)`` row replicated down
``slots / q`` rows — so one plaintext product with a column of the reference set scores one feature of
``slots / q`` references against q queries at once, with no rotation:

    D.T = sum_j  q_j (1, m) * (-2 R[:, j]) (K, 1)  +  |R|**2 (K, 1)  +  sum_j q_j * q_j (1, m)

The result is the ``(K, m)`` matrix of squared distances (transposed: references down, queries across),
one level (two with a projection). The key holder decrypts it and takes the top k (``knn_vote``): the
server never sees an ordering. An optional plaintext projection (PCA, NCA learned in torch) is applied
to the encrypted queries first (``Q @ P``: plaintext products only, column-packed).
"""

from __future__ import annotations

import numpy as np
import torch

from core.errors import ShapeError
from core.tensor import EncryptedMatrix

__all__ = ["knn_vote", "pca_projection", "squared_distances", "squared_distances_torch"]


def squared_distances(
    queries: EncryptedMatrix, reference: np.ndarray, projection: np.ndarray | None = None
) -> EncryptedMatrix:
    """``(K, m)``: entry (k, i) = |P^T q_i - P^T r_k|**2 (P the projection, identity by default)."""
    if queries.tile.cols != 1:
        raise ShapeError("queries must be column-packed: encrypt them with tile=Tile(q, 1) (e.g. packing='columns')")
    R = np.asarray(reference, dtype=np.float64)
    if R.ndim != 2 or R.shape[1] != queries.shape[1]:
        raise ShapeError(f"reference of shape {R.shape} does not match {queries.shape[1]} query features")
    if projection is not None:
        P = np.asarray(projection, dtype=np.float64)
        # Entries that encode to nothing at scale 2**40 (e.g. PCA loadings of a constant feature, ~1e-17)
        # would make SEAL refuse the product as "transparent"; they are zero for CKKS anyway.
        P = np.where(np.abs(P) < 1e-12, 0.0, P)
        queries = queries @ P
        R = R @ P
    R = np.where(np.abs(R) < 1e-12, 0.0, R)
    norms = np.sum(R * R, axis=1, keepdims=True)  # (K, 1), plaintext
    cross = None
    square = None
    for j in range(R.shape[1]):
        column = queries.column(j).T  # feature j of every query, as a row
        part = column * (-2.0 * R[:, j : j + 1])
        cross = part if cross is None else cross + part
        sq = column * column
        square = sq if square is None else square + sq
    # |q|**2 ends in a ciphertext product, so its scale is off by ~7e-7 relative (see core.stats): the
    # same offset for every reference of a query, so it cannot change which references are nearest.
    return cross + norms + square


def knn_vote(distances_km: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Key-holder side: majority label of the k nearest references per query (ties: smallest label).

    ``distances_km`` is the decrypted ``(K, m)`` result of ``squared_distances``.
    """
    D = np.asarray(distances_km, dtype=np.float64).T
    labels = np.asarray(labels)
    nearest = np.argsort(D, axis=1, kind="stable")[:, :k]
    classes = np.unique(labels)
    votes = (labels[nearest][:, :, None] == classes[None, None, :]).sum(axis=1)
    return classes[np.argmax(votes, axis=1)]


def squared_distances_torch(
    queries: np.ndarray, reference: np.ndarray, projection: np.ndarray | None = None
) -> np.ndarray:
    """Torch twin (float64), in the same ``(K, m)`` orientation."""
    Q = torch.as_tensor(np.asarray(queries, dtype=np.float64))
    R = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    if projection is not None:
        P = torch.as_tensor(np.asarray(projection, dtype=np.float64))
        Q, R = Q @ P, R @ P
    return (torch.cdist(R, Q) ** 2).numpy()


def pca_projection(X: np.ndarray, components: int) -> np.ndarray:
    """A ``(d, components)`` PCA projection learned in torch (the key holder's or the model owner's)."""
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    centred = Xt - Xt.mean(dim=0, keepdim=True)
    _, _, V = torch.linalg.svd(centred, full_matrices=False)
    return V[:components].T.numpy()
