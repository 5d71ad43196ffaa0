"""TensorFlow and Keras 3 adapter: variables, tensors, ``tf.Module``\\ s, Keras models, layers and optimizers.

Variables are restored in place with ``.assign``, and the restored tree holds the same objects. Eager tensors
(``tf.constant``) are immutable, so a restore returns new ones, placed on the target's device.

Naming. Names follow the object structure, never TensorFlow's or Keras' global name counters, because those
counters differ between two instances of one architecture in the same process (``dense`` and then ``dense_1``).
The top-level object's own name is left out, and the state tree's key is used in its place.

* ``tf.Module``: the attribute path reported by ``module._flatten(with_path=True)``. ``self.layer.kernel`` is
  saved as ``<name>/layer/kernel``, ``self.layers[0].kernel`` as ``<name>/layers/0/kernel`` and
  ``self.d["x"]`` as ``<name>/d/x``. Keras layers, optimizers and ``tf.random.Generator``\\ s found among the
  attributes are named from there down by the rules below.
* Keras models and layers: a layer's own variables come first, under their short name (``kernel``, ``bias``,
  ``moving_mean``, ``seed_generator_state``), then its sublayers in tracking order (``model.layers`` order). Each
  sublayer is named after its class in snake case, with ``_<k>`` added for the k-th repeat of that class among
  its siblings: ``<name>/conv2d/kernel``, ``<name>/dense/kernel``, ``<name>/dense_1/kernel``. Keras uses the
  same rule for the layer lists in its ``.weights.h5`` files, and for a model built first in a fresh process
  these names are Keras' default layer names. Unlike Keras, ckpt keeps a name the user chose: a layer whose
  name does not look like ``<class>`` or ``<class>_<n>`` (``Dense(10, name="logits")``) is saved under that
  name. So Sequential and functional models with the same layers get the same names, and adding weightless
  layers of other classes (``Flatten``, ``Dropout``) changes no name. Non-trainable weights (BatchNormalization
  statistics) and the state of ``SeedGenerator``\\ s (``Dropout``) are saved. Metric variables are not, since
  they belong to ``compile``.
* Keras optimizers: ``<name>/iteration``, ``<name>/learning_rate`` and one entry per slot, named after its
  parameter: ``<name>/<parameter name>/<slot>``, for example ``optimizer/model/dense/kernel/momentum``. This
  needs the model to be in the same state tree (``{"model": m, "optimizer": opt}``). Otherwise the slots are
  ``<name>/param<i>/<slot>``, numbered as the optimizer was built. A fresh optimizer that was never built is built
  during the restore on the parameters that the checkpoint names, the same ones ``model.fit`` would build it on.
  This only creates its zero-filled slots, and it happens even if the restore then fails its comparison.

Variables reachable under several names (shared layers, tied weights) are stored once, and the other names are
aliases. Dtypes map with ``dtype.as_numpy_dtype`` (bfloat16 becomes ``ml_dtypes.bfloat16`` and strings become
``object`` arrays of bytes).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from typing import Any

import numpy as np
import tensorflow as tf

from ..errors import DTypeNotSupportedError
from ..tf import dtypes as _dtypes
from ..tree import Context, Group, GroupPlan, Leaf, join, nested_spec

__all__ = ["walk", "prescan", "variable_leaf", "numpy_dtype"]

_DATA = "tensorflow"  # key of this adapter's scratch space in Context.adapter_data


# ----------------------------------------------------------------------------------------------- dtypes


def numpy_dtype(dtype: Any) -> np.dtype | None:
    """The NumPy dtype a TensorFlow or Keras dtype is saved as, or None when checkpoints cannot hold it."""
    try:
        np_dtype = np.dtype(tf.as_dtype(dtype).as_numpy_dtype)
        if np_dtype.kind in "SU":
            np_dtype = np.dtype(object)
        _dtypes.from_numpy(np_dtype)
    except (TypeError, ValueError, DTypeNotSupportedError):  # resource, variant, quantized types
        return None
    return np_dtype


# ----------------------------------------------------------------------------------------------- Keras lookups


def _keras() -> Any:
    """The ``keras`` module if something imported it (no Keras object can exist otherwise), else None."""
    return sys.modules.get("keras")


def _isinstance(obj: Any, attr: str) -> bool:
    keras = _keras()
    if keras is None:
        return False
    cls = keras
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            return False
    return isinstance(obj, cls)


def _is_variable(obj: Any) -> bool:
    return isinstance(obj, tf.Variable) or _isinstance(obj, "Variable")


def _is_member(obj: Any) -> bool:
    """What a ``tf.Module`` walk picks up: anything with state this adapter saves."""
    return (_is_variable(obj) or isinstance(obj, tf.random.Generator) or _isinstance(obj, "layers.Layer")
            or _isinstance(obj, "optimizers.Optimizer") or _isinstance(obj, "random.SeedGenerator"))


# ----------------------------------------------------------------------------------------------- prescan


def _data(ctx: Context) -> dict[str, Any]:
    return ctx.adapter_data.setdefault(_DATA, {"by_name": {}})


def prescan(obj: Any, name: str, ctx: Context) -> None:
    """Learn every model variable's name before an optimizer that refers to it is met."""
    if not (isinstance(obj, tf.Module) or _isinstance(obj, "layers.Layer")):
        return
    by_name = _data(ctx)["by_name"]
    for parts, value in _members(obj):
        if _is_variable(value):
            full = join(name, "/".join(parts))
            ctx.param_names.setdefault(id(value), full)
            by_name.setdefault(full, value)


