"""``ckpt.save`` and ``ckpt.load``: nested state in, TensorFlow-compatible checkpoint out, and back.

A save is planned completely before a byte is written: the state is flattened to ``name -> array`` (nesting joined
with ``/``, as TensorFlow names scopes) and every problem is collected and raised at once. Then the bundle is
written (data, then index, each under a temporary name until renamed) and only then is the ``checkpoint`` state
file updated, by atomic replace. A save that fails leaves no new file behind and never touches older checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import CheckpointError, DTypeNotSupportedError, InvalidStateError
from .format import dtypes as _dtypes
from .format.bundle import BundleWriter, index_filename
from .format.state_file import CheckpointState, read_state, resolve, write_state
from .reader import METADATA_KEY, Reader

__all__ = ["save", "load", "flatten"]

_SCALARS = (bool, int, float, complex, str, bytes, np.generic)


def _leaf_array(value: Any) -> np.ndarray:
    if isinstance(value, bool):
        return np.asarray(value, dtype=np.bool_)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, (str, bytes)):
        return np.asarray(value, dtype=object)
    array = np.asarray(value)
    _dtypes.from_numpy(array.dtype)  # raises DTypeNotSupportedError
    if array.dtype == object:
        bad = [type(v).__name__ for v in array.reshape(-1).tolist() if not isinstance(v, (str, bytes))]
        if bad:
            raise DTypeNotSupportedError(f"object arrays may only hold str or bytes, found {bad[0]}")
    return array


def flatten(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flatten nested mappings (and lists/tuples, whose items are named ``0``, ``1``, ...) to ``name -> array``.

    Raises:
        InvalidStateError: listing every unsupported value, bad key and name collision at once.
    """
    if not isinstance(state, Mapping):
        raise InvalidStateError(f"state must be a mapping of names to values, not {type(state).__name__}")
    out: dict[str, np.ndarray] = {}
    problems: list[str] = []

    def visit(node: Any, name: str) -> None:
        if isinstance(node, Mapping):
            if not node and name:
                problems.append(f"{name!r}: empty mapping (nothing to save)")
            for key, child in node.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    problems.append(f"{name or '<root>'}: key {key!r} is a {type(key).__name__}; use str keys")
                    continue
                key = str(key)
                if not key:
                    problems.append(f"{name or '<root>'}: empty key")
                    continue
                visit(child, f"{name}/{key}" if name else key)
        elif isinstance(node, (list, tuple)) and not isinstance(node, _SCALARS):
            for i, child in enumerate(node):
                visit(child, f"{name}/{i}")
        else:
            if name == METADATA_KEY:
                problems.append(f"{name!r}: reserved for ckpt's metadata")
                return
            try:
                array = _leaf_array(node)
            except (DTypeNotSupportedError, ValueError, TypeError) as exc:
                problems.append(f"{name!r}: cannot save a {type(node).__name__} ({exc})")
                return
            if name in out:
                problems.append(f"{name!r}: two values map to this name")
                return
            out[name] = array

    visit(state, "")
    if problems:
        listing = "\n  ".join(problems)
        raise InvalidStateError(f"cannot save this state ({len(problems)} problem(s)):\n  {listing}")
    return out


