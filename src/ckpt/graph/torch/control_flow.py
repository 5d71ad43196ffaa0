"""TensorFlow 1 while loops and TensorArrays for ``ckpt.graph.to_torch``: each loop frame runs as a Python loop.

A TF1 ``tf.while_loop`` (``dynamic_rnn``, ``bidirectional_dynamic_rnn``, ``control_flow_v2`` disabled) is a frame:
``Enter`` nodes carry values into the frame named by their ``frame_name``, each loop variable's ``Merge`` joins its
initial value with its ``NextIteration``, ``LoopCond`` holds the predicate, ``Switch`` sends each variable to the body
(output 1) or to its ``Exit`` (output 0). Frames are found the way TensorFlow's executor finds them: from the sources,
an ``Enter``'s consumers are in its frame, an ``Exit``'s in the enclosing frame, every other node's in its producer's.

Each frame becomes one planner node of type :data:`LOOP` whose inputs are what the frame's ``Enter`` nodes read and
whose outputs are what its ``Exit`` nodes give; the frame's other nodes form a body planned like any graph, in three
parts: the predicate (from the loop variables), the next values (from the variables and the ``Switch`` outputs)
and the results. Only the loop variables the requested results depend on are carried (gradient bookkeeping that
``tf.gradients`` adds to a forward loop is never computed). A frame inside a frame is a ``LOOP`` node in its parent's
body. Every value is a torch tensor, so autograd differentiates through the iterations.

TensorArrays are TensorFlow's: a handle holding the elements (mutable, as TensorFlow's resource) and a float flow
scalar that orders the operations; unwritten elements read as zeros when the element shape is known, an element is
written once, ``clear_after_read`` arrays refuse a second read, and ``dynamic_size`` arrays grow.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from ...errors import FeedError
from .ops import _created, _int, _ints, kernel, torch_dtype

__all__ = ["LOOP", "MAX_ITERATIONS", "collapse_frames", "loop_problems", "run_loop"]

#: Planner node type of a collapsed TF1 while loop frame.
LOOP = "WhileLoop"

#: Most iterations one loop may run before ``to_torch`` gives up (a loop whose predicate never turns false).
MAX_ITERATIONS = 1_000_000

_ENTER = frozenset({"Enter", "RefEnter"})
_EXIT = frozenset({"Exit", "RefExit"})
_MERGE = frozenset({"Merge", "RefMerge"})
_SWITCH = frozenset({"Switch", "RefSwitch"})
_NEXT = frozenset({"NextIteration", "RefNextIteration"})


@kernel("Enter", "RefEnter", "Exit", "RefExit", "NextIteration", "RefNextIteration", "LoopCond")
def _pass_through(node, args, rt):
    # Inside a collapsed frame these are never run (their values are fed); an Exit after its loop passes its
    # result on.
    return args[0]


# ----------------------------------------------------------------------------------------------- frames


class _Loop:
    """One while frame: its body and how the loop variables flow through it."""

    def __init__(self, frame: str) -> None:
        self.frame = frame
        self.body = None
        self.enters: list[str] = []
        self.inputs: list[str] = []  # the Enter nodes whose sources are the loop node's inputs
        self.merges: dict[str, tuple[int, tuple[str, int]]] = {}  # merge -> (Enter input port, next value key)
        self.merge_enter: dict[str, str] = {}  # merge -> Enter it starts from
        self.switches: dict[str, tuple[str, int]] = {}  # switch -> data key
        self.pred: tuple[str, int] | None = None
        self.exits: list[tuple[str, int]] = []  # what each Exit passes out
        self.error: str | None = None
        self.analyses: dict[tuple[int, ...], dict[str, Any]] = {}


def _frames(graph) -> tuple[dict[str, str], dict[str, str]]:
    """``({op name: frame name ("" is the root)}, {frame: enclosing frame})``, as TensorFlow's executor assigns them."""
    ops = graph.operations
    by_name = {op.name: op for op in ops}
    consumers: dict[str, list[str]] = {}
    for op in ops:
        for i in op.data_inputs:
            consumers.setdefault(i.op, []).append(op.name)
        for c in op.control_inputs:
            consumers.setdefault(c, []).append(op.name)
    frame: dict[str, str] = {}
    parent: dict[str, str] = {}
    queue = deque(op.name for op in ops if not op.data_inputs and not op.control_inputs)
    for name in queue:
        frame[name] = ""
    while queue:
        name = queue.popleft()
        op = by_name[name]
        if op.type in _ENTER:
            out = str(op.attrs.get("frame_name") or f"<frame of {name}>")
            parent.setdefault(out, frame[name])
        elif op.type in _EXIT:
            out = parent.get(frame[name], "")
        else:
            out = frame[name]
        for c in consumers.get(name, ()):
            if c not in frame and c in by_name:
                frame[c] = out
                queue.append(c)
    for op in ops:
        frame.setdefault(op.name, "")
    return frame, parent


