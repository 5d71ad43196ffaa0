"""A GraphDef for a PyTorch module, so PyTorch users get a structure file TensorBoard and Netron can show.

Importing this module imports torch; :func:`ckpt.graph.from_torch` imports it only when called.

The module is traced with ``torch.fx.symbolic_trace`` (falling back to ``torch.export.export`` for modules fx cannot
trace, such as data-dependent control flow) and every traced node becomes a NodeDef:

* nodes keep their fx names (``x``, ``fc1``, ``relu``, ``add_1``), made valid TensorFlow node names (``_0`` becomes
  ``0``: see :func:`ckpt.graph.node_name`), and take the called module's class name
  (``Linear``, ``Conv2d``) or function name (``relu``, ``add``, ``flatten``) as their op type; method calls are
  typed by the method (``view``); inputs are wired to the producing nodes;
* parameters and buffers are ``VariableV2`` nodes named by their ``state_dict`` name with ``/`` separators
  (``fc1/weight``): the names ``ckpt.save(module, ...)`` gives their values, so graph and checkpoint line up;
* module hyper-parameters (``in_features``, ``kernel_size``, ``stride``...) and constant call arguments become
  attributes; ``_output_shapes`` and ``T`` come from running the example inputs through the graph.

The ops are PyTorch's, not TensorFlow's, so TensorFlow cannot execute the result; it is a picture of the model.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from ...errors import UnsupportedError
from ...tf import dtypes as _dtypes
from ...tf.protos import attr_value_pb2, graph_pb2
from ...tf.tensor_proto import shape_to_proto
from .._build import node_name
from .._model import Graph

__all__ = ["from_torch"]

_BY_NAME = {d.name: d.enum for d in _dtypes.DTYPES}


def _dtype_enum(dtype) -> int:
    name = str(dtype).replace("torch.", "")
    name = {"half": "float16", "float": "float32", "double": "float64", "long": "int64", "int": "int32",
            "short": "int16", "cfloat": "complex64", "cdouble": "complex128"}.get(name, name)
    return _BY_NAME.get(name, 0)


def _set_attr(attr: attr_value_pb2.AttrValue, value: Any) -> bool:
    """Store a Python constant in an AttrValue; False when it has no sensible attribute form."""
    if isinstance(value, bool):
        attr.b = value
    elif isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            return False
        attr.i = value
    elif isinstance(value, float):
        attr.f = value
    elif isinstance(value, str):
        attr.s = value.encode("utf-8")
    elif isinstance(value, torch.dtype):
        enum = _dtype_enum(value)
        if not enum:
            return False
        attr.type = enum
    elif isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, bool) for v in value) and value:
        attr.list.b.extend(value)
    elif isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                              for v in value):
        attr.list.SetInParent()
        attr.list.i.extend(int(v) for v in value)
    elif isinstance(value, (tuple, list)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in value):
        attr.list.f.extend(float(v) for v in value)
    elif isinstance(value, (tuple, list)) and value and all(isinstance(v, str) for v in value):
        attr.list.s.extend(v.encode("utf-8") for v in value)
    elif value is None:
        return False
    else:
        return False
    return True


def _flatten_args(value, out: list) -> None:
    if isinstance(value, torch.fx.Node):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _flatten_args(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _flatten_args(v, out)


def _has_node(value) -> bool:
    found: list = []
    _flatten_args(value, found)
    return bool(found)


def _metas(value) -> list[tuple[tuple[int, ...], Any]]:
    """(shape, dtype) of each tensor in a node's meta value (TensorMetadata, FakeTensor, or nests of them)."""
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [(tuple(int(d) for d in value.shape), value.dtype)]
    if hasattr(value, "shape") and isinstance(getattr(value, "dtype", None), torch.dtype):  # TensorMetadata too
        try:
            return [(tuple(int(d) for d in value.shape), value.dtype)]
        except (TypeError, ValueError):  # symbolic sizes
            return [(tuple(-1 for _ in value.shape), value.dtype)]
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.extend(_metas(v))
        return out
    if isinstance(value, dict):
        out = []
        for v in value.values():
            out.extend(_metas(v))
        return out
    return []


def _input_metas(refs) -> list:
    out = []
    for r in refs:
        out.extend(_metas(r.meta.get("tensor_meta")) or _metas(r.meta.get("val")))
    return out


