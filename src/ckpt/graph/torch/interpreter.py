"""A TensorFlow 1 graph plus its checkpoint as a trainable ``torch.nn.Module`` (:func:`to_torch`), and back.

Importing this module imports torch; ``ckpt.graph.to_torch`` imports it only when called.

How a graph becomes a module:

* **State.** Every variable of the graph (``VariableV2``/``Variable`` references and ``VarHandleOp`` resources)
  becomes an ``nn.Parameter`` when it is in the ``trainable_variables`` collection, a buffer otherwise (optimizer
  slots, moving averages, ``global_step``), initialised from the checkpoint under the name the graph's own Saver
  uses. Partitioned variables are one full-size tensor named ``SaveSliceInfo.full_name``; each part reads its slice.
  The module's ``state_dict`` keys are attribute-safe spellings of the names (``conv_layer_1__W_conv_1``) and
  ``__ckpt_names__()`` maps them back, so ``ckpt.save(module, prefix)`` writes ``conv_layer_1/W_conv_1`` and
  ``tf.compat.v1.train.Saver`` restores the values into the original graph. ``module.variables`` maps the
  TensorFlow names to the tensors. ``Const`` nodes become non-persistent buffers (they follow ``.to(device)``); in
  a graph without variables (a frozen ``.pb``) the floating-point ones are persistent, and
  ``constants_as_parameters`` makes chosen ones trainable.
* **Evaluation.** ``module.run(fetches, feed_dict)`` is ``sess.run``: it evaluates only the operations the fetches
  depend on (stopping at fed tensors), in dependency order, with TensorFlow's numerics (``ops``); the plan
  is computed once per set of fetches and fed names and cached. Any graph converts; an operation that cannot run
  fails only a fetch that needs it, and the error lists every such operation with its path from the fetch.
  ``module(*inputs, **feeds)`` runs the outputs given to :func:`to_torch`. Gradients flow through everything
  except ``StopGradient``. String tensors (``DecodeJpeg/contents``) are NumPy object arrays of ``bytes``.
* **Control flow.** TF1 ``cond`` (``Switch``/``Merge``) runs with TensorFlow's dead-tensor rules, and functional
  ``If``/``StatelessIf``/``PartitionedCall`` run their function bodies; ``While``/``StatelessWhile`` run as a
  Python loop over the body (gradients flow through every iteration). A boolean placeholder that is a ``cond``
  predicate (``is_training``, Keras's learning phase) follows the module's mode when not fed: ``module.train()``
  feeds True, ``module.eval()`` False. ``to_torch`` returns the module in eval mode. TF1 while loops
  (``Enter``/``Merge``/``Switch``/``LoopCond``/``NextIteration``/``Exit`` frames: ``dynamic_rnn``) and their
  TensorArrays run as Python loops (``control_flow``), so autograd differentiates through the iterations.
* **What is left out.** Training updates (``ApplyAdam``, ``gradients/*``), variable assignments and initialisers,
  and the Saver's nodes are recognised and never run (``module.left_out`` lists them with the reason); asking for
  one raises an error that says what to use instead. An operation with no kernel fails at conversion time when
  the requested ``outputs`` need it, and otherwise when a fetch does.

Random operations (dropout masks, initialisers) draw from torch's generator: same distributions, different numbers.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import (CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, FeedError,
                      OperationNotFoundError, StateMismatchError, UnsupportedOperationsError)
from ...tf.tensor_proto import shape_from_proto
from .._attrs import _shape_text, decode_attr
from .._model import PLACEHOLDER_OPS, VARIABLE_OPS, Graph, parse_input, saver_scopes_of
from .._opdefs import output_arg_names
from .ops import CHECKS, KERNELS, MULTI_OUTPUT, OUTPUT_ARGS, _created, as_tensor, torch_dtype
from . import more_ops  # noqa: F401,E402  (registers its kernels)
from .control_flow import LOOP, collapse_frames, loop_problems, run_loop

__all__ = ["to_torch", "GraphModule", "UnsupportedOperationsError", "FeedError", "SUPPORTED_OPS"]

logger = logging.getLogger("ckpt.graph")

_SWITCH = frozenset({"Switch", "RefSwitch"})
_MERGE = frozenset({"Merge", "RefMerge"})
_CONTROL = _SWITCH | _MERGE
_FUNCTION_OPS = frozenset({"If", "StatelessIf", "PartitionedCall", "StatefulPartitionedCall", "While",
                           "StatelessWhile"})
_WHILE = frozenset({"While", "StatelessWhile"})
_ENGINE_OPS = frozenset({"Const", "VarHandleOp", "ReadVariableOp", "ResourceGather", *PLACEHOLDER_OPS,
                         *VARIABLE_OPS, *_CONTROL, *_FUNCTION_OPS, LOOP})

#: Operation types ``to_torch`` can run.
SUPPORTED_OPS = frozenset(KERNELS) | _ENGINE_OPS

# Operations that change state or do I/O: never part of a forward computation.
_ASSIGN = frozenset({"Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp",
                     "AssignSubVariableOp", "ScatterUpdate", "ScatterAdd", "ScatterSub", "ScatterMul", "ScatterDiv",
                     "ResourceScatterUpdate", "ResourceScatterAdd", "ResourceScatterSub", "CountUpTo",
                     "VarIsInitializedOp", "IsVariableInitialized", "DestroyResourceOp"})
_SAVER = frozenset({"SaveV2", "Save", "SaveSlices", "RestoreV2", "Restore", "RestoreSlice", "MergeV2Checkpoints",
                    "ShardedFilename", "ShardedFilespec"})
_APPLY = re.compile(r"\A(?:Resource)?(?:Sparse)?Apply[A-Z]\w*\Z")

# Predicates of cond are traced back through these to find an `is_training`-like placeholder.
_PRED_PASS = frozenset({"Identity", "RefIdentity", "Switch", "RefSwitch", "LogicalNot", "Snapshot", "Enter"})

_PLAN_CACHE_SIZE = 64  # plans per program: one per distinct (fetches, fed names); old ones are dropped first


# ----------------------------------------------------------------------------------------------- nodes and bodies


class _Dead:
    """A tensor on the branch of a cond that was not taken (TensorFlow's dead tensors)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<dead>"


DEAD = _Dead()


class _Resource:
    """The value of a ``VarHandleOp``: which variable ``ReadVariableOp`` reads."""

    __slots__ = ("op",)

    def __init__(self, op: str) -> None:
        self.op = op


class _Node:
    """One operation: name, type, data inputs as ``(source, output index)``, cond pivots, attributes."""

    __slots__ = ("name", "type", "inputs", "pivots", "_op", "_node_def", "_attrs")

    def __init__(self, name, type_, inputs, pivots, *, op=None, node_def=None) -> None:
        self.name = name
        self.type = type_
        self.inputs = inputs
        self.pivots = pivots
        self._op = op
        self._node_def = node_def
        self._attrs = None

    @property
    def attrs(self) -> dict[str, Any]:
        if self._attrs is None:
            if self._op is not None:
                self._attrs = self._op.attrs
            else:
                self._attrs = {k: decode_attr(v, where=f"function node {self.name!r} attr {k!r}")
                               for k, v in self._node_def.attr.items()}
        return self._attrs

    def __repr__(self) -> str:
        return f"<{self.type} {self.name!r}>"


class _Step:
    __slots__ = ("node", "inputs", "pivots", "keep", "free")

    def __init__(self, node, inputs, pivots, keep) -> None:
        self.node = node
        self.inputs = inputs
        self.pivots = pivots
        self.keep = keep
        self.free: list[tuple[str, int]] = []


class _Plan:
    """The steps that compute some fetches from some fed tensors, in dependency order."""

    __slots__ = ("steps", "fetches", "placeholders")

    def __init__(self, steps, fetches, placeholders) -> None:
        self.steps = steps
        self.fetches = fetches
        self.placeholders = placeholders


class _Body:
    """A set of nodes that can be planned and run: the graph itself, or the body of a library function."""

    def __init__(self, nodes: dict[str, _Node], *, args: Sequence[str] = (), returns: Sequence = ()) -> None:
        self.nodes = nodes
        self.args = list(args)
        self.returns = list(returns)
        self.position = {name: i for i, name in enumerate(nodes)}


def _graph_body(graph: Graph) -> _Body:
    ops = graph.operations
    by_name = {op.name: op for op in ops}
    nodes: dict[str, _Node] = {}
    for op in ops:
        inputs = [(i.op, i.index) for i in op.data_inputs]
        pivots = []
        for name in op.control_inputs:
            src = by_name.get(name)
            # A cond's branch-local constants wait for the branch pivot (an Identity of a Switch output): that
            # control edge is how they die with the untaken branch. Other control edges (update ops, init) are
            # side effects the forward computation does not need.
            if src is not None and (src.type in _SWITCH or (
                    src.type in ("Identity", "RefIdentity") and src.data_inputs
                    and by_name.get(src.data_inputs[0].op) is not None
                    and by_name[src.data_inputs[0].op].type in _SWITCH)):
                pivots.append(name)
        nodes[op.name] = _Node(op.name, op.type, inputs, pivots, op=op)
    return _Body(nodes)


def _function_ref(text: str, types: dict[str, str], args: set[str]) -> tuple[str, int] | None:
    """``"x"`` (an argument), ``"node:out_arg:2"`` -> ``(node, flat output index)``; None for ``"^ctrl"``."""
    if text.startswith("^"):
        return None
    parts = text.split(":")
    if len(parts) == 1 or parts[0] in args and len(parts) == 1:
        return parts[0], 0
    if any(len(p) > 12 and p.isdigit() for p in parts[1:]) or len(parts) > 3 or (
            len(parts) == 3 and not parts[2].isdigit()):
        raise CorruptCheckpointError(f"function body input {text[:80]!r} is malformed", key=text[:200])
    if len(parts) == 2:  # "node:index" (graph style) also appears in some bodies
        return parts[0], int(parts[1]) if parts[1].isdigit() else 0
    node, arg, index = parts[0], parts[1], int(parts[2])
    names = OUTPUT_ARGS.get(types.get(node, "")) or output_arg_names(types.get(node, ""))
    offset = names.index(arg) if names and arg in names else 0
    return node, offset + index


def _function_body(fdef) -> _Body:
    args = [a.name for a in fdef.signature.input_arg]
    types = {n.name: n.op for n in fdef.node_def}
    argset = set(args)
    nodes: dict[str, _Node] = {}
    for n in fdef.node_def:
        inputs = [r for r in (_function_ref(i, types, argset) for i in n.input) if r is not None]
        nodes[n.name] = _Node(n.name, n.op, inputs, [], node_def=n)
    returns = [_function_ref(fdef.ret[a.name], types, argset) for a in fdef.signature.output_arg]
    return _Body(nodes, args=args, returns=returns)


# ----------------------------------------------------------------------------------------------- the program


class _Storage:
    """One tensor of the module's state: a variable (by checkpoint name) or a constant (by op name)."""

    __slots__ = ("name", "kind", "ops", "dtype", "shape", "trainable", "parts")

    def __init__(self, name, kind, dtype, shape, trainable) -> None:
        self.name = name
        self.kind = kind  # "variable" | "constant"
        self.ops: list[str] = []
        self.dtype = dtype
        self.shape = shape
        self.trainable = trainable
        self.parts: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # op -> (offset, part shape)


class _Program:
    """Everything about a graph that does not depend on parameter values; shared by a module and its subgraphs.

    Thread-safety: plans are cached in a dict; concurrent runs may compute the same plan twice, which is harmless.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.body = _graph_body(graph)
        self._functions: dict[str, _Body] = {}
        self._fdefs = {f.signature.name: f for f in graph.graph_def.library.function}
        self._plans: dict[Any, _Plan] = {}
        self.left_out = self._find_left_out()
        self.mode_placeholders = self._find_mode_placeholders()
        self.storages, self.var_storage = self._find_variables()
        self._const_cache: dict[str, torch.Tensor] = {}
        self.body = collapse_frames(self)  # TF1 while frames become loop nodes (after the analyses above)

    # -------------------------------------------------------------- analysis

    def _find_left_out(self) -> dict[str, str]:
        # The Saver's own scope (save/, save_1/, or the scope its SaverDef names): file names, I/O, restore ops.
        # Other operations the graph counts as the Saver's (reads that only the Saver consumes) can still run.
        scopes = {"save"} | saver_scopes_of(self.graph.saver_def)
        self._saver_scope = re.compile(r"\A(?:" + "|".join(re.escape(s) for s in sorted(scopes))
                                       + r")(?:_\d+)?(?:/|\Z)")
        out = {}
        for node in self.body.nodes.values():
            reason = self._left_out_reason(node)
            if reason:
                out[node.name] = reason
        return out

    def _left_out_reason(self, node: _Node) -> str | None:
        t = node.type
        role = self.graph.role(node.name)
        if _APPLY.match(t):
            return f"a training update ({t}): train with loss.backward() and a PyTorch optimizer instead"
        if t in _SAVER or (role == "saver" and self._saver_scope.match(node.name)):
            return f"a Saver operation ({t}): save with ckpt.save(module, prefix) instead"
        if t in _ASSIGN:
            return f"assigns a variable ({t}): set module.variables[...] in PyTorch instead"
        if role == "train":
            return f"part of the training step ({t}): use loss.backward() and a PyTorch optimizer instead"
        return None

    def _find_mode_placeholders(self) -> set[str]:
        found = set()
        for node in self.body.nodes.values():
            pred = None
            if node.type in _SWITCH and len(node.inputs) > 1:
                pred = node.inputs[1]
            elif node.type in ("If", "StatelessIf") and node.inputs:
                pred = node.inputs[0]
            seen = 0
            while pred is not None and seen < 64:
                seen += 1
                src = self.body.nodes.get(pred[0])
                if src is None:
                    break
                if src.type in PLACEHOLDER_OPS:
                    if src.attrs.get("dtype") == "bool":
                        found.add(src.name)
                    break
                pred = src.inputs[0] if src.type in _PRED_PASS and src.inputs else None
        return found

    def _find_variables(self):
        storages: dict[str, _Storage] = {}
        var_storage: dict[str, tuple[str, tuple[slice, ...] | None]] = {}
        for v in self.graph.variables:
            name = v.checkpoint_name
            dtype = v.dtype
            if v.partition is not None and v.shape is not None and None not in v.shape:
                full, offset = v.partition
                s = storages.get(name)
                if s is None:
                    s = storages[name] = _Storage(name, "variable", dtype, tuple(full), bool(v.trainable))
                s.trainable = s.trainable or v.trainable is not False
                s.ops.append(v.name)
                s.parts[v.name] = (tuple(offset), tuple(v.shape))
                var_storage[v.name] = (name, tuple(slice(o, o + n) for o, n in zip(offset, v.shape)))
            else:
                if name in storages:  # two variables saved under one name: keep them apart
                    name = v.name
                trainable = v.trainable if v.trainable is not None else True
                storages[name] = s = _Storage(name, "variable", dtype, v.shape, trainable)
                s.ops.append(v.name)
                var_storage[v.name] = (name, None)
        return storages, var_storage

    def function(self, name: str) -> _Body:
        body = self._functions.get(name)
        if body is None:
            fdef = self._fdefs.get(name)
            if fdef is None:
                raise UnsupportedOperationsError(f"function {name!r} is not in the graph's library",
                                                 operations={f"function {name}": []}, outputs=[])
            body = self._functions[name] = _function_body(fdef)
        return body

    # -------------------------------------------------------------- planning

    def needed(self, body: _Body, fetches: Iterable[tuple[str, int]], fed: frozenset,
               parents: dict[str, str] | None = None) -> list[_Node]:
        """The nodes the fetches depend on, inputs first (depth-first post order); fed tensors cut the search.
        ``parents`` (when given) receives, per node, the consumer it was reached from (the way back to a fetch)."""
        order: list[_Node] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done
        for fetch in fetches:
            if fetch in fed:
                continue
            root = fetch[0]
            if root not in body.nodes or state.get(root) == 2:
                continue
            stack = [(root, 0)]
            state[root] = 1
            while stack:
                name, i = stack.pop()
                node = body.nodes[name]
                deps = [s for s in node.inputs if s not in fed] + [(p, 0) for p in node.pivots]
                while i < len(deps) and (deps[i][0] not in body.nodes or state.get(deps[i][0]) == 2):
                    i += 1
                if i == len(deps):
                    state[name] = 2
                    order.append(node)
                    continue
                stack.append((name, i + 1))
                child = deps[i][0]
                if state.get(child) == 1:
                    raise UnsupportedOperationsError(
                        f"the graph has a cycle through {child!r}: {root!r} is inside a TF1 while loop (only what "
                        "leaves the loop, its Exit operations, can be fetched) or the loop is malformed",
                        operations={"while loop": [child]}, outputs=[root])
                state[child] = 1
                if parents is not None:
                    parents[child] = name
                stack.append((child, 0))
        return order

    def problems(self, body: _Body, nodes: Sequence[_Node], fetches: Iterable[tuple[str, int]] = (),
                 seen: set | None = None) -> dict[str, list[str]]:
        """``{op type or "type (reason)": [op names]}`` for nodes that cannot run, called functions included (for
        the outputs of the call that are used: TensorFlow adds outputs for gradients to rewritten cond branches)."""
        found: dict[str, list[str]] = {}
        seen = set() if seen is None else seen
        used = _uses(nodes, fetches)
        for node in nodes:
            key = None
            if body is self.body and node.name in self.left_out:
                key = f"{node.type} ({self.left_out[node.name]})"
            elif node.type not in SUPPORTED_OPS:
                key = node.type
            elif node.type in CHECKS:
                why = CHECKS[node.type](node)
                if why:
                    key = f"{node.type} with {why}"
            if key is None and node.type in _FUNCTION_OPS:
                wanted = tuple(sorted(used.get(node.name, ())))
                for fname in _functions_called(node):
                    if node.type in _WHILE:  # the loop needs every output of its body, and the condition's
                        count = len(self.function(fname).returns) if fname in self._fdefs else 0
                        wanted = (0,) if fname == node.attrs["cond"].name else tuple(range(count))
                    if (fname, wanted) in seen:
                        continue
                    seen.add((fname, wanted))
                    if fname not in self._fdefs:
                        found.setdefault(f"missing function {fname}", []).append(node.name)
                        continue
                    fbody = self.function(fname)
                    returns = [fbody.returns[i] for i in wanted if i < len(fbody.returns)]
                    inner_nodes = self.needed(fbody, returns, frozenset((a, 0) for a in fbody.args))
                    for k, names_ in self.problems(fbody, inner_nodes, returns, seen).items():
                        found.setdefault(k, []).extend(f"{fname}/{n}" for n in names_)
            if key is None and node.type == LOOP:
                for k, names_ in loop_problems(self, node, used.get(node.name, ()), seen).items():
                    found.setdefault(k, []).extend(names_)
            if key is not None:
                found.setdefault(key, []).append(node.name)
        return found

    def plan(self, body: _Body, fetches: tuple[tuple[str, int], ...], fed: frozenset) -> _Plan:
        key = (id(body), fetches, fed)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        parents: dict[str, str] = {}
        nodes = self.needed(body, fetches, fed, parents)
        problems = self.problems(body, nodes, fetches)
        if problems and body is self.body:
            # Behind a left-out operation (a gradient the fetch asks for) are more of its kind: name the first only.
            bad = {n for names_ in problems.values() for n in names_}
            for kind in list(problems):
                kept = [n for n in problems[kind] if n not in self.left_out or parents.get(n) not in bad
                        or parents[n] not in self.left_out]
                if kept:
                    problems[kind] = kept
                else:
                    del problems[kind]
        if problems:
            roots = {}
            for op, index in fetches:
                roots.setdefault(op, f"{op}:{index}")
            paths = {}
            for names_ in problems.values():
                for name in names_:
                    if name in body.nodes and name not in paths:
                        chain = [name]
                        while chain[-1] in parents and len(chain) <= len(body.nodes):
                            chain.append(parents[chain[-1]])
                        chain[-1] = roots.get(chain[-1], chain[-1])
                        paths[name] = chain[::-1]
            raise _unsupported(self.graph, problems, [f"{a}:{b}" for a, b in fetches], paths)
        steps = []
        used = _uses(nodes, fetches)
        for node in nodes:
            inputs = list(node.inputs)
            pivots = [(p, 0) for p in node.pivots]
            steps.append(_Step(node, inputs, pivots, sorted(used.get(node.name, ()))))
        # Free every intermediate value right after its last reader.
        last: dict[tuple[str, int], int] = {}
        for i, step in enumerate(steps):
            for k in step.inputs + step.pivots:
                last[k] = i
        keep = set(fetches)
        for k, i in last.items():
            if k not in keep:
                steps[i].free.append(k)
        placeholders = [n.name for n in nodes if n.type in PLACEHOLDER_OPS]
        plan = _Plan(steps, fetches, placeholders)
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan
        return plan

    # -------------------------------------------------------------- execution

    def execute(self, body: _Body, plan: _Plan, env: dict, rt: _Runtime) -> None:
        for step in plan.steps:
            node = step.node
            args = [env[k] for k in step.inputs]
            if node.type in _MERGE:
                alive = [(i, a) for i, a in enumerate(args) if a is not DEAD]
                dead_pivot = any(env[k] is DEAD for k in step.pivots)
                if alive and not dead_pivot:
                    index, value = alive[0]
                    device = value.device if isinstance(value, torch.Tensor) else None
                    outs = [value, torch.tensor(index, dtype=torch.int32, device=device)]
                else:
                    outs = DEAD
            elif any(a is DEAD for a in args) or any(env[k] is DEAD for k in step.pivots):
                outs = DEAD
            elif node.type in _SWITCH:
                data, pred = args
                outs = [DEAD, data] if bool(pred.reshape(())) else [data, DEAD]
            else:
                try:
                    outs = rt.evaluate(body, node, args, step.keep)
                except (CheckpointError, FloatingPointError):
                    raise
                except Exception as exc:
                    raise FeedError(f"operation {node.name!r} ({node.type}) failed: {type(exc).__name__}: {exc}",
                                    key=node.name) from exc
            for index in step.keep:
                if outs is DEAD:
                    env[(node.name, index)] = DEAD
                elif index < len(outs):
                    env[(node.name, index)] = outs[index]
                else:
                    raise FeedError(f"operation {node.name!r} ({node.type}) has {len(outs)} output(s); "
                                    f"there is no output {index}", key=f"{node.name}:{index}")
            for k in step.free:
                env.pop(k, None)

    def const(self, name: str, body: _Body) -> torch.Tensor | np.ndarray:
        """A constant's value: a tensor, or for strings a NumPy object array of ``bytes``."""
        key = f"{id(body)}/{name}"
        value = self._const_cache.get(key)
        if value is None:
            array = body.nodes[name].attrs.get("value")
            if isinstance(array, np.ndarray) and (array.dtype == object or array.dtype.kind in "SU"):
                value = np.array([v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1)],
                                 dtype=object).reshape(array.shape)
            else:
                value = _const_tensor(body.nodes[name])
            self._const_cache[key] = value
        return value


