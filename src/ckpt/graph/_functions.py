"""Function calls in frozen graphs: inlining ``PartitionedCall``/``StatefulPartitionedCall`` bodies into the
graph, and rewriting function bodies that receive a variable, as TensorFlow's ``convert_variables_to_constants_v2``
does for a SavedModel signature.

* :func:`inline_calls` replaces each call node ``C`` by its body's nodes, renamed ``C/<node>``, and an ``IdentityN``
  named ``C`` that returns the body's results, so ``C:1`` still means the call's second output.
* :func:`freeze_resource_input` is called when a variable (now a constant) reaches input ``index`` of a functional
  ``If``/``While``/call: the input's type becomes the value's dtype, and in every function it reaches the argument's
  ``ReadVariableOp`` becomes an ``Identity`` (and pass-through returns change type with it).
"""

from __future__ import annotations

from ..errors import CorruptCheckpointError, UnsupportedError
from ._opdefs import OP_OUTPUTS, _arg_count

__all__ = ["inline_calls", "freeze_resource_input", "prune_library"]

_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
_IF = frozenset({"If", "StatelessIf"})
_WHILE = frozenset({"While", "StatelessWhile"})
_MAX_DEPTH = 64  # nested calls inlined; deeper nesting (or recursion) is refused


def _flat_index(node, arg: str, index: int) -> int:
    """Output ``arg:index`` of a function-body node -> its flat output number."""
    args = OP_OUTPUTS.get(node.op)
    if not args:
        return index
    offset = 0
    for name, spec in args:
        if name == arg:
            return offset + index
        count = _arg_count(node, spec)
        offset += 1 if count is None else count
    return index


def _body_ref(text: str, prefix: str, nodes: dict, args: dict[str, str]) -> str:
    """A function-body input (``x``, ``node:out:2``, ``^node``) as a graph input after inlining under ``prefix``."""
    if text.startswith("^"):
        name = text[1:]
        return f"^{args[name].lstrip('^').split(':')[0]}" if name in args else f"^{prefix}/{name}"
    parts = text.split(":")
    if len(parts) == 1:
        if parts[0] in args:
            return args[parts[0]]
        return f"{prefix}/{parts[0]}"
    if len(parts) == 2 and parts[1].isdigit():
        index = int(parts[1])
    elif len(parts) == 3 and parts[2].isdigit() and len(parts[2]) <= 12:
        node = nodes.get(parts[0])
        index = _flat_index(node, parts[1], int(parts[2])) if node is not None else int(parts[2])
    else:
        raise CorruptCheckpointError(f"function body input {text[:80]!r} is malformed", key=text[:200])
    return f"{prefix}/{parts[0]}" if index == 0 else f"{prefix}/{parts[0]}:{index}"


def inline_calls(graph_def, *, only: set[str] | None = None):
    """A copy of ``graph_def`` with every ``PartitionedCall``/``StatefulPartitionedCall`` (or those in ``only``)
    replaced by its body, nested calls included.

    Raises:
        UnsupportedError: a called function is not in the library, or calls nest deeper than 64.
    """
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    fdefs = {f.signature.name: f for f in out.library.function}
    for _ in range(_MAX_DEPTH):
        calls = [n for n in out.node if n.op in _CALLS and (only is None or n.name in only)]
        if not calls:
            return out
        only = None  # calls that inlining brings in are inlined too
        replaced: dict[str, list] = {}
        for call in calls:
            fname = call.attr["f"].func.name
            fdef = fdefs.get(fname)
            if fdef is None:
                raise UnsupportedError(f"cannot inline {call.name!r}: function {fname!r} is not in the library",
                                       key=call.name)
            replaced[call.name] = _inline_one(call, fdef)
        kept = []
        for node in out.node:
            if node.name in replaced:
                kept.extend(replaced[node.name])
            else:
                kept.append(node)
        del out.node[:]
        out.node.extend(kept)
    raise UnsupportedError(f"cannot inline function calls nested deeper than {_MAX_DEPTH} levels", key="")


