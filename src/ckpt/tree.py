"""State trees: turning nested containers of arrays and framework objects into named tensors, and back.

One walk over the state does everything: it names every tensor (nesting joined with ``/``), describes the tree
in a JSON *spec* (saved with the checkpoint so ``ckpt.load`` can rebuild it without the original objects), and,
for restoring, records where each value must go. Containers are handled here; everything else is a *leaf*
handled by a framework adapter (``ckpt.adapters``), imported only when such an object is met.

Spec nodes (JSON)::

    {"dict": [[key, node], ...]}      {"list": [node, ...]}      {"tuple": [node, ...]}
    {"dict": [[name, node], ...], "keys": [key, ...]}   keys of other types than str (see ``encode_key``)
    {"dict": ..., "ordered": true}    an ``OrderedDict`` (``ckpt.load`` rebuilds one)
    {"namedtuple": "Point", "fields": [...], "items": [node, ...]}
    {"dataclass": "Config", "fields": [...], "items": [node, ...]}
    {"leaf": name, "kind": "ndarray" | "npscalar" | "int" | "float" | "bool" | "complex" | "str" | "bytes" | ...}
    {"alias": name, "kind": ...}      a tensor shared with an earlier leaf (stored once)
    {"none": true}                    {"json": value}    small non-tensor data (scheduler state, ...)
    {"object": type, "state": node}   a framework object (module, optimizer, ...) and what it holds, or any
                                      object saved through its ``state_dict()`` (see ``stateful``)
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .adapters import framework_of, get_adapter, prescan
from .errors import DTypeNotSupportedError
from .tf import dtypes as _dtypes

__all__ = ["Leaf", "Group", "GroupPlan", "JsonValue", "Walk", "walk", "rebuild", "iter_spec_leaves", "find_spec",
           "is_stateful", "stateful", "to_framework", "encode_key", "decode_key", "key_name"]


@dataclass
class Leaf:
    """One tensor of the state.

    Attributes:
        name: Checkpoint name.
        get: Returns the value as a NumPy array (zero-copy where the framework allows).
        shape: Expected shape when restoring; None accepts any.
        dtype: Expected NumPy dtype when restoring; None accepts any of the same kind (Python scalars).
        assign: Writes a restored value (in place where possible) and returns the object the tree should hold.
        result: What the tree holds after restoring (initially the object itself).
        buffer: Optional; returns a writable C-contiguous NumPy view of the target's own memory (of ``dtype`` and
            ``shape``), or None when there is none (another device, a non-contiguous tensor). ``restore`` then
            reads the checkpoint bytes straight into it instead of calling ``assign``, and ``result`` is kept.
    """

    name: str
    get: Callable[[], np.ndarray]
    shape: tuple[int, ...] | None
    dtype: np.dtype | None
    assign: Callable[[np.ndarray], Any]
    result: Any = None
    buffer: Callable[[], np.ndarray | None] | None = None

    def rebuilt(self) -> Any:
        """What the tree holds here after restoring (``result``)."""
        return self.result


@dataclass
class Group:
    """A part of the state whose tensors are only known from the checkpoint (optimizer state, schedulers).

    ``save`` adds leaves and returns the spec node; ``plan`` is given the checkpoint's names (with shape and dtype)
    and the saved spec node, and returns a :class:`GroupPlan`.
    """

    name: str
    plan: Callable[[Mapping[str, tuple[tuple[int, ...], Any]], Any], GroupPlan]


@dataclass
class GroupPlan:
    claimed: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    apply: Callable[[Callable[[str], np.ndarray]], Any] | None = None


@dataclass
class Walk:
    """Everything one walk over a state tree found."""

    spec: Any
    leaves: dict[str, Leaf] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # name -> name of the leaf that stores the tensor
    problems: list[str] = field(default_factory=list)
    rebuild: Callable[[], Any] | None = None


class Context:
    """Shared state of one walk, passed to adapters."""

    def __init__(self, *, restoring: bool) -> None:
        self.restoring = restoring
        self.leaves: dict[str, Leaf] = {}
        self.groups: list[Group] = []
        self.aliases: dict[str, str] = {}
        self.problems: list[str] = []
        self.param_names: dict[int, str] = {}  # id(parameter) -> its name, for naming optimizer slots
        self.adapter_data: dict[str, Any] = {}  # adapter name -> its own scratch space (prescan findings)
        self.json_scalars = 0  # > 0 inside a state_dict(): Python scalars are kept in the record as JSON
        self._storage: dict[Any, str] = {}
        # id(memory owner) -> (first array of that owner, its name) until a second one is seen, then (None, None)
        self.array_owners: dict[int, tuple[Any, str | None]] = {}

    def register_storage(self, storage_key: Any, name: str) -> None:
        """Record that leaf ``name`` (already added) stores the memory ``storage_key`` stands for."""
        self._storage.setdefault(storage_key, name)

    def add_leaf(self, leaf: Leaf, *, storage_key: Any = None, kind: str = "ndarray") -> dict:
        """Register ``leaf``; a tensor sharing storage with an earlier one becomes an alias of it."""
        if leaf.name in self.leaves or leaf.name in self.aliases:
            self.problems.append(f"{leaf.name!r}: two values map to this name")
            return {"leaf": leaf.name, "kind": kind}
        if storage_key is not None:
            first = self._storage.get(storage_key)
            if first is not None:
                # Stored once: restoring the first name restores the shared storage.
                self.aliases[leaf.name] = first
                return {"alias": first, "name": leaf.name, "kind": kind}
            self._storage[storage_key] = leaf.name
        self.leaves[leaf.name] = leaf
        return {"leaf": leaf.name, "kind": kind}

    def problem(self, message: str) -> dict:
        self.problems.append(message)
        return {"none": True}


class JsonValue:
    """Marks a small non-tensor value (a scheduler's ``last_epoch``, ...) to be kept in the spec as JSON."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


# -------------------------------------------------------------------------------------------- dict keys

_BAD_KEY = object()


def encode_key(key: Any) -> Any:
    """A dict key as JSON that keeps its type (``_BAD_KEY`` for a key type ckpt cannot record).

    str and bool, int and None are their JSON selves (JSON tells ``true`` from ``1``); a float is
    ``{"float": hex}`` (exact, and never confused with an int); a tuple is ``{"tuple": [keys]}``. NaN is refused:
    a NaN key cannot be looked up again, so it cannot be restored meaningfully.
    """
    kind = type(key)
    if kind is str or kind is bool or key is None:
        return key
    if isinstance(key, str):  # str subclasses (StrEnum members) are kept as their str value, as before
        return str(key)
    if isinstance(key, int) and not isinstance(key, bool):  # IntEnum members: as their int value
        return int(key)
    if kind is float:
        return _BAD_KEY if key != key else {"float": key.hex()}
    if kind is tuple:
        parts = [encode_key(k) for k in key]
        return _BAD_KEY if any(p is _BAD_KEY for p in parts) else {"tuple": parts}
    return _BAD_KEY


def decode_key(encoded: Any) -> Any:
    """Inverse of :func:`encode_key`. Raises ValueError for anything it did not write."""
    if encoded is None or type(encoded) in (str, bool, int):
        return encoded
    if isinstance(encoded, dict) and len(encoded) == 1:
        if type(encoded.get("float")) is str:
            return float.fromhex(encoded["float"])
        if type(encoded.get("tuple")) is list:
            return tuple(decode_key(k) for k in encoded["tuple"])
    raise ValueError(f"malformed dict key {encoded!r}")


def key_name(key: Any) -> str:
    """The name part a dict key gives its values: ``str(key)`` (``0`` -> ``"0"``, as TensorFlow names them)."""
    if isinstance(key, tuple):
        return "(" + ", ".join(key_name(k) for k in key) + ("," if len(key) == 1 else "") + ")"
    if isinstance(key, str):
        return str(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return str(int(key))
    return repr(key)


# -------------------------------------------------------------------------------------------- the walk


_PY_SCALARS = {bool: "bool", int: "int", float: "float", complex: "complex", str: "str", bytes: "bytes"}
_PY_DTYPES = {"bool": np.bool_, "int": np.int64, "float": np.float64, "complex": np.complex128}


def _python_leaf(value: Any, name: str, ctx: Context) -> tuple[dict, Callable[[], Any]]:
    kind = _PY_SCALARS[type(value)]
    if kind in ("str", "bytes"):
        array = np.asarray(value.encode("utf-8") if kind == "str" else value, dtype=object)
    elif kind == "int" and not -(1 << 63) <= value < (1 << 63):
        return ctx.problem(f"{name!r}: integer {value} does not fit in int64"), lambda: value
    else:
        array = np.asarray(value, dtype=_PY_DTYPES[kind])
    leaf = Leaf(name, lambda: array, (), None, lambda a: _to_python(a, kind), value)
    leaf.kind = kind
    return ctx.add_leaf(leaf, kind=kind), lambda: leaf.result


def _to_python(array: np.ndarray, kind: str) -> Any:
    value = np.asarray(array).reshape(()).item()
    if kind == "str":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if kind == "bytes":
        return bytes(value)
    return {"bool": bool, "int": int, "float": float, "complex": complex}[kind](value)


class _ArrayLeaf(Leaf):
    """A NumPy array leaf; methods instead of per-leaf closures (states hold thousands of arrays)."""

    def __init__(self, name: str, array: np.ndarray, dtype: np.dtype, is_scalar: bool, value: Any) -> None:
        self.name = name
        self.array = array
        self.shape = array.shape
        self.dtype = dtype
        self.result = value
        self.is_scalar = is_scalar

    def get(self) -> np.ndarray:
        return self.array

    def assign(self, src: np.ndarray) -> Any:
        array = self.array
        if self.is_scalar:
            return np.asarray(src, dtype=array.dtype).reshape(())[()]
        if array.flags.writeable and array.dtype.kind not in "SU":
            np.copyto(array, src, casting="unsafe")
            return array
        return np.array(src, dtype=array.dtype)

    def buffer(self) -> np.ndarray | None:
        array = self.array
        if self.is_scalar or array is not self.result or self.dtype.kind == "O":
            return None
        flags = array.flags
        return array if flags.writeable and flags.c_contiguous and array.dtype.isnative else None


_SUPPORTED_DTYPES: dict[np.dtype, str | None] = {}  # dtype -> None if storable, else the reason


def _unsupported(dtype: np.dtype) -> str | None:
    found = _SUPPORTED_DTYPES.get(dtype, False)
    if found is False:
        try:
            _dtypes.from_numpy(dtype)
            found = None
        except DTypeNotSupportedError as exc:
            found = str(exc)
        _SUPPORTED_DTYPES[dtype] = found
    return found


def _numpy_leaf(value: Any, name: str, ctx: Context) -> tuple[dict, Callable[[], Any]]:
    if type(value) is np.ndarray:
        array, is_scalar = value, False
    else:
        is_scalar = isinstance(value, np.generic)
        array = np.asarray(value)
    dtype = array.dtype
    reason = _unsupported(dtype)
    if reason is not None:
        return ctx.problem(f"{name!r}: {reason}"), lambda: value
    if dtype.kind in "OSU":
        if dtype.kind == "O" and any(not isinstance(v, (str, bytes)) for v in array.reshape(-1).tolist()):
            return ctx.problem(f"{name!r}: object arrays may only hold str or bytes"), lambda: value
        dtype = _OBJECT
    elif not dtype.isnative:
        dtype = dtype.newbyteorder("=")
    leaf = _ArrayLeaf(name, array, dtype, is_scalar, value)
    key = None
    if not is_scalar and array.size and dtype is not _OBJECT:
        # Arrays can only share memory with arrays of the same memory owner (``base``). Their storage keys
        # (data pointer and layout) are only computed when a second array of one owner turns up.
        owner = array.base if array.base is not None else array
        first = ctx.array_owners.get(id(owner))
        if first is None:
            ctx.array_owners[id(owner)] = (array, name)
        else:
            if first[0] is not None:
                ctx.register_storage(_array_key(first[0]), first[1])
                ctx.array_owners[id(owner)] = (None, None)
            key = _array_key(array)
    node = ctx.add_leaf(leaf, storage_key=key, kind="npscalar" if is_scalar else "ndarray")
    if "alias" in node:
        return node, lambda: ctx.leaves[node["alias"]].result
    return node, leaf.rebuilt


_OBJECT = np.dtype(object)


def _array_key(array: np.ndarray) -> tuple:
    return ("numpy", array.__array_interface__["data"][0], array.shape, array.strides, array.dtype.str)


def _walk(obj: Any, name: str, ctx: Context) -> tuple[Any, Callable[[], Any]]:
    """Return ``(spec node, rebuild)``; ``rebuild()`` gives the restored object after assignment."""
    if type(obj) is np.ndarray:
        return _numpy_leaf(obj, name, ctx)
    if obj is None:
        return {"none": True}, lambda: None
    if isinstance(obj, JsonValue):
        return {"json": obj.value}, lambda: obj.value
    if type(obj) in _PY_SCALARS:
        if ctx.json_scalars and type(obj) in _JSON_SCALARS:
            return {"json": obj}, lambda: obj
        return _python_leaf(obj, name, ctx)
    if isinstance(obj, (np.ndarray, np.generic)):
        return _numpy_leaf(obj, name, ctx)
    if isinstance(obj, Mapping) and not _framework_of(obj):
        items = []
        rebuilders = []
        prefix = f"{name}/" if name else ""
        keys: list[Any] = []
        typed = False  # some key is not a str: the node records every key's type
        for key, child in obj.items():
            if type(key) is str:
                skey, encoded = key, key
            else:
                encoded = encode_key(key)
                if encoded is _BAD_KEY:
                    ctx.problems.append(f"{name or '<root>'}: key {key!r} is a {type(key).__name__}; keys may be "
                                        "str, int, bool, None, float (not NaN) or tuples of these")
                    continue
                skey = key_name(key)
                typed = typed or type(encoded) is not str
            if not skey:
                ctx.problems.append(f"{name or '<root>'}: empty key")
                continue
            node, rb = _walk(child, prefix + skey, ctx)
            items.append([skey, node])
            keys.append(encoded)
            rebuilders.append((key, rb))
        cls = type(obj)

        def rebuild_mapping() -> Any:
            pairs = [(k, rb()) for k, rb in rebuilders]
            if cls is dict or not isinstance(obj, dict):
                return dict(pairs)
            try:
                out = cls.__new__(cls)
                dict.__init__(out, pairs)
                out.__dict__.update(getattr(obj, "__dict__", {}))
                return out
            except Exception:  # an exotic dict subclass: fall back to a plain dict
                return dict(pairs)

        spec_node: dict[str, Any] = {"dict": items}
        if typed:
            spec_node["keys"] = keys
        if isinstance(obj, collections.OrderedDict):
            spec_node["ordered"] = True
        return spec_node, rebuild_mapping
    if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
        nodes, rbs = _walk_sequence(list(obj), name, ctx, keys=list(obj._fields))
        cls = type(obj)
        return ({"namedtuple": cls.__name__, "fields": list(obj._fields), "items": nodes},
                lambda: cls(*[rb() for rb in rbs]))
    if isinstance(obj, (list, tuple)):
        nodes, rbs = _walk_sequence(list(obj), name, ctx)
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: nodes}, (lambda: [rb() for rb in rbs]) if kind == "list" else (lambda: tuple(rb() for rb in rbs))
    if is_stateful(obj) and not _framework_of(obj):  # framework adapters know their stateful kinds first
        return stateful(obj, name, ctx)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields_ = [f.name for f in dataclasses.fields(obj)]
        nodes, rbs = _walk_sequence([getattr(obj, f) for f in fields_], name, ctx, keys=fields_)

        def rebuild_dataclass() -> Any:
            values = [rb() for rb in rbs]
            try:
                return dataclasses.replace(obj, **dict(zip(fields_, values)))
            except (TypeError, ValueError):  # init=False fields: set them directly on a copy
                import copy

                out = copy.copy(obj)
                for f, v in zip(fields_, values):
                    object.__setattr__(out, f, v)
                return out

        return {"dataclass": type(obj).__name__, "fields": fields_, "items": nodes}, rebuild_dataclass
    framework = _framework_of(obj)
    if framework:
        adapter = get_adapter(framework)
        handled = adapter.walk(obj, name, ctx)
        if handled is not None:
            return handled
        if is_stateful(obj):
            return stateful(obj, name, ctx)
    return (ctx.problem(f"{name or '<root>'!r}: cannot save a {type(obj).__module__}.{type(obj).__qualname__}"),
            lambda: obj)


# -------------------------------------------------------------------------------------------- stateful objects

_JSON_SCALARS = (bool, int, float, str)


def is_stateful(obj: Any) -> bool:
    """True for objects saved through ``state_dict()`` and restored through ``load_state_dict()``."""
    return (not isinstance(obj, type) and callable(getattr(obj, "state_dict", None))
            and callable(getattr(obj, "load_state_dict", None)))


def stateful(obj: Any, name: str, ctx: Context, *, label: str | None = None,
             convert: Callable[[np.ndarray, str, str], Any] | None = None) -> tuple[dict, Callable[[], Any]]:
    """An object with ``state_dict()``/``load_state_dict()`` (a data loader, sampler, GradScaler, EMA helper...).

    Saving walks what ``state_dict()`` returns like any tree (tensors become checkpoint tensors, nested stateful
    objects are saved the same way, dict keys keep their types) except that Python scalars are kept in the
    record as JSON (state dicts are full of counters and flags; a tensor each would be noise). Restoring rebuilds
    that state from the checkpoint, tensors as the framework they were saved from (``convert``: a different rule),
    and calls ``obj.load_state_dict(state)``; the tree keeps ``obj``. ``ckpt.load`` returns the state dict.
    """
    label = label or f"{type(obj).__module__}:{type(obj).__qualname__}"
    if ctx.restoring:  # the saved state decides what is read
        ctx.groups.append(Group(name, lambda available, saved: _plan_stateful(obj, name, saved, convert)))
        return {"object": label}, lambda: obj
    try:
        state = obj.state_dict()
    except Exception as exc:  # the user's own code: report it with the name, among the other problems
        return ctx.problem(f"{name or '<root>'!r}: {type(obj).__qualname__}.state_dict() raised "
                           f"{type(exc).__name__}: {exc}"), lambda: obj
    ctx.json_scalars += 1
    try:
        node, _ = _walk(state, name, ctx)
    finally:
        ctx.json_scalars -= 1
    return {"object": label, "state": node}, lambda: obj


def _plan_stateful(obj: Any, name: str, saved: Any,
                   convert: Callable[[np.ndarray, str, str], Any] | None) -> GroupPlan:
    plan = GroupPlan()
    if not isinstance(saved, dict) or "state" not in saved:
        plan.missing.append(f"{name or '<root>'} ({type(obj).__name__} state: the checkpoint has none under this "
                            "name)")
        return plan
    for full, node in iter_spec_leaves(saved["state"]):
        plan.claimed.add(node.get("alias", full))

    def apply(read: Callable[[str], np.ndarray]) -> None:
        state = rebuild(saved["state"], lambda n: np.array(read(n), copy=True), convert or to_framework)
        obj.load_state_dict(state)

    plan.apply = apply
    return plan


def to_framework(array: np.ndarray, kind: str, name: str, framework: str = "auto") -> Any:
    """A loaded tensor as ``framework`` holds it (``"auto"``: the framework it was saved from, else NumPy)."""
    target = {"torch": "torch", "jax": "jax"}.get(kind) if framework == "auto" else framework
    if target is None or target == "numpy" or array.dtype.kind in "OSU":  # strings: no torch or JAX counterpart
        return array
    return get_adapter(target).from_loaded(array, name)


def _walk_sequence(items: list, name: str, ctx: Context, keys: list[str] | None = None):
    nodes, rbs = [], []
    for i, child in enumerate(items):
        node, rb = _walk(child, join(name, keys[i] if keys else str(i)), ctx)
        nodes.append(node)
        rbs.append(rb)
    return nodes, rbs


def _framework_of(obj: Any) -> str | None:
    """Which framework adapter handles ``obj``, judged from its class hierarchy's modules (no imports)."""
    return framework_of(type(obj))


def walk(state: Any, *, restoring: bool = False) -> Walk:
    """Walk ``state`` once; see the module docstring."""
    ctx = Context(restoring=restoring)
    prescan(state, ctx)
    spec, rebuild_fn = _walk(state, "", ctx)
    return Walk(spec, ctx.leaves, ctx.groups, ctx.aliases, ctx.problems, rebuild_fn)


# -------------------------------------------------------------------------------------------- without objects


def rebuild(spec: Any, read: Callable[[str], np.ndarray],
            convert: Callable[[np.ndarray, str, str], Any] | None = None) -> Any:
    """Rebuild a tree from its saved spec alone (``ckpt.load``): plain containers and NumPy arrays.

    Namedtuples and dataclasses come back as look-alike classes made on the fly (same name and fields; nothing
    is imported from the checkpoint). Framework objects come back as what they hold (a module as its nested
    parameters). ``convert(array, kind, name)``, if given, turns each tensor leaf (not Python or NumPy scalars)
    into what the tree holds instead of the array, ``kind`` telling what was saved (``"ndarray"``, ``"torch"``,
    ``"jax"``, ...); names sharing one tensor (aliases) get one converted value.
    """
    cache: dict[str, Any] = {}
    converted: dict[str, Any] = {}

    def value(name: str, kind: str) -> Any:
        if name not in cache:
            cache[name] = read(name)
        array = cache[name]
        if kind in _PY_SCALARS.values():
            return _to_python(array, kind)
        if kind == "npscalar":
            return array.reshape(())[()]
        if convert is not None:
            if name not in converted:
                converted[name] = convert(array, kind, name)
            return converted[name]
        return array

    def go(node: Any) -> Any:
        if not isinstance(node, dict):
            raise ValueError(f"malformed spec node {node!r}")
        if "dict" in node:
            keys = node.get("keys")
            if keys is None:  # every key a str (and records of ckpt 0.1, which kept no key types)
                pairs = [(k, go(v)) for k, v in node["dict"]]
            else:
                if not isinstance(keys, list) or len(keys) != len(node["dict"]):
                    raise ValueError("dict keys do not match its items")
                pairs = [(decode_key(k), go(v)) for k, (_, v) in zip(keys, node["dict"])]
            return collections.OrderedDict(pairs) if node.get("ordered") else dict(pairs)
        if "list" in node:
            return [go(v) for v in node["list"]]
        if "tuple" in node:
            return tuple(go(v) for v in node["tuple"])
        if "namedtuple" in node:
            cls = collections.namedtuple(_identifier(node["namedtuple"]), node["fields"], rename=True)
            return cls(*[go(v) for v in node["items"]])
        if "dataclass" in node:
            cls = dataclasses.make_dataclass(_identifier(node["dataclass"]),
                                             [_identifier(f) for f in node["fields"]])
            return cls(*[go(v) for v in node["items"]])
        if "leaf" in node:
            return value(node["leaf"], node.get("kind", "ndarray"))
        if "alias" in node:
            return value(node["alias"], node.get("kind", "ndarray"))
        if "none" in node:
            return None
        if "json" in node:
            return node["json"]
        if "object" in node:
            return go(node["state"])
        raise ValueError(f"unknown spec node {sorted(node)}")

    return go(spec)


def _identifier(text: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in str(text)) or "_"
    return out if not out[0].isdigit() else f"_{out}"


def is_spec_node(value: dict) -> bool:
    """Whether ``value`` is a spec node (a leaf, alias, container...) rather than a scope being built."""
    return any(k in value for k in ("leaf", "alias", "none", "json", "dict", "object"))


def nested_spec(items: list[tuple[list[str], Any]], name: str, ctx: Context) -> dict:
    """``[(["dense", "kernel"], node), ...]`` -> nested ``{"dict": ...}`` spec, as the framework adapters build it
    for a module's or an optimizer's state. A name that is both a tensor and a scope (``fc`` and ``fc/weight``) is
    a problem in ``ctx`` naming it (``name`` prefixes the names), never a silently overwritten value."""
    root: dict = {}
    for parts, node in items:
        level = root
        for i, part in enumerate(parts[:-1]):
            child = level.setdefault(part, {})
            if is_spec_node(child):
                ctx.problems.append(f"{join(name, '/'.join(parts[:i + 1]))!r} is both a tensor and a scope")
                break
            level = child
        else:
            if parts[-1] in level and not is_spec_node(level[parts[-1]]):
                ctx.problems.append(f"{join(name, '/'.join(parts))!r} is both a tensor and a scope")
            else:
                level[parts[-1]] = node

    def convert(level: dict) -> dict:
        return {"dict": [[k, v if is_spec_node(v) else convert(v)] for k, v in level.items()]}

    return convert(root)


def iter_spec_leaves(spec: Any) -> Iterator[tuple[str, dict]]:
    """Every ``(name, node)`` of leaves and aliases in a spec."""
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "leaf" in node:
                yield node["leaf"], node
            elif "alias" in node:
                yield node.get("name", node["alias"]), node
            for key in ("list", "tuple", "items"):
                if isinstance(node.get(key), list):
                    stack.extend(node[key])
            if isinstance(node.get("dict"), list):
                stack.extend(v for _, v in node["dict"])
            if "state" in node:
                stack.append(node["state"])


def find_spec(spec: Any, name: str) -> Any:
    """The spec node saved for the object named ``name`` (``"optimizer"``, ``"train/sched"``), or None."""
    node = spec
    if not name:
        return node
    for part in name.split("/"):
        if not isinstance(node, dict):
            return None
        while "object" in node:
            node = node["state"]
        if "dict" in node:
            node = dict((k, v) for k, v in node["dict"]).get(part)
        elif "list" in node or "tuple" in node:
            seq = node.get("list", node.get("tuple"))
            node = seq[int(part)] if part.isdigit() and int(part) < len(seq) else None
        elif "items" in node:
            fields_ = node.get("fields", [])
            node = node["items"][fields_.index(part)] if part in fields_ else None
        else:
            return None
    return node
