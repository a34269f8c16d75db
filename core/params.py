"""CKKS parameters in the user's language, and a planner that picks them from a circuit's needs.

A CKKS modulus chain is ``[q0, p, p, ..., p, P]``: ``q0`` holds the integer part plus the precision of a
value at the last level, each ``p`` is consumed by one rescale (one multiplicative level), and the special
prime ``P`` only serves key switching. Key-switching noise grows with ``max(q)/P``, so ``P >= q0``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ciphergrad.core.errors import ParameterError

# Largest total modulus (bits) at 128-bit classical security, from the HE standard as enforced by SEAL.
SECURITY_BOUND_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
_MAX_PRIME_BITS = 60
_MIN_INTEGER_BITS = 8


@dataclass(frozen=True)
class CKKSParameters:
    """A ring dimension and a modulus chain; ``scale_bits`` is log2 of the encoding scale."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(int(b) for b in self.coeff_mod_bit_sizes))
        n, chain = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        if n not in SECURITY_BOUND_BITS:
            raise ParameterError(
                f"poly_modulus_degree={n} is not supported; use one of {sorted(SECURITY_BOUND_BITS)}"
            )
        if len(chain) < 3:
            raise ParameterError(
                f"coeff_mod_bit_sizes={list(chain)} has no multiplicative level; it needs at least "
                "[first, scale, special], e.g. [60, 40, 60]"
            )
        if any(not 20 <= b <= _MAX_PRIME_BITS for b in chain):
            raise ParameterError(f"every prime in coeff_mod_bit_sizes must have 20..60 bits, got {list(chain)}")
        if sum(chain) > SECURITY_BOUND_BITS[n]:
            raise ParameterError(
                f"coeff_mod_bit_sizes sum to {sum(chain)} bits, above the 128-bit security bound of "
                f"{SECURITY_BOUND_BITS[n]} for poly_modulus_degree={n}; lower the depth or the scale, "
                f"or raise poly_modulus_degree to {_ring_for(sum(chain))}"
            )
        if chain[0] <= self.scale_bits:
            raise ParameterError(
                f"the first prime ({chain[0]} bits) must exceed scale_bits={self.scale_bits} to hold the "
                f"integer part of results; make it at least {self.scale_bits + _MIN_INTEGER_BITS}"
            )
        if chain[-1] < max(chain[:-1]):
            raise ParameterError(
                f"the special prime ({chain[-1]} bits) is smaller than the largest data prime "
                f"({max(chain[:-1])} bits): rotations and relinearization would lose precision; "
                f"make the last entry at least {max(chain[:-1])}"
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Multiplicative levels a fresh ciphertext has (rescales before it is exhausted)."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def integer_bits(self) -> int:
        """Bits left for the integer part of a value at the last level (|x| < 2**(integer_bits-1))."""
        return self.coeff_mod_bit_sizes[0] - self.scale_bits

    @property
    def max_abs_value(self) -> float:
        return float(2 ** (self.integer_bits - 1))

    def ciphertext_bytes(self) -> int:
        """Size of a fresh ciphertext before compression: two polynomials over the data primes."""
        return 2 * self.poly_modulus_degree * 8 * (len(self.coeff_mod_bit_sizes) - 1)

    def galois_key_bytes(self, rotations: int) -> int:
        """Galois keys for ``rotations`` steps as the key holder sends them, seeded (``core.context_bytes``):
        per step, one key-switching ciphertext per data prime, of which only the first polynomial travels, over
        every prime, special one included (SEAL's compression trims some 20 % more)."""
        data_primes = len(self.coeff_mod_bit_sizes) - 1
        return rotations * data_primes * self.poly_modulus_degree * 8 * len(self.coeff_mod_bit_sizes)

    def to_dict(self) -> dict:
        return {**asdict(self), "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes)}

    @classmethod
    def from_dict(cls, data: dict) -> CKKSParameters:
        try:
            return cls(
                poly_modulus_degree=int(data["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(data["coeff_mod_bit_sizes"]),
                scale_bits=int(data["scale_bits"]),
            )
        except (KeyError, TypeError) as exc:
            raise ParameterError(f"incomplete CKKS parameters {data!r}: {exc}") from exc

    def summary(self) -> str:
        rotations = 2 * (self.slots.bit_length() - 1)
        return (
            f"N={self.poly_modulus_degree} ({self.slots} slots), chain {list(self.coeff_mod_bit_sizes)} "
            f"= {sum(self.coeff_mod_bit_sizes)}/{SECURITY_BOUND_BITS[self.poly_modulus_degree]} bits "
            f"(128-bit security), usable depth {self.depth}, scale 2^{self.scale_bits} "
            f"(~{self.scale_bits - 15} bits of precision after a few operations), values up to "
            f"±{self.max_abs_value:g} at the last level; ciphertext ~{self.ciphertext_bytes() / 1e6:.2f} MB, "
            f"power-of-two Galois keys ~{self.galois_key_bytes(rotations) / 1e6:.0f} MB"
        )


def _ring_for(total_bits: int) -> int | str:
    fitting = [m for m, bound in SECURITY_BOUND_BITS.items() if bound >= total_bits]
    return min(fitting) if fitting else "(none: the chain is too long for CKKS without refreshes)"


def plan(
    depth: int,
    *,
    precision_bits: int = 40,
    slots: int = 1,
    integer_bits: int = 9,
    max_integer_bits: int = 20,
) -> CKKSParameters:
    """Smallest ring whose chain holds ``depth`` levels at ``precision_bits`` within 128-bit security.

    Spare modulus bits go to the integer part (up to ``max_integer_bits``): they widen the range of
    values the last level can hold, which is also the range the refresh mask can use.
    """
    if depth < 1:
        raise ParameterError(f"depth={depth}: a circuit needs at least one multiplicative level")
    if not 20 <= precision_bits <= 50:
        raise ParameterError(f"precision_bits={precision_bits} must lie in 20..50 (40 is a good default)")
    if integer_bits < 1:
        raise ParameterError(f"integer_bits={integer_bits} must be at least 1 (9 holds values up to ±256)")
    if precision_bits + integer_bits > _MAX_PRIME_BITS:
        raise ParameterError(
            f"precision_bits + integer_bits = {precision_bits + integer_bits} must be at most 60; "
            f"lower integer_bits to {_MAX_PRIME_BITS - precision_bits}"
        )
    for n, bound in sorted(SECURITY_BOUND_BITS.items()):
        if n // 2 < slots:
            continue
        spare = bound - depth * precision_bits - 2 * (precision_bits + integer_bits)
        if spare < 0:
            continue
        extra = min(spare // 2, max_integer_bits - integer_bits, _MAX_PRIME_BITS - precision_bits - integer_bits)
        first = precision_bits + integer_bits + max(extra, 0)
        return CKKSParameters(n, (first, *[precision_bits] * depth, first), precision_bits)
    biggest = max(SECURITY_BOUND_BITS)
    fit = (SECURITY_BOUND_BITS[biggest] - 2 * (precision_bits + integer_bits)) // precision_bits
    if slots > biggest // 2:
        raise ParameterError(f"slots={slots} exceeds the largest ring's {biggest // 2} slots; split the data")
    raise ParameterError(
        f"depth={depth} at precision_bits={precision_bits} does not fit any ring within 128-bit security; "
        f"lower depth to {fit} (refresh more often) or precision_bits"
    )


def from_original(mult_depth: int, scale_bits: int, batch_size: int) -> CKKSParameters:
    """The original write-up's three numbers: multiplicative depth, scaling-factor bits, batch size."""
    ring = 2 * batch_size
    if ring not in SECURITY_BOUND_BITS:
        raise ParameterError(
            f"batch_size={batch_size} gives ring {ring}; batch size must be half a supported ring: "
            f"{[n // 2 for n in sorted(SECURITY_BOUND_BITS)]}"
        )
    first = min(_MAX_PRIME_BITS, scale_bits + 15)
    chain = (first, *[scale_bits] * mult_depth, first)
    if sum(chain) > SECURITY_BOUND_BITS[ring]:
        fits = _ring_for(sum(chain))
        deepest = (SECURITY_BOUND_BITS[ring] - 2 * first) // scale_bits
        raise ParameterError(
            f"mult_depth={mult_depth} at scale_bits={scale_bits} needs {sum(chain)} modulus bits, above the "
            f"128-bit bound of {SECURITY_BOUND_BITS[ring]} for batch_size={batch_size}; lower mult_depth to "
            f"{deepest}" + (f" or raise batch_size to {fits // 2}" if isinstance(fits, int) else "")
        )
    return CKKSParameters(ring, chain, scale_bits)
