"""Unsigned LEB128 varints as LevelDB tables and TensorFlow string tensors use them (docs/format.md section 0)."""

from __future__ import annotations

# A varint64 never needs more than 10 bytes; anything longer is corrupt, and stopping there bounds the work.
MAX_VARINT64_BYTES = 10


class VarintError(ValueError):
    """A varint ran past the end of its buffer or past 10 bytes. Callers turn it into a CorruptCheckpointError."""


_ONE_BYTE = [bytes([i]) for i in range(0x80)]


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer < 2**64."""
    if 0 <= value < 0x4000:  # one or two bytes: most lengths and offsets in an index
        return _ONE_BYTE[value] if value < 0x80 else bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode one varint from ``buf[pos:end]``; return ``(value, new_pos)``.

    Raises:
        VarintError: the varint is truncated or longer than 10 bytes.
    """
    if end is None:
        end = len(buf)
    if pos < end:
        byte = buf[pos]
        if byte < 0x80:  # most varints are one byte: skip the loop
            return byte, pos + 1
    result = 0
    shift = 0
    limit = min(end, pos + MAX_VARINT64_BYTES)
    while pos < limit:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >= 1 << 64:
                raise VarintError("varint overflows 64 bits")
            return result, pos
        shift += 7
    if pos >= end:
        raise VarintError("truncated varint")
    raise VarintError("varint longer than 10 bytes")
