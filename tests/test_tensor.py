"""EncryptedMatrix against numpy: every operation, every layout, random small shapes.

Tolerance: values are drawn from [-2, 2]; with scale 2^40 the CKKS error after at most three levels is
below 1e-6 absolute per entry (observed ~1e-6 after rotations), so results are compared with
``atol=1e-5`` plus ``rtol=1e-6`` for sums and products whose magnitude grows past 1.
"""

from __future__ import annotations

import json
import operator
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciphergrad.core import EncryptedMatrix, KeyHolder, LevelError, MalformedInputError, ShapeError, Tile, from_original
from ciphergrad.core.layout import choose_tile, grid

ATOL = 1e-5
RTOL = 1e-6
SLOTS = 4096

CKKS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A layout is how the main operand is packed; every other encrypted operand uses the same tile.
LAYOUTS = [
    ("rows", None),  # the default: rows side by side
    ("columns", None),  # the original's transposed packing
    (None, Tile(4, 2)),  # several row and column blocks
    (None, Tile(2, 4)),
    (None, Tile(4, 1)),  # column packing with several row blocks
    (None, Tile(1, 4)),  # one row per ciphertext
    (None, Tile(16, 8)),  # padding in both directions
]


def tile_for(layout, shape) -> Tile:
    packing, tile = layout
    return tile or choose_tile(shape, SLOTS, packing)


def close(got, want, atol=ATOL):
    np.testing.assert_allclose(got, want, atol=atol, rtol=RTOL)


values = st.integers(0, 2**32 - 1).map(np.random.default_rng)
shapes = st.tuples(st.integers(1, 9), st.integers(1, 6))
layouts = st.sampled_from(LAYOUTS)


def rand(rng, shape):
    return rng.uniform(-2, 2, size=shape)


def operand_shape(kind: str, n: int, d: int) -> tuple[int, int]:
    return {"full": (n, d), "row": (1, d), "col": (n, 1), "scalar": (1, 1)}[kind]


kinds = st.sampled_from(["full", "row", "col", "scalar"])
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
ops = st.sampled_from(sorted(OPS))


def snapshot(*matrices: EncryptedMatrix) -> list[bytes]:
    return [m.to_bytes() for m in matrices]


# -- elementwise ----------------------------------------------------------------------------------


@CKKS
@given(rng=values, shape=shapes, layout=layouts, kind=kinds, op=ops, swap=st.booleans(), lower=st.booleans())
def test_elementwise_encrypted(enc, dec, rng, shape, layout, kind, op, swap, lower):
    """enc (op) enc with broadcasting on either side; ``lower`` puts one operand a level down (pending)."""
    n, d = shape
    tile = tile_for(layout, shape)
    a, b = rand(rng, shape), rand(rng, operand_shape(kind, n, d))
    A, B = enc(a, tile=tile), enc(b, tile=tile)
    if lower:  # mixed levels: A carries an unrescaled product, B is fresh
        A = A * enc(np.ones(shape), tile=tile)
    if swap:
        a, b, A, B = b, a, B, A
    before = snapshot(A, B)
    C = OPS[op](A, B)
    assert C.shape == np.broadcast_shapes(a.shape, b.shape)
    assert C.tile == tile
    close(dec(C), OPS[op](a, b))
    assert snapshot(A, B) == before, "an operand was modified"


