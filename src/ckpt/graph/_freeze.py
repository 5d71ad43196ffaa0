"""Freezing: a graph plus a checkpoint become one self-contained GraphDef (docs/format.md section 6).

This is TensorFlow's ``convert_variables_to_constants`` (``_SessionConverterData`` +
``_replace_variables_by_constants``) without a session: the values come from the checkpoint through
:class:`ckpt.Reader` instead of ``session.run``. Step by step, as TensorFlow 2.21 does it:

1. Prune (``extract_sub_graph``): breadth-first from the outputs over data inputs, control inputs and ``_class``
   colocation targets (``loc:@X``); survivors keep their original order; ``library`` and ``versions`` are copied
   (which is why a frozen graph always ends with ``library {}``).
2. Every kept ``VariableV2`` / ``VarHandleOp`` (and legacy ``Variable``) is replaced by a node with the same name,
   ``op: "Const"`` and exactly two attributes: ``dtype`` and ``value`` (laid out like ``make_tensor_proto``:
   scalars and one-element tensors in typed fields, larger ones as ``tensor_content``). Device, colocation and
   shape attributes go, as in TensorFlow.
3. Following data edges from each variable: ``Identity``/``Enter``/``Exit``/``Switch``/``NextIteration``/
   ``_SwitchN`` get their ``T`` set to the value dtype (no longer ``_ref``) and lose ``_output_shapes``, and the
   change continues to their consumers; ``ReadVariableOp`` becomes ``Identity``; ``ResourceGather`` becomes
   ``GatherV2`` plus a ``<name>/axis`` constant; ``ResourceGatherNd`` becomes ``GatherNd``. Everything else is
   copied unchanged.

Everything is checked before anything is built: missing variables, dtype and shape mismatches are collected and
reported together.
"""

from __future__ import annotations

import os
from collections import deque

import numpy as np

from ..errors import (CheckpointError, CheckpointNotFoundError, OperationNotFoundError, StateMismatchError,
                      UnsupportedError)
from ..tf.protos import attr_value_pb2, graph_pb2
from ..tf.tensor_proto import dtype_name, make_ndarray, make_tensor_proto, shape_from_proto
from ._attrs import _shape_text
from ._model import VARIABLE_OPS, Graph, parse_input

__all__ = ["freeze", "extract_sub_graph"]

_INTERMEDIATE = frozenset({"Enter", "Exit", "Identity", "NextIteration", "Switch", "_SwitchN"})
_FUNCTION_CALLERS = frozenset({"If", "StatelessIf", "While", "StatelessWhile", "Case", "PartitionedCall",
                               "StatefulPartitionedCall"})
_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def _node_name(name: str) -> str:
    return name[1:] if name.startswith("^") else name.split(":")[0]


def extract_sub_graph(graph_def: graph_pb2.GraphDef, dest_nodes) -> graph_pb2.GraphDef:
    """The part of ``graph_def`` the ``dest_nodes`` depend on, in original order (TensorFlow's
    ``graph_util.extract_sub_graph``).

    Raises:
        OperationNotFoundError: a destination node is not in the graph.
    """
    name_to_inputs: dict[str, list[str]] = {}
    name_to_node = {}
    order = {}
    for seq, node in enumerate(graph_def.node):
        n = _node_name(node.name)
        name_to_node[n] = node
        inputs = [_node_name(x) for x in node.input]
        if "_class" in node.attr:
            for colocated in node.attr["_class"].list.s:
                text = colocated.decode("utf-8", "surrogateescape")
                inputs.append(text[5:] if text.startswith("loc:@") else text)
        name_to_inputs[n] = inputs
        order[n] = seq
    missing = [d for d in dest_nodes if d not in name_to_node]
    if missing:
        raise OperationNotFoundError(f"output node(s) not in the graph: {', '.join(map(repr, missing))}",
                                     key=missing[0])
    keep: set[str] = set()
    queue = deque(dest_nodes)
    while queue:
        name = queue.popleft()
        if name in keep:
            continue
        keep.add(name)
        queue.extend(name_to_inputs.get(name, ()))
    out = graph_pb2.GraphDef()
    for name in sorted((n for n in keep if n in order), key=order.__getitem__):
        out.node.add().CopyFrom(name_to_node[name])
    out.library.CopyFrom(graph_def.library)
    out.versions.CopyFrom(graph_def.versions)
    return out