def _uses(nodes: Iterable[_Node], fetches: Iterable[tuple[str, int]]) -> dict[str, set[int]]:
    """Operation name -> the output indices that the nodes (or the fetches) read."""
    used: dict[str, set[int]] = {}
    for node in nodes:
        for src in node.inputs:
            used.setdefault(src[0], set()).add(src[1])
        for p in node.pivots:
            used.setdefault(p, set()).add(0)
    for op, index in fetches:
        used.setdefault(op, set()).add(index)
    return used


def _functions_called(node: _Node) -> list[str]:
    if node.type in ("If", "StatelessIf"):
        return [node.attrs["then_branch"].name, node.attrs["else_branch"].name]
    if node.type in _WHILE:
        return [node.attrs["cond"].name, node.attrs["body"].name]
    return [node.attrs["f"].name]


def _const_tensor(node: _Node) -> torch.Tensor:
    array = node.attrs.get("value")
    if not isinstance(array, np.ndarray):
        raise FeedError(f"constant {node.name!r} has no tensor value", key=node.name)
    if array.dtype == object or array.dtype.kind in "SU":
        raise UnsupportedOperationsError(f"constant {node.name!r} holds strings, which torch cannot represent",
                                         operations={"Const (strings)": [node.name]}, outputs=[])
    return as_tensor(array)