def collapse_frames(program):
    """The program's graph body with every top-level while frame replaced by a :data:`LOOP` node (nested frames
    inside their parents' bodies). Nodes inside frames stay in the graph body under their names (fetching one is
    refused by the planner as part of a cycle); the ``Exit`` nodes read their loop's outputs."""
    from .interpreter import _Body, _Node

    body, graph = program.body, program.graph
    if not any(n.type in _ENTER for n in body.nodes.values()):
        return body
    frame, parent = _frames(graph)
    members: dict[str, list[str]] = {}
    for name in body.nodes:
        members.setdefault(frame.get(name, ""), []).append(name)
    children: dict[str, list[str]] = {}
    for f, p in parent.items():
        if f != p:
            children.setdefault(p, []).append(f)
    enters: dict[str, list[str]] = {}
    for node in body.nodes.values():
        if node.type in _ENTER:
            enters.setdefault(str(node.attrs.get("frame_name") or f"<frame of {node.name}>"), []).append(node.name)
    taken = set(body.nodes)

    def build(f: str, depth: int) -> tuple[Any, dict[str, Any]]:
        loop = _Loop(f)
        nodes: dict[str, Any] = {}
        exits = []
        for name in members.get(f, ()):
            node = body.nodes[name]
            if node.type in _EXIT:
                exits.append(node)
            else:
                nodes[name] = node
        for c in children.get(f, ()) if depth < 64 else ():
            inner, inner_exits = build(c, depth + 1)
            nodes[inner.name] = inner
            nodes.update(inner_exits)
        loop.enters = list(enters.get(f, ()))
        enter_set = set(loop.enters)
        conds = [n for n in nodes.values() if n.type == "LoopCond"]
        if len(conds) != 1 or not conds[0].inputs:
            loop.error = f"{len(conds)} LoopCond operations in the frame"
        else:
            cond = conds[0]
            loop.pred = cond.inputs[0]
            for n in nodes.values():
                if n.type in _MERGE and len(n.inputs) == 2:
                    ports = [i for i, src in enumerate(n.inputs) if src[0] in enter_set]
                    other = n.inputs[1 - ports[0]] if len(ports) == 1 else None
                    nxt = nodes.get(other[0]) if other is not None else None
                    if nxt is not None and nxt.type in _NEXT and nxt.inputs:
                        loop.merges[n.name] = (ports[0], nxt.inputs[0])
                        loop.merge_enter[n.name] = n.inputs[ports[0]][0]
                elif n.type in _SWITCH and len(n.inputs) == 2 and n.inputs[1] == (cond.name, 0):
                    loop.switches[n.name] = n.inputs[0]
            for e in exits:
                if not e.inputs:
                    loop.error = f"Exit {e.name!r} has no input"
            if not loop.merges:
                loop.error = "no loop variables (Merge of an Enter and a NextIteration)"
        if depth >= 64 and children.get(f):
            loop.error = "while loops nested more than 64 deep"
        missing = [name for name in loop.enters if not body.nodes[name].inputs]
        if missing:
            loop.error = f"Enter {missing[0]!r} has no input"
        loop.exits = [e.inputs[0] if e.inputs else ("", 0) for e in exits]
        loop.body = _Body(nodes)
        loop.body.graph_names = True  # node names are the graph's: constants are the module's own
        name = f
        while name in taken:
            name += " (while loop)"
        taken.add(name)
        # The loop's inputs: what its results need, except results only the training step reads (the iteration
        # counter and stacks tf.gradients adds to a forward loop must not make the forward pass need them).
        live = tuple(k for k, e in enumerate(exits) if _live(graph, program.left_out, e.name))
        loop.inputs = list(loop.enters) if loop.error else _analysis(program, loop, live or tuple(range(len(exits))))[
            "enters"]
        inputs = [body.nodes[e].inputs[0] for e in loop.inputs]
        node = _Node(name, LOOP, inputs, [], op=None, node_def=None)
        node._attrs = {"frame_name": f, "loop": loop}
        rewritten = {e.name: _Node(e.name, e.type, [(name, k)], [], op=e._op) for k, e in enumerate(exits)}
        return node, rewritten

    nodes = dict(body.nodes)
    for f in children.get("", ()):
        loop_node, exits = build(f, 0)
        nodes[loop_node.name] = loop_node
        nodes.update(exits)
    return _Body(nodes)


