"""PyTorch adapter: tensors, modules, optimizers, LR schedulers, generators and other ``state_dict`` objects.

Naming follows the module tree: ``model.fc1.weight`` is saved as ``model/fc1/weight``. Optimizer slots are named
after the parameter they belong to (``optimizer/model/fc1/weight/exp_avg``), never by PyTorch's integer ids, so a
checkpoint survives reordering parameters or param groups. That needs the module owning the parameters to be in
the same state tree as the optimizer; parameters no module names fall back to ``group<g>/param<i>``.

Tied tensors (one storage under several names, e.g. shared embedding and output weights) are stored once; the
other names are recorded as aliases, and restoring the storage restores every name that shares it.

A module can choose its own checkpoint names: ``__ckpt_names__()`` returning ``{state_dict key: name}`` replaces
the ``.`` -> ``/`` rule for those keys (the graph modules of ``ckpt.graph.to_torch`` use it to write TensorFlow's
variable names back). It applies to the module's own keys, under its path in the tree when it is a submodule.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import ml_dtypes
import numpy as np
import torch

from ..errors import UnsupportedError
from ..tree import Context, Group, GroupPlan, Leaf, find_spec, iter_spec_leaves, join, nested_spec, stateful

_SPECIAL = {  # torch dtypes NumPy has only through ml_dtypes: (numpy dtype, same-size integer torch dtype)
    torch.bfloat16: (np.dtype(ml_dtypes.bfloat16), torch.int16),
    torch.float8_e4m3fn: (np.dtype(ml_dtypes.float8_e4m3fn), torch.uint8),
    torch.float8_e5m2: (np.dtype(ml_dtypes.float8_e5m2), torch.uint8),
    torch.float8_e4m3fnuz: (np.dtype(ml_dtypes.float8_e4m3fnuz), torch.uint8),
    torch.float8_e5m2fnuz: (np.dtype(ml_dtypes.float8_e5m2fnuz), torch.uint8),
}
_BY_NUMPY = {np_dtype: (torch_dtype, int_dtype) for torch_dtype, (np_dtype, int_dtype) in _SPECIAL.items()}


def numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """The NumPy dtype a torch dtype is saved as, or None."""
    if dtype in _SPECIAL:
        return _SPECIAL[dtype][0]
    try:
        return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
    except (TypeError, RuntimeError):
        return None


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's memory (a host copy for other devices)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    special = _SPECIAL.get(t.dtype)
    if special is not None:
        return t.view(special[1]).numpy().view(special[0])
    return t.numpy()


def from_numpy(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory (read-only arrays are fine: ckpt only reads from it)."""
    array = np.asarray(array)
    special = _BY_NUMPY.get(array.dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        if special is not None:
            int_np = np.int16 if array.dtype.itemsize == 2 else np.uint8
            return torch.from_numpy(array.view(int_np)).view(special[0])
        return torch.from_numpy(array)


def from_loaded(array: np.ndarray, name: str) -> torch.Tensor:
    """``ckpt.load(framework="torch")``: a CPU tensor over ``array`` (a private copy: no further copy)."""
    try:
        return from_numpy(array)
    except TypeError:
        raise UnsupportedError(f"{name!r}: torch has no dtype for {array.dtype}; load it with framework='numpy'",
                               key=name) from None


# ----------------------------------------------------------------------------------------------- prescan


def prescan(obj: Any, name: str, ctx: Context) -> None:
    """Learn every module parameter's name before an optimizer refers to it."""
    if isinstance(obj, torch.nn.Module):
        renamed = _ckpt_names(obj)
        for pname, param in obj.named_parameters(remove_duplicate=False):
            parts = renamed.get(pname)
            ctx.param_names.setdefault(id(param), join(name, "/".join(parts) if parts else pname.replace(".", "/")))


def _ckpt_names(module: torch.nn.Module) -> dict[str, list[str]]:
    """``state_dict`` key -> name parts, for the keys of (sub)modules that define ``__ckpt_names__()``."""
    found: dict[str, list[str]] = {}
    for path, sub in module.named_modules(remove_duplicate=False):
        if not callable(getattr(type(sub), "__ckpt_names__", None)):
            continue
        # The chosen name stays one part: "W" and "W/Adam" are siblings in the spec, not a leaf with a child.
        for key, ckpt_name in sub.__ckpt_names__().items():
            found[f"{path}.{key}" if path else key] = (path.split(".") if path else []) + [ckpt_name]
    return found


# ----------------------------------------------------------------------------------------------- walking


def walk(obj: Any, name: str, ctx: Context):
    if isinstance(obj, torch.Tensor):
        return tensor_leaf(obj, name, ctx)
    if isinstance(obj, torch.nn.Module):
        return _module(obj, name, ctx)
    if isinstance(obj, torch.optim.Optimizer):
        return _optimizer(obj, name, ctx)
    if isinstance(obj, torch.Generator):
        return _generator(obj, name, ctx)
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        return _stateful(obj, name, ctx)  # LR schedulers, GradScaler, ...
    return None


def tensor_leaf(t: torch.Tensor, name: str, ctx: Context):
    if t.layout != torch.strided:
        return ctx.problem(f"{name!r}: {t.layout} tensors are not supported; convert with .to_dense()"), lambda: t
    if t.is_meta:
        return ctx.problem(f"{name!r}: a meta tensor has no values to save"), lambda: t
    np_dtype = numpy_dtype(t.dtype)
    if np_dtype is None:
        return ctx.problem(f"{name!r}: torch dtype {t.dtype} has no checkpoint counterpart"), lambda: t

    def assign(array: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            t.copy_(from_numpy(array))
        return t

    def buffer() -> np.ndarray | None:
        # The tensor's own memory as a writable NumPy view, only where no device copy or conversion is needed.
        if t.device.type != "cpu" or not t.is_contiguous() or t.is_conj() or t.is_neg() or t.dtype != dtype:
            return None
        d = t.detach()
        special = _SPECIAL.get(d.dtype)
        try:
            array = d.view(special[1]).numpy().view(special[0]) if special is not None else d.numpy()
        except (RuntimeError, TypeError, ValueError):
            return None
        return array if array.dtype == np_dtype and array.flags.writeable and array.flags.c_contiguous else None

    dtype = t.dtype
    leaf = Leaf(name, lambda: to_numpy(t), tuple(t.shape), np_dtype, assign, t, buffer)
    key = None
    if t.numel():
        key = ("torch", t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               tuple(t.stride()), t.dtype)
    node = ctx.add_leaf(leaf, storage_key=key, kind="torch")
    return node, lambda: t


def _module(module: torch.nn.Module, name: str, ctx: Context):
    items = []
    extra = []
    renamed = _ckpt_names(module)
    for key, value in module.state_dict(keep_vars=True).items():
        parts = renamed.get(key) or key.split(".")
        full = join(name, "/".join(parts))
        if isinstance(value, torch.Tensor):
            node, _ = tensor_leaf(value, full, ctx)
        else:  # a submodule's get_extra_state(): kept when it is JSON data
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                node = ctx.problem(f"{full!r}: extra state of type {type(value).__name__} is not JSON data")
            else:
                node = {"json": value}
                extra.append((key, full))
        items.append((parts, node))
    if extra and ctx.restoring:
        ctx.groups.append(Group(name, lambda available, saved: _plan_extra(module, name, extra, saved)))
    spec = {"object": f"torch:{type(module).__qualname__}", "state": nested_spec(items, name, ctx)}
    return spec, lambda: module


def _plan_extra(module: torch.nn.Module, name: str, extra: list[tuple[str, str]], saved: Any) -> GroupPlan:
    plan = GroupPlan()
    values = []
    for key, full in extra:
        node = find_spec(saved, "/".join(key.split("."))) if saved is not None else None
        if not isinstance(node, dict) or "json" not in node:
            plan.missing.append(full)
        else:
            values.append((key, node["json"]))

    def apply(read) -> None:
        for key, value in values:
            owner = module.get_submodule(key.rsplit(".", 1)[0]) if "." in key else module
            owner.set_extra_state(value)

    plan.apply = apply
    return plan


def _generator(gen: torch.Generator, name: str, ctx: Context):
    state = gen.get_state()

    def assign(array: np.ndarray) -> torch.Generator:
        gen.set_state(torch.from_numpy(np.array(array, dtype=np.uint8)))
        return gen

    leaf = Leaf(name, lambda: state.numpy(), tuple(state.shape), np.dtype(np.uint8), assign, gen)
    node = ctx.add_leaf(leaf, kind="torch")
    return {"object": "torch:Generator", "state": node}, lambda: gen


# ----------------------------------------------------------------------------------------------- optimizers


def _param_names(opt: torch.optim.Optimizer, ctx: Context) -> list[list[str]]:
    """Names of each param group's parameters: the owning module's names, else ``group<g>/param<i>``."""
    return [[ctx.param_names.get(id(p)) or f"group{g}/param{i}" for i, p in enumerate(group["params"])]
            for g, group in enumerate(opt.param_groups)]


def _jsonable(value: Any, where: str, ctx: Context) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0:
        return value.item()
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        ctx.problems.append(f"{where!r}: {type(value).__name__} value is neither a tensor nor JSON data")
        return None


def _optimizer(opt: torch.optim.Optimizer, name: str, ctx: Context):
    names = _param_names(opt, ctx)
    flat_names = [n for group in names for n in group]
    state_dict = opt.state_dict()
    groups = []
    for g, group in enumerate(state_dict["param_groups"]):
        packed = {k: _jsonable(v, join(name, f"param_groups/{g}/{k}"), ctx) for k, v in group.items() if k != "params"}
        packed["params"] = names[g]
        groups.append(packed)
    slots = []
    if ctx.restoring:  # the checkpoint, not the optimizer's current state, decides which slots exist
        ctx.groups.append(Group(name, lambda available, saved: _plan_optimizer(opt, name, names, available, saved)))
        return {"object": f"torch:{type(opt).__qualname__}", "param_groups": groups}, lambda: opt
    for index, per_param in state_dict["state"].items():
        pname = flat_names[index]
        for slot, value in per_param.items():
            full = join(name, f"{pname}/{slot}")
            if isinstance(value, torch.Tensor):
                node, _ = tensor_leaf(value, full, ctx)
            else:
                node = {"json": _jsonable(value, full, ctx)}
            slots.append((pname.split("/") + [slot], node))
    spec = {"object": f"torch:{type(opt).__qualname__}", "param_groups": groups,
            "state": nested_spec(slots, name, ctx) if slots else {"dict": []}}
    return spec, lambda: opt


def _plan_optimizer(opt, name: str, names: list[list[str]], available, saved) -> GroupPlan:
    plan = GroupPlan()
    if not isinstance(saved, dict) or "param_groups" not in saved:
        plan.missing.append(f"{name} (optimizer state: the checkpoint has none under this name)")
        return plan
    saved_groups = saved["param_groups"]
    if len(saved_groups) != len(names):
        plan.mismatched.append(f"{name}: {len(saved_groups)} param groups saved, the optimizer has {len(names)}")
        return plan
    for g, (saved_group, current) in enumerate(zip(saved_groups, names)):
        saved_names = saved_group.get("params", [])
        for n in current:
            if n not in saved_names:
                plan.missing.append(f"{name}: parameter {n} (param group {g})")
        for n in saved_names:
            if n not in current:
                plan.mismatched.append(f"{name}: saved parameter {n} is not in param group {g} of the optimizer")
    if plan.missing or plan.mismatched:
        return plan
    params = {n: p for group, pnames in zip(opt.param_groups, names) for n, p in zip(pnames, group["params"])}
    index = {n: i for i, n in enumerate(n for group in names for n in group)}
    prefix = f"{name}/" if name else ""
    tensor_slots: list[tuple[str, str, str]] = []  # (param name, slot, checkpoint name)
    json_slots: list[tuple[str, str, Any]] = []
    state_node = saved.get("state", {"dict": []})
    for full, node in iter_spec_leaves(state_node):
        rest = full[len(prefix):] if full.startswith(prefix) else full
        pname, _, slot = rest.rpartition("/")
        if pname not in params:
            continue
        stored = node.get("alias", full)
        if stored not in available:
            plan.missing.append(full)
            continue
        shape = tuple(available[stored][0])
        if shape and shape != tuple(params[pname].shape):
            plan.mismatched.append(f"{full}: shape {list(shape)} in the checkpoint, parameter {pname} is "
                                   f"{list(params[pname].shape)}")
        plan.claimed.add(stored)
        tensor_slots.append((pname, slot, stored))
    _collect_json_slots(state_node, [], json_slots, params)

    def apply(read) -> None:
        state: dict[int, dict[str, Any]] = {}
        for pname, slot, stored in tensor_slots:
            state.setdefault(index[pname], {})[slot] = from_numpy(np.array(read(stored)))
        for pname, slot, value in json_slots:
            state.setdefault(index[pname], {})[slot] = value
        groups = []
        for saved_group, current in zip(saved_groups, names):
            group = {k: (tuple(v) if isinstance(v, list) and k in ("betas",) else v)
                     for k, v in saved_group.items() if k != "params"}
            group["params"] = [index[n] for n in current]
            groups.append(group)
        opt.load_state_dict({"state": state, "param_groups": groups})

    plan.apply = apply
    return plan


def _collect_json_slots(node: Any, path: list[str], out: list, params: dict) -> None:
    if isinstance(node, dict) and "dict" in node:
        for key, child in node["dict"]:
            _collect_json_slots(child, path + [key], out, params)
    elif isinstance(node, dict) and "json" in node and path:
        pname = "/".join(path[:-1])
        if pname in params:
            out.append((pname, path[-1], node["json"]))


# ----------------------------------------------------------------------------------------------- other state


def _stateful(obj: Any, name: str, ctx: Context):
    """Objects with ``state_dict``/``load_state_dict`` (LR schedulers, GradScaler, torchdata's
    ``StatefulDataLoader``, samplers): see ``ckpt.tree.stateful``. Their arrays go back to ``load_state_dict`` as
    CPU tensors (ckpt 0.1 saved their tensors as NumPy arrays: those too)."""
    return stateful(obj, name, ctx, label=f"torch:{type(obj).__qualname__}", convert=_loaded_as_torch)


def _loaded_as_torch(array: np.ndarray, kind: str, name: str) -> Any:
    if kind in ("torch", "ndarray") and array.dtype.kind not in "OSU":
        return from_loaded(array, name)
    return array


__all__ = ["walk", "prescan", "to_numpy", "from_numpy", "from_loaded", "numpy_dtype", "tensor_leaf"]
