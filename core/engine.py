"""The CKKS engine: SEAL's evaluator behind a small, checked, counted interface.

TenSEAL owns keys and contexts; the arithmetic goes straight to SEAL (``tenseal.sealapi``) because
TenSEAL's vectors expose no rotation and rescale with a scale of exactly 2**k although the primes are
only close to 2**k. Here every ciphertext keeps its true scale, every plaintext operand is encoded at the
scale that brings the product back to exactly 2**scale_bits, and no operation modifies its operands.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts
from tenseal import sealapi

from ciphergrad.core.errors import LevelError, MalformedInputError, ParameterError, SecretKeyError
from ciphergrad.core.params import CKKSParameters

Ciphertext = sealapi.Ciphertext
# Two scales within this relative distance are treated as equal when adding (the cost is an error of
# that relative size on the smaller-scale operand; products of ~40-bit primes differ by ~1e-7).
_SCALE_TOLERANCE = 1e-4


_ABSORBING = threading.Lock()  # OpCounts.absorb's


@dataclass
class OpCounts:
    """Homomorphic operations performed, for reports and benchmarks."""

    multiplications: int = 0
    plain_multiplications: int = 0
    rotations: int = 0
    additions: int = 0
    refreshes: int = 0

    def snapshot(self) -> OpCounts:
        return OpCounts(**vars(self))

    def since(self, earlier: OpCounts) -> OpCounts:
        return OpCounts(**{k: v - getattr(earlier, k) for k, v in vars(self).items()})

    def __add__(self, other: OpCounts) -> OpCounts:
        return OpCounts(**{k: v + getattr(other, k) for k, v in vars(self).items()})

    def absorb(self, other: OpCounts) -> None:
        """Add ``other``'s counts into these, in place: a tally shared by threads (a servicer's, which its
        calls add their remote operations to) loses none of them."""
        with _ABSORBING:
            for name, value in vars(other).items():
                setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Engine:
    """Evaluation keys and SEAL evaluator for one CKKS context (public or private)."""

    context: ts.Context
    counts: OpCounts = field(default_factory=OpCounts)
    # Galois keys the context does not hold, made on the first rotation (the key holder's seeded keys).
    load_galois_keys: Callable[[], sealapi.GaloisKeys | None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.seal = self.context.seal_context().data
        self.evaluator = sealapi.Evaluator(self.seal)
        self.encoder = sealapi.CKKSEncoder(self.seal)
        self.encryptor = sealapi.Encryptor(self.seal, self.context.data.public_key())
        # An encryption-only context (a pool contributor's: public key alone) has no evaluation keys.
        self.relin_keys = self.context.data.relin_keys() if self.context.has_relin_keys() else None
        self.galois_keys = self.context.data.galois_keys() if self.context.has_galois_keys() else None
        self.slots = self.encoder.slot_count()
        self.scale = float(self.context.global_scale)
        first = self.seal.first_context_data()
        self.top_level = first.chain_index()
        self._primes = [m.value() for m in first.parms().coeff_modulus()]
        self._parms_ids = {}
        data = first
        while data is not None:
            self._parms_ids[data.chain_index()] = data.parms_id()
            data = data.next_context_data()
        self.params = CKKSParameters(
            poly_modulus_degree=first.parms().poly_modulus_degree(),
            coeff_mod_bit_sizes=(
                *[m.bit_count() for m in first.parms().coeff_modulus()],
                self.seal.key_context_data().parms().coeff_modulus()[-1].bit_count(),
            ),
            scale_bits=round(math.log2(self.scale)),
        )

    @classmethod
    def from_public_context(cls, data: bytes) -> Engine:
        """The computing party's engine. Refuses a context that carries a secret key."""
        try:
            context = ts.context_from(data)
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on garbage
            raise MalformedInputError(f"not a serialized TenSEAL CKKS context: {exc}") from exc
        if context.has_secret_key():
            raise SecretKeyError(
                "the context carries a secret key: the computing party must never hold it; "
                "export it with KeyHolder.public_context()"
            )
        if not context.has_relin_keys() or not context.has_public_key():
            raise MalformedInputError("the context lacks its public key or relinearization keys")
        _check_ckks_scale(context)
        return cls(context)

    @classmethod
    def for_encryption(cls, data: bytes) -> Engine:
        """An engine that can only encrypt: from a context holding the public key and nothing secret (what a
        pool contributor downloads, ``core.keys.encryption_context``)."""
        try:
            context = ts.context_from(data)
        except Exception as exc:
            raise MalformedInputError(f"not a serialized TenSEAL CKKS context: {exc}") from exc
        if context.has_secret_key():
            raise SecretKeyError("the context carries a secret key: a contributor must never receive it")
        if not context.has_public_key():
            raise MalformedInputError("the context lacks its public key: contributors encrypt with it")
        _check_ckks_scale(context)
        return cls(context)

    # -- levels and scales -------------------------------------------------------------------
    # A product is left unrescaled (scale ~ 2**(2k)) until something needs it rescaled: rotations
    # done at that scale add key-switching noise that the rescale then divides away (lazy rescaling).
    def pending(self, ct: Ciphertext) -> bool:
        """Whether ``ct`` still carries an unrescaled product."""
        return ct.scale > self.scale**1.5

    def level(self, ct: Ciphertext) -> int:
        """Multiplicative levels left (a pending rescale already counts as spent)."""
        return self.seal.get_context_data(ct.parms_id()).chain_index() - self.pending(ct)

    def _chain_index(self, ct: Ciphertext) -> int:
        return self.seal.get_context_data(ct.parms_id()).chain_index()

    def _require(self, ct: Ciphertext, levels: int, what: str) -> None:
        if self.level(ct) < levels:
            raise LevelError(
                f"{what} needs {levels} multiplicative level(s) but the ciphertext has "
                f"{self.level(ct)} left: refresh it with the key holder, or plan a deeper chain"
            )

    def rescale(self, ct: Ciphertext) -> Ciphertext:
        """Finish a pending product (a no-op for anything else)."""
        if not self.pending(ct):
            return ct
        out = Ciphertext(self.seal)
        self.evaluator.rescale_to_next(ct, out)
        if abs(out.scale / self.scale - 1) < 1e-9:
            out.scale = self.scale  # plaintext factors are encoded so that this is exact
        return out

    def _align(self, a: Ciphertext, b: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        """Bring two ciphertexts to one level and one scale without spending a level of the result.

        The operand at the higher level has a level to spare: multiplying it by 1 encoded at the right scale
        lands it on the other's scale exactly. Only at equal levels are nearly equal scales relabelled
        (a relative error of |s1/s2 - 1|, ~1e-7 for products of 40-bit primes).
        """
        if self.pending(a) != self.pending(b):
            a, b = self.rescale(a), self.rescale(b)
        if self._chain_index(a) > self._chain_index(b):
            a = self._land_on(a, self._chain_index(b), b.scale)
        elif self._chain_index(b) > self._chain_index(a):
            b = self._land_on(b, self._chain_index(a), a.scale)
        if a.scale != b.scale:
            if abs(a.scale / b.scale - 1) > _SCALE_TOLERANCE:
                raise LevelError(
                    f"operands have incompatible scales 2^{math.log2(a.scale):.3f} and "
                    f"2^{math.log2(b.scale):.3f}: multiply both to the same level first"
                )
            if b is not a:
                b = self._switch_raw(b, self._chain_index(b))
                b.scale = a.scale
        return a, b

    def _land_on(self, ct: Ciphertext, level: int, scale: float) -> Ciphertext:
        """``ct`` at a lower ``level`` with exactly ``scale`` (a free plaintext multiplication by one)."""
        if ct.scale == scale or self.pending(ct):
            return self._switch_raw(ct, level)
        current = self._chain_index(ct)
        out = Ciphertext(self.seal)
        one = self.encode(np.ones(self.slots), current, scale * self._primes[current] / ct.scale)
        self.evaluator.multiply_plain(ct, one, out)
        self.evaluator.rescale_to_next_inplace(out)
        out.scale = scale
        return self._switch_raw(out, level) if level < current - 1 else out

    def lower(self, ct: Ciphertext, level: int) -> Ciphertext:
        """``ct`` at a lower ``level``, same scale (free of noise; later operations on it get cheaper)."""
        if self.pending(ct):
            raise LevelError("rescale a pending product before lowering it")
        return ct if self._chain_index(ct) <= level else self._switch_raw(ct, level)

    def _switch_raw(self, ct: Ciphertext, chain_index: int) -> Ciphertext:
        out = Ciphertext(self.seal)
        self.evaluator.mod_switch_to(ct, self._parms_ids[chain_index], out)
        return out

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, values: np.ndarray, level: int, scale: float) -> sealapi.Plaintext:
        plain = sealapi.Plaintext()
        array = np.asarray(values, dtype=np.float64)
        try:
            self.encoder.encode(array.tolist(), self._parms_ids[level], scale, plain)
        except ValueError as exc:  # SEAL: the values times the scale overflow the level's modulus
            largest = float(np.max(np.abs(array))) if array.size else 0.0
            raise ParameterError(
                f"plaintext values up to {largest:.3g} are too large to encode at scale 2**{math.log2(scale):.0f} "
                f"on level {level} ({exc}): scale them down (standardize the data, smaller model weights, a "
                "larger polynomial bound such as mae_bound)"
            ) from exc
        return plain

    def encrypt(self, values: np.ndarray, level: int | None = None) -> Ciphertext:
        """Encrypt one slot vector with the public key (no secret needed)."""
        level = self.top_level if level is None else level
        out = Ciphertext(self.seal)
        self.encryptor.encrypt(self.encode(values, level, self.scale), out)
        return out

    # -- arithmetic (never in place on an operand) ---------------------------------------------
    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        a, b = self._align(a, b)
        out = Ciphertext(self.seal)
        self.evaluator.add(a, b, out)
        self.counts.additions += 1
        return out

    def add_into(self, total: Ciphertext, ct: Ciphertext) -> Ciphertext:
        """``total + ct``, in place on ``total`` when both sit at one level and scale (a running sum the caller
        owns, e.g. the Gram pass's: no new ciphertext per block); otherwise as ``add``."""
        if self._chain_index(total) != self._chain_index(ct) or total.scale != ct.scale:
            return self.add(total, ct)
        self.evaluator.add_inplace(total, ct)
        self.counts.additions += 1
        return total

    def sub(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        a, b = self._align(a, b)
        out = Ciphertext(self.seal)
        self.evaluator.sub(a, b, out)
        self.counts.additions += 1
        return out

    def negate(self, a: Ciphertext) -> Ciphertext:
        out = Ciphertext(self.seal)
        self.evaluator.negate(a, out)
        return out

    def add_plain(self, a: Ciphertext, values: np.ndarray) -> Ciphertext:
        out = Ciphertext(self.seal)
        self.evaluator.add_plain(a, self.encode(values, self._chain_index(a), a.scale), out)
        self.counts.additions += 1
        return out

    def multiply(self, a: Ciphertext, b: Ciphertext, rescale: bool = True, relinearize: bool = True) -> Ciphertext:
        """``a * b`` slot-wise. ``relinearize=False`` leaves three polynomials: such products can be summed
        (key switching, the expensive half, then runs once per sum) but not rotated or multiplied again."""
        a, b = self.rescale(a), self.rescale(b)
        self._require(a, 1, "a multiplication")
        self._require(b, 1, "a multiplication")
        a, b = self._align(a, b)
        out = Ciphertext(self.seal)
        if a is b:
            self.evaluator.square(a, out)
        else:
            self.evaluator.multiply(a, b, out)
        self.counts.multiplications += 1
        if not relinearize:
            return out
        self.evaluator.relinearize_inplace(out, self.relin_keys)
        return self.rescale(out) if rescale else out

    def relinearize(self, ct: Ciphertext) -> Ciphertext:
        """Back to two polynomials (a no-op for a ciphertext that has two)."""
        if ct.size() == 2:
            return ct
        out = Ciphertext(self.seal)
        self.evaluator.relinearize(ct, self.relin_keys, out)
        return out

    def multiply_plain(self, a: Ciphertext, values: np.ndarray, rescale: bool = True) -> Ciphertext:
        """``a * values`` slot-wise; once rescaled the result has exactly the nominal scale."""
        a = self.rescale(a)
        self._require(a, 1, "a multiplication by a plaintext")
        level = self._chain_index(a)
        plain = self.encode(values, level, self.scale * self._primes[level] / a.scale)
        if plain.is_zero():
            # SEAL refuses to produce a transparent ciphertext; an encryption of zero is the same value.
            return self.encrypt(np.zeros(self.slots), level - 1)
        out = Ciphertext(self.seal)
        self.evaluator.multiply_plain(a, plain, out)
        self.counts.plain_multiplications += 1
        return self.rescale(out) if rescale else out

    def multiply_integer(self, a: Ciphertext, value: int) -> Ciphertext:
        """``a * value`` for a non-zero integer: exact, with no level and no scale spent (pending products and
        unrelinearized ciphertexts too), since the integer is encoded at scale 1."""
        if not value or value != int(value):
            raise ParameterError(f"multiply_integer takes a non-zero integer, not {value!r}")
        plain = self.encode(np.full(self.slots, float(value)), self._chain_index(a), 1.0)
        out = Ciphertext(self.seal)
        self.evaluator.multiply_plain(a, plain, out)
        self.counts.plain_multiplications += 1
        return out

    def rotate(self, a: Ciphertext, steps: int) -> Ciphertext:
        """Cyclic left rotation of the slots by ``steps`` (negative: right)."""
        if self.galois_keys is None and self.load_galois_keys is not None:
            self.galois_keys, self.load_galois_keys = self.load_galois_keys(), None
        if self.galois_keys is None:
            raise LevelError("this context has no Galois keys; the key holder must generate them")
        out = Ciphertext(self.seal)
        try:
            self.evaluator.rotate_vector(a, steps, self.galois_keys, out)
        except ValueError as exc:  # SEAL's "Galois key not present": a context made for another layout
            raise ParameterError(
                f"rotating by {steps} slots needs a Galois key this context does not carry ({exc}): the key holder "
                "must create the session with the rotation steps of the data's layout (client.training.training_layout)"
            ) from None
        self.counts.rotations += 1
        return out

    def rotate_sum(self, a: Ciphertext, stride: int, count: int) -> Ciphertext:
        """Slot i receives sum_{k<count} a[i + k*stride] (count a power of two): log2(count) rotations."""
        total = a
        step = stride
        while step < stride * count:
            total = self.add(total, self.rotate(total, step))
            step *= 2
        return total

    # -- serialization ---------------------------------------------------------------------------
    def ciphertext_to_bytes(self, ct: Ciphertext) -> bytes:
        with scratch_file() as path:
            ct.save(path)
            with open(path, "rb") as handle:
                return handle.read()

    def ciphertext_from_bytes(self, data: bytes) -> Ciphertext:
        with scratch_file(data) as path:
            ct = Ciphertext(self.seal)
            try:
                ct.load(self.seal, path)
            except Exception as exc:  # SEAL validates structure and parameters on load
                raise MalformedInputError(f"not a ciphertext of this context: {exc}") from exc
        if ct.size() != 2:
            raise MalformedInputError(f"ciphertext has {ct.size()} polynomials; expected 2 (relinearized)")
        return ct


def _check_ckks_scale(context: ts.Context) -> None:
    """A CKKS context with a usable global scale: 2**20 up to the smallest data prime's size, as plan() makes."""
    if context.seal_context().data.key_context_data().parms().scheme().value != sealapi.SCHEME_TYPE.CKKS.value:
        raise MalformedInputError("the context is not a CKKS context (BFV?): make it with core.KeyHolder(plan(...))")
    try:
        scale = float(context.global_scale)
    except Exception as exc:  # TenSEAL raises when no global scale was set
        raise MalformedInputError(f"the CKKS context has no global scale ({exc}): set it, e.g. 2**40") from exc
    bits = [q.bit_count() for q in context.seal_context().data.first_context_data().parms().coeff_modulus()]
    if not math.isfinite(scale) or not 2.0**20 <= scale <= 2.0 ** max(bits):
        raise MalformedInputError(
            f"the context's global scale {scale!r} lies outside [2**20, 2**{max(bits)}] (its largest prime): "
            "make the context with core.plan(), e.g. scale 2**40"
        )


_scratch_dir: str | None = None


@contextlib.contextmanager
def scratch_file(data: bytes | None = None) -> Iterator[str]:
    """A private path holding ``data`` (if given), removed afterwards: SEAL's Python binding saves and loads
    through files only, and tmpfs keeps that a memory copy."""
    path = _scratch_path()
    try:
        if data is not None:
            with open(path, "wb") as handle:
                handle.write(data)
        yield path
    finally:
        _unlink(path)


def _scratch_path() -> str:
    global _scratch_dir
    if _scratch_dir is None:
        _scratch_dir = tempfile.mkdtemp(prefix="ciphergrad-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        atexit.register(shutil.rmtree, _scratch_dir, True)
    return os.path.join(_scratch_dir, uuid.uuid4().hex)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