def freeze(graph, checkpoint=None, outputs=None, *, clear_devices: bool = False, variable_names=None) -> Graph:
    """Replace a graph's variables by constants holding a checkpoint's values, keeping only what ``outputs`` need.

    The result is what ``tf.compat.v1.graph_util.convert_variables_to_constants`` returns for a session holding
    the same values; save it with ``.save("model.pb")`` and load it anywhere with ``tf.import_graph_def``.

    Constants get new values too: a ``Const`` node whose name is a tensor of the checkpoint takes that value (this
    is how the constants a fine-tuned :func:`ckpt.graph.to_torch` module made trainable come back: ``ckpt.save``
    writes them under their node names). A module can also be frozen directly: ``freeze(module)`` (or
    ``freeze(graph, module, outputs)``) writes the module's current parameters, buffers and constants.

    Args:
        graph: A :class:`Graph`, a path to a ``.meta``/``.pb``/``.pbtxt`` file, a GraphDef/MetaGraphDef, or a
            :class:`ckpt.graph.torch.interpreter.GraphModule` (its graph and current values; ``checkpoint`` is then not
            given).
        checkpoint: The values: a checkpoint prefix, one of its files, a directory, an open
            :class:`ckpt.Reader`, or a ``GraphModule`` made from this graph. Default for a SavedModel: its
            ``variables/``.
        outputs: Output operation names (``"ArgMax"``, or ``"ArgMax,Softmax"``); ``"name:0"`` is accepted.
            Default for a module: its outputs; for a SavedModel: the outputs of its ``serving_default`` signature
            (function calls are inlined and If/While bodies that read variables rewritten, as TensorFlow's
            ``convert_variables_to_constants_v2`` does).
        clear_devices: Drop every node's device placement first (TensorFlow's ``freeze_graph --clear_devices``).
        variable_names: Only freeze these variables (TensorFlow's allowlist); others stay variables.

    Returns:
        A new :class:`Graph` (GraphDef only).

    Raises:
        OperationNotFoundError: an output is not in the graph.
        CheckpointNotFoundError: a variable the outputs need has no value in the checkpoint or module (all listed).
        StateMismatchError: a value's dtype or shape does not match its variable or constant (all listed), or
            nothing in the checkpoint belongs to the graph (a graph without variables and none of its constants
            in the checkpoint: the values would be silently ignored).
        UnsupportedError: inside a function body (an If/While branch) a variable is used other than read, or a
            ResourceGather has batch_dims != 0.

    Example:
        >>> frozen = ckpt.graph.freeze("model/CNN.ckpt.meta", "model/", ["ArgMax"])    # doctest: +SKIP
        >>> frozen.save("model/CNN.pb")
    """
    return _freeze(graph, checkpoint, outputs, clear_devices=clear_devices, variable_names=variable_names)[0]


def _is_module(x) -> bool:
    return hasattr(x, "_export_values") and hasattr(x, "_program")


