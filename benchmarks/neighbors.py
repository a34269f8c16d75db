"""Encrypted k-nearest-neighbour classification (core.neighbors) on digits, iris and wine, vs scikit-learn.

Each dataset: stratified 80/20 split (``--seed``), features standardized with the training split's
statistics; digits' 64 pixels are projected onto ``--components`` principal axes learned in torch
(core.neighbors.pca_projection on the training split), applied to the encrypted queries by the server.
The queries are encrypted column-packed in blocks of ``--batch-rows``; the server returns encrypted squared
distances to every training row; the key holder decrypts them and votes (core.neighbors.knn_vote). The
plaintext peer is scikit-learn's brute-force KNeighborsClassifier with the same k on the same projection:
its labels must equal the encrypted ones. ``ms_per_query`` is the server's compute time per query (the key
holder's encryption, decryption and vote are reported apart); ``max_abs_distance_err`` is against torch.

``encref_*``: the same with the reference set encrypted by the key holder too (core.neighbors.encrypt_reference,
for query blocks of ``--batch-rows``; the projection applied by the key holder before encrypting both), so
the server sees neither queries nor references: ``encref_labels_equal`` (vs the same scikit-learn labels),
``encref_ms_per_query`` (server compute), ``encref_reference_mb`` (the encrypted reference set's size).

    .venv/bin/python benchmarks/neighbors.py --json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.neighbors import KNeighborsClassifier
from targets import finish

from ciphergrad.core import Engine, KeyHolder, Tile, plan
from ciphergrad.core.data import standardized_split
from ciphergrad.core.layout import next_pow2
from ciphergrad.core.neighbors import (
    encrypt_reference,
    knn_vote,
    pca_projection,
    squared_distances,
    squared_distances_torch,
)
from ciphergrad.core.tensor import EncryptedMatrix

# name -> (loader, k, PCA components or None)
DATASETS = {"digits": (load_digits, 5, True), "iris": (load_iris, 5, False), "wine": (load_wine, 3, False)}



# Exit 1 when one is missed (benchmarks/targets.py); docs/benchmarks.md states each with its command.
TARGETS = {f"{name}.{key}": (">=", 1) for name in ("digits", "iris", "wine")
           for key in ("labels_equal", "encref_labels_equal")}

def split(loader, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = loader()
    return standardized_split(data.data, data.target, seed)


def run_dataset(
    keys: KeyHolder, server: Engine, loader, k: int, components: int | None, seed: int, batch_rows: int
) -> dict:
    Xtr, Xte, ytr, yte = split(loader, seed)
    P = pca_projection(Xtr, components) if components else None
    encrypt_s = compute_s = decrypt_s = 0.0
    blocks = []
    for start in range(0, len(Xte), batch_rows):
        Q = Xte[start : start + batch_rows]
        tick = time.perf_counter()
        E = keys.encrypt(Q, tile=Tile(next_pow2(len(Q)), 1))
        E = EncryptedMatrix.from_bytes(server, E.to_bytes())
        encrypt_s += time.perf_counter() - tick
        tick = time.perf_counter()
        D = squared_distances(E, Xtr, P)
        compute_s += time.perf_counter() - tick
        tick = time.perf_counter()
        blocks.append(keys.decrypt(EncryptedMatrix.from_bytes(keys.engine, D.to_bytes())))
        decrypt_s += time.perf_counter() - tick
    distances = np.hstack(blocks)  # (references, queries)
    tick = time.perf_counter()
    encrypted_labels = knn_vote(distances, ytr, k)
    vote_s = time.perf_counter() - tick

    # Encrypted reference: the key holder projects and encrypts the references once, for blocks of batch_rows.
    reference_bytes = encrypt_reference(keys, Xtr, min(batch_rows, next_pow2(len(Xte))), P).to_bytes()
    reference = EncryptedMatrix.from_bytes(server, reference_bytes)
    q = reference.tile.cols
    encref_s = 0.0
    encref_blocks = []
    for start in range(0, len(Xte), q):
        Q = Xte[start : start + q] if P is None else Xte[start : start + q] @ P
        E = EncryptedMatrix.from_bytes(server, keys.encrypt(Q, tile=Tile(q, 1)).to_bytes())
        tick = time.perf_counter()
        D = squared_distances(E, reference)
        encref_s += time.perf_counter() - tick
        encref_blocks.append(keys.decrypt(EncryptedMatrix.from_bytes(keys.engine, D.to_bytes())))
    encref_distances = np.hstack(encref_blocks)
    encref_labels = knn_vote(encref_distances, ytr, k)

    plain = KNeighborsClassifier(n_neighbors=k, algorithm="brute")
    plain.fit(Xtr if P is None else Xtr @ P, ytr)
    plain_labels = plain.predict(Xte if P is None else Xte @ P)
    want = squared_distances_torch(Xte, Xtr, P)
    return {
        "train_rows": len(Xtr),
        "queries": len(Xte),
        "features": Xtr.shape[1],
        "components": components,
        "k": k,
        "accuracy_encrypted": float(np.mean(encrypted_labels == yte)),
        "accuracy_plain": float(np.mean(plain_labels == yte)),
        "labels_equal": bool(np.array_equal(encrypted_labels, plain_labels)),
        "ms_per_query": round(1e3 * compute_s / len(Xte), 4),
        "encrypt_ms_per_query": round(1e3 * encrypt_s / len(Xte), 4),
        "decrypt_vote_ms_per_query": round(1e3 * (decrypt_s + vote_s) / len(Xte), 4),
        "max_abs_distance_err": float(np.max(np.abs(distances - want))),
        "max_rel_distance_err": float(np.max(np.abs(distances - want) / (1.0 + want))),
        "encref_labels_equal": bool(np.array_equal(encref_labels, plain_labels)),
        "encref_ms_per_query": round(1e3 * encref_s / len(Xte), 4),
        "encref_max_abs_distance_err": float(np.max(np.abs(encref_distances - want))),
        "encref_reference_mb": round(len(reference_bytes) / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--components", type=int, default=16, help="PCA components for digits")
    parser.add_argument("--batch-rows", type=int, default=128, help="queries per encrypted block")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)

    # Distances cost one level, the projection one more: depth 2 (core.neighbors, the SDK's default).
    keys = KeyHolder(plan(2))
    server = Engine.from_public_context(keys.public_context())
    result: dict = {}
    for name, (loader, k, project) in DATASETS.items():
        components = args.components if project else None
        result[name] = run_dataset(keys, server, loader, k, components, args.seed, args.batch_rows)
    result["params"] = keys.params.summary()

    columns = [
        ("train_rows", "{}"),
        ("queries", "{}"),
        ("features", "{}"),
        ("components", "{}"),
        ("k", "{}"),
        ("accuracy_encrypted", "{:.4f}"),
        ("accuracy_plain", "{:.4f}"),
        ("labels_equal", "{}"),
        ("ms_per_query", "{:.3f}"),
        ("encrypt_ms_per_query", "{:.3f}"),
        ("decrypt_vote_ms_per_query", "{:.3f}"),
        ("max_abs_distance_err", "{:.1e}"),
        ("encref_labels_equal", "{}"),
        ("encref_ms_per_query", "{:.3f}"),
        ("encref_max_abs_distance_err", "{:.1e}"),
        ("encref_reference_mb", "{:.2f}"),
    ]
    names = list(DATASETS)
    print(f"CKKS: {result['params']}\n")
    print(f"{'':26}" + "".join(f"{n:>12}" for n in names))
    for key, fmt in columns:
        print(f"{key:26}" + "".join(f"{fmt.format(result[n][key]):>12}" for n in names))
    if finish(result, TARGETS, args.json):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