def _inline_one(call, fdef) -> list:
    from ..tf.protos import node_def_pb2

    data = [i for i in call.input if not i.startswith("^")]
    control = [i for i in call.input if i.startswith("^")]
    inputs = fdef.signature.input_arg
    if len(data) != len(inputs):
        raise UnsupportedError(f"cannot inline {call.name!r}: it passes {len(data)} inputs to "
                               f"{fdef.signature.name!r}, which takes {len(inputs)}", key=call.name)
    args = {a.name: src for a, src in zip(inputs, data)}
    nodes = {n.name: n for n in fdef.node_def}
    prefix = call.name
    new = []
    for inner in fdef.node_def:
        node = node_def_pb2.NodeDef()
        node.CopyFrom(inner)
        node.name = f"{prefix}/{inner.name}"
        if not node.device:
            node.device = call.device
        del node.input[:]
        refs = [_body_ref(i, prefix, nodes, args) for i in inner.input]
        node.input.extend([r for r in refs if not r.startswith("^")] + [r for r in refs if r.startswith("^")])
        if not inner.input:
            node.input.extend(control)  # what waited for the call waits for its sources
        new.append(node)
    result = node_def_pb2.NodeDef(name=call.name, op="IdentityN", device=call.device)
    for out_arg in fdef.signature.output_arg:
        if out_arg.name not in fdef.ret:
            raise CorruptCheckpointError(f"function {fdef.signature.name!r} does not return {out_arg.name!r}",
                                         key=fdef.signature.name)
        result.input.append(_body_ref(fdef.ret[out_arg.name], prefix, nodes, args))
    result.input.extend(f"^{prefix}/{name}" for name in fdef.control_ret.values())
    result.attr["T"].list.type.extend(call.attr["Tout"].list.type)
    if "_output_shapes" in call.attr:
        result.attr["_output_shapes"].CopyFrom(call.attr["_output_shapes"])
    new.append(result)
    return new


def prune_library(graph_def) -> None:
    """Drop the library functions no node of ``graph_def`` (or of a kept function) refers to, in place."""
    fdefs = {f.signature.name: f for f in graph_def.library.function}
    keep: set[str] = set()
    todo = [n for n in graph_def.node]
    while todo:
        node = todo.pop()
        for value in node.attr.values():
            names = [value.func.name] if value.WhichOneof("value") == "func" else \
                [f.name for f in value.list.func] if value.WhichOneof("value") == "list" else []
            for name in names:
                if name in fdefs and name not in keep:
                    keep.add(name)
                    todo.extend(fdefs[name].node_def)
    functions = [f for f in graph_def.library.function if f.signature.name in keep]
    del graph_def.library.function[:]
    graph_def.library.function.extend(functions)
    gradients = [g for g in graph_def.library.gradient if g.function_name in keep]
    del graph_def.library.gradient[:]
    graph_def.library.gradient.extend(gradients)


def _set_type(attr, index: int, dtype: int, what: str) -> None:
    kind = attr.WhichOneof("value")
    if kind == "list" and index < len(attr.list.type):
        attr.list.type[index] = dtype
    elif kind == "type" and index == 0:
        attr.type = dtype
    else:
        raise UnsupportedError(f"cannot freeze: {what} has no type for input {index}", key=what)


def freeze_resource_input(graph_def, node, index: int, dtype: int) -> None:
    """Input ``index`` of functional control flow or a call ``node`` now carries a ``dtype`` value instead of a
    variable's handle: change its type attributes and the functions it reaches (in ``graph_def.library``)."""
    fdefs = {f.signature.name: f for f in graph_def.library.function}
    _retype_input(fdefs, node, index, dtype, depth=0)


