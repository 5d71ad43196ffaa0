"""TensorFlow checkpoints (``PREFIX.index`` + ``PREFIX.data-*``) in the common format interface.

Reading is :class:`ckpt.Reader` itself: it already has the interface (``keys``, ``shapes``, ``dtypes``, ``get``,
``info``, ``metadata``, ``path``, ``format``) plus the bundle specifics (``prefix``, ``entry()``, ``record``) and
the clean names of TensorFlow 2 object-based checkpoints (``names="clean"``). Writing streams each tensor into
:class:`ckpt.tf.bundle.BundleWriter` as it arrives; the index goes last. Metadata is kept as ckpt's record, so
``Reader(prefix).metadata`` reads it back and TensorFlow sees one extra string tensor it ignores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import _json
from ..errors import DTypeNotSupportedError, UnsupportedError
from ..tf import dtypes as _dtypes
from ..tf.bundle import BundleWriter
from ..tf.slices import is_slice_key

__all__ = ["open", "write", "check"]

_WRITABLE = {d.name for d in _dtypes.DTYPES if d.native and d.numpy is not None}


def check(name: str, dtype: str) -> str | None:
    """Why a tensor of ckpt dtype name ``dtype`` (or its name) cannot go into a bundle, or None."""
    if not name:
        return "TensorFlow bundles cannot hold an empty tensor name"
    try:
        encoded = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "the name holds a lone surrogate that has no byte encoding"
    if is_slice_key(encoded):
        return "names must not start with a NUL byte"
    if name == "_CKPT_METADATA":
        return "the name is reserved for ckpt's metadata"
    if dtype not in _WRITABLE:
        return f"writing {dtype} tensors is not supported"
    return None


def open(path: str | os.PathLike, *, names: str = "raw"):  # noqa: A001
    """Open a TensorFlow checkpoint: a :class:`ckpt.Reader`."""
    from ..reader import Reader

    return Reader(path, names=names, format="tensorflow")


def write(path: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]], *, metadata: Any = None,
          shard_size: int | None = None, sync: bool = True) -> list[Path]:
    """Write ``(name, array)`` pairs as a TensorFlow bundle at prefix ``path``, one tensor at a time.

    The ``checkpoint`` state file is not touched (this is a file conversion, not a training save).

    Returns:
        The data file and the ``.index`` file (last).
    """
    if shard_size is not None:
        raise UnsupportedError("sharding (--shard-size) is only supported for safetensors destinations")
    prefix = os.fspath(path)
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    encoded = _json.encode_record({"user": dict(metadata)}) if metadata else None
    with BundleWriter(prefix, sync=sync) as writer:
        for name, value in tensors:
            array = np.asarray(value)
            problem = check(name, "string" if array.dtype.kind in "OSU" else _dtype_name(array.dtype))
            if problem:
                raise DTypeNotSupportedError(f"cannot write tensor {name!r} to {prefix}: {problem}", path=prefix,
                                             key=name)
            writer.add(name, array)
            del array, value
        if encoded is not None:
            writer.add("_CKPT_METADATA", np.asarray(encoded, dtype=object))
        files = writer.finish()
    return [Path(f) for f in files]


def _dtype_name(dtype: np.dtype) -> str:
    try:
        return _dtypes.from_numpy(dtype).name
    except DTypeNotSupportedError:
        return str(dtype)
