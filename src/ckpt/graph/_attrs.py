"""NodeDef attributes (``AttrValue``) as plain Python values, and short human summaries of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tf.protos import attr_value_pb2
from ..tf.tensor_proto import MAX_TENSOR_BYTES, dtype_name, make_ndarray, shape_from_proto, tensor_proto_summary

__all__ = ["Func", "AttrPlaceholder", "decode_attr", "attr_summary"]

#: A tensor attribute stored with fewer values than its shape has (TensorFlow repeats the last one, as compressed
#: constants do) expands to at most this many bytes, or 16 times its stored size: a few bytes of a graph file
#: must not become gigabytes.
MAX_FILL_BYTES = 1 << 28

# TensorFlow's get_attr looks at a list's fields in this order and returns the first non-empty one.
_LIST_FIELDS = ("s", "i", "f", "b", "type", "shape", "tensor", "func")


@dataclass(frozen=True)
class Func:
    """A function-valued attribute (``NameAttrList``): the function's name and its own attributes."""

    name: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttrPlaceholder:
    """An attribute left as a placeholder inside a function body (``$T``)."""

    name: str


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(value)


def _tensor(proto, where: str):
    limit = max(MAX_FILL_BYTES, 16 * proto.ByteSize()) if not proto.tensor_content else MAX_TENSOR_BYTES
    if proto.dtype == 7:  # strings: make_ndarray counts one byte per element, an object array holds 8
        limit //= 8
    return make_ndarray(proto, where=where, max_bytes=limit)


def decode_attr(value: attr_value_pb2.AttrValue, *, where: str = "attr") -> Any:
    """The Python value of an attribute.

    Strings become ``str`` (``bytes`` when not UTF-8), types their names (``"float32"``, ``"float32_ref"``), shapes
    tuples with ``None`` for unknown dimensions (``None`` for an unknown rank), tensors NumPy arrays, functions
    :class:`Func`, lists Python lists. An unset attribute is ``None``.

    Raises:
        CorruptCheckpointError: a tensor attribute whose content does not match its shape.
    """
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "s":
        return _text(value.s)
    if kind in ("i", "f", "b"):
        return getattr(value, kind)
    if kind == "type":
        return dtype_name(value.type)
    if kind == "shape":
        return shape_from_proto(value.shape)
    if kind == "tensor":
        return _tensor(value.tensor, where)
    if kind == "func":
        return _func(value.func, where)
    if kind == "placeholder":
        return AttrPlaceholder(value.placeholder)
    lst = value.list
    for name in _LIST_FIELDS:
        items = getattr(lst, name)
        if not len(items):
            continue
        if name == "s":
            return [_text(v) for v in items]
        if name == "type":
            return [dtype_name(v) for v in items]
        if name == "shape":
            return [shape_from_proto(v) for v in items]
        if name == "tensor":
            return [_tensor(v, where) for v in items]
        if name == "func":
            return [_func(v, where) for v in items]
        return list(items)
    return []


def _func(value, where: str) -> Func:
    return Func(value.name, {k: decode_attr(v, where=f"{where}/{k}") for k, v in sorted(value.attr.items())})


def _shape_text(shape, unknown: str = "<unknown>") -> str:
    """``[2, ?, 3]`` for a shape whose unknown dimensions are None; ``unknown`` when the rank is unknown (None).
    The one spelling of a shape in listings, messages and the HTML viewer."""
    if shape is None:
        return unknown
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def attr_summary(value: attr_value_pb2.AttrValue, *, limit: int = 200) -> str:
    """A one-line description of an attribute for listings and the HTML viewer; never raises, never expands big
    tensors."""
    try:
        kind = value.WhichOneof("value")
        if kind == "tensor":
            text = tensor_proto_summary(value.tensor)
        elif kind == "shape":
            text = _shape_text(shape_from_proto(value.shape))
        elif kind == "list" and len(value.list.shape):
            text = "[" + ", ".join(_shape_text(shape_from_proto(s)) for s in value.list.shape) + "]"
        elif kind == "list" and len(value.list.tensor):
            text = "[" + ", ".join(tensor_proto_summary(t) for t in value.list.tensor) + "]"
        else:
            decoded = decode_attr(value)
            if isinstance(decoded, Func):
                text = decoded.name
            elif isinstance(decoded, list):
                text = "[" + ", ".join(repr(v) if isinstance(v, (str, bytes)) else str(v) for v in decoded) + "]"
            elif isinstance(decoded, AttrPlaceholder):
                text = f"${decoded.name}"
            else:
                text = str(decoded)
    except Exception:  # best effort: a damaged attribute still gets a line
        text = "<unreadable>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
