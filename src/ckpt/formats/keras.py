"""Keras ``.weights.h5`` files (``model.save_weights``), read with h5py; reading only.

Keras 3 stores each layer's variables as numbered datasets: ``layers/dense/vars/0`` (the kernel), ``.../vars/1``
(the bias), the optimizer's under ``optimizer/vars/N``. Raw names are those dataset paths. Each ``vars`` group
carries the object's own name in its ``name`` attribute (the layer named ``hidden`` is stored in group
``dense``), so the *clean* names use it and drop the ``vars`` level: ``layers/dense/vars/0`` becomes
``layers/hidden/0``, ``optimizer/vars/3`` becomes ``optimizer/3``. A clean name that two datasets would share keeps
both raw.

HDF5 can make a file read other files; ckpt refuses every way of doing so: datasets with *external storage*
(raw data kept in another file), *virtual* datasets (mapped from other files) and *external links* (and any
user-defined link type). Soft links inside the file are not followed (a dataset is listed once, by a hard link).

Declared sizes are checked before anything is allocated: a dataset's declared bytes must be backed by storage in
the file. A contiguous or compact dataset must have all its bytes allocated; a chunked (possibly compressed) one
may expand at most :data:`MAX_EXPANSION` times its stored bytes once it exceeds :data:`FREE_BYTES` (a dataset with
no stored data at all, whose value would be the fill value, may declare at most ``FREE_BYTES``).

Importing this module imports h5py (``pip install h5py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import _fs
from ..errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from . import Source, TensorInfo, dtype_name

__all__ = ["open", "check", "KerasSource", "MAX_EXPANSION", "FREE_BYTES"]

#: A chunked dataset may declare at most this many times its stored bytes (past FREE_BYTES): deflate's own limit
#: is about 1032:1, real weights compress far less, so more is a decompression bomb or a forged shape.
MAX_EXPANSION = 100
#: Declared bytes allowed without matching stored bytes (small fill-value datasets, tiny chunked ones).
FREE_BYTES = 256 << 20


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
        except Exception as exc:  # h5py raises RuntimeError, KeyError ... for malformed files
            raise CorruptCheckpointError(f"{path}: not a readable HDF5 file ({type(exc).__name__}: {exc})",
                                         path=path) from None
        try:
            raw = self._scan()
            self.metadata: dict[str, Any] = {k: _plain(v) for k, v in self._file.attrs.items()}
            self._raw = {name: name for name in raw}
            if names == "clean":
                proposed = {name: self._clean(name) for name in raw}
                counts: dict[str, int] = {}
                for clean in proposed.values():
                    counts[clean] = counts.get(clean, 0) + 1
                self._raw = {}
                for name, clean in proposed.items():
                    self._raw[clean if counts[clean] == 1 and (clean == name or clean not in proposed) else name] = \
                        name
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception) and not isinstance(exc, CheckpointError):
                raise CorruptCheckpointError(f"{path}: malformed HDF5 file ({type(exc).__name__}: {exc})",
                                             path=path) from None
            raise

    def _scan(self) -> list[str]:
        """Every dataset's path; refuses links and storage that reach outside this file, and forged sizes."""
        raw: list[str] = []
        links: list[tuple[str, Any]] = []
        self._file.visititems_links(lambda name, link: links.append((name, link)) and None)
        for name, link in links:
            if not isinstance(link, (h5py.HardLink, h5py.SoftLink)):
                target = f" to {link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink) else ""
                raise UnsupportedError(f"{self.path}: {name!r} is an external link{target}; ckpt does not follow "
                                       "links to other files", path=self.path, key=name)

        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                self._check_storage(name, obj)
                raw.append(name)

        self._file.visititems(visit)
        return raw

    def _check_storage(self, name: str, ds) -> None:
        def refuse(why: str, cls=UnsupportedError):
            raise cls(f"{self.path}: dataset {name!r} {why}", path=self.path, key=name)

        plist = ds.id.get_create_plist()
        layout = plist.get_layout()
        if layout == h5py.h5d.VIRTUAL:
            refuse("is a virtual dataset (mapped from other files); ckpt reads only data stored in the file")
        if plist.get_external_count():
            files = ", ".join(repr(entry[0].decode("utf-8", "replace") if isinstance(entry[0], bytes) else entry[0])
                              for entry in (plist.get_external(i) for i in range(plist.get_external_count())))
            refuse(f"uses HDF5 external storage (its data lives in {files}); ckpt reads only data stored in the file")
        if ds.shape is None:
            return  # an empty (null) dataspace: described, refused on read
        declared = int(ds.size) * ds.dtype.itemsize
        stored = ds.id.get_storage_size()
        file_size = os.path.getsize(self.path)
        if stored > file_size:
            refuse(f"claims {stored} stored bytes in a {file_size}-byte file", CorruptCheckpointError)
        if declared <= FREE_BYTES:
            return
        if layout in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT) and ds.dtype.kind not in "OV":
            if stored < declared:
                refuse(f"declares {declared} bytes of data but the file stores {stored}", CorruptCheckpointError)
        elif declared > MAX_EXPANSION * stored:
            refuse(f"declares {declared} bytes of data from {stored} stored bytes (more than {MAX_EXPANSION}x); "
                   "a forged size or a decompression bomb", CorruptCheckpointError)

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
        try:
            return self._file[raw]
        except Exception as exc:
            raise CorruptCheckpointError(f"{self.path}: dataset {name!r} cannot be opened ({type(exc).__name__}: "
                                         f"{exc})", path=self.path, key=name) from None

    def info(self, name: str) -> TensorInfo:
        ds = self._dataset(name)
        try:
            dtype = ds.dtype
            if ds.shape is None:  # a null dataspace (h5py.Empty): no array at all
                return TensorInfo(name, f"empty({_describe(dtype) if dtype.kind in 'OV' else dtype_name(dtype)})",
                                  (0,), 0)
            shape = tuple(ds.shape)
            if _is_string(dtype):
                return TensorInfo(name, "string", shape, 0)
            if dtype.kind in "OV":
                return TensorInfo(name, _describe(dtype), shape, 0)
            return TensorInfo(name, dtype_name(dtype), shape, int(ds.size) * dtype.itemsize)
        except Exception as exc:
            raise CorruptCheckpointError(f"{self.path}: dataset {name!r} cannot be described ({type(exc).__name__}: "
                                         f"{exc})", path=self.path, key=name) from None

    def get(self, name: str) -> np.ndarray:
        ds = self._dataset(name)

        def refuse(why: str) -> UnsupportedError:
            return UnsupportedError(f"{self.path}: dataset {name!r} {why}", path=self.path, key=name)

        if ds.shape is None:
            raise refuse("has an empty (null) dataspace: it holds no array")
        dtype = ds.dtype
        if dtype.kind in "OV" and not _is_string(dtype):
            raise refuse(f"has type {_describe(dtype)}, which is not a tensor")
        try:
            value = np.asarray(ds[()])
        except Exception as exc:  # h5py/HDF5 errors of every type for damaged data
            raise CorruptCheckpointError(f"{self.path}: dataset {name!r} cannot be read ({type(exc).__name__}: "
                                         f"{exc})", path=self.path, key=name) from None
        if value.dtype.kind in "OS":  # strings as an object array of bytes, like the other readers
            flat = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in value.reshape(-1).tolist()]
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            value = out.reshape(value.shape)
        return value

    def close(self) -> None:
        try:
            self._file.close()
        except Exception:  # h5py raises various types for an already-closed file
            pass


def _is_string(dtype: np.dtype) -> bool:
    return dtype.kind == "S" or h5py.check_string_dtype(dtype) is not None


def _describe(dtype: np.dtype) -> str:
    if h5py.check_ref_dtype(dtype) is not None:
        return "reference"
    base = h5py.check_vlen_dtype(dtype)
    if base is not None:
        return f"variable-length({base})"
    if dtype.names:
        return "compound"
    return f"opaque({dtype.itemsize} bytes)" if dtype.kind == "V" else str(dtype)


def _plain(value: Any) -> Any:
    """An attribute as plain JSON-able Python values (references, empty and odd values as their repr)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)


def open(path: str | os.PathLike, *, names: str = "raw") -> KerasSource:  # noqa: A001
    """Open a Keras ``.weights.h5`` file (see :class:`KerasSource`)."""
    return KerasSource(path, names=names)