def _live(graph, left_out, name: str) -> bool:
    users = graph.consumers(name)
    return not users or any(u.name not in left_out for u in users)


def _analysis(program, loop: _Loop, wanted: tuple[int, ...]) -> dict[str, Any]:
    """What to compute for results ``wanted``: the loop variables they depend on and the three parts' fetches."""
    found = loop.analyses.get(wanted)
    if found is not None:
        return found
    enter_keys = {(e, 0) for e in loop.enters}
    merge_keys = {(m, p) for m in loop.merges for p in (0, 1)}
    switch_keys = {(s, p) for s in loop.switches for p in (0, 1)}
    fed_cond = frozenset(enter_keys | merge_keys)
    fed_all = frozenset(fed_cond | switch_keys)

    entered: set = set()

    def used(fetches, fed) -> set:
        nodes = program.needed(loop.body, fetches, fed)
        keys = set(fetches)
        for n in nodes:
            keys.update(n.inputs)
            keys.update((p, 0) for p in n.pivots)
        entered.update(k for k in keys if k in enter_keys)
        return {k for k in keys if k in fed}

    merges: set[str] = set()
    switches: set[str] = set()
    frontier = used([loop.pred] + [loop.exits[i] for i in wanted], fed_all)
    while frontier:
        new: set = set()
        for op, _ in frontier:
            if op in loop.merges and op not in merges:
                merges.add(op)
                entered.add((loop.merge_enter[op], 0))  # its initial value
                new |= used([loop.merges[op][1]], fed_all)
            elif op in loop.switches and op not in switches:
                switches.add(op)
                new |= used([loop.switches[op]], fed_cond)
        frontier = new
    merges_ = sorted(merges)
    switches_ = sorted(switches)
    found = {
        "merges": merges_, "switches": switches_,
        "cond": (tuple(dict.fromkeys([loop.pred] + [loop.switches[s] for s in switches_])), fed_cond),
        "next": (tuple(dict.fromkeys(loop.merges[m][1] for m in merges_)), fed_all),
        "exit": (tuple(dict.fromkeys(loop.exits[i] for i in wanted)), fed_all),
        "enters": [e for e in loop.enters if (e, 0) in entered],
    }
    loop.analyses[wanted] = found
    return found


def _wanted(loop: _Loop, wanted) -> tuple[int, ...]:
    chosen = sorted({int(i) for i in wanted if 0 <= int(i) < len(loop.exits)}) if wanted else []
    return tuple(chosen) if chosen else tuple(range(len(loop.exits)))


def loop_problems(program, node, wanted, seen) -> dict[str, list[str]]:
    """``{op type or reason: [names]}`` for what the loop's requested results need and cannot run."""
    loop: _Loop = node.attrs["loop"]
    if loop.error:
        return {f"{LOOP} ({loop.error})": [node.name]}
    a = _analysis(program, loop, _wanted(loop, wanted))
    found: dict[str, list[str]] = {}
    absent = [e for e in a["enters"] if e not in loop.inputs]
    if absent:
        return {f"{LOOP} (results only the training step uses; they need {', '.join(absent[:3])})": [node.name]}
    for part in ("cond", "next", "exit"):
        fetches, fed = a[part]
        nodes = program.needed(loop.body, fetches, fed)
        for key, names in program.problems(loop.body, nodes, fetches, seen).items():
            found.setdefault(key, []).extend(n for n in names if n not in found.get(key, ()))
    return found


