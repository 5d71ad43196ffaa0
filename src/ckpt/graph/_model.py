"""``Graph``: a read-only view of a GraphDef / MetaGraphDef with TensorFlow's vocabulary.

Operations are listed in TensorFlow's import order (``tf.import_graph_def``'s: topological, ties in file order), their
inputs parsed into :class:`Input` (``"^init"`` is a control input, ``"split:1"`` output 1 of ``split``), and
their attributes decoded to Python values on first access. Static tensor information comes from what the file
records: the ``_output_shapes`` attribute when TensorFlow wrote it, otherwise the producer's own attributes
(``Placeholder``'s ``dtype``/``shape``, a ``Const``'s value, a ``VariableV2``'s ``shape``).

The heuristics that pick a graph's inputs, outputs and prediction-like operations are documented on the
properties; they exist to answer the seed's "which node names do I pass as ``output_node_names``?".

A Graph is immutable after construction and safe to share between threads; ``freeze`` and friends build new ones.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import CorruptCheckpointError, OperationNotFoundError
from ..tf.protos import graph_pb2, meta_graph_pb2, saver_pb2, variable_pb2
from ..tf.tensor_proto import dtype_name, make_ndarray, shape_from_proto
from ._attrs import attr_summary, decode_attr
from ._files import MAX_OUTPUTS, check_graph_def, known_output_count, output_counts, write_message
from ._opdefs import output_dtypes

__all__ = ["Graph", "Operation", "Tensor", "Input", "Variable", "SaverInfo", "parse_input", "saver_scopes_of"]

VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp"})
PLACEHOLDER_OPS = frozenset({"Placeholder", "PlaceholderWithDefault", "PlaceholderV2"})

# Collections whose bytes_list entries are VariableDef messages (TensorFlow's register_proto_function calls).
_VARIABLE_COLLECTIONS = frozenset({
    "variables", "trainable_variables", "local_variables", "model_variables", "moving_average_variables",
    "global_step", "metric_variables", "trainable_resource_variables", "concatenated_variables",
})
_SAVER_COLLECTIONS = frozenset({"savers"})

_SAVER_NAME = re.compile(r"\Asave(?:_\d+)?(?:/|\Z)")
_SAVER_TYPES = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec",
                          "Save", "SaveSlices", "Restore", "RestoreSlice"})
_INIT_NAME = re.compile(r"\Ainit(?:_\d+|_all_tables)?(?:\Z|/)|/Assign(?:_\d+)?\Z|/Initializer/|/initial_value\Z"
                        r"|\Areport_uninitialized_variables(?:_\d+)?/|/IsInitialized/")
_INIT_TYPES = frozenset({"Assign", "AssignVariableOp", "VarIsInitializedOp", "IsVariableInitialized"})
# Gradients anywhere (an optimizer inside a name scope writes "loss/gradients/..."), Apply* updates.
_TRAIN_NAME = re.compile(r"(?:\A|/)gradients(?:_\d+)?/")
_TRAIN_TYPE = re.compile(r"\A(?:Resource)?(?:Sparse)?Apply")
_SUMMARY_TYPE = re.compile(r"Summary(?:V\d+)?\Z")  # ScalarSummary, HistogramSummary, MergeSummary, WriteSummary...
# State updates outside initializers: batch norm's moving averages (AssignSub), counters, scatter updates.
_UPDATE_TYPES = frozenset({"AssignAdd", "AssignSub", "AssignAddVariableOp", "AssignSubVariableOp", "ScatterUpdate",
                           "ScatterAdd", "ScatterSub", "ScatterMul", "ScatterDiv", "ResourceScatterUpdate",
                           "ResourceScatterAdd", "ResourceScatterSub", "CountUpTo"})
_TRIVIAL = frozenset({"Const", "NoOp", *VARIABLE_OPS, *PLACEHOLDER_OPS})
_PASS_THROUGH = frozenset({"Identity", "ReadVariableOp", "Snapshot", "StopGradient"})
# Shape bookkeeping: never proposed as a model's prediction.
_PLUMBING = frozenset({"Shape", "ShapeN", "Size", "Rank", "Reshape", "Slice", "StridedSlice", "Squeeze",
                       "ExpandDims", "ConcatV2", "Concat", "Pack", "Unpack", "Identity", "IdentityN", "Cast",
                       "Transpose", "Snapshot", "StopGradient"})

_RANDOM = re.compile(r"Random|TruncatedNormal|Multinomial")  # dropout masks and the like are no predictions

# Output dtypes the attributes alone do not give away.
_BOOL_OUT = frozenset({"Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "LogicalAnd",
                       "LogicalOr", "LogicalNot", "IsNan", "IsInf", "IsFinite", "IsVariableInitialized",
                       "VarIsInitializedOp", "ApproximateEqual", "InTopK", "InTopKV2"})
_REF_OUT = frozenset({"VariableV2", "Variable", "TemporaryVariable", "Assign", "AssignAdd", "AssignSub",
                      "ScatterUpdate", "ScatterAdd", "ScatterSub", "ScatterMul", "ScatterDiv"})
_DTYPE_ATTRS = ("out_type", "output_type", "DstT", "dtype", "T", "Tout", "Tparams")
_NO_OUTPUTS = frozenset({"NoOp", "SaveV2", "Save", "SaveSlices", "AssignVariableOp", "AssignAddVariableOp",
                         "AssignSubVariableOp", "MergeV2Checkpoints", "Assert", "DestroyResourceOp"})


@dataclass(frozen=True)
class Input:
    """One entry of a NodeDef's ``input`` list.

    Attributes:
        op: Name of the operation it comes from.
        index: Which output of ``op`` (0 for ``"op"``, N for ``"op:N"``; 0 for control inputs).
        control: True for ``"^op"``: a control dependency, not data.
    """

    op: str
    index: int = 0
    control: bool = False

    @property
    def tensor_name(self) -> str:
        """``"op:index"``, as ``get_tensor_by_name`` takes it."""
        return f"{self.op}:{self.index}"

    def __str__(self) -> str:
        if self.control:
            return f"^{self.op}"
        return self.op if self.index == 0 else f"{self.op}:{self.index}"


def parse_input(raw: str) -> Input:
    """``"^a"`` -> control input from ``a``; ``"a:2"`` -> output 2 of ``a``; ``"a"`` -> output 0 of ``a``."""
    if raw.startswith("^"):
        return Input(raw[1:], 0, True)
    head, sep, tail = raw.rpartition(":")
    if sep and tail.isdigit() and head:
        if len(tail) > 12:  # no operation has 10^12 outputs (and int() refuses huge digit strings)
            raise CorruptCheckpointError(f"{raw[:80]!r}: output index {tail[:20]}... is too large", key=raw[:200])
        return Input(head, int(tail), False)
    return Input(raw, 0, False)


@dataclass(frozen=True)
class Tensor:
    """Static information about one output of an operation.

    Attributes:
        name: ``"op:index"``.
        op: The producing :class:`Operation`.
        index: Output number.
        dtype: Type name (``"float32"``, ``"float32_ref"``, ``"resource"``), or None when the file does not say.
        shape: Static shape (``None`` entries for unknown dimensions), or None when unknown.
    """

    name: str
    op: Operation = field(repr=False, compare=False)
    index: int
    dtype: str | None
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class Variable:
    """A variable operation and where its value lives in a checkpoint.

    Attributes:
        name: The operation name (``conv_layer_1/W_conv_1``, ``part/w/part_0``).
        type: ``VariableV2``, ``VarHandleOp`` or ``Variable``.
        dtype: Value type (``float32``).
        shape: Value shape; for a partition, the partition's shape.
        checkpoint_name: The tensor name in a checkpoint: the name the graph's own Saver writes (the op name,
            ``SaveSliceInfoDef.full_name`` for partitioned variables, or a custom ``Saver(var_list={...})`` name).
        partition: For a partitioned variable, ``(full_shape, offset)``: this part sits at ``offset`` inside the
            full tensor stored as ``checkpoint_name``. None otherwise.
        trainable: Whether it is in the ``trainable_variables`` collection (None without a MetaGraphDef).
        device: The device the graph places it on.
    """

    name: str
    type: str
    dtype: str | None
    shape: tuple[int | None, ...] | None
    checkpoint_name: str
    partition: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    trainable: bool | None = None
    device: str = ""


@dataclass(frozen=True)
class SaverInfo:
    """The MetaGraphDef's ``SaverDef``: which graph nodes save and restore, and the Saver's settings."""

    filename_tensor_name: str
    save_tensor_name: str
    restore_op_name: str
    max_to_keep: int
    sharded: bool
    keep_checkpoint_every_n_hours: float
    version: str


class Operation:
    """One node of the graph.

    Attributes:
        name: Node name (``"conv_layer_1/conv2d_1"``).
        type: Op type (``"Conv2D"``).
        inputs: Data inputs first, then control inputs, as :class:`Input`.
        device: Requested device, ``""`` when unplaced.
        node: The underlying ``ckpt.tf.NodeDef`` (treat as read-only).
    """

    def __init__(self, graph: Graph, node) -> None:
        self._graph = graph
        self.node = node
        self.name: str = node.name
        self.type: str = node.op
        self.device: str = node.device
        self.inputs: tuple[Input, ...] = tuple(parse_input(i) for i in node.input)

    def __repr__(self) -> str:
        return f"<Operation {self.name!r} type={self.type}>"

    @cached_property
    def attrs(self) -> dict[str, Any]:
        """Attributes decoded to Python values (see :func:`ckpt.graph.decode_attr`), sorted by name."""
        where = f"{self._graph.path or 'graph'}: node {self.name!r}"
        return {k: decode_attr(v, where=f"{where} attr {k!r}") for k, v in sorted(self.node.attr.items())}

    def get_attr(self, name: str) -> Any:
        """One decoded attribute (TensorFlow's ``Operation.get_attr``).

        Raises:
            OperationNotFoundError: no attribute of that name (lists the ones there are).
        """
        if name not in self.node.attr:
            raise OperationNotFoundError(f"operation {self.name!r} has no attribute {name!r} (it has: "
                                         f"{', '.join(sorted(self.node.attr)) or 'none'})", key=name,
                                         available=sorted(self.node.attr))
        return decode_attr(self.node.attr[name], where=f"{self._graph.path or 'graph'}: node {self.name!r}")

    def attr_summaries(self) -> dict[str, str]:
        """One short line per attribute, for display (never expands large tensors, never raises)."""
        return {k: attr_summary(v) for k, v in sorted(self.node.attr.items())}

    @property
    def data_inputs(self) -> list[Input]:
        return [i for i in self.inputs if not i.control]

    @property
    def control_inputs(self) -> list[str]:
        """Names of the operations this one waits for (``^name`` inputs)."""
        return [i.op for i in self.inputs if i.control]

    @property
    def consumers(self) -> list[Operation]:
        """Operations that take one of this operation's outputs or wait for it, in graph order."""
        return self._graph.consumers(self.name)

    @cached_property
    def outputs(self) -> list[Tensor]:
        """This operation's outputs, as far as the file tells: the op type's output count when ckpt knows it, else
        ``_output_shapes`` or the highest index used.

        Raises:
            CorruptCheckpointError: an input of the graph names an output its producer does not have (a graph
                loaded with ``validate=False``; validation reports it at load time).
        """
        count = self._graph._output_counts.get(self.name, 1)
        if count == 0 and self.type not in _NO_OUTPUTS and known_output_count(self.node) is None:
            count = 1
        return [self._tensor(i) for i in range(count)]

    def _tensor(self, index: int) -> Tensor:
        return Tensor(f"{self.name}:{index}", self, index, self._output_dtype(index), self._output_shape(index))

    def _output_dtype(self, index: int) -> str | None:
        by_opdef = output_dtypes(self.node, index + 1)
        if by_opdef is not None and index < len(by_opdef):
            return by_opdef[index]
        attrs = self.node.attr
        if self.type in _BOOL_OUT:
            return "bool"
        if self.type == "VarHandleOp":
            return "resource"
        for key in _DTYPE_ATTRS:
            if key in attrs:
                value = attrs[key]
                kind = value.WhichOneof("value")
                if kind == "type":
                    name = dtype_name(value.type)
                elif kind == "list" and len(value.list.type) > index:
                    name = dtype_name(value.list.type[index])
                else:
                    continue
                if (self.type in _REF_OUT or _TRAIN_TYPE.match(self.type) and not self.type.startswith("Resource")) \
                        and not name.endswith("_ref"):
                    name += "_ref"
                return name
        return None

    def _output_shape(self, index: int):
        attrs = self.node.attr
        if "_output_shapes" in attrs:
            shapes = attrs["_output_shapes"].list.shape
            if index < len(shapes):
                return shape_from_proto(shapes[index])
        if index != 0:
            return None
        if self.type in ("Placeholder", "PlaceholderWithDefault", "VariableV2", "Variable", "PlaceholderV2"):
            if "shape" in attrs and attrs["shape"].WhichOneof("value") == "shape":
                return shape_from_proto(attrs["shape"].shape)
            return None
        if self.type == "Const" and "value" in attrs and attrs["value"].WhichOneof("value") == "tensor":
            return tuple(int(d.size) for d in attrs["value"].tensor.tensor_shape.dim)
        if self.type == "VarHandleOp":
            return ()
        return None


class Graph:
    """A TensorFlow graph read from a ``.meta``, ``.pb`` or ``.pbtxt`` file (see :func:`ckpt.graph.load`).

    Args:
        graph_def: A ``ckpt.tf.GraphDef`` (or TensorFlow's, or a serialized one).
        meta_graph_def: The MetaGraphDef it came from, if any: collections, saver and signatures come from there.
        path: The file it was read from (used in messages).
        validate: Check the structure (unique names, inputs that exist) and raise CorruptCheckpointError if not.

    Example:
        >>> g = ckpt.graph.load("model/model.ckpt-30.meta")          # doctest: +SKIP
        >>> for op in g.operations:
        ...     print(op.name, op.type)
        >>> g.get_tensor_by_name("inputs/x_input:0").shape
        (None, 784)
    """

    def __init__(self, graph_def=None, *, meta_graph_def=None, path: str | os.PathLike | None = None,
                 validate: bool = True) -> None:
        if meta_graph_def is None and _is_meta(graph_def):
            graph_def, meta_graph_def = None, graph_def
        if graph_def is None and meta_graph_def is None:
            raise TypeError("Graph() needs a GraphDef or a MetaGraphDef")
        self._meta = _coerce(meta_graph_def, meta_graph_pb2.MetaGraphDef) if meta_graph_def is not None else None
        if graph_def is not None:
            graph_def = _coerce(graph_def, graph_pb2.GraphDef)
            if self._meta is None:
                self._graph_def = graph_def
            else:
                if self._meta.graph_def is not graph_def and self._meta.graph_def != graph_def:
                    meta = meta_graph_pb2.MetaGraphDef()
                    meta.CopyFrom(self._meta)
                    meta.graph_def.CopyFrom(graph_def)
                    self._meta = meta
                self._graph_def = self._meta.graph_def
        else:
            self._graph_def = self._meta.graph_def
        self.path: str | None = os.fspath(path) if path is not None else None
        if validate:
            check_graph_def(self._graph_def, self.path or "graph")
        ops = [Operation(self, node) for node in self._graph_def.node]
        self._by_name = {op.name: op for op in ops}
        self._ops = _topological(ops, self._by_name)  # TensorFlow's import order, which get_operations() lists
        self._consumers: dict[str, list[Operation]] = {}
        for op in self._ops:
            seen = set()
            for i in op.inputs:
                if i.op not in seen:
                    seen.add(i.op)
                    self._consumers.setdefault(i.op, []).append(op)

    # ------------------------------------------------------------------ protos

    @property
    def graph_def(self) -> graph_pb2.GraphDef:
        """The GraphDef (a ``ckpt.tf.GraphDef``; treat as read-only)."""
        return self._graph_def

    @property
    def meta_graph_def(self) -> meta_graph_pb2.MetaGraphDef | None:
        """The MetaGraphDef the graph came with, or None (treat as read-only)."""
        return self._meta

    @property
    def producer(self) -> int:
        """``versions.producer``: the TensorFlow graph version that wrote it (2474 for TF 2.21)."""
        return self._graph_def.versions.producer

    @property
    def functions(self) -> list[str]:
        """Names of the functions in the graph's library."""
        return [f.signature.name for f in self._graph_def.library.function]

    # ------------------------------------------------------------------ operations

    @property
    def operations(self) -> list[Operation]:
        """Every operation, in TensorFlow's import order (``get_operations()`` after ``import_graph_def``): inputs
        before their users, otherwise file order."""
        return list(self._ops)

    def get_operations(self) -> list[Operation]:
        """Same as :attr:`operations` (TensorFlow's spelling)."""
        return list(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._ops)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"<ckpt.graph.Graph{where}: {len(self._ops)} operations>"

    def _not_found(self, name: str, what: str = "operation") -> OperationNotFoundError:
        close = difflib.get_close_matches(name, list(self._by_name), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return OperationNotFoundError(f"{self.path or 'the graph'} has no {what} named {name!r}{hint}",
                                      path=self.path, key=name, available=close)

    def get_operation_by_name(self, name: str) -> Operation:
        """The operation called ``name``.

        Raises:
            OperationNotFoundError: no such operation (suggests close names).
        """
        op = self._by_name.get(name)
        if op is None:
            raise self._not_found(name)
        return op

    def get_tensor_by_name(self, name: str) -> Tensor:
        """Static information about tensor ``"op:index"`` (``"op"`` alone means output 0).

        Raises:
            OperationNotFoundError: no such operation, or it has no output of that index.
        """
        ref = parse_input(name)
        if ref.control:
            raise self._not_found(name, "tensor")
        op = self._by_name.get(ref.op)
        if op is None:
            raise self._not_found(ref.op, "tensor producer")
        outputs = op.outputs
        if ref.index < len(outputs):
            return outputs[ref.index]
        known = known_output_count(op.node)
        if "_output_shapes" not in op.node.attr and op.type not in _NO_OUTPUTS and (
                known is None and ref.index < MAX_OUTPUTS or known is not None and ref.index < known):
            return op._tensor(ref.index)  # the file does not list them all
        raise OperationNotFoundError(f"operation {ref.op!r} ({op.type}) has {len(outputs)} output(s); there is no "
                                     f"tensor {name!r}", path=self.path, key=name)

    @cached_property
    def _output_counts(self) -> dict[str, int]:
        return output_counts(self._graph_def, self.path or "graph")

    def consumers(self, name: str) -> list[Operation]:
        """Operations that use an output of ``name`` or wait for it, in graph order."""
        return list(self._consumers.get(name, ()))

    # ------------------------------------------------------------------ meta graph

    @cached_property
    def collections(self) -> dict[str, list[Any]]:
        """The MetaGraphDef's collections, decoded: ``node_list`` -> names, ``bytes_list`` of VariableDef
        (``variables``, ``trainable_variables``, ``global_step``...) -> dicts, ``savers`` -> dicts, other
        ``bytes_list`` -> bytes, ``int64_list``/``float_list`` -> numbers, ``any_list`` -> ``(type_url, bytes)``.

        Raises:
            CorruptCheckpointError: a VariableDef or SaverDef entry does not decode.
        """
        if self._meta is None:
            return {}
        out: dict[str, list[Any]] = {}
        for key, col in sorted(self._meta.collection_def.items()):
            kind = col.WhichOneof("kind")
            if kind == "node_list":
                out[key] = list(col.node_list.value)
            elif kind == "bytes_list":
                if key in _VARIABLE_COLLECTIONS:
                    out[key] = [self._decode_entry(variable_pb2.VariableDef(), b, key) for b in col.bytes_list.value]
                elif key in _SAVER_COLLECTIONS:
                    out[key] = [self._decode_entry(saver_pb2.SaverDef(), b, key) for b in col.bytes_list.value]
                else:
                    out[key] = [bytes(b) for b in col.bytes_list.value]
            elif kind == "int64_list":
                out[key] = list(col.int64_list.value)
            elif kind == "float_list":
                out[key] = list(col.float_list.value)
            elif kind == "any_list":
                out[key] = [(a.type_url, bytes(a.value)) for a in col.any_list.value]
            else:
                out[key] = []
        return out

    def _decode_entry(self, message, data: bytes, key: str) -> dict[str, Any]:
        try:
            message.ParseFromString(data)
        except Exception as exc:
            raise CorruptCheckpointError(f"{self.path or 'graph'}: an entry of collection {key!r} is not a valid "
                                         f"{type(message).__name__} ({exc})", path=self.path, key=key) from None
        return _message_dict(message)

    @cached_property
    def saver_def(self) -> SaverInfo | None:
        """The Saver's settings and node names, when the MetaGraphDef has a ``saver_def``."""
        if self._meta is None or not self._meta.HasField("saver_def"):
            return None
        s = self._meta.saver_def
        return SaverInfo(s.filename_tensor_name, s.save_tensor_name, s.restore_op_name, s.max_to_keep, s.sharded,
                         s.keep_checkpoint_every_n_hours, saver_pb2.SaverDef.CheckpointFormatVersion.Name(s.version)
                         if s.version in (0, 1, 2) else str(s.version))

    @cached_property
    def signatures(self) -> dict[str, dict[str, Any]]:
        """SignatureDefs (SavedModel-style MetaGraphs): ``{key: {"inputs": {name: tensor}, "outputs": {...},
        "method_name": ...}}``."""
        if self._meta is None:
            return {}
        return {key: {"inputs": {k: v.name for k, v in sorted(sig.inputs.items())},
                      "outputs": {k: v.name for k, v in sorted(sig.outputs.items())},
                      "method_name": sig.method_name}
                for key, sig in sorted(self._meta.signature_def.items())}

    # ------------------------------------------------------------------ roles

    @cached_property
    def _roles(self) -> dict[str, str]:
        """Operation name -> "saver" | "init" | "train" | "summary" | "update" for the nodes that are bookkeeping,
        not the model's inference computation."""
        roles: dict[str, str] = {}
        train_ops = set()
        if self._meta is not None and "train_op" in self._meta.collection_def:
            train_ops = set(self._meta.collection_def["train_op"].node_list.value)
        saver_scopes = {scope + "/" for scope in saver_scopes_of(self.saver_def)}
        for op in self._ops:  # import order is topological, so inputs are classified before their consumers
            name = op.name
            if _SAVER_NAME.match(name) or op.type in _SAVER_TYPES or any(name.startswith(s) for s in saver_scopes):
                roles[name] = "saver"
            elif _INIT_NAME.search(name) or op.type in _INIT_TYPES:
                roles[name] = "init"
            elif (_TRAIN_NAME.search(name) or _TRAIN_TYPE.match(op.type) or name in train_ops
                  or any(name.startswith(t + "/") for t in train_ops)):
                roles[name] = "train"
            elif any(roles.get(i.op) == "train" for i in op.inputs):
                roles[name] = "train"  # uses or waits for a training update: part of the training step
            elif _SUMMARY_TYPE.search(op.type):
                roles[name] = "summary"
            elif op.type in _UPDATE_TYPES or any(roles.get(i.op) == "update" for i in op.inputs):
                roles[name] = "update"  # a state update, or what reads the state after it
        # Producers used only by bookkeeping nodes belong to them (the truncated_normal feeding W/Assign, a summary's
        # tag, the (moving_mean - mean) * decay an AssignSub takes); tensors a summary shows stay the model's.
        for op in reversed(self._ops):
            if op.name in roles or op.type in VARIABLE_OPS:
                continue
            users = self._consumers.get(op.name)
            if not users or op.type != "Const" and any(roles.get(u.name) == "summary" for u in users):
                continue  # a loss that only a summary shows is still the model's
            if all(roles.get(u.name) in ("init", "saver", "summary", "update") for u in users):
                roles[op.name] = roles[users[0].name]
        return roles

    def role(self, name: str) -> str:
        """``"saver"``, ``"init"``, ``"train"``, ``"summary"``, ``"update"`` or ``"model"``: which part of the graph
        an operation belongs to."""
        self.get_operation_by_name(name)
        return self._roles.get(name, "model")

    @cached_property
    def _trivial(self) -> set[str]:
        trivial: set[str] = set()
        for op in self._ops:
            if op.type in _TRIVIAL or (op.type in _PASS_THROUGH and all(i.op in trivial for i in op.inputs)):
                trivial.add(op.name)
        return trivial

    @property
    def inputs(self) -> list[Operation]:
        """Placeholders the model is fed through (``Placeholder``/``PlaceholderWithDefault``), without the
        Saver's filename placeholder."""
        return [op for op in self._ops if op.type in PLACEHOLDER_OPS and self._roles.get(op.name) != "saver"]

    @property
    def outputs(self) -> list[Operation]:
        """Operations whose results nothing in the model uses: the candidates for ``output_node_names``.

        Saver nodes (``save/*``), initializers (``init``, ``*/Assign``, ``*/Initializer/*``, ``*/initial_value``),
        training nodes (``gradients/*`` in any scope, ``Apply*`` updates, the train op and what waits for it),
        summaries and state updates (``AssignSub`` of batch norm's moving averages) are left out, and so is use by
        them: a loss consumed only by its gradients and a summary is an output. Constants, variables, reads of
        variables, placeholders and the pivots of a ``cond`` (``cond/switch_t``) never are.
        """
        roles = self._roles
        result = []
        for op in self._ops:
            if op.name in roles or op.name in self._trivial or op.type in _NO_OUTPUTS or self._is_pivot(op):
                continue
            if any(c.name not in roles for c in self._consumers.get(op.name, ())):
                continue
            result.append(op)
        return result

    def _is_pivot(self, op: Operation) -> bool:
        """``cond/switch_t``, ``cond/switch_f``: the Identity of a Switch a cond's branches wait on."""
        if op.type != "Identity" or not op.data_inputs:
            return False
        src = self._by_name.get(op.data_inputs[0].op)
        return src is not None and src.type in ("Switch", "RefSwitch")

    @cached_property
    def _dependencies(self) -> tuple[dict[str, int], dict[str, bool]]:
        """Per operation: a bit mask of the placeholders it depends on, and whether it depends on a variable."""
        bits = {op.name: 1 << i for i, op in enumerate(self.inputs)}
        needs: dict[str, int] = {}
        uses_var: dict[str, bool] = {}
        for op in _topological(self._ops, self._by_name):
            mask = bits.get(op.name, 0)
            var = op.type in VARIABLE_OPS
            for i in op.inputs:
                mask |= needs.get(i.op, 0)
                var = var or uses_var.get(i.op, False)
            needs[op.name] = mask
            uses_var[op.name] = var
        return needs, uses_var

    def needed_inputs(self, name: str) -> list[str]:
        """Names of the placeholders operation ``name`` depends on (what must be fed to compute it)."""
        self.get_operation_by_name(name)
        mask = self._dependencies[0].get(name, 0)
        return [op.name for i, op in enumerate(self.inputs) if mask >> i & 1]

    @property
    def predictions(self) -> list[Operation]:
        """Operations that look like a model's predictions: they depend on variables and on some inputs, and what
        consumes them needs *more* inputs (the labels of a loss or an accuracy metric). In the seed's CNN that is
        ``ArgMax``, consumed by the accuracy's ``Equal`` which also needs ``y_input``. When an output (see
        :attr:`outputs`) needs no input they do not (``model/Sigmoid`` beside the loss's ``logistic_loss/Select``),
        that output is the prediction and they are not.
        """
        needs, uses_var = self._dependencies
        roles = self._roles
        sink_masks = [needs.get(op.name, 0) for op in self.outputs]
        sink_masks = [m for m in sink_masks if m]
        found = []
        for op in self._ops:
            if op.name in roles or op.type in _PLUMBING or _RANDOM.search(op.type) or op.name in self._trivial \
                    or not uses_var.get(op.name):
                continue
            mine = needs.get(op.name, 0)
            users = [c for c in self._consumers.get(op.name, ()) if c.name not in roles]
            if not mine or not users:
                continue
            if any(m & mine == m for m in sink_masks):
                continue
            if all(needs.get(c.name, 0) & mine == mine and needs.get(c.name, 0) != mine for c in users):
                found.append(op)
        return found

    # ------------------------------------------------------------------ variables

    @cached_property
    def _saver_keys(self) -> dict[str, tuple[str, str]]:
        """Variable op name -> (checkpoint key, shape_and_slice) from the graph's own SaveV2 nodes."""
        found: dict[str, tuple[str, str]] = {}
        for op in self._ops:
            if op.type != "SaveV2" or len(op.inputs) < 3:
                continue
            try:
                names = self._const_strings(op.inputs[1].op)
                slices = self._const_strings(op.inputs[2].op)
            except Exception:  # an unusual saver: fall back to op names
                continue
            tensors = [i for i in op.inputs[3:] if not i.control]
            if names is None or len(names) != len(tensors):
                continue
            for key, spec, ref in zip(names, slices or [""] * len(names), tensors):
                var = self._variable_behind(ref.op)
                if var is not None:
                    found.setdefault(var, (key, spec))
        return found

    def _const_strings(self, name: str) -> list[str] | None:
        op = self._by_name.get(name)
        for _ in range(8):
            if op is None:
                return None
            if op.type == "Const":
                value = make_ndarray(op.node.attr["value"].tensor, max_bytes=1 << 24)
                return [bytes(v).decode("utf-8", "surrogateescape") for v in value.reshape(-1)]
            if op.type not in _PASS_THROUGH or not op.inputs:
                return None
            op = self._by_name.get(op.inputs[0].op)
        return None

    def _variable_behind(self, name: str) -> str | None:
        op = self._by_name.get(name)
        for _ in range(8):
            if op is None:
                return None
            if op.type in VARIABLE_OPS:
                return op.name
            if op.type not in _PASS_THROUGH or not op.inputs:
                return None
            op = self._by_name.get(op.inputs[0].op)
        return None

    @cached_property
    def variables(self) -> list[Variable]:
        """Every variable operation (``VariableV2``, ``VarHandleOp``, ``Variable``) in graph order, with the name
        its value has in a checkpoint written by this graph's Saver."""
        slice_info: dict[str, dict] = {}
        trainable: set[str] | None = None
        cols = self.collections
        for key in ("variables", "local_variables", "trainable_variables", "model_variables"):
            for entry in cols.get(key, ()):
                op_name = parse_input(entry.get("variable_name", "")).op
                if entry.get("save_slice_info_def"):
                    slice_info.setdefault(op_name, entry["save_slice_info_def"])
        if self._meta is not None:
            trainable = {parse_input(e.get("variable_name", "")).op for e in cols.get("trainable_variables", ())}
        result = []
        for op in self._ops:
            if op.type not in VARIABLE_OPS:
                continue
            dtype = op.node.attr["dtype"].type if "dtype" in op.node.attr else 0
            shape = shape_from_proto(op.node.attr["shape"].shape) if "shape" in op.node.attr else None
            key, partition = op.name, None
            if op.name in self._saver_keys:
                key, spec = self._saver_keys[op.name]
                partition = _parse_slice_spec(spec)
            elif op.name in slice_info:
                info = slice_info[op.name]
                key = info.get("full_name", op.name)
                partition = (tuple(info.get("full_shape", ())), tuple(info.get("var_offset", ())))
            result.append(Variable(op.name, op.type, dtype_name(dtype) if dtype else None, shape, key, partition,
                                   None if trainable is None else op.name in trainable, op.device))
        return result

    # ------------------------------------------------------------------ writing

    def save(self, path: str | os.PathLike, *, text: bool | None = None, meta: bool | None = None,
             sync: bool = True) -> Path:
        """Write the graph as TensorFlow does (``tf.io.write_graph``; ``Saver``'s ``.meta``).

        Args:
            path: Destination file; written atomically.
            text: Text format (``.pbtxt``) instead of binary. Default: text when ``path`` ends in ``.pbtxt`` or
                ``.txt``.
            meta: Write a MetaGraphDef (with the graph's collections, saver and signatures, if it came with them)
                instead of only the GraphDef. Default: when ``path`` ends in ``.meta``, or when the graph came from
                a MetaGraphDef and ``path`` does not end in ``.pb``/``.pbtxt``.
            sync: fsync before renaming into place.

        Returns:
            The path written.

        Raises:
            StateMismatchError: a live :func:`ckpt.graph.to_torch` module made from this graph has trained some of
                its constants (the file would hold the old values); save ``ckpt.graph.freeze(module)`` or
                ``export_meta_graph(module, path)`` instead.
        """
        from ._freeze import _check_not_tuned

        _check_not_tuned(self)
        path = Path(path)
        suffix = path.suffix.lower()
        if text is None:
            text = suffix in (".pbtxt", ".txt")
        if meta is None:
            meta = suffix == ".meta" or (self._meta is not None and suffix not in (".pb", ".pbtxt"))
        if meta:
            message = self._meta if self._meta is not None else _wrap_meta(self._graph_def)
        else:
            message = self._graph_def
        return write_message(message, path, text=text, sync=sync)

    def to_html(self, *, title: str | None = None) -> str:
        """A self-contained interactive HTML page showing the graph (see :func:`ckpt.graph.render_html`)."""
        from ._html import render_html

        return render_html(self, title=title)

    def _repr_html_(self) -> str:
        from ._html import iframe_html

        return iframe_html(self.to_html())


def saver_scopes_of(saver: SaverInfo | None) -> set[str]:
    """The name scopes of a SaverDef's nodes: everything up to the last ``save``/``save_N`` component of its
    tensor and op names (``pos_var_scope_zh/save/Const:0`` -> ``pos_var_scope_zh/save``), so a Saver made inside
    a variable scope claims its own scope and not the model's."""
    scopes: set[str] = set()
    if saver is None:
        return scopes
    for name in (saver.filename_tensor_name, saver.save_tensor_name, saver.restore_op_name):
        parts = parse_input(name).op.split("/") if name else []
        for i in range(len(parts) - 2, -1, -1):  # the op itself is never the scope
            if re.fullmatch(r"save(?:_\d+)?", parts[i]):
                scopes.add("/".join(parts[:i + 1]))
                break
    return scopes


def _wrap_meta(graph_def: graph_pb2.GraphDef) -> meta_graph_pb2.MetaGraphDef:
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.SetInParent()
    meta.graph_def.CopyFrom(graph_def)
    return meta


def _parse_slice_spec(spec: str):
    """``"5 3 0,3:0,3"`` -> ((5, 3), (0, 0)); ``""`` -> None (not partitioned)."""
    parts = spec.split()
    if len(parts) < 2:
        return None
    try:
        full = tuple(int(p) for p in parts[:-1])
        offset = tuple(0 if ext == "-" else int(ext.split(",")[0]) for ext in parts[-1].split(":"))
    except ValueError:
        return None
    return (full, offset) if len(offset) == len(full) else None


def _topological(ops: Sequence[Operation], by_name: dict[str, Operation]) -> list[Operation]:
    """TensorFlow's import order (``GraphConstructor``): Kahn's algorithm over input edges, the lowest file position
    first among the ready nodes; a ``Merge`` fed by a ``NextIteration`` (a while loop's back edge) is ready after its
    control inputs and one data input. Nodes that never become ready (other cycles) are appended in file order."""
    import heapq

    pending = []
    users: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        count = 0
        for inp in op.inputs:
            if inp.op in by_name:
                users.setdefault(inp.op, []).append(i)
                count += 1
        if op.type in ("Merge", "RefMerge") and any(
                not inp.control and inp.op in by_name and by_name[inp.op].type in ("NextIteration", "RefNextIteration")
                for inp in op.inputs):
            count = sum(1 for inp in op.inputs if inp.control) + 1
        pending.append(count)
    ready = [i for i, c in enumerate(pending) if c == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        op = ops[heapq.heappop(ready)]
        order.append(op)
        for u in users.get(op.name, ()):
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(ops):
        done = {op.name for op in order}
        order.extend(op for op in ops if op.name not in done)
    return order


def _message_dict(message) -> dict[str, Any]:
    """Set fields of a message as a dict (enums by name, sub-messages as dicts, repeated fields as lists)."""
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        if fd.message_type is not None:
            value = [_message_dict(v) for v in value] if _is_repeated(fd) else _message_dict(value)
        elif fd.enum_type is not None:
            value = [_enum_name(fd, v) for v in value] if _is_repeated(fd) else _enum_name(fd, value)
        elif _is_repeated(fd):
            value = list(value)
        out[fd.name] = value
    return out


def _enum_name(fd, number: int):
    value = fd.enum_type.values_by_number.get(number)
    return value.name if value is not None else number


def _is_repeated(fd) -> bool:
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == 3


def _is_meta(value) -> bool:
    if isinstance(value, meta_graph_pb2.MetaGraphDef):
        return True
    descriptor = getattr(value, "DESCRIPTOR", None)
    return getattr(descriptor, "name", None) == "MetaGraphDef"


def _coerce(value, cls):
    """Our own message from ours, TensorFlow's or TensorBoard's (same wire format), bytes, or a ``tf.Graph``."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Graph):
        value = value.graph_def if cls is graph_pb2.GraphDef else value.meta_graph_def or _wrap_meta(value.graph_def)
        return value
    if hasattr(value, "as_graph_def") and cls is graph_pb2.GraphDef:
        value = value.as_graph_def()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif hasattr(value, "SerializeToString") and hasattr(value, "DESCRIPTOR"):
        expected = cls.DESCRIPTOR.name
        if value.DESCRIPTOR.name != expected:
            raise TypeError(f"expected a {expected}, got a {value.DESCRIPTOR.full_name}")
        data = value.SerializeToString()
    else:
        raise TypeError(f"expected a {cls.DESCRIPTOR.name} (ckpt's, TensorFlow's or serialized bytes), got "
                        f"{type(value).__name__}")
    message = cls()
    try:
        message.ParseFromString(data)
    except Exception as exc:
        raise CorruptCheckpointError(f"not a valid serialized {cls.DESCRIPTOR.name} ({exc})") from None
    return message
