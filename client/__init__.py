"""ciphergrad client: the key holder's SDK (``Client``), a scikit-learn-style estimator and the CLI."""

from client.estimator import EncryptedLinearRegression
from client.sdk import Client, TrainingRun, default_parameters

__all__ = ["Client", "EncryptedLinearRegression", "TrainingRun", "default_parameters"]