# ----------------------------------------------------------------------------------------------- walking


def walk(obj: Any, name: str, ctx: Context):
    if _is_variable(obj):
        return variable_leaf(obj, name, ctx)
    if isinstance(obj, tf.Tensor):
        return _tensor(obj, name, ctx)
    if _isinstance(obj, "optimizers.Optimizer"):
        return _optimizer(obj, name, ctx)
    if _isinstance(obj, "layers.Layer") or isinstance(obj, tf.Module):
        return _container(obj, name, ctx)
    if isinstance(obj, tf.random.Generator) or _isinstance(obj, "random.SeedGenerator"):
        node, _ = variable_leaf(obj.state, name, ctx)
        return {"object": f"{_origin(obj)}:{type(obj).__name__}", "state": node}, lambda: obj
    return None


def _origin(obj: Any) -> str:
    return "keras" if type(obj).__module__.split(".", 1)[0] == "keras" else "tf"


def _make_leaf(var: Any, name: str) -> tuple[Leaf | None, str | None]:
    """A leaf restoring ``var`` in place, or ``(None, why not)``."""
    np_dtype = numpy_dtype(var.dtype)
    if np_dtype is None:
        return None, f"{name!r}: a variable of dtype {var.dtype} cannot be stored in a checkpoint"
    shape = tf.TensorShape(var.shape)
    value = getattr(var, "value", None)  # a Keras variable's backend variable; reading it directly is cheaper
    source = value if isinstance(value, tf.Variable) else var

    def get() -> np.ndarray:
        return np.asarray(source.numpy() if hasattr(source, "numpy") else source)

    def assign(array: np.ndarray) -> Any:
        if isinstance(var, tf.Variable):
            var.assign(tf.convert_to_tensor(np.asarray(array), dtype=var.dtype))
        else:  # a Keras variable converts with its own backend (TensorFlow, JAX or torch)
            var.assign(np.asarray(array))
        return var

    # A variable of unknown shape (tf.Variable(..., shape=tf.TensorShape(None))) accepts any saved shape.
    return Leaf(name, get, tuple(shape.as_list()) if shape.is_fully_defined() else None, np_dtype, assign, var), None


def variable_leaf(var: Any, name: str, ctx: Context):
    """Register a ``tf.Variable`` or Keras variable, restored in place. Returns ``(spec node, rebuild)``."""
    leaf, problem = _make_leaf(var, name)
    if leaf is None:
        return ctx.problem(problem), lambda: var
    node = ctx.add_leaf(leaf, storage_key=("tf", id(var)), kind="keras" if _isinstance(var, "Variable") else "tf")
    return node, lambda: var


