"""ciphergrad: train and run machine-learning models on CKKS-encrypted data over gRPC.

The names a user reaches for first live here::

    from ciphergrad import EncryptedLinearRegression
    model = EncryptedLinearRegression().fit(X, y)   # encrypted here, trained on a throwaway local server

The layers are subpackages (their folders sit at the repository's top level): ``ciphergrad.core`` (CKKS, the
encrypted matrix and the algorithms, no gRPC), ``ciphergrad.wire`` (stubs and codec), ``ciphergrad.server`` (the
gRPC service) and ``ciphergrad.client`` (SDK, estimators, CLI). The names below load on first use, so
``import ciphergrad.core`` on a server pulls in neither the client nor scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Client": "ciphergrad.client.sdk",
    "TrainingRun": "ciphergrad.client.sdk",
    "default_parameters": "ciphergrad.client.sdk",
    "Contributor": "ciphergrad.client.contributor",
    "EncryptedKNeighborsClassifier": "ciphergrad.client.neighbors",
    "EncryptedLinearRegression": "ciphergrad.client.estimator",
    "EncryptedLogisticRegression": "ciphergrad.client.estimator",
    "local_server": "ciphergrad.client.local",
}

__all__ = [
    "Client",
    "Contributor",
    "EncryptedKNeighborsClassifier",
    "EncryptedLinearRegression",
    "EncryptedLogisticRegression",
    "TrainingRun",
    "default_parameters",
    "local_server",
]

if TYPE_CHECKING:
    from ciphergrad.client.contributor import Contributor
    from ciphergrad.client.estimator import EncryptedLinearRegression, EncryptedLogisticRegression
    from ciphergrad.client.local import local_server
    from ciphergrad.client.neighbors import EncryptedKNeighborsClassifier
    from ciphergrad.client.sdk import Client, TrainingRun, default_parameters


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ciphergrad' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