def run_loop(rt, node, args: list, wanted) -> list:
    """Run while frame ``node`` from its entered values ``args``; returns its results (None where not wanted)."""
    from .interpreter import DEAD

    loop: _Loop = node.attrs["loop"]
    if loop.error:
        raise FeedError(f"while loop {loop.frame!r} cannot run: {loop.error}", key=node.name)
    program = rt.program
    chosen = _wanted(loop, wanted)
    a = _analysis(program, loop, chosen)
    plans = {part: program.plan(loop.body, *a[part]) for part in ("cond", "next", "exit")}
    if any(e not in loop.inputs for e in a["enters"]):
        raise FeedError(f"while loop {loop.frame!r}: the results asked for are only used by the training step",
                        key=node.name)
    entered = {(e, 0): v for e, v in zip(loop.inputs, args)}
    values = {m: entered[(loop.merge_enter[m], 0)] for m in a["merges"]}
    device = rt.device()
    cond_keys = plans["cond"].fetches

    def state(iteration: int) -> dict:
        env = dict(entered)
        for m in a["merges"]:
            port = loop.merges[m][0]
            env[(m, 0)] = values[m]
            # Merge's value_index: which input it forwarded (the Enter first, then the NextIteration)
            env[(m, 1)] = torch.tensor(port if iteration == 0 else 1 - port, dtype=torch.int32, device=device)
        return env

    iteration = 0
    while True:
        env = state(iteration)
        program.execute(loop.body, plans["cond"], env, rt)
        pred = env[cond_keys[0]]
        data = {s: env[loop.switches[s]] for s in a["switches"]}
        if not isinstance(pred, torch.Tensor) or pred.dtype != torch.bool or pred.numel() != 1:
            raise FeedError(f"while loop {loop.frame!r}: the loop condition is not a boolean scalar", key=node.name)
        if not bool(pred.reshape(())):
            break
        if iteration >= MAX_ITERATIONS:
            raise FeedError(f"while loop {loop.frame!r} ran {MAX_ITERATIONS:,} iterations without its condition "
                            "turning false (ckpt.graph.torch.control_flow.MAX_ITERATIONS)", key=node.name)
        env = state(iteration)
        for s, v in data.items():
            env[(s, 0)], env[(s, 1)] = DEAD, v
        program.execute(loop.body, plans["next"], env, rt)
        values = {m: env[loop.merges[m][1]] for m in a["merges"]}
        iteration += 1
    env = state(iteration)
    for s, v in data.items():
        env[(s, 0)], env[(s, 1)] = v, DEAD
    program.execute(loop.body, plans["exit"], env, rt)
    out: list = [None] * len(loop.exits)
    for i in chosen:
        out[i] = env[loop.exits[i]]
    return out


# ----------------------------------------------------------------------------------------------- TensorArrays


class _TensorArray:
    """A ``TensorArrayV3`` handle: the array's elements (written once each) and what TensorFlow checks about them."""

    __slots__ = ("name", "dtype", "size", "dynamic", "clear_after_read", "identical", "shape", "items", "cleared")

    def __init__(self, node, size: int) -> None:
        a = node.attrs
        self.name = a.get("tensor_array_name") or node.name
        self.dtype = torch_dtype(a.get("dtype"))
        self.size = size
        self.dynamic = bool(a.get("dynamic_size", False))
        self.clear_after_read = bool(a.get("clear_after_read", True))
        self.identical = bool(a.get("identical_element_shapes", False))
        shape = a.get("element_shape")
        self.shape = None if shape is None else tuple(shape)
        self.items: dict[int, torch.Tensor] = {}
        self.cleared: set[int] = set()

    def __repr__(self) -> str:
        return f"<TensorArray {self.name!r} size={self.size}>"

    def merge_shape(self, shape, what: str) -> None:
        if shape is None:
            return
        shape = tuple(shape)
        if self.shape is None:
            self.shape = shape
            return
        if len(shape) != len(self.shape) or any(a is not None and b is not None and a != b
                                                for a, b in zip(shape, self.shape)):
            raise ValueError(f"TensorArray {self.name}: {what} shape {_shape(shape)} is incompatible with the "
                             f"TensorArray's element shape {_shape(self.shape)}")
        self.shape = tuple(a if a is not None else b for a, b in zip(shape, self.shape))

    def write(self, index: int, value: torch.Tensor) -> None:
        if index < 0 or (index >= self.size and not self.dynamic):
            raise ValueError(f"TensorArray {self.name}: Tried to write to index {index} but array is not resizeable "
                             f"and size is: {self.size}")
        if self.dtype is not None and value.dtype != self.dtype:
            raise ValueError(f"TensorArray {self.name}: TensorArray dtype is {self.dtype} but Op is trying to write "
                             f"dtype {value.dtype}")
        if index in self.items or index in self.cleared:
            raise ValueError(f"TensorArray {self.name}: Could not write to TensorArray index {index} because it has "
                             "already been written to.")
        if self.shape is not None:
            self.merge_shape(value.shape, f"the value written to index {index} has")
        if self.identical and (self.shape is None or None in self.shape):
            self.shape = tuple(value.shape)
        self.items[index] = value
        self.size = max(self.size, index + 1)

    def read(self, index: int, device) -> torch.Tensor:
        if not 0 <= index < self.size:
            raise ValueError(f"TensorArray {self.name}: Tried to read from index {index} but array size is: "
                             f"{self.size}")
        if index in self.cleared:
            raise ValueError(f"TensorArray {self.name}: Could not read index {index} twice because it was cleared "
                             "after a previous read (perhaps try setting clear_after_read = false?).")
        value = self.items.get(index)
        if value is None:
            if self.shape is None or None in self.shape:
                raise ValueError(f"TensorArray {self.name}: Could not read from TensorArray index {index}: it has "
                                 f"not been written to and the element shape {_shape(self.shape)} is not fully "
                                 "defined")
            value = torch.zeros(self.shape, dtype=self.dtype, device=device)
        if self.clear_after_read:
            self.cleared.add(index)
            self.items.pop(index, None)
        return value