def _tensor(t: tf.Tensor, name: str, ctx: Context):
    if tf.is_symbolic_tensor(t):
        return (ctx.problem(f"{name!r}: a symbolic tensor (inside tf.function or a graph) has no values; save "
                            "eager tensors or variables"), lambda: t)
    np_dtype = numpy_dtype(t.dtype)
    if np_dtype is None:
        return ctx.problem(f"{name!r}: a tensor of dtype {t.dtype.name} cannot be stored in a checkpoint"), lambda: t

    def assign(array: np.ndarray) -> tf.Tensor:
        with tf.device(t.device):  # a private copy: the reader's arrays view a memory map TF could alias
            return tf.identity(tf.constant(np.array(array, copy=True), dtype=t.dtype))

    leaf = Leaf(name, t.numpy, tuple(t.shape.as_list()), np_dtype, assign, t)
    node = ctx.add_leaf(leaf, kind="tf")
    return node, lambda: leaf.result


# ----------------------------------------------------------------------------------------------- containers


_SNAKE_1 = re.compile(r"(.)([A-Z][a-z]+)")
_SNAKE_2 = re.compile(r"([a-z])([A-Z])")


def _snake(class_name: str) -> str:
    """Keras' ``to_snake_case``: ``BatchNormalization`` -> ``batch_normalization``, ``Conv2D`` -> ``conv2d``."""
    name = re.sub(r"\W+", "", class_name)
    return _SNAKE_2.sub(r"\1_\2", _SNAKE_1.sub(r"\1_\2", name)).lower()


def _sublayers(layer: Any) -> list[Any]:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def _child_keys(children: list[Any], used: set[str]) -> list[str]:
    """Structural names for sibling layers: explicit names kept, auto-named ones ``<class>`` / ``<class>_<k>``."""
    keys: list[str | None] = []
    for child in children:
        snake = _snake(type(child).__name__)
        name = str(getattr(child, "name", "") or "")
        explicit = name and not re.fullmatch(re.escape(snake) + r"(_\d+)?", name) and name not in used
        keys.append(name if explicit else None)
        if explicit:
            used.add(name)
    counters: Counter[str] = Counter()
    out = []
    for child, key in zip(children, keys):
        if key is None:
            snake = _snake(type(child).__name__) or "layer"
            while True:
                k = counters[snake]
                counters[snake] += 1
                key = snake if k == 0 else f"{snake}_{k}"
                if key not in used:
                    break
            used.add(key)
        out.append(key)
    return out


def _unique(key: str, used: set[str]) -> str:
    out, k = key, 0
    while out in used:
        k += 1
        out = f"{key}_{k}"
    used.add(out)
    return out


def _layer_members(layer: Any, parts: tuple) -> list[tuple[tuple, Any]]:
    """``(path parts, variable)`` for a Keras layer: own variables, then each sublayer's, recursively."""
    children = _sublayers(layer)
    in_children = {id(v) for child in children for v in child.variables}
    used: set[str] = set()
    out: list[tuple[tuple, Any]] = []
    for var in layer.variables:
        if id(var) not in in_children:
            out.append((parts + (_unique(str(getattr(var, "name", "") or "variable"), used),), var))
    for key, child in zip(_child_keys(children, used), children):
        out.extend(_layer_members(child, parts + (key,)))
    return out


def _members(obj: Any, parts: tuple = ()) -> list[tuple[tuple, Any]]:
    """``(path parts, member)`` for a Keras layer or ``tf.Module``; members are variables and optimizers."""
    if _isinstance(obj, "layers.Layer"):
        return _layer_members(obj, parts)
    out: list[tuple[tuple, Any]] = []
    for path, value in obj._flatten(predicate=_is_member, with_path=True):
        path = parts + tuple(str(p) for p in path)
        if _isinstance(value, "layers.Layer"):
            out.extend(_layer_members(value, path))
        elif isinstance(value, tf.random.Generator) or _isinstance(value, "random.SeedGenerator"):
            out.append((path, value.state))
        else:
            out.append((path, value))
    return out


def _container(obj: Any, name: str, ctx: Context):
    """A ``tf.Module`` or Keras layer/model: its variables by structure, restored in place."""
    kind = f"{_origin(obj)}:{type(obj).__name__}"
    if ctx.restoring and _isinstance(obj, "layers.Layer") and not obj.built:
        return (ctx.problem(f"{name or '<root>'!r}: the Keras {type(obj).__name__} is not built, so it has no "
                            "variables to restore into yet; build it first (give it a keras.Input, or call it on "
                            "one batch)"), lambda: obj)
    items = []
    for parts, value in _members(obj):
        full = join(name, "/".join(parts))
        if _is_variable(value):
            node, _ = variable_leaf(value, full, ctx)
        else:
            node, _ = walk(value, full, ctx)
        items.append((list(parts), node))
    return {"object": kind, "state": nested_spec(items, name, ctx)}, lambda: obj


