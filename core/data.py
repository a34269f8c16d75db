"""Datasets the project ships: the Ames housing table (as preprocessed by the original write-up)
and scikit-learn's bundled diabetes data."""

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
    with resources.files("core").joinpath("data/ames.csv").open(newline="") as handle:
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
