"""Pool releases: each contributor's sufficient statistics, added under encryption, released once, optionally
differentially private, and solved by the analyst.

**A row** becomes ``v = [1, u]`` with ``u = [z_1..z_d, t]``: ``z_j`` is feature ``j`` clipped to its declared
bounds ``[lo, hi]`` and mapped to ``[-1, 1]`` (a column without bounds is used as it is), ``t`` the target
mapped likewise, or for a classification pool of ``K`` classes one indicator per class. ``p = 2 + d`` (or
``1 + d + K``) entries; with ``clip_norm`` the row's ``u`` is further scaled to ``|u| <= clip_norm``.

**A contribution** is ``n`` and the mean over its rows of ``upper(v v^T)`` (the ``p(p+1)/2`` entries on and
above the diagonal: counts, sums, sums of squares and cross-products, so means, variances, ``X^T X``,
``X^T y`` and ``y^T y``), computed in float64 by the contributor and encrypted under the analyst's key as one
``(p(p+1)/2, 1)`` column (``ceil(p(p+1)/2 / slots)`` ciphertexts: 2 for 100 features at 4,096 slots).
Means, not sums: every entry stays within ``[-1, 1]`` for bounded columns whatever ``n`` is, inside what a
CKKS slot can hold (a million rows' raw sums would not be).

**The release** (``seal``, by the server, once): ``sum_i (n_i / N) m_i`` with ``N = sum_i n_i`` -- one
plaintext-scalar product per contribution ciphertext, one level -- plus, for a differentially private pool,
Gaussian noise ``Z / N`` with ``Z ~ N(0, sigma^2 I)`` drawn from the operating system's CSPRNG, so that
``N * release = sum over rows of upper(v v^T) + Z``: sufficient-statistics perturbation (Vu & Slavkovic 2009;
Wang, "Revisiting differentially private linear regression", 2018) with ``sigma`` from the analytic Gaussian
mechanism (Balle & Wang, ICML 2018) for the replace-one sensitivity ``sensitivity()``. The counts ``n_i`` are
public (the server sees them), so neighbouring pools differ in one row's values, not in their sizes.

**The analyst** decrypts the release (``Moments``), maps it back to data units, standardizes with the
released means and deviations (on its own side: nothing goes back to the server), and solves ridge or the
quadratic logistic surrogate (``core.quadratic``) exactly. Weights come back in data units, intercept first.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ciphergrad.core.errors import ParameterError, ShapeError
from ciphergrad.core.layout import Tile
from ciphergrad.core.polynomial import fit_log_loss
from ciphergrad.core.quadratic import DEFAULT_BOUND
from ciphergrad.core.tensor import EncryptedMatrix

__all__ = [
    "Bounds", "Moments", "RowSpace", "analytic_gaussian_sigma", "gaussian", "moment_tile", "seal", "upper_size",
]


@dataclass(frozen=True)
class Bounds:
    """A column's public range: values are clipped into it and mapped to ``[-1, 1]``."""

    lower: float
    upper: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper):
            raise ParameterError(f"bounds [{self.lower}, {self.upper}]: need finite lower < upper")

    @property
    def center(self) -> float:
        return (self.lower + self.upper) / 2

    @property
    def half_width(self) -> float:
        return (self.upper - self.lower) / 2


def upper_size(p: int) -> int:
    return p * (p + 1) // 2


def moment_tile(slots: int) -> Tile:
    """Contributions and the release are one column of ``slots``-row tiles, so they add slot for slot."""
    return Tile(slots, 1)