@CKKS
@given(
    rng=values,
    shape=shapes,
    layout=layouts,
    kind=st.sampled_from(["full", "row", "col", "scalar", "vector", "number"]),
    op=st.sampled_from(["+", "-", "*", "r+", "r-", "r*"]),
    lower=st.booleans(),
)
def test_elementwise_plain(enc, dec, rng, shape, layout, kind, op, lower):
    n, d = shape
    a = rand(rng, shape)
    if kind == "vector":
        b = rand(rng, (d,))
    elif kind == "number":
        b = float(rng.uniform(-2, 2))
    else:
        b = rand(rng, operand_shape(kind, n, d))
    if op.startswith("r") and kind != "number":
        op = op[1:]  # a numpy array on the left is tested separately (test_ndarray_on_the_left)
    A = enc(a, tile=tile_for(layout, shape))
    if lower:
        A = A * enc(np.ones(shape), tile=A.tile)
    before = snapshot(A)
    if op.startswith("r"):
        C, want = OPS[op[1]](b, A), OPS[op[1]](b, a)
    else:
        C, want = OPS[op](A, b), OPS[op](a, b)
    close(dec(C), want)
    assert C.shape == want.shape
    assert snapshot(A) == before


@CKKS
@given(rng=values, shape=shapes, layout=layouts)
def test_neg_and_rsub(enc, dec, rng, shape, layout):
    a = rand(rng, shape)
    A = enc(a, tile=tile_for(layout, shape))
    before = snapshot(A)
    close(dec(-A), -a)
    close(dec(1.5 - A), 1.5 - a)
    close(dec(3 + A), 3 + a)
    close(dec(-2 * A), -2 * a)
    assert snapshot(A) == before


@CKKS
@given(rng=values, shape=shapes, layout=layouts, kind=kinds)
def test_mixed_level_chain(enc, dec, rng, shape, layout, kind):
    """Three levels deep with operands at different levels (modulus switching on both sides)."""
    n, d = shape
    tile = tile_for(layout, shape)
    a, b, c = rand(rng, shape), rand(rng, operand_shape(kind, n, d)), rand(rng, shape)
    A, B, C = enc(a, tile=tile), enc(b, tile=tile), enc(c, tile=tile)
    before = snapshot(A, B, C)
    AB = A * B
    assert AB.level == 2
    ABC = AB * C + B  # level 1 + level 3
    assert ABC.level == 1
    D = C - ABC * A  # level 3 - level 0
    assert D.level == 0
    close(dec(D), c - (a * b * c + b) * a, atol=1e-4)
    assert snapshot(A, B, C) == before


def test_zero_plain_product(enc, dec):
    A = enc(np.arange(6.0).reshape(2, 3))
    Z = A * np.zeros((2, 3))
    assert Z.level == A.level - 1
    close(dec(Z), np.zeros((2, 3)))
    close(dec(Z + A), np.arange(6.0).reshape(2, 3))


# -- reductions ----------------------------------------------------------------------------------


@CKKS
@given(
    rng=values,
    shape=shapes,
    layout=layouts,
    axis=st.sampled_from([0, 1, None, -1, -2]),
    source=st.sampled_from(["fresh", "product", "plus_row", "plus_col", "plus_scalar"]),
)
def test_sum(enc, dec, rng, shape, layout, axis, source):
    """Reductions, including of broadcast results whose padding is not zero."""
    n, d = shape
    tile = tile_for(layout, shape)
    a = rand(rng, shape)
    A = enc(a, tile=tile)
    if source == "product":
        b = rand(rng, shape)
        A, a = A * enc(b, tile=tile), a * b
    elif source.startswith("plus_"):
        b = rand(rng, operand_shape({"plus_row": "row", "plus_col": "col", "plus_scalar": "scalar"}[source], n, d))
        A, a = enc(b, tile=tile) + A, b + a
    before = snapshot(A)
    S = A.sum(axis=axis)
    want = a.sum(axis=axis, keepdims=True)
    assert S.shape == want.shape
    close(dec(S), want)
    assert snapshot(A) == before


@CKKS
@given(rng=values, shape=shapes, layout=layouts)
def test_sum_rows_then_columns(enc, dec, rng, shape, layout):
    _n, d = shape
    tile = tile_for(layout, shape)
    a, w = rand(rng, shape), rand(rng, (1, d))
    A = enc(a, tile=tile) * enc(w, tile=tile)
    close(dec(A.sum(axis=0).sum(axis=1)), (a * w).sum(keepdims=True))
    close(dec(A.sum(axis=1).sum(axis=0)), (a * w).sum(keepdims=True))