def _freeze(graph, checkpoint=None, outputs=None, *, clear_devices: bool = False, variable_names=None):
    """:func:`freeze`, also returning ``{"variables": [names], "constants": [names whose value changed]}``."""
    from ..reader import Reader
    from . import load

    module = None
    if _is_module(graph):
        if checkpoint is not None and checkpoint is not graph:
            raise TypeError("freeze(module) takes its values from the module; do not pass a checkpoint as well")
        module, graph = graph, graph.graph
        if outputs is None:
            outputs = [o.split(":")[0] for o in module.outputs]
    elif _is_module(checkpoint):
        module = checkpoint
        if module.graph.graph_def is not getattr(graph, "graph_def", None) and not _same_graph(module, graph):
            raise ValueError("freeze(graph, module, ...): the module was not made from this graph; pass the module "
                             "alone (freeze(module, outputs=...))")
        graph = module.graph
    if not isinstance(graph, Graph) and module is None:
        graph = load(graph) if isinstance(graph, (str, os.PathLike)) else Graph(graph)
    if hasattr(graph, "signature_specs") and module is None:  # a SavedModel: its variables, serving_default
        if checkpoint is None:
            checkpoint = graph.variables_prefix
        if outputs is None and "serving_default" in graph.signature_specs:
            outputs = [t.name for t in graph.signature_specs["serving_default"].outputs.values()]
    if checkpoint is None and module is None:
        raise TypeError("freeze needs a checkpoint (a prefix, directory or Reader) or a module from to_torch")
    if not isinstance(graph, Graph):
        graph = load(graph) if isinstance(graph, (str, os.PathLike)) else Graph(graph)
    if outputs is None:
        raise TypeError("freeze needs outputs: the operation names the frozen graph must compute")
    if isinstance(outputs, str):
        outputs = outputs.split(",")
    wanted = list(dict.fromkeys(parse_input(o.strip()).op for o in outputs if o.strip()))
    if not wanted:
        raise ValueError("freeze needs at least one output operation name")
    missing = [w for w in wanted if w not in graph]
    if missing:
        raise graph._not_found(missing[0]) if len(missing) == 1 else OperationNotFoundError(
            f"{graph.path or 'the graph'} has no operations named {', '.join(map(repr, missing))}",
            path=graph.path, key=missing[0])

    source = graph_pb2.GraphDef()
    source.CopyFrom(graph.graph_def)
    if clear_devices:
        for node in source.node:
            node.device = ""
    pruned = extract_sub_graph(source, wanted)
    if any(n.op in _CALLS for n in pruned.node):  # a SavedModel signature: inline the call bodies, as TF's v2 does
        from ._functions import inline_calls

        pruned = extract_sub_graph(inline_calls(pruned), wanted)

    allow = set(variable_names) if variable_names is not None else None
    variables = {v.name: v for v in graph.variables}
    to_convert = [n for n in pruned.node if n.op in VARIABLE_OPS and (allow is None or n.name in allow)]
    constants = [n for n in pruned.node if n.op == "Const"]
    if module is not None:
        values, const_values = module._export_values(to_convert, constants)
    else:
        values, const_values = _read_values(to_convert, variables, checkpoint, Reader, constants)
    if module is None:
        _check_not_tuned(graph, const_values, {n.name for n in constants})
    changed = _replace_constants(pruned, const_values)
    converted = _replace_variables(pruned, values)
    if converted.library.function:
        from ._functions import prune_library

        prune_library(converted)
    frozen = Graph(converted, path=None, validate=False)
    return frozen, {"variables": list(values), "constants": changed}


def _check_not_tuned(graph: Graph, written=(), only=None) -> None:
    """Refuse to write ``graph`` with constants a live :func:`to_torch` module fine-tuned (and ``written`` does not
    replace): the file would silently hold the old values."""
    modules = list(graph.__dict__.get("_tuned_modules", ()))
    stale = sorted({name for m in modules for name in m._tuned_constants()
                    if name not in written and (only is None or name in only)})
    if stale:
        shown = ", ".join(stale[:10]) + (f", ... ({len(stale)} in all)" if len(stale) > 10 else "")
        raise StateMismatchError(
            f"{graph.path or 'this graph'}: a to_torch module made from it has trained constant(s) {shown}, which the "
            "graph does not hold; writing it would keep the old values. Pass the module itself (freeze(module), "
            "export_meta_graph(module), ckpt.save(..., graph=module)), a checkpoint saved from it, or a freshly "
            "loaded graph to write the original", mismatched=stale)


def _same_graph(module, graph) -> bool:
    if isinstance(graph, Graph):
        return graph is module.graph or graph.graph_def == module.graph.graph_def
    return False


def _replace_constants(pruned: graph_pb2.GraphDef, values: dict[str, np.ndarray]) -> list[str]:
    """Give the ``Const`` nodes named in ``values`` those values; untouched when equal bit for bit (so a constant
    nobody changed keeps its exact encoding). Returns the names that changed."""
    changed = []
    for node in pruned.node:
        if node.name not in values:
            continue
        value = values[node.name]
        old = node.attr["value"].tensor
        try:
            current = make_ndarray(old, where=f"constant {node.name!r}")
        except CheckpointError:
            current = None
        if current is not None and current.dtype == value.dtype and current.shape == value.shape and (
                current.tobytes() == value.tobytes() if value.dtype != object else current.tolist() == value.tolist()):
            continue
        node.attr["value"].tensor.CopyFrom(make_tensor_proto(value, old.dtype, value.shape))
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]  # the shape is the value's (and was checked to be the same)
        changed.append(node.name)
    return changed