_PATHS_SHOWN = 10  # operations whose path from the fetch the message spells out (all are in .paths)


def _path_text(chain: Sequence[str]) -> str:
    """``fetch <- consumer <- ... <- op``, the middle elided when long."""
    if len(chain) > 9:
        chain = [*chain[:4], f"... ({len(chain) - 7} more)", *chain[-3:]]
    return " <- ".join(chain)


def _unsupported(graph: Graph, problems: dict[str, list[str]], outputs: Sequence[str],
                 paths: Mapping[str, list[str]] | None = None) -> UnsupportedOperationsError:
    lines = []
    for key in sorted(problems):
        names = problems[key]
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        lines.append(f"  {key}: {shown}")
    paths = dict(paths or {})
    if paths:
        lines.append("where the fetches need them:")
        for name in list(paths)[:_PATHS_SHOWN]:
            lines.append(f"  {_path_text(paths[name])}")
        if len(paths) > _PATHS_SHOWN:
            lines.append(f"  ... and {len(paths) - _PATHS_SHOWN} more (error.paths has them all)")
    where = graph.path or "the graph"
    n_ops = sum(len(v) for v in problems.values())
    return UnsupportedOperationsError(
        f"{where}: cannot compute {', '.join(outputs)} in PyTorch; {n_ops} operation(s) of {len(problems)} kind(s) "
        f"cannot run:\n" + "\n".join(lines) + "\n(ckpt.graph.torch.interpreter.SUPPORTED_OPS lists what runs; feed a "
        "tensor on the path to cut the graph there, or fetch something else)", operations=problems,
        outputs=outputs, path=graph.path, paths=paths)