def test_sum_columns_of_broadcast_sum_in_column_packing(enc, dec):
    x = np.arange(15.0).reshape(5, 3) / 10
    w = np.array([[1.0, -1.0, 0.5]])
    X = enc(x, packing="columns")  # tile 8x1: rows 5..7 are padding
    W = enc(w, tile=X.tile)
    close(dec((X + W).sum(axis=1).sum(axis=0)), (x + w).sum(keepdims=True))


def test_sum_keeps_levels_predictably(enc):
    A = enc(np.ones((5, 3)))  # tile 8x4
    assert A.level == 3
    assert A.sum(axis=0).level == 3  # rotations only
    assert A.sum(axis=1).level == 2  # rotations + a row mask
    assert A.sum().level == 3  # (1, d) row sums need no mask
    Ac = enc(np.ones((5, 3)), packing="columns")
    assert Ac.sum(axis=1).level == 3  # column blocks add up, no rotation
    assert Ac.sum(axis=0).level == 3


def test_sum_bad_axis(enc):
    with pytest.raises(ShapeError, match="axis 2 is out of bounds"):
        enc(np.ones((2, 2))).sum(axis=2)


# -- matmul ----------------------------------------------------------------------------------------


@CKKS
@given(rng=values, shape=shapes, layout=layouts, k=st.integers(0, 5))
def test_matmul_plain(enc, dec, rng, shape, layout, k):
    """X @ w for w of shape (d,) (k == 0) and (d, k)."""
    _n, d = shape
    tile = tile_for(layout, shape)
    a = rand(rng, shape)
    w = rand(rng, (d,) if k == 0 else (d, k))
    A = enc(a, tile=tile)
    before = snapshot(A)
    C = A @ w
    want = a @ w
    if want.ndim == 1:
        want = want[:, None]
    assert C.shape == want.shape
    close(dec(C), want)
    assert snapshot(A) == before


@CKKS
@given(rng=values, shape=shapes, layout=layouts)
def test_dot_with_encrypted_vector(enc, dec, rng, shape, layout):
    """Encrypted weights: (X * w).sum(axis=1) is X @ w.T."""
    _n, d = shape
    tile = tile_for(layout, shape)
    a, w = rand(rng, shape), rand(rng, (1, d))
    close(dec((enc(a, tile=tile) * enc(w, tile=tile)).sum(axis=1)), a @ w.T)


def test_matmul_single_column_in_wide_tile(enc, dec):
    x, w = np.array([[0.5], [1.0], [2.0]]), np.array([[1.0, 2.0]])
    close(dec(enc(x, tile=Tile(4, 2)) @ w), x @ w)  # got 2 * (x @ w)


def test_matmul_row_result_broadcasts(enc, dec):
    r, w, big = np.array([[1.0, 2.0, 3.0]]), np.arange(6.0).reshape(3, 2), np.ones((3, 2))
    R = enc(r, tile=Tile(4, 4))
    close(dec(enc(big, tile=R.tile) + R @ w), big + r @ w)


def test_matmul_errors(enc):
    A = enc(np.ones((3, 4)))
    with pytest.raises(ShapeError, match="mismatch in its core dimension 0") as info:
        A @ np.ones(5)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ShapeError):
        A @ np.ones((3, 2))
    with pytest.raises(TypeError, match="encrypted @ encrypted"):
        A @ enc(np.ones((4, 1)))


# -- several row blocks with the default layout ---------------------------------------------------------


