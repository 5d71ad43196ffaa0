"""Editing TensorFlow graphs without TensorFlow: :class:`GraphBuilder`.

The tutorials' graph surgery, written down as a small API whose result TensorFlow imports and runs:

* ``GraphBuilder(graph)`` starts from a graph (a ``.meta`` keeps its collections, ``saver_def`` and signatures), or
  from nothing;
* :meth:`~GraphBuilder.import_graph` adds another graph under a scope, as ``tf.import_graph_def(name=...)`` and
  ``import_meta_graph(import_scope=...)`` do (``input_map`` plugs its inputs into tensors already there);
* :meth:`~GraphBuilder.op`, :meth:`~GraphBuilder.constant` and :meth:`~GraphBuilder.placeholder` add nodes on top of
  named tensors; attributes are typed Python values (:func:`attr_value`), and the ``T``-style type attributes of
  common ops are filled in from the inputs' dtypes as TensorFlow's op constructors do;
* :meth:`~GraphBuilder.replace` rewires the consumers of a tensor to another one (swap a subgraph or insert a node),
  :meth:`~GraphBuilder.rename` renames a node everywhere it is named, :meth:`~GraphBuilder.prune` keeps what some
  outputs need;
* :meth:`~GraphBuilder.save` writes ``.pb``, ``.pbtxt`` or ``.meta`` atomically (:meth:`Graph.save`).

Node names are checked against TensorFlow's rule (``[A-Za-z0-9.][A-Za-z0-9_./\\-]*``) when they are added, so a
graph that builds is one ``import_graph_def`` accepts. A builder is not thread-safe; :attr:`~GraphBuilder.graph`
returns an immutable snapshot.

Example (seed 001: add ``op_to_restore * 2`` and save again):
    >>> b = ckpt.graph.GraphBuilder("my_test_model-1000.meta")                  # doctest: +SKIP
    >>> two = b.constant(2.0, name="Mul/y")
    >>> b.op("Mul", ["op_to_restore:0", two], name="Mul")
    'Mul:0'
    >>> b.save("my_test_model-2000.meta")
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OperationNotFoundError, UnsupportedError
from ..tf import dtypes as _dtypes
from ..tf.protos import attr_value_pb2, graph_pb2, meta_graph_pb2, node_def_pb2, variable_pb2
from ..tf.tensor_proto import dtype_name, make_tensor_proto, shape_to_proto
from ._attrs import Func
from ._model import Graph, _coerce, _is_meta, parse_input

__all__ = ["GraphBuilder", "DType", "Shape", "attr_value", "node_name", "NODE_NAME", "GRAPH_DEF_VERSION"]

#: TensorFlow's rule for node names (``graph_constructor``'s ``IsValidNodeName``; scopes are ``/``-separated).
NODE_NAME = re.compile(r"\A[A-Za-z0-9.][A-Za-z0-9_./\-]*\Z")

#: ``versions.producer`` of a graph built from nothing: TensorFlow 2.21's ``GRAPH_DEF_VERSION``.
GRAPH_DEF_VERSION = 2474

_VARIABLE_COLLECTIONS = frozenset({
    "variables", "trainable_variables", "local_variables", "model_variables", "moving_average_variables",
    "global_step", "metric_variables", "trainable_resource_variables", "concatenated_variables",
})

# Type attributes TensorFlow's op constructors derive from the inputs: {op: {attr: input index}} (-1: the last).
_SAME = {"T": 0}
_TYPE_FROM_INPUTS: dict[str, dict[str, int]] = {
    **{op: _SAME for op in (
        "Identity", "StopGradient", "Snapshot", "Neg", "Abs", "Exp", "Log", "Sqrt", "Rsqrt", "Square", "Reciprocal",
        "Sign", "Floor", "Ceil", "Round", "Relu", "Relu6", "Elu", "Selu", "Softplus", "Sigmoid", "Tanh", "Softmax",
        "LogSoftmax", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "FloorDiv", "Maximum", "Minimum", "Pow",
        "SquaredDifference", "BiasAdd", "MatMul", "BatchMatMulV2", "Conv2D", "DepthwiseConv2dNative", "MaxPool",
        "AvgPool", "LRN", "L2Loss", "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "ZerosLike",
        "OnesLike", "Shape", "Size", "Rank", "AddN", "Pack", "Unpack", "Squeeze")},
    **{op: {"T": 0, "Tidx": 1} for op in ("Mean", "Sum", "Max", "Min", "Prod", "ArgMax", "ArgMin", "ExpandDims")},
    "Reshape": {"T": 0, "Tshape": 1},
    "Transpose": {"T": 0, "Tperm": 1},
    "ConcatV2": {"T": 0, "Tidx": -1},
    "GatherV2": {"Tparams": 0, "Tindices": 1, "Taxis": 2},
    "Tile": {"T": 0, "Tmultiples": 1},
    "Fill": {"T": 1, "index_type": 0},
    "Pad": {"T": 0, "Tpaddings": 1},
    "Select": {"T": 1},
    "SelectV2": {"T": 1},
    "Cast": {"SrcT": 0},
}
_N_FROM_INPUTS = {"AddN": 0, "Pack": 0, "ConcatV2": -1}  # N = number of data inputs, minus the axis for ConcatV2
_OUTPUT_TYPE = {"Equal": "bool", "NotEqual": "bool", "Less": "bool", "LessEqual": "bool", "Greater": "bool",
                "GreaterEqual": "bool"}


@dataclass(frozen=True)
class DType:
    """A type-valued attribute: ``DType("float32")`` (ckpt's dtype names, as in :func:`ckpt.graph.decode_attr`)."""

    name: str


@dataclass(frozen=True)
class Shape:
    """A shape-valued attribute: ``Shape([None, 784])``; ``Shape(None)`` is an unknown rank."""

    dims: Sequence[int | None] | None


def _dtype_enum(value: Any, where: str) -> int:
    if isinstance(value, DType):
        value = value.name
    if isinstance(value, str):
        ref = value.endswith("_ref")
        base = value[:-4] if ref else value
        found = [d for d in _dtypes.DTYPES if d.name == base]
        if not found:
            raise UnsupportedError(f"{where}: unknown dtype {value!r}")
        return found[0].enum + (100 if ref else 0)
    try:
        return _dtypes.from_numpy(np.dtype(value)).enum
    except Exception:
        raise UnsupportedError(f"{where}: {value!r} is not a dtype") from None


def _is_dtype(value: Any) -> bool:
    return isinstance(value, (DType, np.dtype)) or (isinstance(value, type) and issubclass(value, np.generic))


def attr_value(value: Any, *, where: str = "attr") -> attr_value_pb2.AttrValue:
    """An ``AttrValue`` from a typed Python value.

    ``bool`` -> ``b``, ``int`` -> ``i``, ``float`` -> ``f``, ``str``/``bytes`` -> ``s``, :class:`DType` or a NumPy
    dtype -> ``type``, :class:`Shape` -> ``shape``, an ``ndarray`` -> ``tensor``, :class:`ckpt.graph.Func` ->
    ``func``; a list or tuple of one of these -> ``list`` (``[]`` is an empty list); an ``AttrValue`` is copied.

    Raises:
        UnsupportedError: a value with no attribute form (a mixed list, None...).
    """
    out = attr_value_pb2.AttrValue()
    if isinstance(value, attr_value_pb2.AttrValue) or getattr(getattr(value, "DESCRIPTOR", None), "name",
                                                                   None) == "AttrValue":
        out.ParseFromString(value.SerializeToString())
        return out
    if isinstance(value, (bool, np.bool_)):
        out.b = bool(value)
    elif isinstance(value, (int, np.integer)):
        out.i = int(value)
    elif isinstance(value, (float, np.floating)):
        out.f = float(value)
    elif isinstance(value, str):
        out.s = value.encode("utf-8")
    elif isinstance(value, bytes):
        out.s = value
    elif _is_dtype(value):
        out.type = _dtype_enum(value, where)
    elif isinstance(value, Shape):
        shape_to_proto(None if value.dims is None else list(value.dims), out.shape)
    elif isinstance(value, np.ndarray):
        out.tensor.CopyFrom(make_tensor_proto(value))
    elif isinstance(value, Func):
        out.func.name = value.name
        for k, v in value.attrs.items():
            out.func.attr[k].CopyFrom(attr_value(v, where=f"{where}/{k}"))
    elif isinstance(value, (list, tuple)):
        items = list(value)
        lst = out.list
        lst.SetInParent()
        if not items:
            pass
        elif all(isinstance(v, (bool, np.bool_)) for v in items):
            lst.b.extend(bool(v) for v in items)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
            lst.i.extend(int(v) for v in items)
        elif all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in items):
            lst.f.extend(float(v) for v in items)
        elif all(isinstance(v, (str, bytes)) for v in items):
            lst.s.extend(v.encode("utf-8") if isinstance(v, str) else v for v in items)
        elif all(_is_dtype(v) for v in items):
            lst.type.extend(_dtype_enum(v, where) for v in items)
        elif all(isinstance(v, Shape) for v in items):
            for v in items:
                shape_to_proto(None if v.dims is None else list(v.dims), lst.shape.add())
        elif all(isinstance(v, np.ndarray) for v in items):
            for v in items:
                lst.tensor.add().CopyFrom(make_tensor_proto(v))
        else:
            raise UnsupportedError(f"{where}: a list attribute holds values of one kind, not {items!r}")
    else:
        raise UnsupportedError(f"{where}: {type(value).__name__} values have no attribute form (use bool, int, "
                               "float, str, DType, Shape, an ndarray, or a list of one of them)")
    return out