class _Runtime:
    """One evaluation: the module whose state is used, and its mode."""

    __slots__ = ("module", "program", "training")

    def __init__(self, module: GraphModule) -> None:
        self.module = module
        self.program = module._program
        self.training = module.training

    def device(self, like: Any = None) -> torch.device:
        if isinstance(like, torch.Tensor):
            return like.device
        return self.module._device()

    def variable(self, op: str) -> torch.Tensor:
        storage, index = self.program.var_storage[op]
        value = self.module._state(storage)
        return value if index is None else value[index]

    def read(self, handle: Any) -> torch.Tensor:
        if isinstance(handle, _Resource):
            return self.variable(handle.op)
        return handle

    def call(self, name: str, args: list, wanted: Sequence[int]) -> list:
        """Run library function ``name``; only the outputs in ``wanted`` are computed (the others are None)."""
        body = self.program.function(name)
        fed = frozenset((a, 0) for a in body.args)
        returns = [body.returns[i] for i in wanted]
        plan = self.program.plan(body, tuple(dict.fromkeys(returns)), fed)
        env = {(a, 0): v for a, v in zip(body.args, args)}
        self.program.execute(body, plan, env, self)
        out: list = [None] * len(body.returns)
        for i, ref in zip(wanted, returns):
            out[i] = env[ref]
        return out

    def evaluate(self, body: _Body, node: _Node, args: list, wanted: Sequence[int] = ()) -> list:
        t = node.type
        if t in ("If", "StatelessIf"):
            branch = node.attrs["then_branch"] if bool(args[0].reshape(-1)[0]) else node.attrs["else_branch"]
            return self.call(branch.name, list(args[1:]), wanted)
        if t in ("PartitionedCall", "StatefulPartitionedCall"):
            return self.call(node.attrs["f"].name, list(args), wanted)
        if t in _WHILE:  # a Python loop: autograd differentiates through every iteration
            cond, body = node.attrs["cond"].name, node.attrs["body"].name
            values = list(args)
            every = list(range(len(values)))
            while bool(self.read(self.call(cond, values, [0])[0]).reshape(-1)[0]):
                values = self.call(body, values, every)
            return values
        if t == LOOP:
            return run_loop(self, node, args, wanted)
        if t == "Const":
            if body is self.program.body or getattr(body, "graph_names", False):
                return [self.module._constant(node.name)]
            value = self.program.const(node.name, body)
            return [value.to(self.device()) if isinstance(value, torch.Tensor) else value]
        if t in ("Placeholder", "PlaceholderV2", "PlaceholderWithDefault"):
            if node.name in self.program.mode_placeholders and body is self.program.body:
                return [torch.tensor(self.training, device=self.device())]
            if t == "PlaceholderWithDefault":
                return [args[0]]
            raise FeedError(f"placeholder {node.name!r} ({node.attrs.get('dtype')}, shape "
                            f"{_shape_text(node.attrs.get('shape'))}) needs a value: feed it, e.g. "
                            f"module.run(..., {{{node.name + ':0'!r}: value}})", key=node.name)
        if t in VARIABLE_OPS:
            if t == "VarHandleOp":
                return [_Resource(node.name)]
            return [self.variable(node.name)]
        if t == "ReadVariableOp":
            return [self.read(args[0])]
        if t == "ResourceGather":
            args = [self.read(args[0])] + args[1:]
        args = [self.read(a) if isinstance(a, _Resource) and t not in ("Identity", "IdentityN") else a
                for a in args]
        out = KERNELS[t](node, args, self)
        return out if t in MULTI_OUTPUT else [out]


# ----------------------------------------------------------------------------------------------- names


_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


def _attribute_name(name: str, taken: set[str], owner: nn.Module) -> str:
    """``conv_layer_1/W_conv_1`` -> ``conv_layer_1__W_conv_1``: a valid, unique module attribute name."""
    base = _UNSAFE.sub("_", name.replace("/", "__")) or "_"
    if base[0].isdigit():
        base = "_" + base
    candidate, n = base, 1
    while candidate in taken or hasattr(owner, candidate):
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _tensor_key(graph: Graph, name: Any, *, what: str = "tensor") -> tuple[str, int]:
    """A fetch or feed (``"x:0"``, ``"x"``, a ckpt or TensorFlow tensor/operation) -> ``(op, index)``."""
    if not isinstance(name, str):
        name = getattr(name, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"a {what} is named by a string such as 'x_input:0', not {type(name).__name__}")
    ref = parse_input(name)
    if ref.control:
        raise FeedError(f"{name!r} is a control input, not a {what}", key=name)
    if ref.op not in graph:
        leaf = [op.name for op in graph.inputs if op.name.rsplit("/", 1)[-1] == ref.op]
        if len(leaf) == 1 and ":" not in name:
            return leaf[0], 0
        graph.get_operation_by_name(ref.op)  # raises OperationNotFoundError, suggesting close names
    return ref.op, ref.index


# ----------------------------------------------------------------------------------------------- the module