def test_default_packing_with_several_row_blocks(enc, dec):
    rng = np.random.default_rng(7)
    n, d = 1100, 5  # width 8 -> 512 rows per ciphertext -> 3 row blocks
    a, w = rand(rng, (n, d)), rand(rng, (1, d))
    A = enc(a)
    assert A.tile == Tile(512, 8)
    assert A.grid == (3, 1)
    W = enc(w, tile=A.tile)
    close(dec(A), a)
    close(dec(A * W), a * w)
    close(dec((A * W).sum(axis=1)), a @ w.T)
    close(dec((A + W).sum(axis=0)), (a + w).sum(axis=0, keepdims=True), atol=1e-4)
    close(dec(A @ rand(np.random.default_rng(1), (d, 3))), a @ rand(np.random.default_rng(1), (d, 3)))
    close(dec(A.sum()), a.sum(keepdims=True), atol=1e-4)


def test_non_power_of_two_shapes_are_padded(enc, dec):
    a = np.arange(21.0).reshape(7, 3) / 10
    A = enc(a)
    assert A.tile == Tile(8, 4)
    close(dec(A), a)
    close(dec(A.sum(axis=0)), a.sum(axis=0, keepdims=True))
    close(dec(A.sum(axis=1)), a.sum(axis=1, keepdims=True))


def test_one_dimensional_input_is_a_column(enc, dec):
    A = enc(np.array([1.0, 2.0, 3.0]))
    assert A.shape == (3, 1)
    close(dec(A), [[1.0], [2.0], [3.0]])


# -- row blocks -----------------------------------------------------------------------------------


@CKKS
@given(
    rng=values, n=st.integers(2, 13), d=st.integers(1, 5), tile=st.sampled_from([Tile(4, 2), Tile(4, 8), Tile(2, 1)])
)
def test_row_block(enc, dec, rng, n, d, tile):
    a = rand(rng, (n, d))
    A = enc(a, tile=tile)
    blocks = grid((n, d), tile)[0]
    assert A.grid[0] == blocks
    for i in range(blocks):
        B = A.row_block(i)
        part = a[i * tile.rows : (i + 1) * tile.rows]
        assert B.shape == part.shape
        close(dec(B), part)
        if part.shape[0] > 1:
            close(dec(B.sum(axis=0)), part.sum(axis=0, keepdims=True))
        close(dec(B.sum(axis=1)), part.sum(axis=1, keepdims=True))
    with pytest.raises(ShapeError, match="out of range"):
        A.row_block(blocks)
    with pytest.raises(ShapeError):
        A.row_block(-1)


# -- level accounting -------------------------------------------------------------------------------


def test_levels_are_tracked(enc):
    A = enc(np.ones((3, 2)))
    assert A.level == 3
    assert (A + A).level == 3
    assert (A * 2.0).level == 2
    assert (A * A).level == 2
    assert (A * A + A).level == 2
    assert (A * A * A).level == 1
    assert (A @ np.ones(2)).level == 1  # product + row mask
    assert enc(np.ones(3), level=1).level == 1


def test_exhausting_levels_raises_level_error_before_seal(enc, dec):
    a = np.linspace(-2, 2, 6).reshape(2, 3)
    A = enc(a)
    A4 = A * A * A * A  # three multiplications use all three levels
    assert A4.level == 0
    close(dec(A4), a**4, atol=1e-3)
    with pytest.raises(LevelError, match="refresh"):
        A4 * A  # the fourth multiplication
    with pytest.raises(LevelError):
        A * A * A * A * A
    with pytest.raises(LevelError):
        A4 * 2.0
    with pytest.raises(LevelError):
        A4.sum(axis=1)  # needs a mask multiplication
    with pytest.raises(LevelError):
        A4 @ np.ones(3)
    close(dec(A4.sum(axis=0)), (a**4).sum(axis=0, keepdims=True), atol=1e-3)  # rotations need no level
    close(dec(A4 + A), a**4 + a, atol=1e-3)


def test_level_error_is_not_a_seal_error():
    assert not issubclass(LevelError, ValueError)


# -- shape errors --------------------------------------------------------------------------------------


