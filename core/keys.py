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
from ciphergrad.core.context_bytes import with_galois_keys
from ciphergrad.core.engine import Engine, scratch_file
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
        steps = None if rotations is None else sorted({int(s) for s in rotations if s % params.slots})
        # Seeded (half the bytes; core.context_bytes) and made once: the public context carries them as they
        # are, and this process expands them only if it rotates itself (an in-process computation).
        self._galois_keys = _seeded_galois_keys(context, steps) if steps != [] else None
        self._context = context
        self.engine = Engine(context, load_galois_keys=self._load_galois_keys)
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
        remakes the relinearization keys from the secret key on loading, and no Galois keys (none were made
        in TenSEAL's own container): encryption and decryption are the same, but ``public_context()`` is not
        the one a session was created with (the server keeps that one)."""
        try:
            context = ts.context_from(data)
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on garbage
            raise MalformedInputError(f"not a serialized TenSEAL CKKS context: {exc}") from exc
        if not context.has_secret_key():
            raise MalformedInputError("the context carries no secret key: it is a public context, not a key holder's")
        holder = cls.__new__(cls)
        holder._context = context
        holder._galois_keys = None  # TenSEAL's own, made on loading (docstring)
        holder.engine = Engine(context)
        holder.params = holder.engine.params
        holder._decryptor = sealapi.Decryptor(holder.engine.seal, context.secret_key().data)
        return holder

    def public_context(self) -> bytes:
        """Public key, relinearization and Galois keys: everything a computing party needs, no secret."""
        if self._galois_keys is None:  # a context loaded from its secret form carries TenSEAL's own keys
            return self._context.serialize(save_public_key=True, save_secret_key=False,
                                           save_galois_keys=self._context.has_galois_keys(), save_relin_keys=True)
        public = self._context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                         save_relin_keys=True)
        return with_galois_keys(public, self._galois_keys)

    def _load_galois_keys(self) -> Any:
        """The Galois keys expanded from their seeds, for this process's own rotations."""
        if self._galois_keys is None:
            return None
        keys = sealapi.GaloisKeys()
        with scratch_file(self._galois_keys) as path:
            keys.load(self.engine.seal, path)
        return keys

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


def _seeded_galois_keys(context: ts.Context, steps: list[int] | None) -> bytes:
    """SEAL's seeded serialization of the Galois keys for ``steps`` (None: SEAL's default, every power-of-two
    step both ways): written once, never held expanded by the key holder."""
    seal = context.seal_context().data
    generator = sealapi.KeyGenerator(seal, context.secret_key().data)
    if steps is None:
        serializable = generator.create_galois_keys()
    else:
        galois = seal.key_context_data().galois_tool()
        serializable = generator.create_galois_keys([galois.get_elt_from_step(s) for s in steps])
    with scratch_file() as path:
        serializable.save(path)
        with open(path, "rb") as handle:
            return handle.read()


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
