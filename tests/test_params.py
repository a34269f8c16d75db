"""The CKKS parameter planner and the parameter type's validation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ciphergrad.core import CKKSParameters, ParameterError, from_original, plan
from ciphergrad.core.params import SECURITY_BOUND_BITS


def test_security_bounds_are_the_he_standard():
    assert SECURITY_BOUND_BITS == {4096: 109, 8192: 218, 16384: 438, 32768: 881}


def test_plan_3_is_the_small_test_ring():
    p = plan(3)
    assert p.poly_modulus_degree == 8192
    assert p.slots == 4096
    assert p.depth == 3
    assert p.scale_bits == 40
    assert p.coeff_mod_bit_sizes == (49, 40, 40, 40, 49)
    assert sum(p.coeff_mod_bit_sizes) <= 218


@settings(max_examples=300, deadline=None)
@given(
    depth=st.integers(1, 25),
    precision=st.integers(20, 50),
    integer_bits=st.integers(1, 12),
    slots=st.sampled_from([1, 100, 2048, 4096, 5000, 8192, 16384]),
)
def test_plan_fits_security_bound_or_says_what_to_change(depth, precision, integer_bits, slots):
    try:
        p = plan(depth, precision_bits=precision, integer_bits=integer_bits, slots=slots)
    except ParameterError:
        # Each error names one parameter to change and a value for it; following the advice (at most
        # once per parameter) leads to parameters that work.
        kwargs = {"depth": depth, "precision_bits": precision, "integer_bits": integer_bits, "slots": slots}
        changed = set()
        for _ in range(2):
            try:
                plan(**kwargs)
                return
            except ParameterError as exc:
                match = re.search(r"lower (depth|integer_bits) to (\d+)", str(exc))
                assert match, str(exc)
                name, value = match.group(1), int(match.group(2))
                assert name not in changed, str(exc)
                assert value < kwargs[name]
                kwargs[name] = value
                changed.add(name)
        plan(**kwargs)  # must not raise
        return
    n = p.poly_modulus_degree
    assert sum(p.coeff_mod_bit_sizes) <= SECURITY_BOUND_BITS[n]
    assert p.depth >= depth
    assert p.slots >= slots
    assert p.scale_bits == precision
    assert p.integer_bits >= integer_bits
    assert all(20 <= b <= 60 for b in p.coeff_mod_bit_sizes)
    # The smallest ring: no smaller ring with enough slots holds the same chain shape.
    for smaller, bound in SECURITY_BOUND_BITS.items():
        if smaller < n and smaller // 2 >= slots:
            assert depth * precision + 2 * (precision + integer_bits) > bound


@pytest.mark.parametrize(
    ("depth", "ring"),
    [(1, 8192), (3, 8192), (4, 16384), (8, 16384), (9, 32768), (19, 32768)],
)
def test_plan_picks_ring_by_depth(depth, ring):
    p = plan(depth)
    assert p.poly_modulus_degree == ring
    assert sum(p.coeff_mod_bit_sizes) <= SECURITY_BOUND_BITS[ring]


def test_plan_too_deep_names_depth_and_a_value_that_works():
    with pytest.raises(ParameterError, match=r"depth=30") as info:
        plan(30)
    value = int(re.search(r"lower depth to (\d+)", str(info.value)).group(1))
    assert value == 19
    assert plan(value).depth == value
    with pytest.raises(ParameterError):
        plan(value + 1)


def test_plan_too_many_slots_names_slots():
    with pytest.raises(ParameterError, match=r"slots=20000 .*16384"):
        plan(2, slots=20000)
    assert plan(2, slots=16384).slots == 16384


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"depth": 0}, r"depth=0"),
        ({"depth": 3, "precision_bits": 19}, r"precision_bits=19 .*40"),
        ({"depth": 3, "precision_bits": 51}, r"precision_bits=51"),
        ({"depth": 3, "precision_bits": 50, "integer_bits": 11}, r"integer_bits to 10"),
    ],
)
def test_plan_rejects_bad_requests(kwargs, pattern):
    depth = kwargs.pop("depth")
    with pytest.raises(ParameterError, match=pattern):
        plan(depth, **kwargs)


def test_plan_spends_spare_bits_on_the_integer_part():
    p = plan(3, slots=8192)  # N=16384: plenty of spare bits
    assert p.integer_bits == 20
    assert p.max_abs_value == 2.0**19


def test_from_original_reference_numbers():
    p = from_original(8, 45, 16384)
    assert p.poly_modulus_degree == 32768
    assert p.slots == 16384
    assert p.depth == 8
    assert p.scale_bits == 45
    assert p.coeff_mod_bit_sizes == (60, *[45] * 8, 60)
    assert sum(p.coeff_mod_bit_sizes) <= 881


def test_from_original_rejects_bad_batch_size():
    with pytest.raises(ParameterError, match=r"batch_size=1000 .*16384"):
        from_original(3, 40, 1000)


def test_from_original_too_deep_suggests_a_value_that_works():
    with pytest.raises(ParameterError) as info:
        from_original(8, 45, 4096)
    message = str(info.value)
    match = re.search(r"batch_size to (\d+)", message)
    assert match, message
    assert from_original(8, 45, int(match.group(1))).depth == 8


def test_parameters_over_bound_suggest_a_ring_that_fits():
    chain = (60, 40, 40, 40, 40, 60)  # 280 bits: fits 16384, not 8192
    with pytest.raises(ParameterError) as info:
        CKKSParameters(4096, chain, 40)
    ring = int(re.search(r"poly_modulus_degree to (\d+)", str(info.value)).group(1))
    CKKSParameters(ring, chain, 40)


def test_summary_text(params):
    text = params.summary()
    for part in (
        "N=8192",
        "4096 slots",
        "[49, 40, 40, 40, 49]",
        "218/218 bits",
        "128-bit security",
        "usable depth 3",
        "scale 2^40",
        "precision",
        "±256",
        "ciphertext ~0.52 MB",
        "Galois keys",
    ):
        assert part in text, (part, text)


def test_properties_and_sizes(params):
    assert params.depth == 3
    assert params.integer_bits == 9
    assert params.max_abs_value == 256.0
    assert params.ciphertext_bytes() == 2 * 8192 * 8 * 4
    assert params.galois_key_bytes(0) == 0
    assert params.galois_key_bytes(2) == 2 * params.galois_key_bytes(1)


def test_ciphertext_size_estimate_is_realistic(params, enc, engine):
    blob = engine.ciphertext_to_bytes(enc([1.0]).ciphertexts[0])
    assert params.ciphertext_bytes() / 2 <= len(blob) <= 2 * params.ciphertext_bytes()


def test_dict_round_trip(params):
    data = params.to_dict()
    assert data == {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [49, 40, 40, 40, 49], "scale_bits": 40}
    assert CKKSParameters.from_dict(data) == params


def test_from_dict_incomplete():
    with pytest.raises(ParameterError, match="incomplete"):
        CKKSParameters.from_dict({"poly_modulus_degree": 8192, "scale_bits": 40})


@pytest.mark.parametrize(
    ("n", "chain", "scale", "pattern"),
    [
        (2048, (40, 20, 40), 20, r"poly_modulus_degree=2048 .*4096"),
        (8192, (60, 60), 40, r"no multiplicative level.*\[60, 40, 60\]"),
        (8192, (60, 19, 60), 19, r"20\.\.60"),
        (8192, (61, 40, 61), 40, r"20\.\.60"),
        (8192, (60, 40, 40, 40, 60), 40, r"240 bits.*218.*16384"),
        (8192, (40, 40, 60), 40, r"first prime.*scale_bits=40.*48"),
        (8192, (60, 40, 40, 50), 40, r"special prime.*at least 60"),
    ],
)
def test_parameter_validation(n, chain, scale, pattern):
    with pytest.raises(ParameterError, match=pattern):
        CKKSParameters(n, chain, scale)


def test_parameter_error_is_value_error():
    assert issubclass(ParameterError, ValueError)


def test_chain_is_normalized_to_int_tuple():
    p = CKKSParameters(8192, [60, 40, 60], 40)
    assert p.coeff_mod_bit_sizes == (60, 40, 60)
    assert p.depth == 1
