"""Least-squares polynomial stand-ins for functions CKKS cannot evaluate (sigmoid, |x|), and a
depth-aware evaluator for them on ``EncryptedMatrix``.

A polynomial is fitted on a uniform grid over ``[-bound, bound]`` (the range its inputs are expected
to stay in, derived from the data scaling by the caller). ``max_error`` is the largest deviation from the
true function measured on a dense grid of that interval: it is the documented error bound. Outside the
interval the polynomial diverges quickly; that is why the range matters.

``evaluate`` spends ``depth_of(degree) = ceil(log2(degree + 1))`` levels: each monomial ``c * x**k`` is
built as a balanced product of the powers ``x**(2**i)`` with ``c`` folded into the shallowest factor, so
the coefficient costs no extra level (degree 3: 2 levels, degree 5 and 7: 3 levels).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ciphergrad.core.errors import ParameterError
from ciphergrad.core.tensor import EncryptedMatrix

_GRID = 4001  # fitting grid points (uniform): fine enough that the fit is the continuous L2 fit
_CHECK_GRID = 20001  # grid on which max_error is measured


@dataclass(frozen=True)
class Polynomial:
    """``sum_k coefficients[k] * x**k``, fitted to ``name`` on ``[-bound, bound]``."""

    coefficients: tuple[float, ...]
    bound: float
    name: str
    max_error: float  # max |p(x) - f(x)| over [-bound, bound]

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1

    @property
    def depth(self) -> int:
        """Multiplicative levels ``evaluate`` spends."""
        return depth_of(self.degree)

    def __call__(self, x: Any) -> Any:
        """Evaluate on numpy arrays or torch tensors (Horner; the plaintext twins use this)."""
        result = x * 0.0 + self.coefficients[-1]
        for c in reversed(self.coefficients[:-1]):
            result = result * x + c
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "coefficients": list(self.coefficients),
            "bound": self.bound,
            "name": self.name,
            "max_error": self.max_error,
        }


def depth_of(degree: int) -> int:
    return 0 if degree < 1 else math.ceil(math.log2(degree + 1))


def _fit(f, degree: int, bound: float, powers: list[int], name: str) -> Polynomial:
    if degree < 1:
        raise ParameterError(f"degree={degree} must be at least 1")
    if not bound > 0 or not math.isfinite(bound):
        raise ParameterError(f"bound={bound} must be a positive number (the input range is [-bound, bound])")
    # Fit in t = x / bound (well conditioned), then map the coefficients back to x.
    t = np.linspace(-1.0, 1.0, _GRID)
    basis = np.stack([t**k for k in powers], axis=1)
    solution, *_ = np.linalg.lstsq(basis, f(t * bound), rcond=None)
    coefficients = np.zeros(degree + 1)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        for k, c in zip(powers, solution, strict=True):
            coefficients[k] = c / np.float64(bound) ** k  # inf/nan past float range: refused just below
    if not np.all(np.isfinite(coefficients)):
        raise ParameterError(
            f"bound={bound:g} is out of reach for a degree-{degree} {name} fit (its coefficients overflow): "
            "rescale the inputs so the bound lies within about 1e-3..1e3"
        )
    poly = Polynomial(tuple(float(c) for c in coefficients), float(bound), name, 0.0)
    check = np.linspace(-bound, bound, _CHECK_GRID)
    error = float(np.max(np.abs(poly(check) - f(check))))
    return Polynomial(poly.coefficients, poly.bound, name, error)


def fit_sigmoid(degree: int = 3, bound: float = 8.0) -> Polynomial:
    """Least-squares sigmoid on ``[-bound, bound]``: 1/2 plus odd terms (sigmoid - 1/2 is odd)."""
    if degree % 2 == 0:
        raise ParameterError(f"degree={degree}: a sigmoid fit uses odd degrees (3, 5 or 7)")
    powers = [0, *range(1, degree + 1, 2)]
    poly = _fit(lambda x: 1.0 / (1.0 + np.exp(-x)), degree, bound, powers, "sigmoid")
    coefficients = list(poly.coefficients)
    coefficients[0] = 0.5  # exact by symmetry; the fit gives 0.5 up to rounding
    return Polynomial(tuple(coefficients), poly.bound, poly.name, poly.max_error)


def fit_log_loss(bound: float = 4.0) -> Polynomial:
    """Least-squares quadratic for the logistic loss ``log(1 + exp(-u))`` on ``[-bound, bound]`` (``u`` the
    margin ``t * z`` for labels ``t`` in {-1, +1}): the surrogate of Huggins, Adams & Broderick's PASS-GLM,
    whose minimizer needs only ``X^T X`` and ``X^T t`` (``core.quadratic``). Its curvature ``c2 > 0`` for any
    bound; ``max_error``: 0.013 at bound 2, 0.096 at 4, 0.37 at 8 (c1 = -1/2 exactly by symmetry)."""
    return _fit(lambda u: np.logaddexp(0.0, -u), 2, bound, [0, 1, 2], "log-loss")


def fit_abs(degree: int = 6, bound: float = 1.0) -> Polynomial:
    """Least-squares |x| on ``[-bound, bound]`` with even terms only.

    Error bound (``max_error``, attained at x = 0), measured: 0.188*bound for degree 2, 0.117*bound for 4,
    0.085*bound for 6, 0.067*bound for 8 — |x| has a kink, so polynomials converge slowly there. Degree 6
    fits in 3 levels. The error of a *mean* of |x| is usually far smaller than this worst case.
    """
    if degree % 2 == 1:
        raise ParameterError(f"degree={degree}: an |x| fit uses even degrees (2, 4, 6, 8)")
    return _fit(np.abs, degree, bound, list(range(0, degree + 1, 2)), "abs")


def evaluate(poly: Polynomial, x: EncryptedMatrix, input_scale: float = 1.0) -> EncryptedMatrix:
    """``poly(x)`` slot-wise on ciphertexts, spending ``poly.depth`` levels (see the module docstring).

    ``input_scale``: ``x`` holds ``input_scale * x_true``. Passing inputs pre-divided by ``poly.bound``
    (with the division folded into an earlier plaintext factor) keeps every power in [-1, 1], so CKKS noise
    is not amplified by large intermediate powers (degree 7 on [-8, 8]: ~1e-3 error unscaled, ~1e-6 scaled).
    """
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        coefficients = [float(c / np.float64(input_scale) ** k) for k, c in enumerate(poly.coefficients)]
    if not all(math.isfinite(c) for c in coefficients):
        raise ParameterError(
            f"the {poly.name} polynomial on [-{poly.bound:g}, {poly.bound:g}] with input scale {input_scale:g} has "
            "coefficients that overflow: bring the bound and the input scale within about 1e-3..1e3"
        )
    powers: dict[int, EncryptedMatrix] = {1: x}
    top = 1
    while top * 2 <= poly.degree:
        powers[top * 2] = powers[top] * powers[top]
        top *= 2
    result: EncryptedMatrix | None = None
    for k, c in enumerate(coefficients):
        if k == 0 or c == 0.0:
            continue
        bits = [1 << i for i in range(k.bit_length()) if k >> i & 1]
        # (depth, tiebreak, matrix) heap: multiply the two shallowest factors first (Huffman-like).
        factors = [(int(math.log2(b)), i, powers[b]) for i, b in enumerate(bits)]
        factors.sort(key=lambda f: f[0])
        depth, tie, first = factors[0]
        factors[0] = (depth + 1, tie, first * c)
        heapq.heapify(factors)
        counter = len(factors)
        while len(factors) > 1:
            da, _, a = heapq.heappop(factors)
            db, _, b = heapq.heappop(factors)
            heapq.heappush(factors, (max(da, db) + 1, counter, a * b))
            counter += 1
        term = factors[0][2]
        result = term if result is None else result + term
    if result is None:
        result = x * 0.0
    return result + coefficients[0] if coefficients[0] else result
