"""The key holder: the only party with the secret key. It encrypts, decrypts and refreshes."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import tenseal as ts
from tenseal import sealapi

from ciphergrad.core import layout
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import MalformedInputError
from ciphergrad.core.params import CKKSParameters
from ciphergrad.core.tensor import EncryptedMatrix


class KeyHolder:
    """Creates a CKKS context and keeps its secret key in this process.

    ``rotations`` limits the Galois keys to the rotation steps an algorithm uses (see
    ``core.layout.rotation_steps``); by default every power-of-two step is covered.
    """

    def __init__(self, params: CKKSParameters, rotations: Iterable[int] | None = None) -> None:
        self.params = params
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        context.global_scale = 2.0**params.scale_bits
        # TenSEAL only creates the Galois key container with the full power-of-two set; overwrite it.
        context.generate_galois_keys()
        if rotations is not None:
            steps = sorted({int(s) for s in rotations if s % params.slots})
            galois = context.seal_context().data.key_context_data().galois_tool()
            sealapi.KeyGenerator(context.seal_context().data, context.secret_key().data).create_galois_keys(
                [galois.get_elt_from_step(s) for s in steps], context.data.galois_keys()
            )
        self._context = context
        self.engine = Engine(context)
        self._decryptor = sealapi.Decryptor(self.engine.seal, context.secret_key().data)

    @classmethod
    def for_tiles(cls, params: CKKSParameters, tiles: Iterable[layout.Tile], extra: Iterable[int] = ()) -> KeyHolder:
        """A key holder with Galois keys for exactly the rotations these tiles need, plus ``extra`` steps
        (an algorithm's own, e.g. ``core.gram.rotation_steps``)."""
        steps: set[int] = set(extra)
        for tile in tiles:
            steps.update(layout.rotation_steps(tile))
        return cls(params, rotations=steps)

    @classmethod
    def from_secret_context(cls, data: bytes) -> KeyHolder:
        """The key holder whose full context ``secret_context()`` serialized (e.g. read back from the
        analyst's key directory, client.keystore). Its parameters are read from the context itself. TenSEAL
        remakes the evaluation keys from the secret key on loading, with its default Galois keys (the power-of-
        two steps): encryption and decryption are the same, but ``public_context()`` is not the one a session
        was created with."""
        try:
            context = ts.context_from(data)
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on garbage
            raise MalformedInputError(f"not a serialized TenSEAL CKKS context: {exc}") from exc
        if not context.has_secret_key():
            raise MalformedInputError("the context carries no secret key: it is a public context, not a key holder's")
        holder = cls.__new__(cls)
        holder._context = context
        holder.engine = Engine(context)
        holder.params = holder.engine.params
        holder._decryptor = sealapi.Decryptor(holder.engine.seal, context.secret_key().data)
        return holder

    def public_context(self) -> bytes:
        """Public key, relinearization and Galois keys: everything a computing party needs, no secret."""
        return self._context.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True
        )

    def encryption_context(self) -> bytes:
        """The public key alone (no relinearization or Galois keys): enough to encrypt, about 1% of
        ``public_context()`` at N=8192."""
        return encryption_context(self.public_context())

    def encrypt(self, array: Any, *, tile: layout.Tile | None = None, packing: str = "rows") -> EncryptedMatrix:
        return EncryptedMatrix.encrypt(self.engine, array, tile=tile, packing=packing)

    def decrypt(self, matrix: EncryptedMatrix) -> np.ndarray:
        vectors = []
        for line in matrix._tiles:
            decoded = []
            for ct in line:
                plain = sealapi.Plaintext()
                self._decryptor.decrypt(ct, plain)
                decoded.append(np.asarray(self.engine.encoder.decode_double(plain)))
            vectors.append(decoded)
        return layout.unpack(vectors, matrix.shape, matrix.tile)

    def refresh(self, matrix: EncryptedMatrix) -> EncryptedMatrix:
        """Decrypt and re-encrypt at the top level: the CKKS stand-in for bootstrapping."""
        return self.encrypt(self.decrypt(matrix), tile=matrix.tile)

    def secret_context(self) -> bytes:
        """The full context, SECRET key included: for the owner's key directory only, never a server. TenSEAL
        stores the secret and public keys only (evaluation keys are remade on loading): under 1 MB at N=8192."""
        return self._context.serialize(save_secret_key=True)

    def save(self, path: str) -> None:
        """Write the full context, secret key included, readable by the owner only."""
        warnings.warn(
            f"writing the SECRET key to {path}: anyone who reads this file can decrypt your data",
            stacklevel=2,
        )
        data = self.secret_context()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # the mode given to open() only applies when the file is new
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def encryption_context(public_context: bytes) -> bytes:
    """A serialized public context stripped to its encryption key: what a pool's contributors need to
    encrypt under the analyst's key, without the evaluation keys (tens of MB) or, of course, the secret."""
    context = ts.context_from(public_context)
    if context.has_secret_key():
        context.make_context_public()
    return context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                             save_relin_keys=False)


def key_fingerprint(context: bytes) -> str:
    """SHA-256 (hex) of a context's public encryption key, as ``encryption_context`` serializes it (deterministic):
    what an invitation carries so that a contributor encrypts only under the analyst's own key."""
    return hashlib.sha256(encryption_context(context)).hexdigest()