@dataclass(frozen=True)
class RowSpace:
    """How a contributor turns rows into ``v`` (the pool's public schema), and what one row can change."""

    feature_bounds: tuple[Bounds | None, ...]
    target_bounds: Bounds | None = None
    classes: int = 0  # 0: regression (one target column); K >= 2: K class indicators
    clip_norm: float | None = None  # |u| <= clip_norm per row (differential privacy)

    def __post_init__(self) -> None:
        if not self.feature_bounds:
            raise ShapeError("a pool needs at least one feature column")
        if self.classes == 1 or self.classes < 0:
            raise ParameterError(f"classes={self.classes}: use 0 (regression) or at least 2 classes")
        if self.clip_norm is not None and not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ParameterError(f"clip_norm={self.clip_norm}: must be a positive number")

    @property
    def features(self) -> int:
        return len(self.feature_bounds)

    @property
    def targets(self) -> int:
        return self.classes or 1

    @property
    def width(self) -> int:
        """``p``: entries of ``v`` (the constant, the features, the target or the indicators)."""
        return 1 + self.features + self.targets

    @property
    def entries(self) -> int:
        return upper_size(self.width)

    @property
    def bounded(self) -> bool:
        """Every feature (and a regression target) has declared bounds: what a sensitivity needs."""
        return all(b is not None for b in self.feature_bounds) and (self.classes > 0 or self.target_bounds is not None)

    def rows(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
        """``u`` of each row ``(n, width - 1)`` and how many cells were clipped. ``y``: numbers, or class indices
        ``0..K-1`` in a classification pool."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if X.ndim != 2 or X.shape[1] != self.features or len(y) != len(X):
            raise ShapeError(f"rows of shape {X.shape} with {len(y)} targets; the pool has {self.features} features")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
            raise ParameterError("rows hold NaN or infinite values: clean or drop them first")
        lower = np.array([b.lower if b else -np.inf for b in self.feature_bounds])
        upper = np.array([b.upper if b else np.inf for b in self.feature_bounds])
        center = np.array([b.center if b else 0.0 for b in self.feature_bounds])
        half = np.array([b.half_width if b else 1.0 for b in self.feature_bounds])
        u = np.empty((len(X), self.width - 1))
        clipped = int(np.count_nonzero((lower > X) | (upper < X)))
        np.subtract(np.clip(X, lower, upper), center, out=u[:, : self.features])
        u[:, : self.features] /= half
        if self.classes:
            labels = y.astype(np.int64)
            if np.any(labels != y) or np.any(labels < 0) or np.any(labels >= self.classes):
                raise ParameterError(f"labels must be class indices 0..{self.classes - 1}")
            u[:, self.features:] = labels[:, None] == np.arange(self.classes)
        else:
            scaled, count = _scale(y, self.target_bounds)
            u[:, self.features] = scaled
            clipped += count
        if self.clip_norm is not None:
            norms = np.linalg.norm(u, axis=1)
            over = norms > self.clip_norm
            u[over] *= (self.clip_norm / norms[over])[:, None]
            clipped += int(over.sum())
        return u, clipped

    def moments(self, X: np.ndarray, y: np.ndarray) -> tuple[int, np.ndarray, int]:
        """``(n, mean of upper(v v^T) over the rows, cells clipped)``: what a contributor encrypts."""
        u, clipped = self.rows(X, y)
        n = len(u)
        S = np.empty((self.width, self.width))
        S[0, 0], S[0, 1:] = n, u.sum(axis=0)
        S[1:, 1:] = u.T @ u
        rows, cols = np.triu_indices(self.width)
        return n, S[rows, cols] / n, clipped

    def sensitivity(self) -> float:
        """L2 distance between ``upper(v v^T)`` of any two rows (replace-one): with ``|u|^2 <= B^2``,
        ``|u - u'|^2 <= 4 B^2`` and ``|upper(u u^T) - upper(u' u'^T)| <= |u u^T|_F + |u' u'^T|_F <= 2 B^2``,
        so ``2 B sqrt(1 + B^2)``. ``B^2 = d + 1`` for box bounds (an indicator block has norm 1), or
        ``clip_norm^2`` when smaller."""
        if not self.bounded:
            raise ParameterError(
                "differential privacy needs declared bounds on every feature and the target: add them to the schema"
            )
        b2 = float(self.features + 1)
        if self.clip_norm is not None:
            b2 = min(b2, self.clip_norm**2)
        return 2.0 * math.sqrt(b2) * math.sqrt(1.0 + b2)

    def to_data_units(self) -> tuple[np.ndarray, np.ndarray]:
        """``(shift, scale)`` of ``v``'s entries: data value = shift + scale * entry (indicators as they are)."""
        bounds = [*self.feature_bounds, *([self.target_bounds] if not self.classes else [None] * self.classes)]
        shift = np.array([0.0] + [b.center if b else 0.0 for b in bounds])
        scale = np.array([1.0] + [b.half_width if b else 1.0 for b in bounds])
        return shift, scale


def _scale(values: np.ndarray, bounds: Bounds | None) -> tuple[np.ndarray, int]:
    if bounds is None:
        return values.astype(np.float64, copy=True), 0
    clipped = int(np.count_nonzero((values < bounds.lower) | (values > bounds.upper)))
    return (np.clip(values, bounds.lower, bounds.upper) - bounds.center) / bounds.half_width, clipped


# -- the server's side: the one release ------------------------------------------------------------------
def gaussian(size: int) -> np.ndarray:
    """Standard normal draws from ``secrets`` (Box-Muller on 53-bit uniforms): noise that protects data must
    not come from a seedable generator."""
    raw = np.frombuffer(secrets.token_bytes(16 * size), dtype=np.uint64).reshape(2, size)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53  # (0, 1]: log is finite
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def seal(contributions: Sequence[tuple[int, EncryptedMatrix]], noise_std: float = 0.0) -> EncryptedMatrix:
    """``sum_i (n_i / N) m_i + Z / N`` for contributions ``(n_i, m_i)``; ``noise_std``: sigma of ``Z`` on the
    scale of the sums (0: no noise). One plaintext-scalar product per contribution ciphertext (one level)."""
    if not contributions:
        raise ShapeError("nothing to release: the pool has no contributions")
    total = sum(n for n, _ in contributions)
    shapes = {m.shape for _, m in contributions}
    if len(shapes) != 1:
        raise ShapeError(f"contributions of different shapes {sorted(shapes)} cannot be added")
    release: EncryptedMatrix | None = None
    for n, moments in contributions:
        term = moments * (n / total)
        release = term if release is None else release + term
    assert release is not None
    if noise_std:
        release = release + (gaussian(release.shape[0]) * (noise_std / total))[:, None]
    return release


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest sigma for which ``N(0, sigma^2)`` noise on a query of L2 ``sensitivity`` is
    ``(epsilon, delta)``-DP, for any ``epsilon > 0`` (Balle & Wang 2018, Theorem 8; the classic
    ``sqrt(2 ln(1.25/delta)) / epsilon`` holds only for ``epsilon < 1`` and is larger)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ParameterError(f"epsilon={epsilon}: must be a positive number")
    if not 0 < delta < 1:
        raise ParameterError(f"delta={delta}: must lie in (0, 1), e.g. 1e-6 or below 1/rows")

    def cdf(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    def privacy_loss(sigma: float) -> float:  # delta(sigma) for this epsilon; decreases with sigma
        a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
        return cdf(a - b) - math.exp(epsilon) * cdf(-a - b)

    low, high = 1e-12 * sensitivity, sensitivity
    while privacy_loss(high) > delta:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if privacy_loss(middle) > delta else (low, middle)
    return high


# -- the analyst's side ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Moments:
    """A decrypted release: ``N`` rows and ``S = sum over rows of v v^T`` in the pool's ``[-1, 1]`` units."""

    rows: int
    space: RowSpace
    S: np.ndarray = field(repr=False)
    noise_std: float = 0.0  # of the Gaussian noise on each released sum (0: an exact release)

    @classmethod
    def from_release(cls, rows: int, space: RowSpace, release: np.ndarray, noise_std: float = 0.0) -> Moments:
        values = np.asarray(release, dtype=np.float64).reshape(-1)[: space.entries]
        if len(values) != space.entries:
            raise ShapeError(f"a release of {len(values)} values; the pool's rows need {space.entries}")
        S = np.zeros((space.width, space.width))
        S[np.triu_indices(space.width)] = values * rows
        return cls(rows, space, S + np.triu(S, 1).T, noise_std)

    def data_units(self) -> np.ndarray:
        """``sum v v^T`` with ``v = [1, raw features, raw target or indicators]``."""
        shift, scale = self.space.to_data_units()
        T = np.diag(scale)
        T[:, 0] += shift * np.r_[0.0, np.ones(len(shift) - 1)]
        return T @ self.S @ T.T

    def mean(self) -> np.ndarray:
        """Mean of each raw column (features, then the target or each class's frequency)."""
        M = self.data_units()
        return M[0, 1:] / M[0, 0]

    def covariance(self) -> np.ndarray:
        M = self.data_units() / self.data_units()[0, 0]
        mean = M[0, 1:]
        return M[1:, 1:] - np.outer(mean, mean)

    def variance(self) -> np.ndarray:
        return np.maximum(np.diag(self.covariance()), 0.0)

    def correlation(self) -> np.ndarray:
        std = np.sqrt(self.variance())
        std = np.where(std > 0, std, 1.0)
        return self.covariance() / np.outer(std, std)

    def _standardized(self) -> np.ndarray:
        """The exact path: the mean of ``w w^T`` for ``w = [1, standardized features, targets]`` (targets in data
        units), standardized with the released means and deviations, and ``(shift, scale)`` of the features."""
        M = self.data_units() / self.data_units()[0, 0]
        d = self.space.features
        mu = M[0, 1:1 + d]
        sigma = np.sqrt(np.maximum(np.diag(M)[1:1 + d] - mu**2, 0.0))
        sigma = np.where(sigma > 1e-12 * (1.0 + np.abs(mu)), sigma, 1.0)  # a constant column stays as it is
        A = np.eye(len(M))
        A[1:1 + d, 0] = -mu / sigma
        A[1:1 + d, 1:1 + d] = np.diag(1.0 / sigma)
        return A @ M @ A.T, mu, sigma

    def _system(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, tuple[float, float]]:
        """``(G, feature shift, feature scale, extra ridge, (target shift, target scale))`` to solve in.

        Exact release: standardized features (the best conditioning), targets in data units. Noisy release
        (``noise_std``): the pool's ``[-1, 1]`` units, where the noise is the same on every entry; the feature
        block is projected onto the positive semidefinite matrices and a ridge of ``2 sigma sqrt(p) / N`` (about
        the noise matrix's spectral norm) keeps the solve from amplifying it (cf. AdaSSP, Wang 2018)."""
        if not self.noise_std:
            G, mu, sigma = self._standardized()
            return G, mu, sigma, 0.0, (0.0, 1.0)
        d = self.space.features
        G = self.S / self.rows
        values, vectors = np.linalg.eigh(G[: 1 + d, : 1 + d])
        G[: 1 + d, : 1 + d] = (vectors * np.maximum(values, 0.0)) @ vectors.T
        shift, scale = self.space.to_data_units()
        target = (0.0, 1.0) if self.space.classes else (float(shift[-1]), float(scale[-1]))
        return G, shift[1:1 + d], scale[1:1 + d], 2 * self.noise_std * math.sqrt(self.space.width) / self.rows, target

    def _solve(self, G: np.ndarray, rhs: np.ndarray, ridge: float) -> np.ndarray:
        d = self.space.features
        system = G[: 1 + d, : 1 + d] + ridge * np.diag(np.r_[0.0, np.ones(d)])
        return np.linalg.lstsq(system, rhs, rcond=None)[0]

    @staticmethod
    def _raw(w: np.ndarray, shift: np.ndarray, scale: np.ndarray, target: tuple[float, float]) -> np.ndarray:
        coef = w[1:] / scale
        intercept = w[0] - coef @ shift
        return np.r_[target[0] + target[1] * intercept, target[1] * coef]

    def ridge(self, l2: float = 0.0) -> np.ndarray:
        """Least squares (ridge ``l2`` on the mean squared error, standardized features; a noisy release adds
        its own ridge, ``_system``): ``[intercept, coef]`` in data units."""
        if self.space.classes:
            raise ParameterError("a classification pool: use logistic(), or a regression pool for ridge()")
        G, shift, scale, extra, target = self._system()
        d = self.space.features
        return self._raw(self._solve(G, G[: 1 + d, 1 + d], l2 + extra), shift, scale, target)

    def logistic(self, l2: float = 0.1, bound: float | None = None) -> np.ndarray:
        """The quadratic surrogate of the logistic loss (``core.quadratic``), one-vs-rest: ``(1 + d,)`` for two
        classes (the log-odds of class 1), ``(K, 1 + d)`` for more; data units, intercept first."""
        if not self.space.classes:
            raise ParameterError("a regression pool: declare its classes to train a classifier")
        _, c1, c2 = fit_log_loss(bound if bound is not None else DEFAULT_BOUND).coefficients
        G, shift, scale, extra, target = self._system()
        d = self.space.features
        models = []
        for k in range(self.space.classes):
            labels = 2.0 * G[: 1 + d, 1 + d + k] - G[: 1 + d, 0]  # X^T t / N for t = 2 [class k] - 1
            w = self._solve(G, -c1 / (2 * c2) * labels, l2 / (2 * c2) + extra)
            models.append(self._raw(w, shift, scale, target))
        return models[1] if self.space.classes == 2 else np.array(models)