def test_shape_errors_read_like_numpy(enc):
    A = enc(np.ones((3, 2)), tile=Tile(4, 2))
    with pytest.raises(ShapeError, match=r"could not be broadcast together with shapes \(3, 2\) \(4, 2\)") as info:
        A + enc(np.ones((4, 2)), tile=Tile(4, 2))
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="could not be broadcast"):
        np.ones((3, 2)) + np.ones((4, 2))  # the numpy message the check mirrors
    with pytest.raises(ShapeError, match="broadcast"):
        A * np.ones((3, 3))
    with pytest.raises(ShapeError, match="broadcast"):
        A - np.ones(3)
    with pytest.raises(ShapeError, match="3 dimensions"):
        A + np.ones((1, 1, 1))
    with pytest.raises(ShapeError, match="packed differently"):
        A + enc(np.ones((3, 2)), tile=Tile(8, 2))
    with pytest.raises(ValueError, match="NaN"):
        A + np.nan
    with pytest.raises(TypeError):
        A + "one"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"tile": Tile(3, 2)}, "power of two"),
        ({"tile": Tile(128, 64)}, "exceeds the 4096 slots"),
        ({"packing": "diagonal"}, "packing='diagonal'"),
    ],
)
def test_layout_errors(enc, kwargs, pattern):
    with pytest.raises(ShapeError, match=pattern):
        enc(np.ones((3, 2)), **kwargs)


def test_ndarray_scalar_on_the_left(enc, dec):
    A = enc(np.ones((2, 2)))
    result = np.float64(2.0) - A
    assert isinstance(result, EncryptedMatrix)
    close(dec(result), np.ones((2, 2)))


def test_ndarray_on_the_left(enc, dec):
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    result = b - enc(a)
    assert isinstance(result, EncryptedMatrix)
    close(dec(result), b - a)


# -- serialization ----------------------------------------------------------------------------------


@CKKS
@given(rng=values, shape=shapes, layout=layouts, state=st.sampled_from(["fresh", "pending", "rescaled", "broadcast"]))
def test_bytes_round_trip(engine, enc, dec, rng, shape, layout, state):
    _n, d = shape
    tile = tile_for(layout, shape)
    a = rand(rng, shape)
    A = enc(a, tile=tile)
    if state == "pending":
        A, a = A * enc(a, tile=tile), a * a
    elif state == "rescaled":
        A, a = A * 0.5 + 1.0, a * 0.5 + 1.0
        A = A + A
        a = a + a
    elif state == "broadcast":
        A, a = A + enc(np.ones((1, d)), tile=tile), a + 1
    data = A.to_bytes()
    B = EncryptedMatrix.from_bytes(engine, data)
    assert (B.shape, B.tile, B.grid, B.zero_padding, B.level) == (A.shape, A.tile, A.grid, A.zero_padding, A.level)
    close(dec(B), a)
    assert B.to_bytes() == data
    # Arithmetic on the copy behaves like on the original (same level, scale and padding).
    close(dec(B.sum(axis=0)), a.sum(axis=0, keepdims=True))
    parts = EncryptedMatrix.from_parts(engine, A.header(), A.blobs())
    close(dec(parts), a)


def _framed(header, blobs=()) -> bytes:
    head = json.dumps(header).encode()
    out = [b"CGEM", struct.pack("<I", len(head)), head]
    for blob in blobs:
        out += [struct.pack("<Q", len(blob)), blob]
    return b"".join(out)


@pytest.fixture(scope="module")
def small(enc):
    return enc(np.arange(6.0).reshape(3, 2), tile=Tile(2, 2))  # 2 ciphertexts


