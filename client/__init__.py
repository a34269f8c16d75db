"""ciphergrad client: the key holder's SDK (``Client``), scikit-learn-style estimators and the CLI."""

from client.contributor import Contributor
from client.estimator import EncryptedKNeighborsClassifier, EncryptedLinearRegression, EncryptedLogisticRegression
from client.local import local_server
from client.sdk import Client, TrainingRun, default_parameters

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
