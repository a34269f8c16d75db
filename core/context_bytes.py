"""What a serialized TenSEAL context carries, read from its protobuf framing without loading it.

``Engine.from_public_context`` parses the whole context (its Galois keys: ~0.45 s and tens of MB) before it
can refuse a secret key. A server that has a context checked elsewhere (a Ray worker) must still never let
a secret key leave its process, so it looks first: TenSEAL's ``TenSEALContextProto`` keeps the secret key in
field 3 (``private_context``), field 1 of that (``secret_key``). Walking the top-level fields costs
microseconds (lengths are skipped, nothing is decompressed). Bytes that are not such a protobuf are left to
the full parse, which rejects them.
"""

from __future__ import annotations

PRIVATE_CONTEXT, SECRET_KEY = 3, 1


def carries_secret_key(data: bytes) -> bool:
    """True when ``data``'s ``private_context.secret_key`` is non-empty; False for a public context and for
    bytes that do not parse as the context protobuf (the full load refuses those)."""
    try:
        private = _field(data, PRIVATE_CONTEXT)
        return bool(private is not None and _field(private, SECRET_KEY))
    except ValueError:
        return False


def _field(data: bytes, number: int) -> bytes | None:
    """The last length-delimited field ``number`` of a protobuf message (None if absent)."""
    found, position = None, 0
    while position < len(data):
        key, position = _varint(data, position)
        wire = key & 7
        if wire == 0:
            _, position = _varint(data, position)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ValueError("truncated field")
            if key >> 3 == number:
                found = data[position : position + length]
            position += length
        else:
            raise ValueError(f"wire type {wire}")
    return found


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[position]
        value, position, shift = value | (byte & 0x7F) << shift, position + 1, shift + 7
        if byte < 0x80:
            return value, position