class _Builder:
    def __init__(self) -> None:
        self.graph = graph_pb2.GraphDef()
        self.names: set[str] = set()

    def unique(self, name: str) -> str:
        base, n = node_name(name), 0  # fx names such as "_0" are not TensorFlow node names
        name = base
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def node(self, name: str, op: str, inputs: list[str], metas, attrs: dict[str, Any] | None = None):
        node = self.graph.node.add()
        node.name = name
        node.op = op
        node.input.extend(inputs)
        for key, value in (attrs or {}).items():
            attr = attr_value_pb2.AttrValue()
            if _set_attr(attr, value):
                node.attr[key].CopyFrom(attr)
        if metas:
            enum = _dtype_enum(metas[0][1])
            if enum and "T" not in node.attr and "dtype" not in node.attr:
                node.attr["T"].type = enum
            shapes = node.attr["_output_shapes"].list
            for shape, _ in metas:
                shape_to_proto([None if d < 0 else d for d in shape], shapes.shape.add())
        return node

    def variable(self, name: str, tensor: torch.Tensor) -> None:
        metas = [(tuple(tensor.shape), tensor.dtype)]
        node = self.node(name, "VariableV2", [], metas)
        del node.attr["T"]
        enum = _dtype_enum(tensor.dtype)
        if enum:
            node.attr["dtype"].type = enum
        shape_to_proto(tuple(tensor.shape), node.attr["shape"].shape)


def _module_attrs(module: torch.nn.Module) -> dict[str, Any]:
    attrs = {}
    for key, value in sorted(vars(module).items()):
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, (bool, int, float, str, torch.dtype)) or (
                isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value)):
            attrs[key] = value
    return attrs


def _call_attrs(args, kwargs) -> dict[str, Any]:
    attrs = {}
    for i, value in enumerate(args):
        if not _has_node(value):
            attrs[f"arg{i}"] = value
    for key, value in kwargs.items():
        if not _has_node(value):
            attrs[key] = value
    return attrs


def _function_name(target) -> str:
    packet = getattr(target, "overloadpacket", None)  # torch.export: aten.linear.default -> "linear"
    if packet is not None:
        return getattr(packet, "__name__", str(packet)).split(".")[-1]
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", None) or str(target)
    return name


