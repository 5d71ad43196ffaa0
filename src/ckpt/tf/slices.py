"""Keys of partitioned-variable slices: TensorFlow's OrderedCode encoding (docs/format.md section 2.6).

A slice of ``name`` is stored under ``0x00 ‖ WriteString(name) ‖ WriteNumIncreasing(rank) ‖ (start, length)*``,
each number written with ``WriteSignedNumIncreasing``; a length of -1 means "the whole dimension". Every slice key
starts with 0x00, so slice keys sort before all ordinary names.
"""

from __future__ import annotations

from collections.abc import Sequence

# (first, second) header bytes XORed into an n-byte signed number, for n = 1..10.
_HEADER_BITS = ((0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0), (0xFF, 0),
                (0xFF, 0x80), (0xFF, 0xC0))

Extent = tuple[int, int]  # (start, length); length -1 means the full dimension


def _num_increasing(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(raw)]) + raw


def _string(value: bytes) -> bytes:
    # One pass: 0xff -> ff 00 and 0x00 -> 00 ff (chained replaces would escape the inserted 00 again).
    return b"\xff\x00".join(part.replace(b"\x00", b"\x00\xff") for part in value.split(b"\xff")) + b"\x00\x01"


def _signed_num_increasing(value: int) -> bytes:
    x = ~value if value < 0 else value
    if x < 64:
        return bytes([(0x80 ^ value) & 0xFF])
    bits = x.bit_length() + 1
    n = next(n for n in range(2, 11) if bits <= 7 * n)
    buf = bytearray((value & ((1 << 80) - 1)).to_bytes(10, "big"))[10 - n:]
    buf[0] ^= _HEADER_BITS[n][0]
    buf[1] ^= _HEADER_BITS[n][1]
    return bytes(buf)


def encode_slice_key(name: bytes, extents: Sequence[Extent]) -> bytes:
    """The bundle key under which the slice ``extents`` of tensor ``name`` is stored."""
    out = bytearray(_num_increasing(0))
    out += _string(name)
    out += _num_increasing(len(extents))
    for start, length in extents:
        out += _signed_num_increasing(start)
        out += _signed_num_increasing(length)
    return bytes(out)


def is_slice_key(key: bytes) -> bool:
    """True for keys of slice entries (hidden from listings, as TensorFlow hides them)."""
    return key[:1] == b"\x00"
