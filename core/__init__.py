"""ciphergrad core: CKKS parameters, keys, the encrypted matrix type and algorithms on it (no gRPC)."""

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.errors import (
    CipherGradError,
    LevelError,
    MalformedInputError,
    ParameterError,
    SecretKeyError,
    ShapeError,
)
from ciphergrad.core.keys import KeyHolder
from ciphergrad.core.layout import Tile
from ciphergrad.core.params import CKKSParameters, from_original, plan
from ciphergrad.core.tensor import EncryptedMatrix

__all__ = [
    "CKKSParameters",
    "CipherGradError",
    "EncryptedMatrix",
    "Engine",
    "KeyHolder",
    "LevelError",
    "MalformedInputError",
    "OpCounts",
    "ParameterError",
    "SecretKeyError",
    "ShapeError",
    "Tile",
    "from_original",
    "plan",
]