def _shape(shape) -> str:
    return "<unknown>" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _array(value) -> _TensorArray:
    if not isinstance(value, _TensorArray):
        raise TypeError(f"expected a TensorArray handle, got {type(value).__name__}")
    return value


def _flow(rt, like=None) -> torch.Tensor:
    # TensorFlow's flow is a float scalar that only orders the TensorArray's operations.
    return torch.zeros((), dtype=torch.float32, device=rt.device(like))


@kernel("TensorArrayV3", multi=True)
def _tensor_array(node, args, rt):
    size = _int(args[0])
    if size < 0:
        raise ValueError(f"TensorArray size must be >= 0, got {size}")
    return [_TensorArray(node, size), _flow(rt, args[0])]


@kernel("TensorArrayWriteV3")
def _tensor_array_write(node, args, rt):
    handle, index, value, flow = args
    _array(handle).write(_int(index), value)
    return flow


@kernel("TensorArrayScatterV3")
def _tensor_array_scatter(node, args, rt):
    handle, indices, value, flow = args
    array = _array(handle)
    indices = _ints(indices)
    if value.dim() == 0 or value.shape[0] != len(indices):
        raise ValueError(f"TensorArray {array.name}: expected {len(indices)} values to scatter, got shape "
                         f"{tuple(value.shape)}")
    for i, item in zip(indices, value.unbind(0)):
        array.write(i, item)
    return flow


@kernel("TensorArrayReadV3")
def _tensor_array_read(node, args, rt):
    handle, index, _ = args
    return _array(handle).read(_int(index), rt.device(index))


@kernel("TensorArrayGatherV3")
def _tensor_array_gather(node, args, rt):
    handle, indices, _ = args
    array = _array(handle)
    array.merge_shape(node.attrs.get("element_shape"), "the gathered element")
    indices = _ints(indices)
    device = rt.device(args[1])
    if not indices:
        if array.shape is None or None in array.shape:
            raise ValueError(f"TensorArray {array.name}: gathering no elements needs a fully defined element shape, "
                             f"got {_shape(array.shape)}")
        return torch.zeros(_created([0, *array.shape], array.dtype, "TensorArrayGatherV3"), dtype=array.dtype,
                           device=device)
    if array.shape is not None and None not in array.shape:
        _created([len(indices), *array.shape], array.dtype, "TensorArrayGatherV3")
    return torch.stack([array.read(i, device) for i in indices])


@kernel("TensorArraySizeV3")
def _tensor_array_size(node, args, rt):
    return torch.tensor(_array(args[0]).size, dtype=torch.int32, device=rt.device(args[1]))


@kernel("TensorArrayCloseV3", multi=True)
def _tensor_array_close(node, args, rt):
    return []

