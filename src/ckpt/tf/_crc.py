"""CRC32C (Castagnoli) and TensorFlow's CRC masking (docs/format.md section 0).

The CRC itself comes from the C-accelerated ``crc32c`` package, which accepts any contiguous buffer (bytes,
memoryview, NumPy array) and releases the GIL on large inputs.
"""

from __future__ import annotations

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


_impl = None  # crc32c.crc32c, loaded on the first CRC: the package imports importlib.metadata (tens of ms)


def crc32c(data, crc: int = 0) -> int:
    """Return the CRC32C of ``data``, continuing from ``crc`` ("extend") when it is given."""
    return (_impl or _load())(data, crc)


def _load():
    global _impl
    from crc32c import crc32c as impl

    _impl = impl
    return impl


def mask(crc: int) -> int:
    """TensorFlow's masked form of a CRC, used wherever a CRC is stored next to the data it covers."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32
