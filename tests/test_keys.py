"""The key holder, the public context and the computing party's refusal of secret keys."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tenseal as ts

from ciphergrad.core import EncryptedMatrix, Engine, KeyHolder, MalformedInputError, SecretKeyError, Tile
from ciphergrad.core.layout import choose_tile, rotation_steps


def test_public_context_has_no_secret_key(public_context):
    context = ts.context_from(public_context)
    assert not context.has_secret_key()
    assert context.has_public_key()
    assert context.has_relin_keys()
    assert context.has_galois_keys()


def test_public_engine_matches_parameters(engine, params):
    assert engine.params == params
    assert engine.slots == params.slots
    assert engine.top_level == params.depth


def test_public_side_encrypts_key_holder_decrypts(engine, kh):
    x = np.arange(12.0).reshape(4, 3) / 7
    data = EncryptedMatrix.encrypt(engine, x).to_bytes()
    back = EncryptedMatrix.from_bytes(kh.engine, data)  # through bytes, as over the wire
    np.testing.assert_allclose(kh.decrypt(back), x, atol=1e-6)


def test_key_holder_encrypts_public_side_computes(engine, kh):
    x = np.linspace(-1, 1, 10).reshape(5, 2)
    X = EncryptedMatrix.from_bytes(engine, kh.encrypt(x).to_bytes())
    result = EncryptedMatrix.from_bytes(kh.engine, (X * X).sum(axis=0).to_bytes())
    np.testing.assert_allclose(kh.decrypt(result), (x * x).sum(axis=0, keepdims=True), atol=1e-6)


@pytest.fixture(scope="module")
def secret_bytes(kh, tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "secret.ctx"
    with pytest.warns(UserWarning, match="SECRET"):
        kh.save(str(path))
    return path.read_bytes()


def test_engine_refuses_secret_key(secret_bytes):
    assert ts.context_from(secret_bytes).has_secret_key()
    with pytest.raises(SecretKeyError, match="secret key"):
        Engine.from_public_context(secret_bytes)


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x00" * 1000, b"CGEM" * 64])
def test_engine_refuses_garbage(data):
    with pytest.raises(MalformedInputError):
        Engine.from_public_context(data)


def test_engine_refuses_truncated_context(public_context):
    with pytest.raises(MalformedInputError):
        Engine.from_public_context(public_context[: len(public_context) // 2])


def test_engine_refuses_context_without_relin_keys():
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 20, 40])
    context.global_scale = 2.0**20
    data = context.serialize(save_secret_key=False, save_relin_keys=False, save_galois_keys=False)
    with pytest.raises(MalformedInputError, match="relinearization"):
        Engine.from_public_context(data)


def test_save_writes_owner_only_and_warns(kh, tmp_path):
    path = tmp_path / "key.ctx"
    with pytest.warns(UserWarning, match="SECRET key"):
        kh.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ts.context_from(path.read_bytes()).has_secret_key()


def test_save_over_existing_file_is_owner_only(kh, tmp_path):
    path = tmp_path / "key.ctx"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    with pytest.warns(UserWarning):
        kh.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_refresh_returns_a_fresh_ciphertext(kh, enc):
    x = np.linspace(-2, 2, 8).reshape(4, 2)
    tired = enc(x, tile=Tile(2, 2)) * enc(np.ones((4, 2)), tile=Tile(2, 2)) * 1.0
    assert tired.level == 1
    fresh = kh.refresh(tired)
    assert fresh.level == kh.params.depth
    assert (fresh.shape, fresh.tile) == (tired.shape, tired.tile)
    np.testing.assert_allclose(kh.decrypt(fresh), x, atol=1e-5)


# -- Galois keys for chosen rotations ---------------------------------------------------------------

SHAPE = (6, 3)  # default tile 8x4


@pytest.fixture(scope="module")
def limited(params):
    """A key holder with Galois keys only for the rotations of one tile."""
    return KeyHolder.for_tiles(params, [choose_tile(SHAPE, params.slots)])


@pytest.fixture(scope="module")
def limited_engine(limited):
    return Engine.from_public_context(limited.public_context())


def test_rotation_steps_of_a_tile():
    assert rotation_steps(Tile(8, 4)) == [-4, -2, -1, 1, 2, 4, 8, 16]
    assert rotation_steps(Tile(8, 1)) == [1, 2, 4]
    assert rotation_steps(Tile(1, 1)) == []


def test_limited_rotations_give_a_smaller_public_context(limited, public_context):
    smaller = limited.public_context()
    assert len(smaller) < len(public_context) / 2
    assert not ts.context_from(smaller).has_secret_key()


def test_key_holder_rotations_argument(params):
    holder = KeyHolder(params, rotations=[1])
    engine = Engine.from_public_context(holder.public_context())
    x = np.arange(1.0, 9.0)
    rotated = engine.rotate(engine.encrypt(np.tile(x, params.slots // 8)), 1)
    decrypted = holder.decrypt(EncryptedMatrix(engine, [[rotated]], (1, 8), Tile(1, 8)))
    # A rotation of a rescaled ciphertext keeps its key-switching noise: ~3e-7 typical, up to ~1.5e-6 seen
    # across fresh keys at scale 2^40; a wrong rotation would be off by ~1.
    np.testing.assert_allclose(decrypted[0], np.roll(x, -1), atol=1e-5)
    with pytest.raises(ValueError, match="Galois key"):
        engine.rotate(engine.encrypt(np.zeros(params.slots)), 3)


def test_limited_keys_serve_the_tile_operations(limited, limited_engine):
    rng = np.random.default_rng(3)
    x, w, m = rng.uniform(-2, 2, SHAPE), rng.uniform(-2, 2, (1, SHAPE[1])), rng.uniform(-2, 2, (SHAPE[1], 2))
    X = EncryptedMatrix.encrypt(limited_engine, x)
    W = EncryptedMatrix.encrypt(limited_engine, w, tile=X.tile)
    checks = [
        (X.sum(axis=0), x.sum(axis=0, keepdims=True)),
        (X.sum(axis=1), x.sum(axis=1, keepdims=True)),
        (X.sum(), x.sum(keepdims=True)),
        ((X * W).sum(axis=1), x @ w.T),
        (X @ w[0], x @ w.T),
        (X @ m, x @ m),  # offsets 0 and 1 only
    ]
    for got, want in checks:
        np.testing.assert_allclose(limited.decrypt(got), want, atol=1e-5)


def test_limited_keys_serve_matmul_with_many_outputs(limited, limited_engine):
    x = np.arange(18.0).reshape(SHAPE) / 10
    w = np.arange(12.0).reshape(3, 4) / 10  # 4 outputs: offsets 1, 2, 3 in a 4-wide tile
    X = EncryptedMatrix.encrypt(limited_engine, x)
    np.testing.assert_allclose(limited.decrypt(X @ w), x @ w, atol=1e-5)


def test_a_secret_key_is_seen_in_the_context_bytes_without_loading_them(kh) -> None:
    """``core.context_bytes``: what lets a Ray server refuse a secret key before a worker would load it."""
    from ciphergrad.core.context_bytes import carries_secret_key

    assert carries_secret_key(kh._context.serialize(save_secret_key=True))
    assert not carries_secret_key(kh.public_context())
    assert not carries_secret_key(b"garbage") and not carries_secret_key(b"")


def test_galois_keys_travel_seeded_at_half_the_bytes(limited, limited_engine) -> None:
    """``core.context_bytes.with_galois_keys``: the key holder's public context carries SEAL's seeded Galois keys;
    TenSEAL's own serialization of the very same keys (expanded on loading) is about twice as large."""
    seeded = limited.public_context()
    expanded = limited_engine.context.serialize(save_public_key=True, save_secret_key=False,
                                                save_galois_keys=True, save_relin_keys=True)
    without = limited_engine.context.serialize(save_public_key=True, save_secret_key=False,
                                               save_galois_keys=False, save_relin_keys=True)
    assert len(seeded) - len(without) < 0.6 * (len(expanded) - len(without))
    for step in (1, 8, 16, -4):  # the same keys as the tile asked for: a missing one would raise
        assert limited_engine.galois_keys.has_key(limited_engine.seal.key_context_data().galois_tool()
                                                  .get_elt_from_step(step))


