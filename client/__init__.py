"""ciphergrad client: the key holder's SDK (``Client``), scikit-learn-style estimators and the CLI."""

from ciphergrad.client.contributor import Contributor
from ciphergrad.client.estimator import (
    EncryptedKNeighborsClassifier,
    EncryptedLinearRegression,
    EncryptedLogisticRegression,
)
from ciphergrad.client.local import local_server
from ciphergrad.client.sdk import Client, TrainingRun, default_parameters

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