def _state_names(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {}
    for name, value in module.state_dict(keep_vars=True).items():
        if isinstance(value, torch.Tensor):
            names[name] = value
    return names


def _from_fx(gm: torch.fx.GraphModule, module: torch.nn.Module) -> graph_pb2.GraphDef:
    b = _Builder()
    state = _state_names(module)
    var_names: dict[str, str] = {}

    def variable(target: str, tensor: torch.Tensor | None) -> str:
        if target not in var_names:
            name = b.unique(target.replace(".", "/"))
            var_names[target] = name
            if tensor is None:
                tensor = torch.empty(0)
            b.variable(name, tensor.detach())
        return var_names[target]

    for target, tensor in state.items():
        variable(target, tensor)
    produced: dict[str, str] = {}
    for fx_node in gm.graph.nodes:
        metas = _metas(fx_node.meta.get("tensor_meta")) or _metas(fx_node.meta.get("val"))
        if fx_node.op == "get_attr":
            try:
                value = gm.get_parameter(fx_node.target)
            except AttributeError:
                try:
                    value = gm.get_buffer(fx_node.target)
                except AttributeError:
                    value = getattr(gm, fx_node.target, None)
            produced[fx_node.name] = variable(fx_node.target, value if isinstance(value, torch.Tensor) else None)
            continue
        name = b.unique(fx_node.name)
        produced[fx_node.name] = name
        refs: list = []
        _flatten_args((fx_node.args, fx_node.kwargs), refs)
        inputs = [produced[r.name] for r in refs if r.name in produced]
        if fx_node.op == "placeholder":
            attrs = {}
            if metas:
                attrs["dtype"] = metas[0][1]
            node = b.node(name, "Placeholder", [], metas, attrs)
            if metas:
                shape_to_proto(metas[0][0], node.attr["shape"].shape)
        elif fx_node.op == "call_module":
            sub = gm.get_submodule(fx_node.target)
            params = [f"{fx_node.target}.{k}" for k, _ in sub.named_parameters()]
            params += [f"{fx_node.target}.{k}" for k, _ in sub.named_buffers()]
            inputs += [var_names[p] for p in params if p in var_names]
            b.node(name, type(sub).__name__, inputs, metas, _module_attrs(sub))
        elif fx_node.op == "call_function":
            b.node(name, _function_name(fx_node.target), inputs, metas, _call_attrs(fx_node.args, fx_node.kwargs))
        elif fx_node.op == "call_method":
            b.node(name, str(fx_node.target), inputs, metas, _call_attrs(fx_node.args[1:], fx_node.kwargs))
        elif fx_node.op == "output":
            b.node(name, "Identity" if len(inputs) == 1 else "IdentityN", inputs, metas or _input_metas(refs))
        else:  # pragma: no cover - fx has no other node kinds today
            b.node(name, str(fx_node.op), inputs, metas)
    return b.graph


def _from_export(exported, module: torch.nn.Module) -> graph_pb2.GraphDef:
    b = _Builder()
    state = _state_names(module)
    signature = exported.graph_signature
    placeholder_target: dict[str, str] = {}
    for spec in signature.input_specs:
        target = getattr(spec, "target", None)
        if target is not None and hasattr(spec.arg, "name"):
            placeholder_target[spec.arg.name] = target
    var_names: dict[str, str] = {}

    def variable(target: str, tensor) -> str:
        if target not in var_names:
            name = b.unique(target.replace(".", "/"))
            var_names[target] = name
            b.variable(name, tensor.detach() if isinstance(tensor, torch.Tensor) else torch.empty(0))
        return var_names[target]

    for target, tensor in state.items():
        variable(target, tensor)
    constants = getattr(exported, "constants", {}) or {}
    produced: dict[str, str] = {}
    for fx_node in exported.graph.nodes:
        metas = _metas(fx_node.meta.get("val")) or _metas(fx_node.meta.get("tensor_meta"))
        if fx_node.op == "placeholder" and fx_node.name in placeholder_target:
            target = placeholder_target[fx_node.name]
            produced[fx_node.name] = variable(target, state.get(target, constants.get(target)))
            continue
        name = b.unique(fx_node.name)
        produced[fx_node.name] = name
        refs: list = []
        _flatten_args((fx_node.args, fx_node.kwargs), refs)
        inputs = [produced[r.name] for r in refs if r.name in produced]
        if fx_node.op == "placeholder":
            attrs = {"dtype": metas[0][1]} if metas else {}
            node = b.node(name, "Placeholder", [], metas, attrs)
            if metas:
                shape_to_proto([None if d < 0 else d for d in metas[0][0]], node.attr["shape"].shape)
        elif fx_node.op == "call_function":
            b.node(name, _function_name(fx_node.target), inputs, metas, _call_attrs(fx_node.args, fx_node.kwargs))
        elif fx_node.op == "output":
            b.node(name, "Identity" if len(inputs) == 1 else "IdentityN", inputs, metas or _input_metas(refs))
        elif fx_node.op == "get_attr":
            produced[fx_node.name] = name
            b.node(name, "Const", [], metas)
        else:
            b.node(name, str(fx_node.target), inputs, metas)
    return b.graph


def from_torch(module: torch.nn.Module, example_inputs, *, method: str = "auto") -> Graph:
    """Describe ``module`` as a GraphDef (see the module docstring).

    Args:
        module: The model.
        example_inputs: One tensor or a tuple of positional inputs; used for shapes only (the module runs once).
        method: ``"fx"`` (``torch.fx.symbolic_trace``), ``"export"`` (``torch.export.export``) or ``"auto"``: fx,
            then export when fx cannot trace the module.

    Returns:
        A :class:`~ckpt.graph.Graph` (``save`` it as ``.pb``/``.pbtxt``, ``write_events`` it for TensorBoard, or
        pass it to ``ckpt.save(..., graph=...)``).

    Raises:
        UnsupportedError: neither tracer could capture the module (both errors are in the message).

    Example:
        >>> g = ckpt.graph.from_torch(net, torch.zeros(1, 1, 28, 28))      # doctest: +SKIP
        >>> ckpt.save(net, "model/cnn.ckpt", step=1000, graph=g)            # model/cnn.ckpt-1000.meta too
    """
    if method not in ("auto", "fx", "export"):
        raise ValueError(f"method must be 'auto', 'fx' or 'export', not {method!r}")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    errors = []
    was_training = module.training
    try:
        if method in ("auto", "fx"):
            try:
                from torch.fx.passes.shape_prop import ShapeProp

                gm = torch.fx.symbolic_trace(module)
                with torch.no_grad():
                    ShapeProp(gm).propagate(*example_inputs)
                return Graph(_from_fx(gm, module))
            except Exception as exc:  # fx raises many kinds (TraceError, TypeError on data-dependent flow...)
                errors.append(f"torch.fx: {type(exc).__name__}: {exc}")
        if method in ("auto", "export"):
            try:
                exported = torch.export.export(module, example_inputs)
                return Graph(_from_export(exported, module))
            except Exception as exc:
                errors.append(f"torch.export: {type(exc).__name__}: {exc}")
    finally:
        module.train(was_training)
    raise UnsupportedError(f"could not trace {type(module).__name__}: " + "; ".join(errors))