# ----------------------------------------------------------------------------------------------- optimizers


def _optimizer_members(opt: Any, ctx: Context) -> tuple[list[str], list[tuple[list[str], Any]]]:
    """The names of the parameters ``opt`` was built on, and ``(path parts, variable)`` for its variables.

    Keras names a slot ``<parameter path with _ for />_<slot>`` (``sequential_dense_kernel_momentum``); the longest
    parameter prefix that matches tells whose slot it is. Parameters whose paths coincide after that
    substitution are told apart by order, in which Keras creates their slots.
    """
    refs = list(getattr(opt, "_trainable_variables", None) or [])
    params = [ctx.param_names.get(id(ref)) or f"param{i}" for i, ref in enumerate(refs)]
    by_prefix: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        path = getattr(ref, "path", None) or str(ref.name).replace(":", "_")
        by_prefix.setdefault(path.replace("/", "_") + "_", []).append(i)
    seen: Counter[tuple[str, str]] = Counter()
    used: set[str] = set()
    out = []
    for var in opt.variables:
        vname = str(var.name)
        # The longest parameter prefix: try each "_" from the right (prefixes end in "_", a slot name follows).
        cuts = (i + 1 for i in range(len(vname) - 2, -1, -1) if vname[i] == "_")
        prefix = next((vname[:cut] for cut in cuts if vname[:cut] in by_prefix), None)
        parts = [vname]
        if prefix is not None:
            slot = vname[len(prefix):]
            n = seen[(prefix, slot)]
            seen[(prefix, slot)] += 1
            if n < len(by_prefix[prefix]):
                parts = params[by_prefix[prefix][n]].split("/") + [slot]
        joined = _unique("/".join(parts), used)
        out.append((joined.split("/"), var))
    return params, out


def _optimizer(opt: Any, name: str, ctx: Context):
    kind = f"keras:{type(opt).__name__}"
    if ctx.restoring and not opt.built:  # which slots exist is only known once it is built; see _plan_unbuilt
        ctx.groups.append(Group(name, lambda available, saved: _plan_unbuilt(opt, name, ctx, available, saved)))
        return {"object": kind}, lambda: opt
    params, members = _optimizer_members(opt, ctx)
    items = [(parts, variable_leaf(var, join(name, "/".join(parts)), ctx)[0]) for parts, var in members]
    # "param_groups" is where ckpt.restore(map=...) also renames parameter names (as for torch optimizers).
    spec = {"object": kind, "param_groups": [{"params": params}], "state": nested_spec(items, name, ctx)}
    return spec, lambda: opt


def _plan_unbuilt(opt: Any, name: str, ctx: Context, available, saved) -> GroupPlan:
    """Build a fresh optimizer on the parameters the checkpoint names, then compare its variables."""
    from ..api import _check_leaf

    plan = GroupPlan()
    if not isinstance(saved, dict) or "state" not in saved:
        plan.missing.append(f"{name} (optimizer state: the checkpoint has none under this name)")
        return plan
    groups = saved.get("param_groups") or [{}]
    saved_params = list(groups[0].get("params", [])) if isinstance(groups[0], dict) else []
    by_name = _data(ctx)["by_name"]
    absent = [p for p in saved_params if p not in by_name]
    if absent:
        plan.missing.extend(f"{name}: parameter {p} (the optimizer was saved training it; no model in the state "
                            "has it)" for p in absent)
        return plan
    if saved_params:
        opt.build([by_name[p] for p in saved_params])
    ready = []
    for parts, var in _optimizer_members(opt, ctx)[1]:
        full = join(name, "/".join(parts))
        leaf, problem = _make_leaf(var, full)
        if leaf is None:
            plan.mismatched.append(problem)
        elif full not in available:
            plan.missing.append(full)
        else:
            plan.claimed.add(full)
            problem = _check_leaf(leaf, *available[full])
            if problem:
                plan.mismatched.append(problem)
            else:
                ready.append(leaf)

    def apply(read) -> None:
        for leaf in ready:
            leaf.assign(read(leaf.name))

    plan.apply = apply
    return plan