def test_key_holder_rotates_with_its_own_keys_made_on_first_use(params) -> None:
    holder = KeyHolder(params, rotations=[2])
    assert holder.engine.galois_keys is None  # nothing expanded until this process rotates
    x = np.arange(1.0, 9.0)
    rotated = holder.engine.rotate(holder.engine.encrypt(np.tile(x, params.slots // 8)), 2)
    decrypted = holder.decrypt(EncryptedMatrix(holder.engine, [[rotated]], (1, 8), Tile(1, 8)))
    np.testing.assert_allclose(decrypted[0], np.roll(x, -2), atol=1e-5)
    with pytest.raises(ValueError, match="Galois key"):
        holder.engine.rotate(rotated, 1)


def test_with_galois_keys_replaces_the_keys_and_keeps_the_rest(kh, limited) -> None:
    from ciphergrad.core.context_bytes import with_galois_keys

    full = kh.public_context()  # every power-of-two step
    spliced = with_galois_keys(full, limited._galois_keys)
    engine = Engine.from_public_context(spliced)
    steps = rotation_steps(choose_tile(SHAPE, kh.params.slots))
    assert engine.params == kh.params and engine.galois_keys.size() == len(steps)
    x = np.linspace(-1, 1, 8)
    ct = EncryptedMatrix.encrypt(engine, x[None, :], tile=Tile(1, 8))
    np.testing.assert_allclose(kh.decrypt(ct), x[None, :], atol=1e-6)  # still kh's public key


def test_a_key_holder_read_back_from_its_secret_form(kh, secret_bytes) -> None:
    """The secret form keeps the secret and public keys (``client.keystore``): the same encryption key, no
    Galois keys remade on loading (the server keeps the session's public context from its creation)."""
    from ciphergrad.core.keys import key_fingerprint

    assert len(secret_bytes) < 1_000_000
    holder = KeyHolder.from_secret_context(secret_bytes)
    assert key_fingerprint(holder.public_context()) == key_fingerprint(kh.public_context())
    assert not ts.context_from(holder.public_context()).has_galois_keys()
    x = np.linspace(-1, 1, 8)[None, :]
    np.testing.assert_allclose(kh.decrypt(holder.encrypt(x)), x, atol=1e-6)


def test_the_public_key_alone_is_cut_from_the_framing(kh, limited, secret_bytes) -> None:
    """``core.context_bytes.encryption_only``: what a server hands pool contributors without loading a context
    carries the analyst's key (the same fingerprint) and no evaluation key."""
    from ciphergrad.core.context_bytes import encryption_only
    from ciphergrad.core.keys import encryption_context, key_fingerprint

    for holder in (kh, limited):
        cut = encryption_only(holder.public_context())
        assert len(cut) < len(encryption_context(holder.public_context())) * 1.01
        context = ts.context_from(cut)
        assert context.has_public_key() and not context.has_relin_keys() and not context.has_galois_keys()
        assert key_fingerprint(cut) == key_fingerprint(holder.public_context())
        x = np.linspace(-1, 1, 8)[None, :]
        encrypted = EncryptedMatrix.encrypt(Engine.for_encryption(cut), x)  # as a contributor does
        np.testing.assert_allclose(holder.decrypt(encrypted), x, atol=1e-6)
    with pytest.raises(ValueError, match="private"):
        encryption_only(secret_bytes)
