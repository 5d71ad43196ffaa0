"""Keras ``.weights.h5`` files (``model.save_weights``), read with h5py; reading only.

Keras 3 stores each layer's variables as numbered datasets: ``layers/dense/vars/0`` (the kernel), ``.../vars/1``
(the bias), the optimizer's under ``optimizer/vars/N``. Raw names are those dataset paths. Each ``vars`` group
carries the object's own name in its ``name`` attribute (the layer named ``hidden`` is stored in group
``dense``), so the *clean* names use it and drop the ``vars`` level: ``layers/dense/vars/0`` becomes
``layers/hidden/0``, ``optimizer/vars/3`` becomes ``optimizer/3``. A clean name that two datasets would share keeps
both raw.

Importing this module imports h5py (``pip install h5py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import _fs
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from . import Source, TensorInfo, dtype_name

__all__ = ["open", "check", "KerasSource"]


def check(name: str, dtype: str) -> str | None:
    del name, dtype
    return "ckpt reads Keras .weights.h5 files but does not write them"


def _attr_name(group) -> str | None:
    value = group.attrs.get("name")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value and "/" not in value else None


class KerasSource(Source):
    """A Keras ``.weights.h5`` file. Values are read into memory on ``get``."""

    format = "keras"

    def __init__(self, path: str | os.PathLike, *, names: str = "raw") -> None:
        self.path = Path(path)
        try:
            _fs.check_regular(path)  # h5py opens it by name: never a FIFO or a device
            self._file = h5py.File(os.fspath(path), "r")
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"no Keras weights file at {path}", path=path) from None
        except OSError as exc:
            raise CorruptCheckpointError(f"{path}: not a readable HDF5 file ({exc})", path=path) from None
        raw: list[str] = []

        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                raw.append(name)

        self._file.visititems(visit)
        self.metadata: dict[str, Any] = {k: _plain(v) for k, v in self._file.attrs.items()}
        self._raw = {name: name for name in raw}
        if names == "clean":
            proposed = {name: self._clean(name) for name in raw}
            counts: dict[str, int] = {}
            for clean in proposed.values():
                counts[clean] = counts.get(clean, 0) + 1
            self._raw = {}
            for name, clean in proposed.items():
                self._raw[clean if counts[clean] == 1 and (clean == name or clean not in proposed) else name] = name

    def _clean(self, name: str) -> str:
        parts = name.split("/")
        out: list[str] = []
        for i, part in enumerate(parts):
            if part == "vars" and i == len(parts) - 2 and out:
                group = self._file["/".join(parts[:i + 1])]
                label = _attr_name(group)
                if out and out[0] == "layers" and len(out) >= 2 and label:
                    out[-1] = label
                continue
            out.append(part)
        return "/".join(out)

    def keys(self) -> list[str]:
        return sorted(self._raw)

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def _dataset(self, name: str):
        raw = self._raw.get(name)
        if raw is None:
            raise CheckpointNotFoundError(f"{self.path}: no tensor named {name!r}", path=self.path, key=name)
        return self._file[raw]

    def info(self, name: str) -> TensorInfo:
        ds = self._dataset(name)
        dtype = ds.dtype
        if dtype.kind in "OSUV":
            return TensorInfo(name, "string" if dtype.kind in "OSU" else str(dtype), tuple(ds.shape), 0)
        return TensorInfo(name, dtype_name(dtype), tuple(ds.shape), int(ds.size) * dtype.itemsize)

    def get(self, name: str) -> np.ndarray:
        ds = self._dataset(name)
        if ds.dtype.kind == "V":
            raise UnsupportedError(f"{self.path}: dataset {name!r} has a compound type", path=self.path, key=name)
        return np.asarray(ds[()])

    def close(self) -> None:
        try:
            self._file.close()
        except Exception:  # h5py raises various types for an already-closed file
            pass


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def open(path: str | os.PathLike, *, names: str = "raw") -> KerasSource:  # noqa: A001
    """Open a Keras ``.weights.h5`` file (see :class:`KerasSource`)."""
    return KerasSource(path, names=names)