def _retype_input(fdefs, node, index: int, dtype: int, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise UnsupportedError("cannot freeze: function calls nest too deeply", key=node.name)
    if node.op in _IF:
        if index == 0:
            raise UnsupportedError(f"cannot freeze {node.name!r}: a variable is its predicate", key=node.name)
        _set_type(node.attr["Tin"], index - 1, dtype, node.name)
        for branch in ("then_branch", "else_branch"):
            _retype_arg(fdefs, node.attr[branch].func.name, index - 1, dtype, depth + 1)
    elif node.op in _WHILE:
        _set_type(node.attr["T"], index, dtype, node.name)
        if "output_shapes" in node.attr and index < len(node.attr["output_shapes"].list.shape):
            shape = node.attr["output_shapes"].list.shape[index]
            shape.Clear()
            shape.unknown_rank = True  # the handle's shape was a scalar; the value's is the variable's
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
        for fn in ("cond", "body"):
            _retype_arg(fdefs, node.attr[fn].func.name, index, dtype, depth + 1)
    elif node.op in _CALLS:
        _set_type(node.attr["Tin"], index, dtype, node.name)
        _retype_arg(fdefs, node.attr["f"].func.name, index, dtype, depth + 1)
    else:
        raise UnsupportedError(f"cannot freeze: a variable flows into {node.op} node {node.name!r}", key=node.name)


def _retype_arg(fdefs, fname: str, index: int, dtype: int, depth: int) -> None:
    fdef = fdefs.get(fname)
    if fdef is None:
        raise UnsupportedError(f"cannot freeze: function {fname!r} is not in the library", key=fname)
    if not 0 <= index < len(fdef.signature.input_arg):
        raise CorruptCheckpointError(f"function {fname!r} has {len(fdef.signature.input_arg)} inputs; a caller "
                                     f"passes input {index}", key=fname)
    arg = fdef.signature.input_arg[index]
    if arg.type == dtype:
        return  # already rewritten through another caller
    arg.type = dtype
    if index in fdef.resource_arg_unique_id:
        del fdef.resource_arg_unique_id[index]
    retyped = {arg.name}  # names (args, nodes) whose output 0 now carries the value
    users: dict[str, list[tuple[object, int]]] = {}
    for n in fdef.node_def:
        for i, ref in enumerate(n.input):
            if not ref.startswith("^"):
                users.setdefault(ref.split(":")[0], []).append((n, i))
    renamed: dict[str, str] = {}
    todo = [arg.name]
    while todo:
        source = todo.pop()
        for user, i in users.get(source, ()):
            if user.op == "ReadVariableOp":
                user.op = "Identity"
                user.attr["T"].type = dtype
                del user.attr["dtype"]
                renamed[f"{user.name}:value:"] = f"{user.name}:output:"  # Identity's output argument
            elif user.op in ("Identity", "IdentityN"):
                _set_type(user.attr["T"], i, dtype, user.name)
                if user.op == "Identity" and user.name not in retyped:
                    retyped.add(user.name)
                    todo.append(user.name)
                continue
            elif user.op in _IF or user.op in _WHILE or user.op in _CALLS:
                _retype_input(fdefs, user, i, dtype, depth + 1)
                continue
            else:
                raise UnsupportedError(f"cannot freeze: in function {fname!r} a variable flows into {user.op} node "
                                       f"{user.name!r} (ckpt rewrites reads of variables only)", key=user.name)
    if renamed:
        for n in fdef.node_def:
            for i, ref in enumerate(n.input):
                head = ref[:ref.rfind(":") + 1]
                if head in renamed:
                    n.input[i] = renamed[head] + ref[len(head):]
        for key, ref in list(fdef.ret.items()):
            head = ref[:ref.rfind(":") + 1]
            if head in renamed:
                fdef.ret[key] = renamed[head] + ref[len(head):]
    for out_arg in fdef.signature.output_arg:
        ref = fdef.ret.get(out_arg.name, "")
        if ref.split(":")[0] in retyped:
            out_arg.type = dtype