def _const_header(node) -> tuple[int, tuple[int, ...] | None]:
    """A Const node's dtype and shape, from its attributes (without decoding the value)."""
    dtype = node.attr["dtype"].type if "dtype" in node.attr else 0
    shape = None
    if "value" in node.attr and node.attr["value"].WhichOneof("value") == "tensor":
        tensor = node.attr["value"].tensor
        dtype = dtype or tensor.dtype
        shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    return dtype, shape


def _read_values(nodes, variables, checkpoint, reader_cls, constants=()):
    """``({variable node: value}, {const node: value})`` from a checkpoint, everything checked first."""
    own = not hasattr(checkpoint, "keys")
    reader = reader_cls(checkpoint) if own else checkpoint
    try:
        values: dict[str, np.ndarray] = {}
        const_values: dict[str, np.ndarray] = {}
        absent, mismatched = [], []
        for node in constants:
            if node.name not in reader:
                continue
            dtype, shape = _const_header(node)
            info = reader.info(node.name)
            found_shape = tuple(info.shape)
            if dtype and dtype_name(dtype) != info.dtype or shape is not None and shape != found_shape:
                mismatched.append(f"constant {node.name}: the graph holds {dtype_name(dtype)} "
                                  f"{_shape_text(shape)}, the checkpoint {info.dtype} {_shape_text(found_shape)}")
                continue
            const_values[node.name] = np.asarray(reader[node.name])
        for node in nodes:
            var = variables.get(node.name)
            key = var.checkpoint_name if var is not None else node.name
            if key not in reader:
                absent.append(key if key == node.name else f"{key} (for {node.name})")
                continue
            value = reader[key]
            if var is not None and var.partition is not None and var.shape is not None and None not in var.shape:
                full_shape, offset = var.partition
                index = tuple(slice(o, o + s) for o, s in zip(offset, var.shape))
                value = value[index]
            expected_dtype = node.attr["dtype"].type if "dtype" in node.attr else 0
            found_dtype = reader.entry(key).dtype.enum
            if expected_dtype and expected_dtype != found_dtype:
                mismatched.append(f"{node.name}: the graph says {dtype_name(expected_dtype)}, the checkpoint holds "
                                  f"{dtype_name(found_dtype)}")
                continue
            shape = shape_from_proto(node.attr["shape"].shape) if "shape" in node.attr else None
            if shape is not None and (len(shape) != value.ndim or any(
                    d is not None and d != s for d, s in zip(shape, value.shape))):
                mismatched.append(f"{node.name}: the graph says shape {_shape_text(shape)}, the checkpoint holds "
                                  f"{_shape_text(value.shape)}")
                continue
            values[node.name] = value
        if absent:
            raise CheckpointNotFoundError(
                f"{reader.prefix}: no value for {len(absent)} variable(s) the outputs need: {', '.join(absent)} "
                f"(the checkpoint has: {', '.join(reader.keys()[:20])}{' ...' if len(reader) > 20 else ''})",
                path=reader.prefix, key=absent[0], available=reader.keys())
        if mismatched:
            raise StateMismatchError(f"{reader.prefix}: checkpoint values do not fit the graph:\n  "
                                     + "\n  ".join(mismatched), path=reader.prefix, mismatched=mismatched)
        if not nodes and not const_values and len(reader):
            # A frozen graph with a checkpoint none of whose tensors it has: writing the graph unchanged would
            # silently drop the values the user meant to freeze.
            raise StateMismatchError(
                f"{reader.prefix}: none of the checkpoint's {len(reader)} tensor(s) belongs to the graph (it has no "
                f"variables the outputs need and no constant named like a tensor of the checkpoint: "
                f"{', '.join(reader.keys()[:10])}{' ...' if len(reader) > 10 else ''}); freezing would ignore them",
                path=reader.prefix)
        return values, const_values
    finally:
        if own:
            reader.close()