def save(state: Mapping[str, Any], prefix: str | os.PathLike, *, step: int | None = None,
         metadata: Mapping[str, Any] | None = None, num_shards: int = 1, sync: bool = True) -> str:
    """Save ``state`` as a TensorFlow-compatible checkpoint and record it in the directory's ``checkpoint`` file.

    Args:
        state: Nested mappings whose leaves are NumPy arrays, NumPy scalars, or Python ``bool``/``int``/
            ``float``/``complex``/``str``/``bytes``. Nesting is joined with ``/``: ``{"layer": {"w": w}}`` is
            saved as ``layer/w``.
        prefix: Checkpoint prefix, e.g. ``"model/regression.ckpt"``. Missing directories are created.
        step: Appended as ``-<step>`` (TensorFlow's ``global_step``).
        metadata: JSON-serialisable data stored with the checkpoint, read back as ``Reader(...).metadata``.
        num_shards: Number of data files.
        sync: fsync data, index, state file and directory before returning (set False for scratch runs).

    Returns:
        The prefix written (with the step suffix).

    Raises:
        InvalidStateError: the state holds something that cannot be saved (every problem listed).

    Example:
        >>> ckpt.save({"alpha": np.float32(0.24), "beta": np.float32(0.21)}, "model/regression.ckpt", step=25)
        'model/regression.ckpt-25'
    """
    prefix = os.fspath(prefix)
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"step must be an int, not {type(step).__name__}")
        prefix = f"{prefix}-{int(step)}"
    if os.path.isdir(prefix):
        raise CheckpointError(f"{prefix} is a directory; pass a prefix inside it, e.g. {os.path.join(prefix, 'ckpt')}",
                              path=prefix)
    tensors = flatten(state)
    record = None
    if metadata is not None:
        try:
            record = json.dumps({"format": 1, "user": dict(metadata)}, sort_keys=True, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise InvalidStateError(f"metadata must be JSON-serialisable: {exc}") from None
    directory = os.path.dirname(prefix) or "."
    os.makedirs(directory, exist_ok=True)
    with BundleWriter(prefix, num_shards=num_shards, sync=sync) as writer:
        for name in sorted(tensors, key=lambda n: n.encode("utf-8", "surrogateescape")):
            writer.add(name, tensors[name])
        if record is not None:
            writer.add(METADATA_KEY, np.asarray(record.encode("utf-8"), dtype=object))
        writer.finish()
    _record_in_state(directory, prefix, sync=sync)
    return prefix


def _record_in_state(directory: str, prefix: str, *, sync: bool) -> None:
    """Make ``prefix`` the newest entry of ``directory/checkpoint`` (relative paths, timestamps kept aligned)."""
    try:
        state = read_state(directory) or CheckpointState()
    except CheckpointError:
        state = CheckpointState()  # a garbled state file is replaced, as TensorFlow does
    name = os.path.relpath(prefix, directory)
    now = time.time()
    paths = list(state.all_model_checkpoint_paths)
    stamps = list(state.all_model_checkpoint_timestamps)
    if len(stamps) != len(paths):
        stamps = [_mtime(resolve(directory, p), now) for p in paths]
    kept = [(p, t) for p, t in zip(paths, stamps) if resolve(directory, p) != prefix and p != name]
    kept.append((name, now))
    state.all_model_checkpoint_paths = [p for p, _ in kept]
    state.all_model_checkpoint_timestamps = [t for _, t in kept]
    state.model_checkpoint_path = name
    write_state(directory, state, sync=sync)


def _mtime(prefix: str, default: float) -> float:
    try:
        return os.stat(index_filename(prefix)).st_mtime
    except OSError:
        return default


def load(path: str | os.PathLike, *, flat: bool = False) -> dict[str, Any]:
    """Read every tensor of a checkpoint into memory.

    Args:
        path: A prefix, one of its files, or a directory (its newest checkpoint).
        flat: Return ``{"layer/w": array}`` instead of nested ``{"layer": {"w": array}}``.

    Returns:
        Writable NumPy arrays (copies, independent of the files), nested by ``/`` unless ``flat``.

    Raises:
        CheckpointError: when nesting is impossible because a name is both a tensor and a scope
            (TensorFlow 1 optimizer slots: ``w`` and ``w/Adam``); pass ``flat=True`` for those.
    """
    with Reader(path) as reader:
        values = {name: np.array(array, copy=True) for name, array in reader.items()}
        prefix = reader.prefix
    if flat:
        return values
    nested: dict[str, Any] = {}
    for name, array in values.items():
        parts = name.split("/")
        node = nested
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _collision(prefix, "/".join(parts[: i + 1]), name)
            node = child
        if parts[-1] in node:
            raise _collision(prefix, name, name)
        node[parts[-1]] = array
    return nested


def _collision(prefix: str, scope: str, name: str) -> CheckpointError:
    return CheckpointError(
        f"{prefix}: {scope!r} is both a tensor and a scope (of {name!r}), so the checkpoint cannot be nested; "
        "use ckpt.load(path, flat=True)", path=prefix, key=name)
