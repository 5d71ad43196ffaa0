"""NumPy ``.npz`` archives (``np.savez``): read with ``allow_pickle=False``, written one member at a time.

An ``.npz`` is a zip of ``NAME.npy`` members. Shapes and dtypes come from each member's ``.npy`` header without
reading its data; values are read with ``np.load(..., allow_pickle=False)``, so object arrays (which would need
unpickling) are refused. Writing streams each array into its own zip member (stored, not compressed, like
``np.savez``), so peak memory is one tensor.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import _fs
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from . import Source, TensorInfo, admit, atomic_output, dtype_name

__all__ = ["open", "write", "check", "NpzSource"]

# ml_dtypes types (bfloat16, float8 ...) are void-like to NumPy's .npy format and would not read back as such.
_WRITABLE_KINDS = "biufc"


def check(name: str, dtype: str) -> str | None:
    """Why a tensor of ckpt dtype name ``dtype`` cannot be stored in an ``.npz``, or None."""
    del name
    if dtype == "string":
        return "string tensors would need pickled object arrays in .npz"
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return f".npz cannot store {dtype} (NumPy has no such built-in type)"
    return None if kind in _WRITABLE_KINDS else f".npz cannot store {dtype}"


class NpzSource(Source):
    """A NumPy ``.npz`` archive."""

    format = "numpy"

    def __init__(self, path: str | os.PathLike, *, names: str = "raw") -> None:
        del names
        self.path = Path(path)
        self.metadata: dict[str, Any] = {}
        try:
            _fs.check_regular(path)  # zipfile opens it by name: never a FIFO or a device
            self._zip = zipfile.ZipFile(os.fspath(path))
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"no .npz file at {path}", path=path, tried=[os.fspath(path)]) from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise CorruptCheckpointError(f"{path}: not a readable .npz archive ({exc})", path=path) from None
        self._members: dict[str, str] = {}
        self._infos: dict[str, TensorInfo] = {}
        try:
            for member in self._zip.namelist():
                name = member[:-4] if member.endswith(".npy") else member
                self._members[name] = member
                self._infos[name] = self._header(name, member)
        except BaseException:
            self._zip.close()
            raise

    def _header(self, name: str, member: str) -> TensorInfo:
        try:
            with self._zip.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise CorruptCheckpointError(f"{self.path}: member {member!r} is not a valid .npy array ({exc})",
                                         path=self.path, key=name) from None
        if dtype.hasobject:
            raise UnsupportedError(f"{self.path}: array {name!r} holds Python objects, which would need unpickling; "
                                   "ckpt reads .npz files with allow_pickle=False", path=self.path, key=name)
        count = 1
        for d in shape:
            count *= d
        return TensorInfo(name, dtype_name(dtype), tuple(shape), count * dtype.itemsize)

    def keys(self) -> list[str]:
        return sorted(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def info(self, name: str) -> TensorInfo:
        found = self._infos.get(name)
        if found is None:
            raise CheckpointNotFoundError(f"{self.path}: no array named {name!r}", path=self.path, key=name)
        return found

    def get(self, name: str) -> np.ndarray:
        self.info(name)
        try:
            with self._zip.open(self._members[name]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise CorruptCheckpointError(f"{self.path}: array {name!r} cannot be read ({exc})", path=self.path,
                                         key=name) from None

    def close(self) -> None:
        self._zip.close()


def open(path: str | os.PathLike, *, names: str = "raw") -> NpzSource:  # noqa: A001
    """Open an ``.npz`` archive (see :class:`NpzSource`)."""
    return NpzSource(path, names=names)


def write(path: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]], *, metadata: Any = None,
          shard_size: int | None = None, sync: bool = True) -> list[Path]:
    """Write ``(name, array)`` pairs as an uncompressed ``.npz``, one member at a time (``metadata`` is ignored:
    the format has no place for it)."""
    del metadata
    if shard_size is not None:
        raise UnsupportedError("sharding (--shard-size) is only supported for safetensors destinations")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    seen: set[str] = set()
    with atomic_output(path, sync=sync) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in tensors:
                array = np.asarray(value)
                admit(name, array, path=path, check=check, seen=seen)
                with zf.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)
                del array, value
    return [Path(path)]
