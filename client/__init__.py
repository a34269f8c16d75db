"""ciphergrad client: the key holder's SDK (``Client``), scikit-learn-style estimators, pool contributors and
the CLI. The public names are ``ciphergrad``'s, loaded on first use: a contributor process that needs only
``Contributor`` does not import scikit-learn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ciphergrad

__all__ = [  # ciphergrad.__all__: the same names, one place each for IDEs
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
    if name not in __all__:
        raise AttributeError(f"module 'ciphergrad.client' has no attribute {name!r}")
    return getattr(ciphergrad, name)
