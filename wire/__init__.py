"""ciphergrad's wire layer, shared by ``client`` and ``server``: the generated gRPC stubs (``wire.proto_gen``,
from ``proto/``), the one codec between core objects and protobuf messages (``wire.codec``) and the one
chunked sender and receiver for matrices too large for a single message (``wire.chunks``).

``wire`` imports ``core`` and the stubs only, never ``client`` or ``server``.
"""
