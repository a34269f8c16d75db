"""Errors raised by ciphergrad's core; each names the problem and what to change."""


class CipherGradError(Exception):
    """Base class of every error ciphergrad raises on purpose."""


class ParameterError(CipherGradError, ValueError):
    """CKKS parameters that cannot work (security bound, depth, precision, slots)."""


class ShapeError(CipherGradError, ValueError):
    """Operands whose shapes or layouts do not combine."""


class LevelError(CipherGradError):
    """An operation would use more multiplicative levels than the ciphertext has left."""


class SecretKeyError(CipherGradError):
    """A computing party was handed a context that carries a secret key."""


class MalformedInputError(CipherGradError, ValueError):
    """Bytes that do not decode to what they claim to be (context, ciphertext, header)."""
