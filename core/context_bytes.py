"""What a serialized TenSEAL context carries, read and amended through its protobuf framing without loading it.

TenSEAL's ``TenSEALContextProto``: field 1 the encryption parameters, field 2 ``public_context`` (1 public key,
2 flags, 3 scale, 4 relinearization keys, 5 Galois keys), field 3 ``private_context`` (1 the secret key).

* Reading. ``Engine.from_public_context`` parses the whole context (its Galois keys: tenths of a second and
  tens of MB) before it can refuse a secret key. A server that has a context checked elsewhere (a Ray worker)
  must still never let a secret key leave its process, so it looks first (``carries_secret_key``). Walking the
  top-level fields costs microseconds (lengths are skipped, nothing is decompressed). Bytes that are not such
  a protobuf are left to the full parse, which rejects them.
* Writing. TenSEAL serializes Galois keys whole; SEAL can write them *seeded* (each key's uniformly random half
  replaced by the seed it was drawn from, expanded again on loading), half the bytes and half the time. The
  key holder (``core.keys``) serializes its context without Galois keys and puts its seeded keys in field
  2.5 (``with_galois_keys``); TenSEAL and SEAL load that like any other public context. A server hands pool
  contributors the public key alone (``encryption_only``) cut the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

PARAMETERS, PUBLIC_CONTEXT, PRIVATE_CONTEXT = 1, 2, 3
SECRET_KEY, RELIN_KEYS, GALOIS_KEYS = 1, 4, 5
LENGTH_DELIMITED = 2


def carries_secret_key(data: bytes) -> bool:
    """True when ``data``'s ``private_context.secret_key`` is non-empty; False for a public context and for
    bytes that do not parse as the context protobuf (the full load refuses those)."""
    try:
        private = _field(data, PRIVATE_CONTEXT)
        return bool(private is not None and _field(private, SECRET_KEY))
    except ValueError:
        return False


def with_galois_keys(context: bytes, galois_keys: bytes) -> bytes:
    """``context`` (a serialized TenSEAL context) with ``galois_keys`` (SEAL ``GaloisKeys`` bytes, seeded or
    not) as its public context's Galois keys, in place of any it had."""
    out = bytearray()
    for number, wire, payload, raw in _fields(context):
        if number == PUBLIC_CONTEXT and wire == LENGTH_DELIMITED:
            public = b"".join(r for n, _, _, r in _fields(payload) if n != GALOIS_KEYS)
            out += _length_delimited(PUBLIC_CONTEXT, public + _length_delimited(GALOIS_KEYS, galois_keys))
        else:
            out += raw
    return bytes(out)


def encryption_only(context: bytes) -> bytes:
    """``context`` (a serialized public TenSEAL context) without its evaluation keys: the encryption parameters
    and the public key, what ``core.keys.encryption_context`` makes by loading the context (the same key
    fingerprint), cut from the framing instead, so that a server never loads a context to hand it out."""
    out = bytearray()
    for number, wire, payload, raw in _fields(context):
        if number == PRIVATE_CONTEXT:
            raise ValueError("the context carries private members: a public context was expected")
        if number == PUBLIC_CONTEXT and wire == LENGTH_DELIMITED:
            kept = b"".join(r for n, _, _, r in _fields(payload) if n not in (RELIN_KEYS, GALOIS_KEYS))
            out += _length_delimited(PUBLIC_CONTEXT, kept)
        else:
            out += raw
    return bytes(out)


def _field(data: bytes, number: int) -> bytes | None:
    """The last length-delimited field ``number`` of a protobuf message (None if absent)."""
    found = None
    for field_number, wire, payload, _ in _fields(data):
        if field_number == number and wire == LENGTH_DELIMITED:
            found = payload
    return found


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """``(number, wire type, payload, raw bytes)`` of each top-level field (payload: a length-delimited
    field's contents, else empty)."""
    position = 0
    while position < len(data):
        start = position
        key, position = _varint(data, position)
        wire, payload = key & 7, b""
        if wire == 0:
            _, position = _varint(data, position)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == LENGTH_DELIMITED:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ValueError("truncated field")
            payload = data[position : position + length]
            position += length
        else:
            raise ValueError(f"wire type {wire}")
        if position > len(data):
            raise ValueError("truncated field")
        yield key >> 3, wire, payload, data[start:position]


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[position]
        value, position, shift = value | (byte & 0x7F) << shift, position + 1, shift + 7
        if byte < 0x80:
            return value, position
