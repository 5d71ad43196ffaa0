"""TensorProto <-> NumPy, exactly as TensorFlow's ``make_tensor_proto`` and ``MakeNdarray`` do it
(docs/format.md section 5).

Writing: a tensor of more than one element whose dtype is in the "content" set is stored as raw little-endian
``tensor_content``; everything else (scalars, one-element tensors, bool, complex, strings, uint16, the 2- and 4-bit
integers) goes element by element into the typed repeated field for its dtype. ``half_val`` carries the 16-bit
patterns of float16 *and* bfloat16; ``float8_val`` the bytes of the 8-bit floats.

Reading: ``tensor_content`` wins when present; otherwise the typed field is read and, when it holds fewer values than
the shape needs, its last value is repeated (``float_val: 0`` with shape [100] is 100 zeros; an empty field is all
zeros). Because that padding lets a few bytes describe a huge array, the expanded size is capped
(:data:`MAX_TENSOR_BYTES`); element counts are computed with Python integers, so forged shapes cannot overflow.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import CorruptCheckpointError, DTypeNotSupportedError
from . import dtypes as _dtypes
from .protos import tensor_pb2, tensor_shape_pb2

__all__ = ["make_tensor_proto", "make_ndarray", "tensor_proto_summary", "shape_from_proto", "shape_to_proto",
           "dtype_name", "MAX_TENSOR_BYTES", "CONTENT_DTYPES"]

#: Largest array (in bytes) :func:`make_ndarray` builds from a TensorProto. TensorFlow itself refuses protos over
#: 2 GiB; the cap matters for edge padding, where a tiny proto can claim an enormous shape.
MAX_TENSOR_BYTES = 1 << 31

#: DataType numbers that ``make_tensor_proto`` stores as ``tensor_content`` when there is more than one element
#: (TensorFlow's ``_TENSOR_CONTENT_TYPES``; int4/uint4/int2/uint2 are deliberately absent, as in TensorFlow).
CONTENT_DTYPES = frozenset({19, 1, 2, 3, 4, 5, 6, 9, 11, 12, 15, 16, 13, 22, 23, 24, 25, 26, 27, 28, 33, 14})

_HALF = frozenset({19, 14})                       # half_val: float16, bfloat16
_FLOAT8 = frozenset({24, 25, 26, 27, 28, 33})     # float8_val
_INT_VAL = frozenset({3, 4, 17, 5, 6, 13, 12, 11, 15, 16, 29, 30, 31, 32})
_FIELD = {1: "float_val", 2: "double_val", 9: "int64_val", 22: "uint32_val", 23: "uint64_val", 10: "bool_val"}


def dtype_name(enum: int) -> str:
    """ckpt's name for a DataType number: ``float32``, ``string``, ``float32_ref``; ``unknown_<n>`` otherwise."""
    enum = int(enum)
    base = enum - 100 if enum > 100 else enum
    dt = _dtypes.from_enum(base)
    if dt is None:
        return "invalid" if enum == 0 else f"unknown_{enum}"
    return dt.name + ("_ref" if enum > 100 else "")


def shape_from_proto(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int | None, ...] | None:
    """A TensorShapeProto as a tuple, ``None`` for unknown dimensions; ``None`` for an unknown rank."""
    if shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


def shape_to_proto(shape, proto: tensor_shape_pb2.TensorShapeProto | None = None) -> tensor_shape_pb2.TensorShapeProto:
    """A tuple (``None`` or -1 for unknown dimensions) or ``None`` (unknown rank) as a TensorShapeProto."""
    proto = tensor_shape_pb2.TensorShapeProto() if proto is None else proto
    if shape is None:
        proto.unknown_rank = True
        return proto
    for d in shape:
        proto.dim.add().size = -1 if d is None else int(d)
    return proto


def _num_elements(shape: tuple[int, ...], where: str) -> int:
    n = 1
    for d in shape:
        if d < 0:
            raise CorruptCheckpointError(f"{where}: a constant tensor has an unknown dimension in shape {list(shape)}",
                                         expected="sizes >= 0", found=list(shape))
        n *= d
    return n


def _numpy_dtype(enum: int, where: str) -> tuple[_dtypes.DType, np.dtype]:
    dt = _dtypes.from_enum(enum)
    if dt is None or dt.numpy is None:
        raise DTypeNotSupportedError(f"{where}: tensors of type {dtype_name(enum)} cannot be turned into NumPy arrays")
    return dt, dt.numpy