class GraphModule(nn.Module):
    """A TensorFlow graph as a PyTorch module (see :func:`to_torch`, which makes them).

    Attributes:
        graph: The :class:`ckpt.graph.Graph`.
        inputs: Tensor names fed by position in ``module(*inputs)``.
        outputs: Tensor names ``module(...)`` returns.
        left_out: ``{operation name: why}`` for the training, assignment and saver operations that never run.

    Not thread-safe for concurrent ``train()``/``eval()`` switches; concurrent ``run`` calls are as safe as the
    PyTorch operations they make.
    """

    def __init__(self, program: _Program, *, inputs, outputs, state: dict[str, tuple[torch.Tensor, str]],
                 persistent: set[str]) -> None:
        super().__init__()
        self._program = program
        self.graph = program.graph
        self._inputs, self._input_aliases = inputs
        self._outputs, self._output_form = outputs
        self._attr: dict[str, str] = {}
        self._ckpt: dict[str, str] = {}
        self._kinds = {name: kind for name, (_, kind) in state.items()}
        taken: set[str] = set()
        for name, (value, kind) in state.items():
            attr = _attribute_name(name, taken, self)
            self._attr[name] = attr
            if isinstance(value, nn.Parameter):
                self.register_parameter(attr, value)
                self._ckpt[attr] = name
            else:
                keep = name in persistent
                self.register_buffer(attr, value, persistent=keep)
                if keep:
                    self._ckpt[attr] = name
        if any(isinstance(getattr(self, self._attr[n]), nn.Parameter) for n, k in self._kinds.items()
               if k == "constant"):
            # Trainable constants live here, not in the graph: exporting the bare graph would write the old
            # values, so the graph remembers this module and its exports check it (_freeze._check_not_tuned).
            self.graph.__dict__.setdefault("_tuned_modules", weakref.WeakSet()).add(self)
        self.eval()

    # -------------------------------------------------------------- names and state

    def __ckpt_names__(self) -> dict[str, str]:
        """``state_dict`` key -> TensorFlow name (ckpt's torch adapter saves and restores under these names)."""
        return dict(self._ckpt)

    @property
    def inputs(self) -> list[str]:
        return [f"{op}:{i}" for op, i in self._inputs]

    @property
    def outputs(self) -> list[str]:
        return [f"{op}:{i}" for op, i in self._outputs]

    @property
    def left_out(self) -> dict[str, str]:
        return dict(self._program.left_out)

    @property
    def variables(self) -> dict[str, torch.Tensor]:
        """TensorFlow variable name -> its tensor here (an ``nn.Parameter`` when trainable, else a buffer)."""
        return {name: getattr(self, attr) for name, attr in self._attr.items() if self._kinds[name] == "variable"}

    @property
    def constants(self) -> dict[str, torch.Tensor]:
        """Constant operation name -> its tensor (a buffer, or a parameter with ``constants_as_parameters``)."""
        return {name: getattr(self, attr) for name, attr in self._attr.items() if self._kinds[name] == "constant"}

    def _state(self, name: str) -> torch.Tensor:
        attr = self._attr.get(name)
        if attr is None:
            raise FeedError(f"variable {name!r} has no value in this module: it is not in the checkpoint, or this "
                            "module was cut from a larger one with module.tensor()/subgraph() that does not need "
                            "it", key=name)
        return getattr(self, attr)

    def _constant(self, op: str) -> torch.Tensor:
        attr = self._attr.get(op)
        if attr is not None:
            return getattr(self, attr)
        value = self._program.const(op, self._program.body)
        return value.to(self._device()) if isinstance(value, torch.Tensor) else value

    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # -------------------------------------------------------------- running

    def _feeds(self, feeds: Mapping[Any, Any]) -> dict[tuple[str, int], torch.Tensor]:
        out: dict[tuple[str, int], torch.Tensor] = {}
        device = self._device()
        for name, value in feeds.items():
            if isinstance(name, str) and name in self._input_aliases:
                key = self._input_aliases[name]
            else:
                key = _tensor_key(self.graph, name, what="tensor to feed")
            out[key] = self._convert_feed(key, value, device)
        return out

    def _convert_feed(self, key: tuple[str, int], value: Any, device) -> torch.Tensor:
        op = self.graph.get_operation_by_name(key[0])
        dtype_name = None
        shape = None
        if op.type in PLACEHOLDER_OPS and key[1] == 0:
            dtype_name = op.attrs.get("dtype")
            shape = op.attrs.get("shape")
        else:
            try:
                info = self.graph.get_tensor_by_name(f"{key[0]}:{key[1]}")
                dtype_name, shape = info.dtype, None
            except OperationNotFoundError:
                pass
        if dtype_name == "string":
            return self._string_feed(key, value, shape)
        dtype = torch_dtype(dtype_name)
        try:
            tensor = as_tensor(value, dtype, device)
        except (TypeError, ValueError) as exc:
            raise FeedError(f"cannot feed {type(value).__name__} to {key[0]}:{key[1]}: {exc}",
                            key=f"{key[0]}:{key[1]}") from None
        if shape is not None and (len(shape) != tensor.dim() or any(
                d is not None and d != s for d, s in zip(shape, tensor.shape))):
            raise FeedError(f"cannot feed a value of shape {tuple(tensor.shape)} for tensor '{key[0]}:{key[1]}', "
                            f"which has shape {_shape_text(shape)}", key=f"{key[0]}:{key[1]}")
        return tensor

    def _string_feed(self, key: tuple[str, int], value: Any, shape) -> np.ndarray:
        """A string tensor's value: a NumPy object array of ``bytes`` (``str`` is encoded as UTF-8)."""
        name = f"{key[0]}:{key[1]}"
        if isinstance(value, torch.Tensor):
            raise FeedError(f"{name} is a string tensor: feed bytes (or a NumPy array of bytes), not a torch tensor",
                            key=name)
        array = np.array(value, dtype=object)
        flat = array.reshape(-1)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                flat[i] = item.encode("utf-8")
            elif isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
                flat[i] = bytes(item)
            else:
                raise FeedError(f"cannot feed {type(item).__name__} to the string tensor {name}: feed bytes or str",
                                key=name)
        if shape is not None and (len(shape) != array.ndim or any(
                d is not None and d != s for d, s in zip(shape, array.shape))):
            raise FeedError(f"cannot feed a value of shape {array.shape} for tensor {name!r}, which has shape "
                            f"{_shape_text(shape)}", key=name)
        return array

    def _run_keys(self, fetches: list[tuple[str, int]], feeds: dict[tuple[str, int], torch.Tensor]) -> list:
        program = self._program
        fed = frozenset(feeds)
        plan = program.plan(program.body, tuple(dict.fromkeys(fetches)), fed)
        env: dict = dict(feeds)
        program.execute(program.body, plan, env, _Runtime(self))
        results = []
        for key in fetches:
            value = env.get(key)
            if value is DEAD:
                raise FeedError(f"tensor '{key[0]}:{key[1]}' was not computed: it is on the untaken branch of a "
                                "cond", key=f"{key[0]}:{key[1]}")
            if isinstance(value, _Resource):
                value = _Runtime(self).read(value)
            results.append(value)
        return results

    def run(self, fetches, feed_dict: Mapping[Any, Any] | None = None):
        """Evaluate tensors by name, like ``tf.compat.v1.Session.run``.

        Args:
            fetches: A tensor name (``"op_to_restore:0"``; an operation name means its first output), or a list,
                tuple or dict of them. Any tensor of the graph can be fetched.
            feed_dict: ``{tensor name: value}``; values are tensors, NumPy arrays or Python numbers, converted to the
                tensor's dtype (``bytes`` for string tensors, such as the JPEG of ``DecodeJpeg/contents:0``). Any
                tensor can be fed, which also cuts off what computes it.

        Returns:
            torch tensors in the structure of ``fetches`` (``None`` for operations without outputs, like ``NoOp``;
            NumPy object arrays of ``bytes`` for string tensors). They carry gradients back to the module's
            parameters.

        Raises:
            FeedError: a placeholder the fetches need was not fed, a value does not fit its placeholder's shape, or
                a fetch is on an untaken cond branch.
            UnsupportedOperationsError: the fetches need operations that cannot run (all listed), or a training
                or saver operation was asked for.

        Example:
            >>> module.run("op_to_restore:0", {"w1:0": 13.0, "w2:0": 17.0})      # doctest: +SKIP
            tensor(60., grad_fn=<MulBackward0>)
        """
        single = isinstance(fetches, str) or not isinstance(fetches, (list, tuple, Mapping))
        if single:
            names = [fetches]
        elif isinstance(fetches, Mapping):
            names = list(fetches.values())
        else:
            names = list(fetches)
        keys = []
        no_outputs = set()
        for name in names:
            key = _tensor_key(self.graph, name, what="tensor to fetch")
            op = self.graph.get_operation_by_name(key[0])
            if isinstance(name, str) and ":" not in name and not op.outputs:
                no_outputs.add(len(keys))
            keys.append(key)
        feeds = self._feeds(feed_dict or {})
        wanted = [k for i, k in enumerate(keys) if i not in no_outputs]
        if any(i in no_outputs for i in range(len(keys))):
            # Operations without outputs (NoOp, a train op): still checked, never run.
            nodes = [self._program.body.nodes[keys[i][0]] for i in no_outputs]
            problems = self._program.problems(self._program.body, nodes)
            if problems:
                raise _unsupported(self.graph, problems, [keys[i][0] for i in no_outputs])
        values = iter(self._run_keys(wanted, feeds)) if wanted else iter(())
        results = [None if i in no_outputs else next(values) for i in range(len(keys))]
        if single:
            return results[0]
        if isinstance(fetches, Mapping):
            return dict(zip(fetches.keys(), results))
        return type(fetches)(results) if isinstance(fetches, tuple) else results

    def forward(self, *args, **feeds):
        """Compute the outputs: positional arguments feed :attr:`inputs` in order, keywords feed by name (an
        input alias, a placeholder name such as ``keep_prob``, or any tensor name).

        Returns:
            One tensor for one output, a tuple for a list of outputs, a dict for a dict of outputs.
        """
        if len(args) > len(self._inputs):
            raise TypeError(f"this module takes {len(self._inputs)} positional input(s) ({', '.join(self.inputs)}), "
                            f"got {len(args)}")
        named: dict[Any, Any] = {}
        for key, value in zip(self._inputs, args):
            named[f"{key[0]}:{key[1]}"] = value
        named.update(feeds)
        results = self._run_keys(list(self._outputs), self._feeds(named))
        form = self._output_form
        if form == "single":
            return results[0]
        if isinstance(form, list):
            return dict(zip(form, results))
        return tuple(results)

    # -------------------------------------------------------------- fine-tuning

    def subgraph(self, outputs, inputs=None) -> GraphModule:
        """A module computing ``outputs`` (from ``inputs`` when given: tensors fed instead of computed).

        It shares this module's parameters and buffers (training one trains the other) and holds only the state the
        outputs need. Raises :class:`UnsupportedOperationsError` now if the outputs need an operation that cannot
        run.
        """
        return _make_module(self._program, self, outputs=outputs, inputs=inputs, training=self.training)

    def tensor(self, name: str, *, inputs=None) -> GraphModule:
        """A module computing one tensor (``module.tensor("fc7:0")``), to put new layers on; see :meth:`subgraph`."""
        return self.subgraph(name, inputs)

    def _match(self, patterns: Sequence[str]) -> list[str]:
        names = [n for n, attr in self._attr.items() if isinstance(getattr(self, attr), nn.Parameter)]
        matched = []
        unmatched = []
        for pattern in patterns:
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern) or any(
                fnmatch.fnmatchcase(op, pattern) for op in self._ops_of(n))]
            if not hits:
                unmatched.append(pattern)
            matched.extend(h for h in hits if h not in matched)
        if unmatched:
            raise OperationNotFoundError(
                f"no trainable variable matches {', '.join(map(repr, unmatched))}; the module's parameters are: "
                f"{', '.join(names[:30])}{' ...' if len(names) > 30 else ''}", key=unmatched[0], available=names)
        return matched

    def _ops_of(self, name: str) -> list[str]:
        s = self._program.storages.get(name)
        return s.ops if s is not None else []

    def freeze(self, *patterns: str) -> list[str]:
        """Stop training the parameters whose TensorFlow names match any glob pattern (``"conv_*"``, ``"*"``).

        Returns:
            The names affected. Raises OperationNotFoundError when a pattern matches no parameter.
        """
        names = self._match(patterns or ("*",))
        for n in names:
            getattr(self, self._attr[n]).requires_grad_(False)
        return names

    def unfreeze(self, *patterns: str) -> list[str]:
        """Train the parameters whose TensorFlow names match any glob pattern again (see :meth:`freeze`)."""
        names = self._match(patterns or ("*",))
        for n in names:
            getattr(self, self._attr[n]).requires_grad_(True)
        return names

    # -------------------------------------------------------------- export

    def _export_values(self, variable_nodes, const_nodes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Current values for freezing: ``({variable node: value}, {const node: value})``.

        Every variable node must have a value here in its graph dtype and shape, and every constant the module
        holds (trainable or a buffer a ``load_state_dict`` may have changed) keeps its graph dtype and shape;
        otherwise nothing is returned and the error lists every problem, so a frozen graph never silently holds
        values other than the module's.
        """
        from ...adapters.torch import to_numpy
        from ...tf.tensor_proto import dtype_name

        def array(t: torch.Tensor) -> np.ndarray:
            return np.array(to_numpy(t), copy=True)

        values: dict[str, np.ndarray] = {}
        consts: dict[str, np.ndarray] = {}
        absent, mismatched = [], []
        for node in variable_nodes:
            storage, index = self._program.var_storage.get(node.name, (node.name, None))
            attr = self._attr.get(storage)
            if attr is None:
                absent.append(node.name if storage == node.name else f"{storage} (for {node.name})")
                continue
            tensor = getattr(self, attr).detach()
            value = array(tensor if index is None else tensor[index])
            want = dtype_name(node.attr["dtype"].type) if "dtype" in node.attr else None
            shape = shape_from_proto(node.attr["shape"].shape) if "shape" in node.attr else None
            if want and want.replace("_ref", "") != str(value.dtype):
                mismatched.append(f"{node.name}: the graph says {want}, the module holds {value.dtype}")
            elif shape is not None and (len(shape) != value.ndim or any(
                    d is not None and d != v for d, v in zip(shape, value.shape))):
                mismatched.append(f"{node.name}: the graph says shape {_shape_text(shape)}, the module holds "
                                  f"{_shape_text(value.shape)}")
            else:
                values[node.name] = value
        for node in const_nodes:
            attr = self._attr.get(node.name)
            if attr is None or self._kinds.get(node.name) != "constant":
                continue  # not part of the module's state: it still has the graph's value
            value = array(getattr(self, attr).detach())
            tensor = node.attr["value"].tensor
            want = dtype_name(node.attr["dtype"].type if "dtype" in node.attr else tensor.dtype)
            shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
            if want != str(value.dtype) or shape != value.shape:
                mismatched.append(f"constant {node.name}: the graph holds {want} {_shape_text(shape)}, the module "
                                  f"{value.dtype} {_shape_text(value.shape)}")
                continue
            consts[node.name] = value
        if absent:
            raise CheckpointNotFoundError(
                f"cannot freeze this module: it holds no value for {len(absent)} variable(s) the outputs need: "
                f"{', '.join(absent)} (not in its checkpoint, strings, or cut away by subgraph())", key=absent[0])
        if mismatched:
            raise StateMismatchError("cannot freeze this module: its values do not fit the graph (convert them "
                                     "back, e.g. module.float()):\n  " + "\n  ".join(mismatched),
                                     mismatched=mismatched)
        return values, consts

    def _tuned_constants(self) -> dict[str, np.ndarray]:
        """Trainable constants whose value is no longer the graph's: ``{op name: current value}``."""
        from ...adapters.torch import to_numpy
        from ...tf.tensor_proto import make_ndarray

        out = {}
        for name, attr in self._attr.items():
            value = getattr(self, attr)
            if self._kinds.get(name) != "constant" or not isinstance(value, nn.Parameter):
                continue
            current = to_numpy(value)
            original = make_ndarray(self.graph.get_operation_by_name(name).node.attr["value"].tensor)
            if current.dtype != original.dtype or current.shape != original.shape or \
                    current.tobytes() != original.tobytes():
                out[name] = current
        return out

    def _current_graph(self) -> Graph:
        """The module's graph with its constants' current values (variables stay variables: their values are
        what ``ckpt.save(module, ...)`` writes). What ``export_meta_graph(module)`` and ``ckpt.save(...,
        graph=module)`` write."""
        from ...tf.protos import graph_pb2, meta_graph_pb2
        from .._freeze import _replace_constants

        gd = graph_pb2.GraphDef()
        gd.CopyFrom(self.graph.graph_def)
        _, consts = self._export_values([], [n for n in gd.node if n.op == "Const"])
        if not _replace_constants(gd, consts):
            return self.graph
        meta = None
        if self.graph.meta_graph_def is not None:
            meta = meta_graph_pb2.MetaGraphDef()
            meta.CopyFrom(self.graph.meta_graph_def)
            meta.graph_def.CopyFrom(gd)
        return Graph(gd, meta_graph_def=meta, path=None, validate=False)

    def extra_repr(self) -> str:
        n_params = sum(1 for _ in self.parameters())
        n_vars = sum(1 for k in self._kinds.values() if k == "variable")
        where = f"{self.graph.path}, " if self.graph.path else ""
        return (f"{where}inputs={self.inputs}, outputs={self.outputs}, variables={n_vars}, parameters={n_params}, "
                f"operations={len(self.graph)}")


# ----------------------------------------------------------------------------------------------- building


def _names(graph: Graph, spec, *, what: str) -> tuple[list[tuple[str, int]], Any]:
    """``str | list | dict`` of tensor names -> keys and the form the results take."""
    if isinstance(spec, Mapping):
        return [_tensor_key(graph, v, what=what) for v in spec.values()], list(spec.keys())
    if isinstance(spec, (str,)) or not isinstance(spec, (list, tuple)):
        return [_tensor_key(graph, spec, what=what)], "single"
    return [_tensor_key(graph, v, what=what) for v in spec], "tuple"


def _default_outputs(graph: Graph) -> str | list[str]:
    """The inference outputs: of the model's sinks (``graph.outputs``, which leave out gradients, optimizer, saver,
    summary, initializer and update subgraphs) and prediction-like operations, those that need the fewest inputs;
    sinks win when one needs no more inputs than any prediction (``model/Sigmoid`` over the loss's internals,
    which also need the labels), else the predictions (``ArgMax`` feeding an accuracy)."""
    sinks, predictions = graph.outputs, graph.predictions
    if not sinks and not predictions:
        raise ValueError(f"{graph.path or 'the graph'} has no obvious outputs; pass outputs=['name:0', ...]")
    needs = graph._dependencies[0]

    def minimal(ops):
        masks = {op.name: needs.get(op.name, 0) for op in ops}
        fed = [op for op in ops if masks[op.name]] or ops  # what depends on no input is no inference output
        return [op for op in fed if not any(masks[o.name] != masks[op.name]
                                            and masks[o.name] & masks[op.name] == masks[o.name] for o in fed)]

    sink_names = {op.name for op in sinks}
    both = minimal(list({op.name: op for op in predictions + sinks}.values()))
    ops = [op for op in both if op.name in sink_names] or minimal(predictions) or both
    names = [f"{op.name}:0" for op in ops]
    return names[0] if len(names) == 1 else names


def _default_checkpoint(graph: Graph) -> str | None:
    """The checkpoint a ``.meta`` file was written beside (``model.ckpt-30.meta`` -> ``model.ckpt-30``)."""
    if graph.path and graph.path.endswith(".meta"):
        prefix = graph.path[: -len(".meta")]
        if os.path.exists(prefix + ".index"):
            return prefix
    return None


def _make_module(program: _Program, source: GraphModule | None, *, outputs, inputs, training: bool,
                 values: dict[str, torch.Tensor] | None = None, persistent: set[str] | None = None,
                 check: bool = True) -> GraphModule:
    graph = program.graph
    out_keys, form = _names(graph, outputs if outputs is not None else _default_outputs(graph), what="output")
    if inputs is None:
        in_keys, aliases = [], {}
    elif isinstance(inputs, Mapping):
        in_keys = [_tensor_key(graph, v, what="input") for v in inputs.values()]
        aliases = dict(zip(inputs.keys(), in_keys))
    else:
        in_keys = [_tensor_key(graph, v, what="input") for v in ([inputs] if isinstance(inputs, str) else inputs)]
        aliases = {}
    fed = frozenset(in_keys)
    fetches = tuple(dict.fromkeys(out_keys))
    if check:  # requested outputs: what they need must run (the plan is cached); raises now, listing every problem
        nodes = [step.node for step in program.plan(program.body, fetches, fed).steps]
    else:  # default outputs: problems surface when they are computed, other fetches run meanwhile
        nodes = _needed_or_none(program, fetches, fed)
    if inputs is None:
        in_keys = [(n.name, 0) for n in nodes if n.type in PLACEHOLDER_OPS and n.type != "PlaceholderWithDefault"
                   and n.name not in program.mode_placeholders]
        in_keys.sort(key=lambda k: program.body.position[k[0]])
    if source is not None:  # a cut of an existing module: share what the outputs need, in graph order
        state = {}
        for op in (n.name for n in nodes):
            if op in program.var_storage:
                name = program.var_storage[op][0]
                if name in source._attr:
                    state[name] = (getattr(source, source._attr[name]), "variable")
            elif op in source._attr and source._kinds.get(op) == "constant":
                state[op] = (getattr(source, source._attr[op]), "constant")
        persistent = {n for n in state if n in source._ckpt.values()}
    else:
        state = {}
        persistent = set(persistent or ())
        for name, value in (values or {}).items():
            kind = "variable" if name in program.storages else "constant"
            state[name] = (value, kind)
            if kind == "variable":
                persistent.add(name)  # every variable is saved, so TensorFlow's Saver finds all it restores
    module = GraphModule(program, inputs=(in_keys, aliases), outputs=(out_keys, form), state=state,
                         persistent=persistent or set())
    module.train(training)
    return module


def _needed_or_none(program: _Program, fetches, fed) -> list[_Node]:
    """The nodes ``fetches`` depend on, or none when that cannot be worked out (a while loop's cycle)."""
    try:
        return program.needed(program.body, fetches, fed)
    except UnsupportedOperationsError:
        return []


def _read_state(program: _Program, checkpoint, needed_vars: set[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Values of the variables from the checkpoint; problems with variables the outputs need are raised (all)."""
    from ...reader import Reader

    reader = checkpoint if hasattr(checkpoint, "keys") and hasattr(checkpoint, "entry") else Reader(checkpoint)
    own = reader is not checkpoint
    try:
        values: dict[str, np.ndarray] = {}
        absent, mismatched, skipped = [], [], []
        for name, s in program.storages.items():
            key = name
            if key not in reader:
                (absent if needed_vars & set(s.ops) else skipped).append(name)
                continue
            value = np.array(reader[key])
            if value.dtype.kind in "OSU":  # torch has no strings (vocabularies, file names)
                if needed_vars & set(s.ops):
                    mismatched.append(f"{name}: holds strings, which PyTorch cannot represent")
                else:
                    skipped.append(name)
                continue
            if s.dtype and s.dtype != "invalid" and str(value.dtype) != s.dtype.replace("_ref", ""):
                mismatched.append(f"{name}: the graph says {s.dtype}, the checkpoint holds {value.dtype}")
                continue
            if s.shape is not None and (len(s.shape) != value.ndim or any(
                    d is not None and d != v for d, v in zip(s.shape, value.shape))):
                mismatched.append(f"{name}: the graph says shape {_shape_text(s.shape)}, the checkpoint holds "
                                  f"{_shape_text(value.shape)}")
                continue
            values[name] = value
        if absent:
            raise CheckpointNotFoundError(
                f"{reader.prefix}: no value for {len(absent)} variable(s) the outputs need: {', '.join(absent)}",
                path=reader.prefix, key=absent[0], available=reader.keys())
        if mismatched:
            raise StateMismatchError(f"{reader.prefix}: checkpoint values do not fit the graph:\n  "
                                     + "\n  ".join(mismatched), path=reader.prefix, mismatched=mismatched)
        return values, skipped
    finally:
        if own:
            reader.close()


def _initial_values(program: _Program, needed_vars: set[str]) -> dict[str, np.ndarray]:
    """Variables' values from their initializers (``initial_value`` tensors), as ``global_variables_initializer``."""
    graph = program.graph
    initial: dict[str, tuple[str, int]] = {}
    for key in ("variables", "local_variables", "trainable_variables"):
        for entry in graph.collections.get(key, ()):
            var = parse_input(entry.get("variable_name", "")).op
            if entry.get("initial_value_name"):
                initial.setdefault(var, _tensor_key(graph, entry["initial_value_name"]))
    for op in graph.operations:
        if op.type in ("Assign", "AssignVariableOp") and len(op.data_inputs) == 2:
            target = op.data_inputs[0].op
            if target in program.var_storage and target not in initial and graph.role(op.name) == "init":
                initial[target] = (op.data_inputs[1].op, op.data_inputs[1].index)
    probe = GraphModule(program, inputs=([], {}), outputs=([], "tuple"), state={}, persistent=set())
    values: dict[str, np.ndarray] = {}
    failed = []
    for name, s in program.storages.items():
        full = None
        try:
            for op in s.ops:
                if op not in initial:
                    raise FeedError(f"no initializer for {op}")
                (value,) = probe._run_keys([initial[op]], {})
                array = value.detach().cpu().numpy()
                if s.parts:
                    if full is None:
                        # The full shape is the graph's SaveSliceInfo: an untrusted number, checked before use.
                        _created(s.shape, as_tensor(array).dtype, f"full shape of partitioned variable {name}")
                        full = np.zeros(s.shape, dtype=array.dtype)
                    offset, shape = s.parts[op]
                    full[tuple(slice(o, o + n) for o, n in zip(offset, shape))] = array
                else:
                    full = array
        except (CheckpointError, KeyError, ValueError) as exc:
            if needed_vars & set(s.ops):
                failed.append(f"{name}: {exc}")
            continue
        values[name] = full
    if failed:
        raise UnsupportedOperationsError("without a checkpoint, variables start from their initializers, and these "
                                         "cannot run:\n  " + "\n  ".join(failed) + "\npass checkpoint=PREFIX",
                                         operations={"initializer": failed}, outputs=[])
    return values


def to_torch(graph_or_path, checkpoint=None, *, inputs=None, outputs=None,
             constants_as_parameters: bool | str | Sequence[str] = False, signature: str | None = None,
             tags=("serve",)) -> GraphModule:
    """Turn a TensorFlow 1 graph and its checkpoint into a trainable PyTorch module (see the module docstring).

    Args:
        graph_or_path: A :class:`ckpt.graph.Graph`, a path to a ``.meta``/``.pb``/``.pbtxt`` file (or a checkpoint
            directory: the graph of its newest checkpoint), or a GraphDef/MetaGraphDef (ckpt's or TensorFlow's).
        checkpoint: Where the variables' values are: a prefix, a directory, one of its files or an open
            :class:`ckpt.Reader`. Default: the checkpoint beside a ``.meta`` file. Without one, variables start from
            their initializers (random, as ``global_variables_initializer``) and a warning says so.
        inputs: Tensor names ``module(*args)`` feeds by position, as a list, or a dict ``{alias: name}`` to feed them
            by keyword. Naming an intermediate tensor cuts the graph there. Default: the placeholders the outputs
            need (those without a default, in graph order).
        outputs: The tensor(s) ``module(...)`` returns: a name, a list (a tuple is returned) or a dict (a dict is
            returned); checked now. Default: the inference outputs: of the operations nothing in the model consumes
            (gradients, optimizer, saver, summaries, initializers and state updates left out) and the
            prediction-like ones (``ArgMax`` in the seed CNN), those needing the fewest inputs; not checked
            until computed. Whatever the outputs, ``module.run`` computes any tensor whose subgraph can run.
        constants_as_parameters: For frozen graphs: make floating-point constants trainable parameters: True for
            all, or glob pattern(s) of constant names (``"fc_layer_2/*"``).
        signature: For a SavedModel: the signature to run (default ``"serving_default"`` when neither ``inputs``
            nor ``outputs`` are given): the module takes its inputs by keyword (``module(x=...)``) and returns a
            dict of its outputs; variables come from ``DIR/variables`` through the SavedModel's object graph.
        tags: For a SavedModel: the meta graph's tag set.

    Returns:
        A :class:`GraphModule` in eval mode.

    Raises:
        UnsupportedOperationsError: the requested outputs need operations that cannot run (every one listed,
            with its path from the output), or training/saver operations.
        CheckpointNotFoundError: a variable the outputs need is not in the checkpoint (all listed).
        StateMismatchError: checkpoint values whose dtype or shape do not fit the graph (all listed).
        OperationNotFoundError: an input or output name is not in the graph.

    Example:
        >>> net = ckpt.graph.to_torch("model/my_test_model-1000.meta", ckpt.latest("model"))   # doctest: +SKIP
        >>> net.run("op_to_restore:0", {"w1:0": 13.0, "w2:0": 17.0})
        tensor(60., grad_fn=<MulBackward0>)
    """
    if isinstance(graph_or_path, Graph):
        graph = graph_or_path
    elif isinstance(graph_or_path, (str, os.PathLike)):
        from .. import load

        graph = load(graph_or_path, tags=tags)
    else:
        graph = Graph(graph_or_path)
    if hasattr(graph, "signature_specs"):  # a SavedModel: its signature and its variables directory by default
        if signature is not None or (inputs is None and outputs is None and graph.signature_specs):
            sig = graph.signature(signature or "serving_default")
            inputs = {k: v.name for k, v in sig.inputs.items()} if inputs is None else inputs
            outputs = {k: v.name for k, v in sig.outputs.items()} if outputs is None else outputs
        if checkpoint is None and os.path.exists(graph.variables_prefix + ".index"):
            checkpoint = graph.variables_prefix
    elif signature is not None:
        raise ValueError(f"signature={signature!r}: {graph.path or 'the graph'} is not a SavedModel")
    program = _Program(graph)
    # Check the outputs before reading anything.
    out_spec = outputs if outputs is not None else _default_outputs(graph)
    out_keys, _ = _names(graph, out_spec, what="output")
    in_keys = []
    if inputs is not None:
        values_ = inputs.values() if isinstance(inputs, Mapping) else ([inputs] if isinstance(inputs, str) else inputs)
        in_keys = [_tensor_key(graph, v, what="input") for v in values_]
    fetches = tuple(dict.fromkeys(out_keys))
    if outputs is not None:  # what was asked for must run: fail now, naming every operation that cannot
        nodes = [step.node for step in program.plan(program.body, fetches, frozenset(in_keys)).steps]
    else:  # the default outputs are a guess: a problem with them surfaces when they are computed
        nodes = _needed_or_none(program, fetches, frozenset(in_keys))
    needed_vars = {n.name for n in nodes if n.type in VARIABLE_OPS}

    values: dict[str, Any] = {}
    if program.storages:
        if checkpoint is None:
            checkpoint = _default_checkpoint(graph)
        if checkpoint is not None:
            arrays, skipped = _read_state(program, checkpoint, needed_vars)
            if skipped:
                logger.info("ckpt.graph.to_torch: %d variable(s) are not in the checkpoint and are left out (the "
                            "outputs do not need them): %s", len(skipped), ", ".join(skipped[:10]))
        else:
            warnings.warn(f"{graph.path or 'graph'}: no checkpoint given or found beside the graph; variables start "
                          "from their initializers (random), as after tf.compat.v1.global_variables_initializer(). "
                          "Pass checkpoint=PREFIX for trained values.",
                          stacklevel=3)  # points at the caller of ckpt.graph.to_torch
            arrays = _initial_values(program, needed_vars)
        for name, array in arrays.items():
            s = program.storages[name]
            tensor = as_tensor(array)
            if s.trainable and (tensor.dtype.is_floating_point or tensor.dtype.is_complex):
                values[name] = nn.Parameter(tensor, requires_grad=True)
            else:
                values[name] = tensor

    # Constants: the model's own (not the saver's, initializers' or training step's).
    frozen = not program.storages
    if constants_as_parameters is True:
        patterns = ["*"]
    elif constants_as_parameters:
        patterns = [constants_as_parameters] if isinstance(constants_as_parameters, str) \
            else list(constants_as_parameters)
    else:
        patterns = []
    persistent: set[str] = set()
    matched_patterns = set()
    for node in program.body.nodes.values():
        if node.type != "Const" or node.name in program.left_out or graph.role(node.name) != "model":
            continue
        try:
            tensor = _const_tensor(node)
        except UnsupportedOperationsError:
            continue  # string constants: only their consumers can fail, and those are checked by plan()
        floating = tensor.dtype.is_floating_point
        hit = [p for p in patterns if fnmatch.fnmatchcase(node.name, p)] if floating else []
        if hit:
            matched_patterns.update(hit)
            values[node.name] = nn.Parameter(tensor, requires_grad=True)
        else:
            values[node.name] = tensor
            if frozen and floating:
                persistent.add(node.name)
    unmatched = [p for p in patterns if p not in matched_patterns and p != "*"]
    if unmatched:
        raise OperationNotFoundError(f"constants_as_parameters: no floating-point constant matches "
                                     f"{', '.join(map(repr, unmatched))}", key=unmatched[0])
    if program.left_out:
        logger.info("ckpt.graph.to_torch: %d training, assignment and saver operation(s) are left out "
                    "(module.left_out says why)", len(program.left_out))
    return _make_module(program, None, outputs=out_spec, inputs=inputs, training=False, values=values,
                        persistent=persistent, check=outputs is not None)
