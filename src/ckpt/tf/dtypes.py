"""TensorFlow DataType numbers and their NumPy counterparts (spec sections 1.5 and 2.1).

NumPy has no quantized types; those read back as the integer type with the same layout and keep their TensorFlow
name (``qint8`` ...). The narrow float and integer types come from ``ml_dtypes``, as in TensorFlow and JAX; it is
imported on first use of one of them (it costs half a second), and a type the installed ``ml_dtypes`` lacks reads as
"no array value" instead of failing the whole import.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..errors import DTypeNotSupportedError

__all__ = ["DType", "from_enum", "from_numpy", "STRING", "DTYPES"]


@dataclass(frozen=True)
class DType:
    """One TensorFlow data type as stored in a bundle.

    Attributes:
        enum: The ``DataType`` number in the file.
        name: ckpt's name for it (NumPy's name where NumPy has the type: ``float32``, ``bfloat16``, ``string``).
        numpy: The NumPy dtype tensors are read as (``object`` for strings), or None when it cannot be read.
        itemsize: Bytes per element in the data file (0 for strings, whose elements vary).
        native: False where NumPy has no such type and ``numpy`` is only the storage layout (quantized types).
    """

    enum: int
    name: str
    #: The NumPy dtype, or the name of the ``ml_dtypes`` type it resolves to on first use of :attr:`numpy`.
    storage: np.dtype | str | None = field(repr=False)
    itemsize: int
    native: bool = True
    #: A string tensor (variable-length elements).
    is_string: bool = field(init=False, repr=False, compare=False)
    #: Plain old data: stored as raw little-endian elements.
    is_pod: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # plain attributes: read for every tensor of every checkpoint
        object.__setattr__(self, "is_string", self.enum == 7)
        object.__setattr__(self, "is_pod", self.storage is not None and self.enum != 7)

    @functools.cached_property  # writes the instance __dict__ directly, so it works on a frozen dataclass
    def numpy(self) -> np.dtype | None:
        """The NumPy dtype tensors are read as (``object`` for strings), or None when it cannot be read."""
        if isinstance(self.storage, str):
            return _narrow().get(self.storage)
        return self.storage

    @property
    def tf_name(self) -> str:
        """TensorFlow's name, e.g. ``DT_FLOAT``."""
        return _TF_NAMES[self.enum]


def _d(enum: int, name: str, np_type, native: bool = True) -> DType:
    if np_type is None:
        return DType(enum, name, None, 0, native)
    dt = np.dtype(np_type)
    return DType(enum, name, dt, 0 if dt == np.dtype(object) else dt.itemsize, native)


def _ml(enum: int, name: str, itemsize: int) -> DType:
    """A type from ``ml_dtypes``, resolved on first use (tests check ``itemsize`` against ml_dtypes)."""
    return DType(enum, name, name, itemsize)


@functools.lru_cache(maxsize=None)
def _narrow() -> dict[str, np.dtype]:
    """The ``ml_dtypes`` types this installation has, by name; imports ml_dtypes (once)."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - a declared dependency; without it these types just cannot be read
        return {}
    found = {d.storage: getattr(ml_dtypes, d.storage, None) for d in DTYPES if isinstance(d.storage, str)}
    out = {name: np.dtype(t) for name, t in found.items() if t is not None}
    _BY_NUMPY.update((out[d.storage], d) for d in DTYPES if isinstance(d.storage, str) and d.storage in out)
    return out


DTYPES: tuple[DType, ...] = (
    _d(1, "float32", np.float32),
    _d(2, "float64", np.float64),
    _d(3, "int32", np.int32),
    _d(4, "uint8", np.uint8),
    _d(5, "int16", np.int16),
    _d(6, "int8", np.int8),
    _d(7, "string", object),
    _d(8, "complex64", np.complex64),
    _d(9, "int64", np.int64),
    _d(10, "bool", np.bool_),
    _d(11, "qint8", np.int8, native=False),
    _d(12, "quint8", np.uint8, native=False),
    _d(13, "qint32", np.int32, native=False),
    _ml(14, "bfloat16", 2),
    _d(15, "qint16", np.int16, native=False),
    _d(16, "quint16", np.uint16, native=False),
    _d(17, "uint16", np.uint16),
    _d(18, "complex128", np.complex128),
    _d(19, "float16", np.float16),
    _d(20, "resource", None, native=False),
    _d(21, "variant", None, native=False),
    _d(22, "uint32", np.uint32),
    _d(23, "uint64", np.uint64),
    _ml(24, "float8_e5m2", 1),
    _ml(25, "float8_e4m3fn", 1),
    _ml(26, "float8_e4m3fnuz", 1),
    _ml(27, "float8_e4m3b11fnuz", 1),
    _ml(28, "float8_e5m2fnuz", 1),
    _ml(29, "int4", 1),
    _ml(30, "uint4", 1),
    _ml(31, "int2", 1),
    _ml(32, "uint2", 1),
    _ml(33, "float4_e2m1fn", 1),
)

_TF_NAMES = {
    1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 5: "DT_INT16", 6: "DT_INT8", 7: "DT_STRING",
    8: "DT_COMPLEX64", 9: "DT_INT64", 10: "DT_BOOL", 11: "DT_QINT8", 12: "DT_QUINT8", 13: "DT_QINT32",
    14: "DT_BFLOAT16", 15: "DT_QINT16", 16: "DT_QUINT16", 17: "DT_UINT16", 18: "DT_COMPLEX128", 19: "DT_HALF",
    20: "DT_RESOURCE", 21: "DT_VARIANT", 22: "DT_UINT32", 23: "DT_UINT64", 24: "DT_FLOAT8_E5M2",
    25: "DT_FLOAT8_E4M3FN", 26: "DT_FLOAT8_E4M3FNUZ", 27: "DT_FLOAT8_E4M3B11FNUZ", 28: "DT_FLOAT8_E5M2FNUZ",
    29: "DT_INT4", 30: "DT_UINT4", 31: "DT_INT2", 32: "DT_UINT2", 33: "DT_FLOAT4_E2M1FN",
}

_BY_ENUM = {d.enum: d for d in DTYPES}
# NumPy dtype -> DType, for the natively represented types only (quantized types are never inferred). The ml_dtypes
# types join when ml_dtypes is first needed (_narrow).
_BY_NUMPY = {d.storage: d for d in DTYPES
             if isinstance(d.storage, np.dtype) and d.native and not d.is_string}
STRING = _BY_ENUM[7]


def from_enum(enum: int) -> DType | None:
    """The DType for a ``DataType`` number, or None for numbers TensorFlow does not define for bundles."""
    return _BY_ENUM.get(enum)


def from_numpy(dtype) -> DType:
    """The DType a NumPy array of ``dtype`` is stored as.

    Byte order is ignored (data is always written little-endian). ``object``, ``bytes_`` and ``str_`` arrays are
    strings.

    Raises:
        DTypeNotSupportedError: for dtypes with no TensorFlow counterpart (structured, datetime, float128, ...).
    """
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return STRING
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    found = _BY_NUMPY.get(dt)
    if found is None and dt.kind in "Vf" and _narrow():  # an ml_dtypes array: ml_dtypes is loaded by now anyway
        found = _BY_NUMPY.get(dt)
    if found is None:
        raise DTypeNotSupportedError(f"dtype {dt} has no TensorFlow counterpart and cannot be stored in a checkpoint")
    return found