def test_from_parts_wrong_count(engine, small):
    with pytest.raises(ShapeError, match="needs 2 ciphertexts, got 1"):
        EncryptedMatrix.from_parts(engine, small.header(), small.blobs()[:1])
    with pytest.raises(ShapeError, match="got 3"):
        EncryptedMatrix.from_parts(engine, small.header(), (small.blobs() * 2)[:3])


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"format": "something/1"}, MalformedInputError, "format"),
        ({"shape": None}, MalformedInputError, "malformed"),
        ({"shape": [3]}, MalformedInputError, "malformed"),
        ({"tile": ["a", 2]}, MalformedInputError, "malformed"),
        ({"zero_padding": []}, MalformedInputError, "malformed"),
        ({"shape": [0, 2]}, ShapeError, "positive"),
        ({"tile": [3, 2]}, ShapeError, "power of two"),
        ({"tile": [4096, 2]}, ShapeError, "exceeds"),
        ({"shape": [5, 2]}, ShapeError, "needs 3 ciphertexts"),
    ],
)
def test_from_parts_bad_header(engine, small, change, error, pattern):
    header = {**small.header(), **change}
    with pytest.raises(error, match=pattern):
        EncryptedMatrix.from_parts(engine, header, small.blobs())


def test_from_parts_missing_key(engine, small):
    header = small.header()
    del header["tile"]
    with pytest.raises(MalformedInputError):
        EncryptedMatrix.from_parts(engine, header, small.blobs())


def test_from_bytes_malformed(engine, small):
    data = small.to_bytes()
    with pytest.raises(MalformedInputError, match="magic"):
        EncryptedMatrix.from_bytes(engine, b"XXXX" + data[4:])
    with pytest.raises(MalformedInputError, match="truncated"):
        EncryptedMatrix.from_bytes(engine, data[:-10])
    with pytest.raises(MalformedInputError):
        EncryptedMatrix.from_bytes(engine, data[:6])
    with pytest.raises(MalformedInputError):
        EncryptedMatrix.from_bytes(engine, b"CGEM" + struct.pack("<I", 5) + b"{nope")
    with pytest.raises(MalformedInputError, match="not a ciphertext"):
        EncryptedMatrix.from_bytes(engine, _framed(small.header(), [b"garbage" * 10, b"more"]))
    with pytest.raises(MalformedInputError):
        EncryptedMatrix.from_bytes(engine, b"")


def test_ciphertext_of_other_parameters_is_refused(engine):
    other = KeyHolder(from_original(1, 25, 2048))  # N=4096: a different context
    blob = other.encrypt(np.ones((2, 2))).to_bytes()
    with pytest.raises(MalformedInputError, match="not a ciphertext of this context"):
        EncryptedMatrix.from_bytes(engine, blob)


def test_from_bytes_non_object_header(engine):
    with pytest.raises(MalformedInputError):
        EncryptedMatrix.from_bytes(engine, _framed([1, 2]))


def test_repr(enc):
    assert repr(enc(np.ones((5, 3)))) == "EncryptedMatrix(shape=(5, 3), tile=8x4, ciphertexts=1, level=3)"


def test_row_blocks_stream_from_bytes_one_at_a_time(engine, enc, kh):
    """read_row_blocks gives row_block(i) for every i from a stream; a cut-off stream is MalformedInputError."""
    import io

    values = np.arange(20.0).reshape(10, 2)
    matrix = enc(values, tile=Tile(4, 2))  # 3 row blocks, the last one 2 rows
    data = matrix.to_bytes()
    blocks = list(EncryptedMatrix.read_row_blocks(engine, io.BytesIO(data)))
    assert [b.shape for b in blocks] == [(4, 2), (4, 2), (2, 2)]
    for i, block in enumerate(blocks):
        np.testing.assert_allclose(kh.decrypt(block), values[4 * i : 4 * i + 4], atol=1e-6)
    with pytest.raises(MalformedInputError, match="truncated"):
        list(EncryptedMatrix.read_row_blocks(engine, io.BytesIO(data[:-10])))
    with pytest.raises(MalformedInputError, match="row block 2 of 3"):
        cut = data[: len(data) - len(matrix.blobs()[-1]) - 8]  # the last ciphertext missing entirely
        list(EncryptedMatrix.read_row_blocks(engine, io.BytesIO(cut)))