def node_name(name: str) -> str:
    """``name`` made into a valid TensorFlow node name: characters outside ``[A-Za-z0-9_./-]`` become ``_`` and a
    leading ``_``, ``/`` or ``-`` is dropped (``"_0"`` -> ``"0"``); an empty result is ``"node"``."""
    cleaned = re.sub(r"[^A-Za-z0-9_./\-]", "_", name).lstrip("_/-")
    return cleaned or "node"


def _check_name(name: str, where: str = "node name") -> str:
    if not isinstance(name, str) or not NODE_NAME.match(name):
        raise UnsupportedError(f"{where} {name!r} is not a valid TensorFlow node name: it must match "
                               f"[A-Za-z0-9.][A-Za-z0-9_./\\-]* (ckpt.graph.node_name({name!r}) gives "
                               f"{node_name(str(name))!r})", key=str(name))
    return name


def _op_of(raw: str) -> str:
    return parse_input(raw).op


def _scoped_input(raw: str, prefix: str) -> str:
    """``raw`` with ``prefix`` before its operation name, keeping its spelling (``"^a"``, ``"a:0"``, ``"a"``)."""
    if not raw or not prefix:
        return raw
    return "^" + prefix + raw[1:] if raw.startswith("^") else prefix + raw


class GraphBuilder:
    """A graph under construction (see the module docstring).

    Args:
        graph: Where to start: a :class:`Graph`, a path (``.meta``/``.pb``/``.pbtxt``), a GraphDef or MetaGraphDef
            (ckpt's or TensorFlow's), or None for an empty graph. It is copied; the original is not changed.

    Tensors are named as in TensorFlow: ``"op:0"`` (``"op"`` alone is output 0, ``"^op"`` a control input).
    """

    def __init__(self, graph: Any = None) -> None:
        self._meta = meta_graph_pb2.MetaGraphDef()
        self._meta.meta_info_def.SetInParent()
        self._meta.graph_def.versions.producer = GRAPH_DEF_VERSION
        self._producer_set = False
        self._has_meta = False  # whether a MetaGraphDef was imported: then snapshots and .meta files carry its parts
        self._names: set[str] = set()
        if graph is not None:
            self.import_graph(graph)

    # ------------------------------------------------------------------ reading

    @property
    def graph_def(self) -> graph_pb2.GraphDef:
        """The GraphDef being built (live; edit it through the builder)."""
        return self._meta.graph_def

    @property
    def graph(self) -> Graph:
        """An immutable, validated snapshot as a :class:`Graph` (with the MetaGraphDef parts when a ``.meta`` was
        imported; a plain GraphDef otherwise)."""
        if not self._has_meta:
            gd = graph_pb2.GraphDef()
            gd.CopyFrom(self._meta.graph_def)
            return Graph(gd)
        meta = meta_graph_pb2.MetaGraphDef()
        meta.CopyFrom(self._meta)
        return Graph(meta_graph_def=meta)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names

    def _node(self, name: str):
        for node in self._meta.graph_def.node:
            if node.name == name:
                return node
        raise OperationNotFoundError(f"the graph has no operation named {name!r}", key=name)

    def _tensor(self, name: str, where: str):
        """Check that ``name`` names an existing operation (or its output); return the parsed reference."""
        if not isinstance(name, str):
            raise TypeError(f"{where}: tensor names are strings like 'op:0', not {type(name).__name__}")
        ref = parse_input(name)
        if ref.op not in self._names:
            import difflib

            close = difflib.get_close_matches(ref.op, sorted(self._names), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise OperationNotFoundError(f"{where}: the graph has no operation {ref.op!r}{hint}", key=name,
                                         available=close)
        return ref

    def dtype(self, tensor: str) -> str | None:
        """The static dtype of ``tensor`` as far as the graph records it (``"float32"``), or None."""
        ref = self._tensor(tensor, "dtype")
        if ref.control:
            return None
        return self._static_dtype(ref)

    def _static_dtype(self, ref) -> str | None:
        node = self._node(ref.op)
        # One-node graph: Operation._output_dtype reads only the node's own attributes.
        g = Graph(graph_pb2.GraphDef(node=[_bare(node)]), validate=False)
        dtype = g.get_operation_by_name(ref.op)._output_dtype(ref.index)
        return dtype[:-4] if dtype and dtype.endswith("_ref") else dtype

    def unique_name(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``... whichever is free (TensorFlow's ``unique_name``)."""
        _check_name(base)
        name, n = base, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        return name

    # ------------------------------------------------------------------ adding nodes

    def op(self, type: str, inputs: Sequence[str] = (), *, name: str | None = None,
           attrs: Mapping[str, Any] | None = None, control_inputs: Sequence[str] = (), device: str = "") -> str:
        """Add one operation and return the name of its first output (``"name:0"``).

        Args:
            type: The op type (``"MatMul"``, ``"Softmax"``); TensorFlow must know it to import the graph.
            inputs: Data inputs, as tensor names of operations already in the graph, in the op's argument order.
            name: Node name; default: the op type, made unique (``Mul_1``). A given name must be free.
            attrs: Attributes as typed values (:func:`attr_value`): ``{"transpose_b": True, "T": DType("float32")}``.
                ``T``, ``Tidx``, ``Tshape``, ``N`` and their kin are filled in from the inputs for common ops when
                left out, as TensorFlow's op constructors do.
            control_inputs: Operations that must run first (``^name`` inputs, written after the data inputs).
            device: Device placement (``""``: none).

        Raises:
            OperationNotFoundError: an input names no operation in the graph.
            UnsupportedError: an invalid or taken name, or an attribute with no attribute form.
        """
        if name is None:
            name = self.unique_name(type)
        else:
            _check_name(name)
            if name in self._names:
                raise UnsupportedError(f"an operation named {name!r} is already in the graph (pick another name, or "
                                       f"ckpt.graph.GraphBuilder.unique_name({name!r}))", key=name)
        refs = [self._tensor(i, f"input of {name!r}") for i in inputs]
        if any(r.control for r in refs):
            raise UnsupportedError(f"{name!r}: pass control inputs as control_inputs=, not ^name among the inputs",
                                   key=name)
        controls = [self._tensor(c if c.startswith("^") else "^" + c, f"control input of {name!r}")
                    for c in control_inputs]
        node = node_def_pb2.NodeDef()  # appended only once complete: a failed call leaves the graph as it was
        node.name = name
        node.op = type
        node.input.extend(str(r) for r in refs)
        node.input.extend(str(c) for c in controls)
        node.device = device
        for key, value in (attrs or {}).items():
            node.attr[key].CopyFrom(attr_value(value, where=f"{name!r} attr {key!r}"))
        for key, index in _TYPE_FROM_INPUTS.get(type, {}).items():
            if key in node.attr or not refs:
                continue
            try:
                source = refs[index]
            except IndexError:
                continue
            dtype = self._static_dtype(source)
            if dtype is not None:
                node.attr[key].type = _dtype_enum(dtype, name)
        if type in _N_FROM_INPUTS and "N" not in node.attr:
            node.attr["N"].i = len(refs) - (1 if _N_FROM_INPUTS[type] == -1 else 0)
        self._meta.graph_def.node.append(node)
        self._names.add(name)
        return f"{name}:0"

    def constant(self, value: Any, *, name: str | None = None, dtype: Any = None) -> str:
        """Add a ``Const`` holding ``value`` (an array or a Python number/list; laid out as TensorFlow's
        ``make_tensor_proto`` does) and return its tensor name.

        Args:
            value: The value.
            name: Node name (default ``Const``, made unique).
            dtype: ckpt dtype name, :class:`DType` or NumPy dtype; default: inferred as ``tf.constant`` infers it
                (Python floats become float32, Python ints int32).
        """
        enum = None if dtype is None else _dtype_enum(dtype, "constant")
        proto = make_tensor_proto(value, enum)
        attrs = {"dtype": attr_value_pb2.AttrValue(type=proto.dtype), "value": attr_value_pb2.AttrValue(tensor=proto)}
        return self.op("Const", [], name=name, attrs=attrs)

    def placeholder(self, name: str, dtype: Any, shape: Sequence[int | None] | None = None) -> str:
        """Add a ``Placeholder`` (``shape`` None: unknown rank; ``None`` entries: unknown dimensions)."""
        return self.op("Placeholder", [], name=name, attrs={"dtype": DType(dtype_name(_dtype_enum(dtype, name))),
                                                             "shape": Shape(shape)})

    # ------------------------------------------------------------------ importing

    def import_graph(self, graph: Any, *, scope: str = "", input_map: Mapping[str, str] | None = None) -> str:
        """Add every node of ``graph`` under ``scope`` (``tf.import_graph_def(graph_def, name=scope)``).

        Node names, inputs, colocation attributes (``loc:@``), and for a MetaGraphDef its collections (node lists
        and ``VariableDef`` entries) get the ``scope/`` prefix; functions are added to the library. The first graph
        imported without a scope brings its ``saver_def``, signatures and ``meta_info_def`` too; a later or scoped
        import brings its ``saver_def`` (scoped) only when the builder has none yet.

        Args:
            graph: A :class:`Graph`, a path, a GraphDef or MetaGraphDef.
            scope: Prefix for the imported names (``"vgg"`` -> ``vgg/conv1_2``); ``""`` keeps them.
            input_map: ``{imported tensor: tensor already in the builder}``: the imported graph's consumers of the
                key read the value instead (``{"input:0": "preprocess/out:0"}``), as ``input_map`` does.

        Returns:
            The prefix used (``"vgg/"``, or ``""``).

        Raises:
            UnsupportedError: a name would clash with one already in the graph, or a function of the same name but
                a different definition is already in the library.
            OperationNotFoundError: an ``input_map`` key or value does not exist.
        """
        if isinstance(graph, (str, os.PathLike)):
            from . import load

            graph = load(graph)
        if isinstance(graph, Graph):
            source_meta, source_gd = graph.meta_graph_def, graph.graph_def
        elif _is_meta(graph):
            source_meta = _coerce(graph, meta_graph_pb2.MetaGraphDef)
            source_gd = source_meta.graph_def
        else:
            source_meta, source_gd = None, _coerce(graph, graph_pb2.GraphDef)
        scope = scope.strip("/")
        prefix = f"{_check_name(scope, 'scope')}/" if scope else ""
        nodes = list(source_gd.node)
        incoming = {n.name for n in nodes}
        clash = sorted(prefix + n for n in incoming if prefix + n in self._names)
        if clash:
            raise UnsupportedError(f"importing under scope {scope!r} would redefine {len(clash)} operation(s) already "
                                   f"in the graph: {', '.join(clash[:5])} (import under another scope)", key=clash[0])
        for n in nodes:
            _check_name(prefix + n.name, "imported node name")
        mapping: dict[tuple[str, int], str] = {}
        for key, value in (input_map or {}).items():
            src = parse_input(key)
            if src.op not in incoming:
                raise OperationNotFoundError(f"input_map: the imported graph has no operation {src.op!r}", key=key)
            mapping[(src.op, src.index)] = str(self._tensor(value, "input_map value"))
        self._merge_library(source_gd)
        if not self._producer_set or source_gd.versions.producer < self._meta.graph_def.versions.producer:
            # The oldest producer wins: ops deprecated at newer versions (BatchNormWithGlobalNormalization) still load.
            self._meta.graph_def.versions.CopyFrom(source_gd.versions)
            self._producer_set = True
        out = self._meta.graph_def.node
        for n in nodes:
            node = out.add()
            node.CopyFrom(n)
            node.name = prefix + n.name
            del node.input[:]
            for raw in n.input:
                ref = parse_input(raw)
                if not ref.control and (ref.op, ref.index) in mapping:
                    node.input.append(mapping[(ref.op, ref.index)])
                else:
                    node.input.append(_scoped_input(raw, prefix))
            if prefix and "_class" in node.attr:
                values = [v.decode("utf-8", "surrogateescape") for v in node.attr["_class"].list.s]
                del node.attr["_class"].list.s[:]
                node.attr["_class"].list.s.extend(
                    ("loc:@" + prefix + v[5:] if v.startswith("loc:@") else v).encode("utf-8", "surrogateescape")
                    for v in values)
            self._names.add(node.name)
        if source_meta is not None:
            self._merge_meta(source_meta, prefix)
        return prefix

    def _merge_library(self, source_gd) -> None:
        library = self._meta.graph_def.library
        have = {f.signature.name: f for f in library.function}
        new = []
        for f in source_gd.library.function:
            old = have.get(f.signature.name)
            if old is None:
                new.append(f)
                have[f.signature.name] = f
            elif old.SerializeToString(deterministic=True) != f.SerializeToString(deterministic=True):
                raise UnsupportedError(f"function {f.signature.name!r} is already in the library with another "
                                       "definition", key=f.signature.name)
        for f in new:  # only once every function is known to fit
            library.function.add().CopyFrom(f)
        grads = {g.function_name for g in library.gradient}
        for g in source_gd.library.gradient:
            if g.function_name not in grads:
                library.gradient.add().CopyFrom(g)

    def _merge_meta(self, source, prefix: str) -> None:
        first = not self._has_meta
        self._has_meta = True
        if first and not prefix:
            self._meta.meta_info_def.CopyFrom(source.meta_info_def)
            for key, sig in source.signature_def.items():
                self._meta.signature_def[key].CopyFrom(sig)
        if source.HasField("saver_def") and not self._meta.HasField("saver_def"):
            saver = self._meta.saver_def
            saver.CopyFrom(source.saver_def)
            saver.filename_tensor_name = _scoped_input(saver.filename_tensor_name, prefix)
            saver.save_tensor_name = _scoped_input(saver.save_tensor_name, prefix)
            saver.restore_op_name = _scoped_input(saver.restore_op_name, prefix)
        for key, col in source.collection_def.items():
            mine = self._meta.collection_def[key]
            kind = col.WhichOneof("kind")
            if kind == "node_list":
                mine.node_list.value.extend(_scoped_input(v, prefix) for v in col.node_list.value)
            elif kind == "bytes_list" and key in _VARIABLE_COLLECTIONS:
                for data in col.bytes_list.value:
                    var = variable_pb2.VariableDef.FromString(data)
                    _map_variable_def(var, lambda n: _scoped_input(n, prefix))
                    mine.bytes_list.value.append(var.SerializeToString(deterministic=True))
            elif kind is not None:
                # Other payloads (int64/float lists, opaque bytes) do not name nodes: merged as they are.
                getattr(mine, kind).value.extend(getattr(col, kind).value)

    # ------------------------------------------------------------------ editing

    def replace(self, old: str, new: str) -> list[str]:
        """Make every consumer of tensor ``old`` read tensor ``new`` instead (``graph_editor.reroute``), returning
        the names of the rewired operations.

        Consumers that ``new`` itself depends on keep reading ``old``: they are the replacement (so inserting a
        node is ``y = b.op("StopGradient", [old]); b.replace(old, y)``). Signature outputs naming ``old`` follow.
        The old subgraph stays until :meth:`prune` drops what nothing needs.

        Raises:
            OperationNotFoundError: either tensor does not exist.
            UnsupportedError: control references, or the two tensors have different static dtypes.
        """
        a, b = self._tensor(old, "replace"), self._tensor(new, "replace")
        if a.control or b.control:
            raise UnsupportedError("replace() rewires data tensors ('op:0'), not control inputs", key=old)
        da, db = self._static_dtype(a), self._static_dtype(b)
        if da and db and da != db:
            raise UnsupportedError(f"replace({old!r}, {new!r}): {old} is {da} but {new} is {db}", key=old)
        ancestors = self._ancestors(b.op)
        rewired = []
        for node in self._meta.graph_def.node:
            if node.name in ancestors:
                continue
            changed = False
            for k, raw in enumerate(node.input):
                ref = parse_input(raw)
                if not ref.control and ref.op == a.op and ref.index == a.index:
                    node.input[k] = str(b)
                    changed = True
            if changed:
                rewired.append(node.name)
        for sig in self._meta.signature_def.values():
            for info in sig.outputs.values():
                if info.name and parse_input(info.name) == a:
                    info.name = b.tensor_name
        return rewired

    def _ancestors(self, name: str, *, colocation: bool = False) -> set[str]:
        """``name`` and every node it reads from (and, with ``colocation``, the nodes it is colocated with)."""
        by_name = {n.name: n for n in self._meta.graph_def.node}
        seen, stack = set(), [name]
        while stack:
            current = stack.pop()
            if current in seen or current not in by_name:
                continue
            seen.add(current)
            node = by_name[current]
            stack.extend(_op_of(i) for i in node.input)
            if colocation and "_class" in node.attr:
                stack.extend(v.decode("utf-8", "surrogateescape")[5:] for v in node.attr["_class"].list.s
                             if v.startswith(b"loc:@"))
        return seen

    def rename(self, old: str, new: str) -> None:
        """Rename operation ``old`` to ``new`` everywhere it is named: inputs, control inputs, colocation, collections,
        ``saver_def``, signatures.

        A variable keeps its checkpoint key when the graph's Saver names it in a constant (TensorFlow's Savers do);
        the saver is not rewritten.

        Raises:
            OperationNotFoundError: no operation ``old``.
            UnsupportedError: ``new`` is taken or not a valid name.
        """
        node = self._node(old)
        _check_name(new)
        if new in self._names:
            raise UnsupportedError(f"cannot rename {old!r}: an operation named {new!r} is already in the graph",
                                   key=new)
        node.name = new
        self._names.discard(old)
        self._names.add(new)

        def fix(raw: str) -> str:
            if not raw:
                return raw
            ref = parse_input(raw)
            return str(type(ref)(new, ref.index, ref.control)) if ref.op == old else raw

        def fix_tensor(raw: str) -> str:  # "op:0" spellings stay "op:0"
            ref = parse_input(raw)
            return f"{new}:{ref.index}" if ref.op == old and ":" in raw else fix(raw)

        for n in self._meta.graph_def.node:
            for k, raw in enumerate(n.input):
                n.input[k] = fix(raw)
            if "_class" in n.attr:
                values = list(n.attr["_class"].list.s)
                target = f"loc:@{old}".encode()
                if target in values:
                    del n.attr["_class"].list.s[:]
                    n.attr["_class"].list.s.extend(f"loc:@{new}".encode() if v == target else v for v in values)
        for key, col in self._meta.collection_def.items():
            if col.WhichOneof("kind") == "node_list":
                values = [fix_tensor(v) for v in col.node_list.value]
                del col.node_list.value[:]
                col.node_list.value.extend(values)
            elif col.WhichOneof("kind") == "bytes_list" and key in _VARIABLE_COLLECTIONS:
                values = []
                for data in col.bytes_list.value:
                    var = variable_pb2.VariableDef.FromString(data)
                    _map_variable_def(var, fix_tensor)
                    values.append(var.SerializeToString(deterministic=True))
                del col.bytes_list.value[:]
                col.bytes_list.value.extend(values)
        if self._meta.HasField("saver_def"):
            s = self._meta.saver_def
            s.filename_tensor_name = fix_tensor(s.filename_tensor_name)
            s.save_tensor_name = fix_tensor(s.save_tensor_name)
            s.restore_op_name = fix(s.restore_op_name)
        for sig in self._meta.signature_def.values():
            for info in list(sig.inputs.values()) + list(sig.outputs.values()):
                if info.name:
                    info.name = fix_tensor(info.name)

    def prune(self, outputs: Iterable[str]) -> list[str]:
        """Keep only the operations ``outputs`` (operation or tensor names) depend on, in their order
        (``extract_sub_graph``); collection entries, signatures and a ``saver_def`` that name dropped operations
        go too. Returns the names dropped."""
        keep: set[str] = set()
        for out in outputs:
            ref = self._tensor(out, "prune")
            keep |= self._ancestors(ref.op, colocation=True)
        gd = self._meta.graph_def
        kept = [n for n in gd.node if n.name in keep]
        dropped = [n.name for n in gd.node if n.name not in keep]
        del gd.node[:]
        gd.node.extend(kept)
        self._names = {n.name for n in kept}
        self._drop_meta_references()
        return dropped

    def _drop_meta_references(self) -> None:
        def alive(raw: str) -> bool:
            return not raw or _op_of(raw) in self._names

        for key in list(self._meta.collection_def):
            col = self._meta.collection_def[key]
            kind = col.WhichOneof("kind")
            if kind == "node_list":
                values = [v for v in col.node_list.value if alive(v)]
                del col.node_list.value[:]
                col.node_list.value.extend(values)
                if not values:
                    del self._meta.collection_def[key]
            elif kind == "bytes_list" and key in _VARIABLE_COLLECTIONS:
                values = [d for d in col.bytes_list.value
                          if alive(variable_pb2.VariableDef.FromString(d).variable_name)]
                del col.bytes_list.value[:]
                col.bytes_list.value.extend(values)
                if not values:
                    del self._meta.collection_def[key]
        if self._meta.HasField("saver_def"):
            s = self._meta.saver_def
            if not all(alive(n) for n in (s.filename_tensor_name, s.save_tensor_name, s.restore_op_name)):
                self._meta.ClearField("saver_def")
        for key in list(self._meta.signature_def):
            sig = self._meta.signature_def[key]
            if not all(alive(i.name) for i in list(sig.inputs.values()) + list(sig.outputs.values())):
                del self._meta.signature_def[key]

    # ------------------------------------------------------------------ writing

    def save(self, path: str | os.PathLike, *, text: bool | None = None, meta: bool | None = None,
             sync: bool = True) -> Path:
        """Validate and write the graph: ``.pb`` (binary GraphDef), ``.pbtxt`` (text) or ``.meta`` (MetaGraphDef
        with the collections, ``saver_def`` and signatures); see :meth:`Graph.save` for ``text``/``meta``.

        Raises:
            CorruptCheckpointError: the graph is not one TensorFlow could import (dangling inputs...).
        """
        path = Path(path)
        if meta is None:
            meta = path.suffix.lower() == ".meta" or (path.suffix.lower() not in (".pb", ".pbtxt", ".txt")
                                                      and self._has_meta)
        return self.graph.save(path, text=text, meta=meta, sync=sync)


def _bare(node):
    """A copy of ``node`` without inputs (for reading its static output types alone)."""
    copy = type(node)()
    copy.CopyFrom(node)
    del copy.input[:]
    return copy


def _map_variable_def(var, fn) -> None:
    for field_name in ("variable_name", "initial_value_name", "initializer_name", "snapshot_name"):
        setattr(var, field_name, fn(getattr(var, field_name)))
    if var.HasField("save_slice_info_def"):
        info = var.save_slice_info_def
        info.full_name = fn(info.full_name)
