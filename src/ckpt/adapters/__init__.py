"""Framework adapters: how torch, JAX and TensorFlow objects become named NumPy arrays and back.

An object's framework is recognised from the modules of its class hierarchy, so nothing is imported until such an
object is actually met: ``import ckpt`` never imports a framework. Each adapter module offers

* ``walk(obj, name, ctx) -> (spec node, rebuild) | None``: register the object's tensors (``ctx.add_leaf``) or
  dynamic groups (``ctx.groups``) under ``name``; None when the adapter does not handle this kind of object;
* optionally ``prescan(obj, name, ctx)``: a first pass over the whole state, e.g. to learn parameter names
  before an optimizer that refers to them is met.

NumPy arrays and Python scalars, the reference case, are handled in ``ckpt.tree`` itself.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ..errors import CheckpointError

# Top-level module of a class -> adapter module name.
_ROOTS = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "tensorflow": "tensorflow", "keras": "tensorflow",
          "tf_keras": "tensorflow"}
_EXTRAS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}


_PLAIN_SEQ = (list, tuple, dict)
_FRAMEWORK_CACHE: dict[type, str | None] = {}


def framework_of(cls: type) -> str | None:
    """The adapter name for instances of ``cls``, or None."""
    try:
        return _FRAMEWORK_CACHE[cls]
    except (KeyError, TypeError):
        pass
    found = None
    for klass in cls.__mro__:
        root = (klass.__module__ or "").split(".", 1)[0]
        if root in _ROOTS:
            found = _ROOTS[root]
            break
    try:
        if len(_FRAMEWORK_CACHE) < 4096:
            _FRAMEWORK_CACHE[cls] = found
    except TypeError:
        pass
    return found


def get_adapter(framework: str) -> ModuleType:
    """Import and return ``ckpt.adapters.<framework>``."""
    try:
        return importlib.import_module(f"{__name__}.{framework}")
    except ImportError as exc:
        raise CheckpointError(f"support for {framework} needs it installed: pip install 'ckpt[{_EXTRAS[framework]}]'"
                              f" ({exc})") from None


def prescan(state: Any, ctx) -> None:
    """Give every adapter that wants one a first look at its objects in ``state``."""
    import dataclasses
    from collections.abc import Mapping

    import numpy as np

    plain = (np.ndarray, np.generic, str, bytes, int, float, bool, complex, type(None))
    stack = [(state, "")]
    while stack:
        obj, name = stack.pop()
        if type(obj) in plain or type(obj) in _PLAIN_SEQ and not obj:
            continue
        framework = framework_of(type(obj))
        if framework:
            hook = getattr(get_adapter(framework), "prescan", None)
            if hook is not None:
                hook(obj, name, ctx)
            if not isinstance(obj, Mapping):
                continue
        if isinstance(obj, Mapping):  # plain leaves (most of a state) need no look: not even a name
            stack.extend((v, f"{name}/{k}" if name else str(k)) for k, v in obj.items() if type(v) not in plain)
        elif isinstance(obj, (list, tuple)):
            keys = obj._fields if hasattr(type(obj), "_fields") else range(len(obj))
            stack.extend((v, f"{name}/{k}" if name else str(k)) for k, v in zip(keys, obj))
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend((getattr(obj, f.name), f"{name}/{f.name}" if name else f.name)
                         for f in dataclasses.fields(obj))