def make_ndarray(proto: tensor_pb2.TensorProto, *, where: str = "TensorProto",
                 max_bytes: int = MAX_TENSOR_BYTES) -> np.ndarray:
    """The NumPy array a TensorProto holds (TensorFlow's ``tf.make_ndarray``).

    Args:
        proto: A ``ckpt.tf.TensorProto`` (or anything with the same fields).
        where: Named in error messages (file and node).
        max_bytes: Refuse to build arrays larger than this.

    Returns:
        A new, writable array. Strings come back as an ``object`` array of ``bytes``; quantized types as their
        storage integers; bfloat16 and the float8 types as ``ml_dtypes`` arrays.

    Raises:
        CorruptCheckpointError: the content does not match the shape, or the array would exceed ``max_bytes``.
        DTypeNotSupportedError: resource and variant tensors.
    """
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    n = _num_elements(shape, where)
    dt, np_dtype = _numpy_dtype(proto.dtype, where)
    itemsize = max(np_dtype.itemsize, 1) if not dt.is_string else 1
    if n * itemsize > max_bytes:
        raise CorruptCheckpointError(
            f"{where}: a {dt.name} tensor of shape {list(shape)} would take {n * itemsize:,} bytes, more than the "
            f"{max_bytes:,}-byte limit", expected=f"<= {max_bytes} bytes", found=n * itemsize)
    content = proto.tensor_content
    if content and not dt.is_string:
        if len(content) != n * np_dtype.itemsize:
            raise CorruptCheckpointError(
                f"{where}: tensor_content holds {len(content)} bytes but a {dt.name} tensor of shape {list(shape)} "
                f"needs {n * np_dtype.itemsize}", expected=n * np_dtype.itemsize, found=len(content))
        array = np.frombuffer(content, dtype=np_dtype.newbyteorder("<")).astype(np_dtype, copy=True)
        return array.reshape(shape)
    if dt.is_string:
        values = list(proto.string_val)
        if len(values) > n:
            raise _too_many(where, len(values), shape)
        if len(values) < n:
            values.extend([values[-1] if values else b""] * (n - len(values)))
        out = np.empty(n, dtype=object)
        out[:] = values
        return out.reshape(shape)
    enum = int(proto.dtype)
    if enum in _HALF:
        values = np.fromiter(proto.half_val, dtype=np.int64, count=len(proto.half_val)).astype(np.uint16).view(np_dtype)
    elif enum in _FLOAT8:
        values = np.frombuffer(proto.float8_val, dtype=np.uint8).view(np_dtype)
    elif enum in _INT_VAL:
        values = np.fromiter(proto.int_val, dtype=np.int64, count=len(proto.int_val)).astype(np_dtype)
    elif enum in (8, 18):
        pairs = proto.scomplex_val if enum == 8 else proto.dcomplex_val
        if len(pairs) % 2:
            raise CorruptCheckpointError(f"{where}: complex values come in (real, imaginary) pairs; found "
                                         f"{len(pairs)} numbers", found=len(pairs))
        flat = np.fromiter(pairs, dtype=np.float32 if enum == 8 else np.float64, count=len(pairs))
        values = flat.view(np_dtype) if flat.size else np.empty(0, np_dtype)
    elif enum in _FIELD:
        field = getattr(proto, _FIELD[enum])
        values = np.fromiter(field, dtype=np_dtype, count=len(field))
    else:
        raise DTypeNotSupportedError(f"{where}: tensors of type {dt.name} cannot be read from a TensorProto")
    if values.size > n:
        raise _too_many(where, values.size, shape)
    if values.size == 0:
        return np.zeros(shape, dtype=np_dtype)
    if values.size != n:
        values = np.concatenate([values, np.full(n - values.size, values[-1], dtype=np_dtype)])
    return np.array(values, dtype=np_dtype).reshape(shape)


def _too_many(where: str, count: int, shape) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{where}: {count} values for a tensor of shape {list(shape)}",
                                  expected=f"at most {_num_elements(tuple(shape), where)}", found=count)


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise DTypeNotSupportedError(f"string tensors hold bytes or str, not {type(value).__name__}")


