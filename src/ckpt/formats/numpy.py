"""NumPy ``.npz`` archives (``np.savez``): read with ``allow_pickle=False``, written one member at a time.

An ``.npz`` is a zip of ``NAME.npy`` members. Shapes and dtypes come from each member's ``.npy`` header without
reading its data; values are read with ``np.load(..., allow_pickle=False)``, so object arrays (which would need
unpickling) are refused.

Sizes are checked before anything is allocated: a member's ``.npy`` header must declare exactly the bytes the zip
directory says the member holds, a stored member must fit in the file, and a compressed one may expand at most
:data:`MAX_EXPANSION` times its compressed bytes once it exceeds :data:`FREE_BYTES` (deflate's own limit is about
1032:1; real weights compress far less). Values are decompressed in chunks into the array, checked against the
declared size (too little or too much data is an error) and against the member's CRC-32.

Writing streams each array into its own zip member (stored, not compressed, like
``np.savez``), so peak memory is one tensor.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import _fs
from ..errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from . import Source, TensorInfo, admit, atomic_output, dtype_name

__all__ = ["open", "write", "check", "NpzSource"]

#: A compressed member may declare at most this many times its compressed bytes (past FREE_BYTES).
MAX_EXPANSION = 100
#: Declared bytes of a compressed member allowed whatever its compression ratio.
FREE_BYTES = 256 << 20
_CHUNK = 1 << 20
# Zip names are at most 65535 bytes; the member adds ".npy".
_MAX_NAME = 65535 - 4
# Errors zipfile/zlib/NumPy raise on malformed archives.
_BAD = (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, struct.error,
        RuntimeError, KeyError, IndexError, TypeError, OverflowError, SyntaxError, MemoryError)

# ml_dtypes types (bfloat16, float8 ...) are void-like to NumPy's .npy format and would not read back as such.
_WRITABLE_KINDS = "biufc"


def check(name: str, dtype: str) -> str | None:
    """Why a tensor of ckpt dtype name ``dtype`` cannot be stored in an ``.npz``, or None."""
    if "\0" in name:
        return "a NUL character in the name cannot be stored in a zip member name"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid Unicode text (it holds undecodable bytes) and cannot be a zip member name"
    if len(encoded) > _MAX_NAME:
        return f"the name is {len(encoded)} bytes long; zip member names hold at most {_MAX_NAME}"
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
        except _BAD as exc:
            raise CorruptCheckpointError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})",
                                         path=path) from None
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._layout: dict[str, tuple[np.dtype, bool, int]] = {}  # dtype, fortran order, header length
        try:
            self._size = os.fstat(self._zip.fp.fileno()).st_size
            for member in self._zip.infolist():
                name = member.filename[:-4] if member.filename.endswith(".npy") else member.filename
                if name in self._members:
                    raise CorruptCheckpointError(f"{path}: the archive holds {member.filename!r} twice",
                                                 path=path, key=name)
                self._members[name] = member
                self._infos[name] = self._header(name, member)
        except BaseException as exc:
            self._zip.close()
            if isinstance(exc, Exception) and not isinstance(exc, CheckpointError):
                raise CorruptCheckpointError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})",
                                             path=path) from None
            raise

    def _header(self, name: str, member: zipfile.ZipInfo) -> TensorInfo:
        def bad(why: str) -> CorruptCheckpointError:
            return CorruptCheckpointError(f"{self.path}: array {name!r} (member {member.filename!r}) {why}",
                                          path=self.path, key=name)

        if member.compress_type == zipfile.ZIP_STORED and member.compress_size != member.file_size:
            raise bad(f"is stored uncompressed but its sizes differ ({member.compress_size} vs {member.file_size})")
        if member.header_offset + member.compress_size > self._size:
            raise bad(f"claims {member.compress_size} bytes at offset {member.header_offset} of a {self._size}-byte "
                      "file")
        try:
            with self._zip.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                header_length = f.tell()
        except _BAD as exc:
            raise bad(f"is not a valid .npy array ({type(exc).__name__}: {exc})") from None
        if dtype.hasobject:
            raise UnsupportedError(f"{self.path}: array {name!r} holds Python objects, which would need unpickling; "
                                   "ckpt reads .npz files with allow_pickle=False", path=self.path, key=name)
        if len(shape) > 64:
            raise bad(f"has {len(shape)} dimensions; NumPy arrays have at most 64")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        if header_length + nbytes != member.file_size:
            raise bad(f"declares {shape} {dtype} ({nbytes} bytes) but holds {member.file_size - header_length} bytes "
                      "of data")
        if member.compress_type != zipfile.ZIP_STORED and nbytes > FREE_BYTES and \
                nbytes > MAX_EXPANSION * member.compress_size:
            raise bad(f"declares {nbytes} bytes from {member.compress_size} compressed bytes (more than "
                      f"{MAX_EXPANSION}x): a forged size or a decompression bomb")
        self._layout[name] = (dtype, bool(fortran), header_length)
        return TensorInfo(name, _describe(dtype), tuple(shape), nbytes)

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
        info = self.info(name)
        dtype, fortran, header_length = self._layout[name]
        if dtype.kind == "V":
            raise UnsupportedError(f"{self.path}: array {name!r} has the structured (or raw void) type {dtype}, "
                                   "which is not a tensor", path=self.path, key=name)
        # Decompress chunk by chunk into the array: memory is what the member really holds, never more than
        # declared (zipfile also checks the CRC-32 once the member has been read to its end).
        array = np.empty(info.nbytes, np.uint8)
        view = memoryview(array)
        done = 0
        try:
            with self._zip.open(self._members[name]) as f:
                f.read(header_length)
                while done < info.nbytes:
                    n = f.readinto(view[done:done + _CHUNK])
                    if not n:
                        break
                    done += n
                extra = f.read(1)
        except _BAD as exc:
            raise CorruptCheckpointError(f"{self.path}: array {name!r} cannot be read ({type(exc).__name__}: {exc})",
                                         path=self.path, key=name) from None
        if done != info.nbytes or extra:
            raise CorruptCheckpointError(f"{self.path}: array {name!r} holds {'more' if extra else done} bytes of "
                                         f"data, not the {info.nbytes} its header declares", path=self.path, key=name)
        order = "F" if fortran else "C"
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype=dtype, order=order)
        return array.view(dtype).reshape(info.shape, order=order)

    def close(self) -> None:
        self._zip.close()


def _describe(dtype: np.dtype) -> str:
    return "structured" if dtype.kind == "V" else dtype_name(dtype)


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
