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

Encrypted reference (the client owns queries and reference; the server sees neither): the same
ciphertext trick needs each reference column as a ``(K, 1)`` matrix in the queries' row tile
``(slots / q, q)`` -- every reference value repeated q times, next to the q queries it is compared
with. ``encrypt_reference`` packs all d columns at once as the ``(K, d*q)`` matrix ``np.repeat(R, q, 1)``
in tile ``(slots / q, q)``: ciphertext column j *is* reference column j broadcast across the tile, so

    D.T = sum_j (q_j (1, m) - r_j (K, 1))**2

is one ciphertext product per feature (one level). It is an ordinary EncryptedMatrix (serializes, uploads
as a dataset); it only fits queries encrypted with ``tile=Tile(q, 1)``. A projection is applied by the
client to the reference before encrypting (``encrypt_reference(..., projection=P)``).
"""

from __future__ import annotations

import numpy as np

from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import ShapeError
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import Tile, next_pow2
from ciphergrad.core.tensor import EncryptedMatrix

__all__ = [
    "check_reference",
    "encrypt_reference",
    "knn_vote",
    "pca_projection",
    "reference_tile",
    "squared_distances",
    "squared_distances_encrypted_torch",
    "squared_distances_torch",
]


def squared_distances(
    queries: EncryptedMatrix, reference: np.ndarray | EncryptedMatrix, projection: np.ndarray | None = None
) -> EncryptedMatrix:
    """``(K, m)``: entry (k, i) = |P^T q_i - P^T r_k|**2 (P the projection, identity by default).

    ``reference`` is a plaintext ``(K, d)`` array, or a reference set encrypted by the key holder with
    ``encrypt_reference`` for the queries' tile (then already projected: ``projection`` applies to the
    queries only).
    """
    if queries.tile.cols != 1:
        raise ShapeError("queries must be column-packed: encrypt them with tile=Tile(q, 1) (e.g. packing='columns')")
    if isinstance(reference, EncryptedMatrix):
        return _encrypted_reference_distances(queries, reference, projection)
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


def reference_tile(slots: int, query_rows: int) -> Tile:
    """The tile of a reference set encrypted for query blocks of ``query_rows`` (rounded up to a power of
    two, q): ``(slots / q, q)``, the tile in which a column-packed query block reads as a row."""
    q = next_pow2(query_rows)
    if q > slots:
        raise ShapeError(f"query blocks of {query_rows} rows do not fit in the {slots} slots of a ciphertext")
    return Tile(slots // q, q)


def encrypt_reference(
    keys: KeyHolder | Engine, reference: np.ndarray, query_rows: int | Tile, projection: np.ndarray | None = None
) -> EncryptedMatrix:
    """Encrypt a ``(K, d)`` reference set (projected by ``projection`` first, if given) so that
    ``squared_distances`` scores it against queries encrypted with ``tile=Tile(q, 1)``.

    ``query_rows``: the rows of a query block (q is the next power of two) or the queries' tile. The result
    is the ``(K, d*q)`` matrix ``np.repeat(R, q, axis=1)`` in tile ``(slots/q, q)``: d ciphertexts per
    ``slots/q`` references. Encrypting needs only the public key (a KeyHolder or a public Engine).
    """
    engine = keys.engine if isinstance(keys, KeyHolder) else keys
    R = np.asarray(reference, dtype=np.float64)
    if R.ndim != 2:
        raise ShapeError(f"the reference set must be a (K, d) matrix, got {R.ndim} dimensions")
    if projection is not None:
        R = R @ np.asarray(projection, dtype=np.float64)
    rows = query_rows.rows if isinstance(query_rows, Tile) else int(query_rows)
    tile = reference_tile(engine.slots, rows)
    R = np.where(np.abs(R) < 1e-12, 0.0, R)  # values that encode to nothing would make SEAL refuse products
    return EncryptedMatrix.encrypt(engine, np.repeat(R, tile.cols, axis=1), tile=tile)


def check_reference(reference: EncryptedMatrix, queries_tile: Tile | None = None, features: int | None = None,
                    slots: int | None = None) -> int:
    """The number of features of an encrypted reference set; ShapeError (saying what to do) if its layout is
    not ``encrypt_reference``'s or does not fit queries in ``queries_tile`` with ``features`` columns.
    ``reference`` needs only ``shape`` and ``tile`` when ``slots`` (the context's) is given."""
    tile, slots = reference.tile, slots or reference.engine.slots
    q = tile.cols
    if tile.rows * q != slots or reference.shape[1] % q:
        raise ShapeError(
            f"the encrypted reference set ({reference.shape[0]}x{reference.shape[1]} in tile {tile.rows}x{q}) is "
            "not laid out for distances: encrypt it with core.neighbors.encrypt_reference (each column repeated "
            "q times in tile (slots/q, q)), e.g. Client.upload_encrypted_reference(R, query_rows=q)"
        )
    d = reference.shape[1] // q
    if queries_tile is not None and queries_tile != Tile(q, 1):
        raise ShapeError(
            f"the reference set was encrypted for query blocks of {q} rows (tile {tile.rows}x{q}) but the queries "
            f"are in tile {queries_tile.rows}x{queries_tile.cols}: encrypt the queries with tile=Tile({q}, 1), or "
            f"encrypt the reference again with query_rows={queries_tile.rows}"
        )
    if features is not None and features != d:
        raise ShapeError(
            f"the encrypted reference set has {d} features but the queries have {features}: encrypt the "
            "reference and the queries with the same columns (and the same projection)"
        )
    return d


def _encrypted_reference_distances(
    queries: EncryptedMatrix, reference: EncryptedMatrix, projection: np.ndarray | None
) -> EncryptedMatrix:
    if projection is not None:
        P = np.asarray(projection, dtype=np.float64)
        queries = queries @ np.where(np.abs(P) < 1e-12, 0.0, P)
    d = check_reference(reference, queries.tile, queries.shape[1])
    K = reference.shape[0]
    total = None
    for j in range(d):
        # Ciphertext column j of the reference: column j of R repeated across the tile, i.e. a (K, 1) matrix.
        r_j = EncryptedMatrix(
            reference.engine,
            [[line[j]] for line in reference._tiles],
            (K, 1),
            reference.tile,
            (reference.zero_padding[0], True),
        )
        diff = queries.column(j).T - r_j  # (1, m) - (K, 1) -> (K, m), same tile: no rotation
        part = diff * diff
        total = part if total is None else total + part
    return total


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
    import torch  # only the twin needs torch; the encrypted path runs without it

    Q = torch.as_tensor(np.asarray(queries, dtype=np.float64))
    R = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    if projection is not None:
        P = torch.as_tensor(np.asarray(projection, dtype=np.float64))
        Q, R = Q @ P, R @ P
    return (torch.cdist(R, Q) ** 2).numpy()


def squared_distances_encrypted_torch(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Torch twin of the encrypted-reference computation, term by term: sum_j (q_j - r_j)**2, ``(K, m)``."""
    import torch

    Q = torch.as_tensor(np.asarray(queries, dtype=np.float64))
    R = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    return ((Q.T[None, :, :] - R[:, :, None]) ** 2).sum(dim=1).numpy()


def pca_projection(X: np.ndarray, components: int) -> np.ndarray:
    """A ``(d, components)`` PCA projection learned in torch (the key holder's or the model owner's)."""
    import torch

    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    centred = Xt - Xt.mean(dim=0, keepdim=True)
    _, _, V = torch.linalg.svd(centred, full_matrices=False)
    return V[:components].T.numpy()