def _replace_variables(pruned: graph_pb2.GraphDef, values: dict[str, np.ndarray]) -> graph_pb2.GraphDef:
    """TensorFlow's ``_replace_variables_by_constants`` on a pruned GraphDef."""
    converted = graph_pb2.GraphDef()
    converted.CopyFrom(pruned)
    nodes = {n.name: n for n in converted.node}
    original = {n.name: n for n in pruned.node}
    # Data edges only ("edges from control inputs are ignored"): source name -> [(destination, input index)].
    edges: dict[str, list[tuple[str, int]]] = {}
    for node in pruned.node:
        for index, raw in enumerate(node.input):
            if raw.startswith("^"):
                continue
            edges.setdefault(parse_input(raw).op, []).append((node.name, index))

    def visit(name: str, index: int, dtype: int) -> None:
        node, old = nodes[name], original[name]
        if old.op in _INTERMEDIATE:
            _update_dtype(node, "T", index, dtype)
            if "_output_shapes" in node.attr:
                del node.attr["_output_shapes"]
            for dest, i in edges.get(name, ()):
                visit(dest, i, dtype)
        elif old.op == "ReadVariableOp":
            node.Clear()
            node.name = old.name
            node.op = "Identity"
            node.input.append(old.input[0])
            node.attr["T"].CopyFrom(old.attr["dtype"])
            if "_class" in old.attr:
                node.attr["_class"].CopyFrom(old.attr["_class"])
        elif old.op == "ResourceGather":
            batch_dims = old.attr["batch_dims"].i if "batch_dims" in old.attr else 0
            if batch_dims != 0:
                raise UnsupportedError(f"cannot freeze {old.name!r}: ResourceGather with batch_dims={batch_dims} "
                                       "(TensorFlow requires 0 as well)", key=old.name)
            axis_name = old.name + "/axis"
            axis_dtype = old.attr["Tindices"]
            if axis_name not in nodes:
                axis = converted.node.add()
                nodes[axis_name] = axis
                axis.name = axis_name
                axis.op = "Const"
                axis.attr["dtype"].CopyFrom(axis_dtype)
                axis.attr["value"].tensor.CopyFrom(make_tensor_proto(np.array(batch_dims), axis_dtype.type, ()))
            node.Clear()
            node.name = old.name
            node.op = "GatherV2"
            node.input.extend([old.input[0], old.input[1], axis_name])
            node.attr["Tparams"].CopyFrom(old.attr["dtype"])
            node.attr["Tindices"].CopyFrom(old.attr["Tindices"])
            node.attr["Taxis"].CopyFrom(axis_dtype)
            if "_class" in old.attr:
                node.attr["_class"].CopyFrom(old.attr["_class"])
        elif old.op == "ResourceGatherNd":
            node.Clear()
            node.name = old.name
            node.op = "GatherNd"
            node.input.extend([old.input[0], old.input[1]])
            node.attr["Tparams"].CopyFrom(old.attr["dtype"])
            node.attr["Tindices"].CopyFrom(old.attr["Tindices"])
            if "_class" in old.attr:
                node.attr["_class"].CopyFrom(old.attr["_class"])
        elif old.op in _FUNCTION_CALLERS:
            from ._functions import freeze_resource_input

            freeze_resource_input(converted, node, index, dtype)  # If/While/calls: rewrite the bodies it reaches
        # Every other op (Merge included, as in TensorFlow) keeps its definition.

    for name, value in values.items():
        old = original[name]
        dtype = old.attr["dtype"].type
        node = nodes[name]
        node.Clear()
        node.name = name
        node.op = "Const"
        node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=dtype))
        node.attr["value"].tensor.CopyFrom(make_tensor_proto(value, dtype, value.shape))
        for dest, index in edges.get(name, ()):
            visit(dest, index, dtype)
    return converted


def _update_dtype(node, attr_name: str, index: int, dtype: int) -> None:
    attr = node.attr[attr_name]
    kind = attr.WhichOneof("value")
    if kind == "list" and len(attr.list.type) > index:
        attr.list.type[index] = dtype
        return
    if kind == "type" and index == 0:
        attr.type = dtype
        return
    count = len(attr.list.type) if kind == "list" else int(kind == "type")
    raise UnsupportedError(f"cannot freeze: input {index} of {node.name!r} carries a variable but its "
                           f"{attr_name!r} attribute has {count} type(s)", key=node.name)

