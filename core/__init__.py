"""ciphergrad core: CKKS parameters, keys, the encrypted matrix type and algorithms on it (no gRPC)."""

from core.engine import Engine, OpCounts
from core.errors import (
    CipherGradError,
    LevelError,
    MalformedInputError,
    ParameterError,
    SecretKeyError,
    ShapeError,
)
from core.keys import KeyHolder
from core.layout import Tile
from core.params import CKKSParameters, from_original, plan
from core.tensor import EncryptedMatrix

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
