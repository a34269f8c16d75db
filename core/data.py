"""Datasets the project ships: the Ames housing table (as preprocessed by the original write-up),
scikit-learn's bundled diabetes data, and the splits and synthetic tables the benchmarks and
``ciphergrad compare`` share (one definition each, so their figures describe the same data)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

AMES_FEATURES = (
    "LotArea",
    "YearBuilt",
    "TotalBsmtSF",
    "1stFlrSF",
    "2ndFlrSF",
    "MiscVal",
    "GarageCars",
    "Fireplaces",
    "BedroomAbvGr",
)
AMES_TARGET = "SalePrice"


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str


def load_ames() -> Dataset:
    """510 rows x 9 features + SalePrice, min-max scaled, exactly as in the PALISADE/pTensor write-up.

    Source: Dean De Cock, "Ames, Iowa: Alternative to the Boston Housing Data as an End of Semester
    Regression Project", Journal of Statistics Education 19(3), 2011 (core/data/README.md).
    """
    with resources.files("ciphergrad.core").joinpath("data/ames.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows = [r for r in rows if r["MSZoning"] in {"RH", "RL", "RP", "RM"}]
    rows = [r for r in rows if int(r["OverallCond"]) in {6, 7, 8, 9, 10}]
    table = np.array([[float(r[c]) for c in (*AMES_FEATURES, AMES_TARGET)] for r in rows])
    price = table[:, -1]
    q1, q3 = np.percentile(price, [25, 75])
    spread = q3 - q1
    table = table[(price >= q1 - 1.5 * spread) & (price <= q3 + 1.5 * spread)]
    low, high = table.min(axis=0), table.max(axis=0)
    table = (table - low) / np.where(high > low, high - low, 1.0)
    return Dataset(table[:, :-1], table[:, -1], AMES_FEATURES, AMES_TARGET)


def load_diabetes() -> Dataset:
    """scikit-learn's bundled diabetes data (442 x 10, already centred and scaled), target / 100."""
    from sklearn.datasets import load_diabetes as sklearn_diabetes

    bunch = sklearn_diabetes()
    return Dataset(bunch.data, bunch.target / 100.0, tuple(bunch.feature_names), "progression")


def with_intercept(X: np.ndarray) -> np.ndarray:
    """Prepend the column of ones the original write-up uses as the bias feature."""
    return np.hstack([np.ones((X.shape[0], 1)), np.asarray(X, dtype=np.float64)])


def standardized_split(
    X: np.ndarray, y: np.ndarray, seed: int, test_size: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/test split, features standardized with the training split's mean and std.

    Constant columns (digits' always-blank pixels) keep a std of 1, so they stay 0 instead of NaN.
    """
    from sklearn.model_selection import train_test_split

    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (Xtr - mean) / std, (Xte - mean) / std, ytr, yte


def statistics_datasets() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (features X, least-squares predictions p, targets y) for the statistics comparisons.

    wine: features divided by their std but left uncentred (means up to ~16 stress the variance's
    cancellation); the pair predicts the first feature from the others. diabetes: as bundled (centred,
    |x| < 0.2); the pair predicts the disease score from its ten features. Targets are divided by their
    std, so residuals stay well inside an |x| polynomial's interval of a few units. p and y are (n, 1).
    """
    from sklearn.datasets import load_diabetes as sklearn_diabetes
    from sklearn.datasets import load_wine

    wine = load_wine().data
    wine = wine / wine.std(axis=0)
    diabetes = sklearn_diabetes()
    pairs = {
        "wine": (wine, wine[:, :1], wine[:, 1:]),
        "diabetes": (diabetes.data, diabetes.target[:, None] / diabetes.target.std(), diabetes.data),
    }
    result = {}
    for name, (X, y, A) in pairs.items():
        design = with_intercept(A)
        result[name] = (X, design @ np.linalg.lstsq(design, y, rcond=None)[0], y)
    return result


def synthetic_regression(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded linear model plus Gaussian noise, features and target min-max scaled into [0, 1], with the
    intercept column prepended: ``(rows, features + 1)`` and ``(rows, 1)``. One model for every size."""
    rng = np.random.default_rng([seed, rows])
    X = rng.normal(size=(rows, features))
    w = np.random.default_rng(seed).normal(size=features)
    y = X @ w + 0.1 * rng.normal(size=rows)
    X = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))
    y = (y - y.min()) / (y.max() - y.min())
    return with_intercept(X), y[:, None]