def make_tensor_proto(values, dtype: int | str | None = None, shape=None) -> tensor_pb2.TensorProto:
    """A TensorProto for ``values``, laid out exactly as TensorFlow's ``make_tensor_proto`` lays it out.

    Args:
        values: An array (or anything ``np.asarray`` takes). Strings: ``bytes``/``str`` elements.
        dtype: DataType number or ckpt dtype name; inferred from the array when omitted (and then, as in
            TensorFlow, Python floats become float32 and Python ints int32 where they fit).
        shape: The shape to record; defaults to the array's. It must have the same number of elements.

    Returns:
        A ``ckpt.tf.TensorProto``.

    Raises:
        DTypeNotSupportedError: values with no TensorFlow dtype.
        ValueError: ``shape`` does not match the number of elements.
    """
    if isinstance(dtype, str):
        found = [d for d in _dtypes.DTYPES if d.name == dtype]
        if not found:
            raise DTypeNotSupportedError(f"unknown dtype name {dtype!r}")
        dtype = found[0].enum
    is_array = isinstance(values, (np.ndarray, np.generic))
    if dtype is not None:
        dt, np_dtype = _numpy_dtype(int(dtype), "make_tensor_proto")
        array = np.asarray(values, dtype=object if dt.is_string else np_dtype)
    else:
        array = np.asarray(values)
        if not is_array:
            if array.dtype == np.float64:
                array = array.astype(np.float32)
            elif array.dtype == np.int64 and array.size and np.array_equal(array.astype(np.int32), array):
                array = array.astype(np.int32)
        dt = _dtypes.from_numpy(array.dtype)
        if dt.is_string:
            array = array.astype(object)
    shape = tuple(array.shape) if shape is None else tuple(int(d) for d in shape)
    n = 1
    for d in shape:
        n *= d
    if n != array.size:
        raise ValueError(f"shape {list(shape)} holds {n} elements but {array.size} values were given")
    proto = tensor_pb2.TensorProto(dtype=dt.enum)
    proto.tensor_shape.SetInParent()
    shape_to_proto(shape, proto.tensor_shape)
    enum = dt.enum
    if enum in CONTENT_DTYPES and n > 1:
        if n * dt.itemsize >= 1 << 31:
            raise ValueError("Cannot create a tensor proto whose content is larger than 2GB.")
        flat = np.ascontiguousarray(array, dtype=dt.numpy)
        if sys.byteorder == "big" and flat.dtype.itemsize > 1:
            flat = flat.byteswap()
        proto.tensor_content = flat.tobytes()
        return proto
    flat = array.reshape(-1)
    if dt.is_string:
        proto.string_val.extend(_as_bytes(v) for v in flat)
    elif enum in _HALF:
        proto.half_val.extend(flat.astype(dt.numpy).view(np.uint16).tolist())
    elif enum in _FLOAT8:
        proto.float8_val = flat.astype(dt.numpy).view(np.uint8).tobytes()
    elif enum in (29, 30, 31, 32):
        proto.int_val.extend(flat.astype(dt.numpy).astype(np.int8).tolist())
    elif enum in _INT_VAL:
        proto.int_val.extend(flat.astype(dt.numpy).astype(np.int64).tolist())
    elif enum in (8, 18):
        parts = np.empty(flat.size * 2, dtype=np.float32 if enum == 8 else np.float64)
        parts[0::2], parts[1::2] = flat.real, flat.imag
        (proto.scomplex_val if enum == 8 else proto.dcomplex_val).extend(parts.tolist())
    elif enum in _FIELD:
        getattr(proto, _FIELD[enum]).extend(flat.astype(dt.numpy).tolist())
    else:
        raise DTypeNotSupportedError(f"tensors of type {dt.name} cannot be stored in a TensorProto")
    return proto


def tensor_proto_summary(proto: tensor_pb2.TensorProto, *, max_values: int = 8) -> str:
    """A short description of a TensorProto without expanding it: ``float32[5, 5, 1, 4] (400 B)`` or the values of
    small tensors (``int32[] 1``). Never raises."""
    try:
        shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
        name = dtype_name(proto.dtype)
        head = f"{name}[{', '.join(str(d) for d in shape)}]"
        n = 1
        for d in shape:
            n *= max(d, 0)
        if n <= max_values:
            value = make_ndarray(proto, max_bytes=1 << 16)
            if value.dtype == object:
                text = repr([bytes(v)[:40] for v in value.reshape(-1)])
            else:
                if value.dtype.kind not in "biufc":
                    value = value.astype(np.float32)
                text = np.array2string(value.reshape(-1) if value.ndim > 1 else value, floatmode="unique",
                                       separator=", ", threshold=max_values)
            return f"{head} {text}"
        size = len(proto.tensor_content) if proto.tensor_content else proto.ByteSize()
        return f"{head} ({size:,} B)"
    except Exception:  # a summary is best effort: malformed tensors show what is known
        return f"{dtype_name(getattr(proto, 'dtype', 0))} tensor (unreadable)"

