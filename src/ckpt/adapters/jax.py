"""JAX adapter: ``jax.Array`` leaves (any sharding), typed PRNG keys, and ``jax.ShapeDtypeStruct`` restore targets.

JAX arrays are immutable, so a restore never writes into its target: it makes a new array with the target's dtype,
weak type and placement (``jax.device_put(value, target.sharding)``), and ``ckpt.restore`` returns the tree that
holds it. Pytrees built from dicts, lists, tuples, namedtuples and dataclasses are containers that ``ckpt.tree``
walks itself: Flax parameter dicts, optax states such as ``ScaleByAdamState(count, mu, nu)``, the empty
``EmptyState()`` and ``MaskedNode()``. Only their leaves come here.

* Saving copies each array to the host with ``np.asarray`` (no copy for CPU arrays). bfloat16, float8 and int4
  arrays keep their type, because JAX uses the ``ml_dtypes`` types natively and TensorFlow's bundle format has
  them all.
* A typed PRNG key (``jax.random.key(0)``, dtype ``key<fry>``) is stored as its raw ``uint32`` key data
  (``jax.random.key_data``). The implementation's name goes into the tree record. A restore calls
  ``jax.random.wrap_key_data`` with the *target's* implementation, and ``ckpt.load`` returns the raw data. A
  legacy ``uint32`` key (``jax.random.PRNGKey``) is an ordinary array, so a checkpoint of a typed key can be
  restored into a legacy one and the other way round.
* A ``jax.ShapeDtypeStruct`` works as an abstract target. ``restore`` returns a new array of that shape and dtype,
  placed by its ``sharding`` (on the default device when it has none), so nothing has to be allocated first. A
  target whose buffers were donated (``x.is_deleted()``) can still be restored into, since only its shape, dtype
  and placement are used.
* An array object met under several names is saved once and the other names become aliases. A restore never ties
  names together: each name gets its own new array, because immutable arrays have no shared memory that a write
  would reach.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ..errors import DTypeNotSupportedError, UnsupportedError
from ..tf import dtypes as _dtypes
from ..tree import Context, Leaf

__all__ = ["walk", "array_leaf", "from_loaded"]


# Values being traced inside jax.jit / grad / vmap (looked up defensively: jax.core's exports keep changing).
_TRACER = getattr(getattr(jax, "core", None), "Tracer", ())


def walk(obj: Any, name: str, ctx: Context):
    if isinstance(obj, jax.ShapeDtypeStruct):
        return _abstract(obj, name, ctx)
    if isinstance(obj, jax.Array):
        return array_leaf(obj, name, ctx)
    return None


def _is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _stored_dtype(dtype: Any, name: str, ctx: Context) -> np.dtype | None:
    """The NumPy dtype an array of ``dtype`` is saved as, or None (after recording the problem)."""
    try:
        np_dtype = np.dtype(dtype)
        _dtypes.from_numpy(np_dtype)
    except (DTypeNotSupportedError, TypeError) as exc:
        ctx.problems.append(f"{name!r}: JAX dtype {dtype} cannot be stored in a checkpoint ({exc})")
        return None
    return np_dtype


def array_leaf(x: jax.Array, name: str, ctx: Context):
    """Register one concrete ``jax.Array``. Returns ``(spec node, rebuild)``."""
    if isinstance(x, _TRACER):
        return (ctx.problem(f"{name!r}: a traced JAX value (inside jax.jit, grad or vmap) has no values; save "
                            "concrete arrays, outside the transformation"), lambda: x)
    if not ctx.restoring:  # a restore only needs the target's shape, dtype and placement
        if x.is_deleted():
            return (ctx.problem(f"{name!r}: this JAX array was deleted (its buffer was donated to a jitted "
                                "function?); save the value the function returned instead"), lambda: x)
        if not x.is_fully_addressable:
            return (ctx.problem(f"{name!r}: this JAX array spans several processes; ckpt saves what one process "
                                "holds, so gather it first (jax.experimental.multihost_utils.process_allgather)"),
                    lambda: x)
    impl = str(jax.random.key_impl(x)) if _is_key(x.dtype) else None
    sharding = x.sharding
    committed = getattr(x, "_committed", True)  # an uncommitted array follows the default device; keep it so

    def get() -> np.ndarray:
        return np.asarray(jax.random.key_data(x) if impl is not None else x)

    return _register(x, name, ctx, get=get, shape=tuple(x.shape), dtype=x.dtype, impl=impl,
                     sharding=sharding if committed else None, weak_type=bool(getattr(x, "weak_type", False)))


def _abstract(s: jax.ShapeDtypeStruct, name: str, ctx: Context):
    if not ctx.restoring:
        return (ctx.problem(f"{name!r}: a jax.ShapeDtypeStruct holds no values; it can only be a restore target"),
                lambda: s)
    impl = getattr(s.dtype, "_impl", None) if _is_key(s.dtype) else None
    if _is_key(s.dtype) and impl is None:
        return ctx.problem(f"{name!r}: cannot tell the PRNG implementation of key dtype {s.dtype}"), lambda: s

    def get() -> np.ndarray:
        raise TypeError("a jax.ShapeDtypeStruct has no values")

    return _register(s, name, ctx, get=get, shape=tuple(s.shape), dtype=s.dtype, impl=impl,
                     sharding=getattr(s, "sharding", None), weak_type=bool(getattr(s, "weak_type", False)))


def _register(target: Any, name: str, ctx: Context, *, get, shape: tuple[int, ...], dtype: Any, impl: Any,
              sharding: Any, weak_type: bool):
    if impl is not None:  # keys are stored as their raw data: (*shape, impl-specific words) of uint32
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype))
        stored_shape, stored_dtype = tuple(data.shape), np.dtype(data.dtype)
    else:
        stored_shape, stored_dtype = shape, _stored_dtype(dtype, name, ctx)
        if stored_dtype is None:
            return {"none": True}, lambda: target

    def assign(array: np.ndarray) -> jax.Array:
        # A private host copy: the reader's arrays view a memory map, which device_put could alias on CPU.
        host = np.array(array, dtype=stored_dtype, copy=True)
        if impl is not None:
            value = jax.random.wrap_key_data(host, impl=impl)
            return jax.device_put(value, sharding) if sharding is not None else value
        value = jax.device_put(host, sharding) if sharding is not None else jax.device_put(host)
        return _weak(value) if weak_type else value

    leaf = Leaf(name, get, stored_shape, stored_dtype, assign, target)
    # Identical array objects are stored once when saving; when restoring every name is filled on its own.
    key = ("jax", id(target)) if not ctx.restoring and np.prod(stored_shape, dtype=np.int64) else None
    node = ctx.add_leaf(leaf, storage_key=key, kind="jax_key" if impl is not None else "jax")
    if impl is not None:
        node["impl"] = str(getattr(impl, "name", impl))
    return node, lambda: leaf.result


def _weak(value: jax.Array) -> jax.Array:
    """``value`` marked weakly typed, as the target was (a Python scalar turned array), so type promotion after
    a restore is what it was before. JAX has no public call for this; without it the value stays strongly typed."""
    try:
        from jax._src.lax.lax import _convert_element_type
    except ImportError:  # pragma: no cover - a JAX without the private helper
        return value
    return _convert_element_type(value, value.dtype, weak_type=True)


def from_loaded(array: np.ndarray, name: str) -> jax.Array:
    """``ckpt.load(framework="jax")``: a ``jax.Array`` on the default device holding ``array``'s exact values.

    Refused rather than narrowed when JAX would change the dtype (64-bit types without ``jax_enable_x64``)."""
    try:
        value = jax.device_put(array)
    except (TypeError, ValueError) as exc:
        raise UnsupportedError(f"{name!r}: JAX cannot hold a {array.dtype} array ({exc})", key=name) from None
    if value.dtype != array.dtype:
        raise UnsupportedError(f"{name!r}: JAX would turn this {array.dtype} tensor into {value.dtype} (enable "
                               "jax_enable_x64, or load it with framework='numpy')", key=name)
    return value
