"""safetensors files, single and sharded (Hugging Face ``model.safetensors.index.json``), in pure Python and NumPy.

Layout of one file (the reference is huggingface/safetensors; ``docs/safetensors.schema.json`` there)::

    8 bytes   N, little-endian u64: the header length
    N bytes   UTF-8 JSON object: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [2, 3],
              "data_offsets": [begin, end]}, ...}; padded with spaces so that the data starts 8-byte aligned
    rest      the byte buffer; offsets are relative to its start, little-endian, C order

Reading parses and validates the whole header before anything else (a header over 100 MB, invalid JSON, an unknown
dtype, a shape whose size does not match its offsets, offsets outside the file, gaps, overlaps: each is a
:class:`~ckpt.errors.CorruptCheckpointError` naming the file and the tensor), then memory-maps the file: tensors
come back as read-only views, so opening a 10 GB file costs its header only.

Writing streams: each tensor's bytes go to a temporary file in the destination directory as the tensor arrives;
at the end the header is written and the data copied behind it in the reference order (larger dtypes first, then by
name, so every tensor is aligned to its element size, and the bytes equal ``safetensors.numpy.save_file``'s). Peak
memory is one tensor; the disk briefly holds the data twice. Sharded saves name files like Hugging Face
(``model-00001-of-00003.safetensors``) and write the index last, so an index only exists next to complete shards.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import struct
import sys
from collections.abc import Iterable
from pathlib import Path, PureWindowsPath
from typing import Any

import ml_dtypes
import numpy as np

from .. import _fs
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from . import Source, TensorInfo, admit, dtype_name

__all__ = ["open", "write", "check", "read_header", "SafetensorsSource", "MAX_HEADER_SIZE", "INDEX_SUFFIX"]

# The reference implementation refuses headers above 100 MB; so do we, before reading a byte of it.
MAX_HEADER_SIZE = 100_000_000
# An index is a name -> file map; 100 MB is far beyond any real model's.
MAX_INDEX_SIZE = 100_000_000
INDEX_SUFFIX = ".index.json"
_COPY_CHUNK = 16 << 20  # bytes per copy step when assembling a file (bounded memory, large sequential I/O)

# In the reference's Dtype order: files sort tensors by this rank, descending, then by name.
_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16",
          "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
_RANK = {name: i for i, name in enumerate(_ORDER)}
_TO_NUMPY = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "I16": np.dtype(np.int16), "U16": np.dtype(np.uint16),
    "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16), "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32), "F32": np.dtype(np.float32), "C64": np.dtype(np.complex64),
    "F64": np.dtype(np.float64), "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64),
}
if hasattr(ml_dtypes, "float8_e8m0fnu"):  # ml_dtypes >= 0.5 (older ones, as TensorFlow 2.15 pins, lack it)
    _TO_NUMPY["F8_E8M0"] = np.dtype(ml_dtypes.float8_e8m0fnu)
_FROM_NUMPY = {dt: name for name, dt in _TO_NUMPY.items()}
_BY_CKPT_NAME = {dtype_name(dt): name for name, dt in _TO_NUMPY.items()}


def check(name: str, dtype: str) -> str | None:
    """Why a tensor of ckpt dtype name ``dtype`` cannot be stored in safetensors, or None."""
    if name == "__metadata__":
        return "the name __metadata__ is reserved by safetensors for the file's metadata"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid Unicode text (it holds undecodable bytes); safetensors names are UTF-8 JSON"
    if dtype not in _BY_CKPT_NAME:
        return f"safetensors has no {dtype} type"
    return None


# ====================================================================================================== reading


class _Entry:
    __slots__ = ("name", "st_dtype", "dtype", "shape", "begin", "end")

    def __init__(self, name, st_dtype, dtype, shape, begin, end):
        self.name, self.st_dtype, self.dtype, self.shape, self.begin, self.end = \
            name, st_dtype, dtype, shape, begin, end


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def read_header(path: str | os.PathLike) -> tuple[dict[str, _Entry], dict[str, str], int, int]:
    """Parse and validate the header of one safetensors file.

    Returns:
        ``(entries, metadata, data_start, file_size)``; entries are in file order.

    Raises:
        CorruptCheckpointError: anything about the header that the format forbids.
    """
    path = os.fspath(path)

    def bad(message: str, **fields) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{path}: {message}", path=path, **fields)

    try:
        with _fs.open_read(path) as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise bad(f"file of {size} bytes is too small for a safetensors header (8-byte length first)",
                          offset=0, expected=">= 8 bytes", found=size)
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_SIZE:
                raise bad(f"header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit; not a valid safetensors "
                          "file", offset=0, expected=f"<= {MAX_HEADER_SIZE}", found=n)
            if 8 + n > size:
                raise bad(f"header length {n} runs past the end of the {size}-byte file; it is truncated",
                          offset=0, expected=f"<= {size - 8}", found=n)
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"no safetensors file at {path}", path=path, tried=[path]) from None
    if not raw.startswith(b"{"):
        raise bad("header does not start with '{'", offset=8)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"header is not valid JSON ({exc})", offset=8) from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object", offset=8)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise bad("__metadata__ must map strings to strings", key="__metadata__")
    data_start = 8 + n
    data_size = size - data_start
    entries: dict[str, _Entry] = {}
    for name, spec in header.items():
        if not isinstance(spec, dict):
            raise bad(f"entry of tensor {name!r} is not an object", key=name)
        st_dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if st_dtype not in _TO_NUMPY:
            if st_dtype in _RANK:
                raise UnsupportedError(f"{path}: tensor {name!r} has dtype {st_dtype}, which ckpt cannot read",
                                       path=path, key=name)
            raise bad(f"tensor {name!r} has unknown dtype {st_dtype!r}", key=name, found=st_dtype)
        if not isinstance(shape, list) or len(shape) > 64 or \
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise bad(f"tensor {name!r} has an invalid shape {shape!r}" + (" (NumPy arrays have at most 64 "
                      "dimensions)" if isinstance(shape, list) and len(shape) > 64 else ""), key=name,
                      found=shape)
        if not isinstance(offsets, list) or len(offsets) != 2 or \
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
            raise bad(f"tensor {name!r} has invalid data_offsets {offsets!r}", key=name, found=offsets)
        begin, end = offsets
        if not 0 <= begin <= end:
            raise bad(f"tensor {name!r} has data_offsets [{begin}, {end}]: begin must be <= end and both >= 0",
                      key=name, found=offsets)
        if end > data_size:
            raise bad(f"tensor {name!r} needs bytes {begin}..{end} of the data but the file holds {data_size}",
                      key=name, offset=data_start + begin, expected=f"<= {data_size}", found=end)
        dtype = _TO_NUMPY[st_dtype]
        count = 1
        for d in shape:
            count *= d  # Python ints: no overflow; compared with a length already bounded by the file size
        if count * dtype.itemsize != end - begin:
            raise bad(f"tensor {name!r} of shape {shape} {st_dtype} needs {count * dtype.itemsize} bytes but its "
                      f"data_offsets span {end - begin}", key=name, expected=count * dtype.itemsize,
                      found=end - begin)
        entries[name] = _Entry(name, st_dtype, dtype, tuple(shape), begin, end)
    position = 0
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            what = "overlaps the previous tensor" if entry.begin < position else "leaves a gap before it"
            raise bad(f"tensor {entry.name!r} starts at data offset {entry.begin}, expected {position}: it {what}",
                      key=entry.name, offset=data_start + entry.begin, expected=position, found=entry.begin)
        position = entry.end
    if position != data_size:
        raise bad(f"the tensors cover {position} bytes of data but the file holds {data_size}",
                  expected=data_size, found=position)
    return entries, metadata, data_start, size


class _File:
    """One validated safetensors file, memory-mapped on first read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries, self.metadata, self.data_start, self.size = read_header(path)
        self._map: mmap.mmap | bytes | None = None

    def array(self, entry: _Entry) -> np.ndarray:
        if self._map is None:
            with _fs.open_read(self.path) as f:
                if os.fstat(f.fileno()).st_size != self.size:
                    raise CorruptCheckpointError(f"{self.path}: the file changed size while open", path=self.path)
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""
        count = (entry.end - entry.begin) // entry.dtype.itemsize
        array = np.frombuffer(self._map, dtype=entry.dtype, count=count,
                              offset=self.data_start + entry.begin).reshape(entry.shape)
        if sys.byteorder == "big" and entry.dtype.itemsize > 1:
            array = array.byteswap()
        return array

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            try:
                self._map.close()
            except BufferError:
                pass  # an array still views it; the map is freed with the array
        self._map = None


def _read_index(path: str) -> tuple[dict[str, str], dict[str, Any]]:
    def bad(message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{path}: {message}", path=path)

    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"no safetensors index at {path}", path=path, tried=[path]) from None
    if size > MAX_INDEX_SIZE:
        raise bad(f"index of {size} bytes exceeds the {MAX_INDEX_SIZE}-byte limit")
    try:
        with _fs.open_read(path) as f:
            index = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_duplicates)
    except CorruptCheckpointError:
        raise  # not a regular file
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"index is not valid JSON ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise bad("index must be a JSON object with a 'weight_map' object")
    weight_map = index["weight_map"]
    for name, filename in weight_map.items():
        if not isinstance(filename, str):
            raise bad(f"weight_map[{name!r}] is not a file name")
        win = PureWindowsPath(filename)
        if win.drive or win.root or ".." in win.parts or not filename.endswith(".safetensors"):
            raise bad(f"weight_map[{name!r}] = {filename!r}: shard files must be relative *.safetensors names "
                      "inside the index's directory")
    metadata = index.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad("'metadata' must be an object")
    return weight_map, metadata


def _find_index(directory: str) -> str | None:
    found = sorted(e for e in os.listdir(directory) if e.endswith(".safetensors" + INDEX_SUFFIX))
    if len(found) > 1:
        raise UnsupportedError(f"{directory} holds several safetensors indexes ({', '.join(found)}); pass one",
                               path=directory)
    return os.path.join(directory, found[0]) if found else None


class SafetensorsSource(Source):
    """A safetensors checkpoint: one file, or shards listed by a Hugging Face index.

    Args:
        path: A ``.safetensors`` file, a ``*.safetensors.index.json``, or a directory holding one index (or one
            ``.safetensors`` file).

    Attributes:
        metadata: The ``__metadata__`` string map (of the first shard, for sharded checkpoints).
        index_metadata: The index's ``metadata`` object (``total_size`` ...); empty for single files.
        files: The data files, in index order.
    """

    format = "safetensors"

    def __init__(self, path: str | os.PathLike, *, names: str = "raw") -> None:
        del names  # safetensors names are already what they are
        path = os.fspath(path)
        self.path = Path(path)
        self.index_metadata: dict[str, Any] = {}
        index = None
        if os.path.isdir(path):
            index = _find_index(path)
            if index is None:
                files = sorted(e for e in os.listdir(path) if e.endswith(".safetensors"))
                if len(files) != 1:
                    raise CheckpointNotFoundError(
                        f"{path}: expected one *.safetensors{INDEX_SUFFIX} or one .safetensors file, found "
                        f"{', '.join(files) or 'none'}", path=path, available=files)
                path = os.path.join(path, files[0])
        elif path.endswith(INDEX_SUFFIX):
            index = path
        elif not os.path.exists(path) and os.path.isfile(path + INDEX_SUFFIX):
            index = path + INDEX_SUFFIX
        self._files: dict[str, _File] = {}
        self._where: dict[str, tuple[_File, _Entry]] = {}
        try:
            if index is None:
                file = _File(path)
                self._files[path] = file
                self._where = {name: (file, e) for name, e in file.entries.items()}
                self.metadata = dict(file.metadata)
            else:
                self._open_index(index)
        except BaseException:
            self.close()
            raise
        self.path = Path(index or path)

    def _open_index(self, index: str) -> None:
        weight_map, self.index_metadata = _read_index(index)
        directory = os.path.dirname(index) or "."
        missing = []
        for name, filename in weight_map.items():
            full = os.path.join(directory, filename)
            file = self._files.get(full)
            if file is None:
                if not os.path.exists(full):  # a FIFO or a directory is refused, by name, as it is opened
                    missing.append(filename)
                    continue
                file = self._files[full] = _File(full)
            entry = file.entries.get(name)
            if entry is None:
                raise CorruptCheckpointError(f"{index}: tensor {name!r} is listed in {filename} but that file "
                                             "does not hold it", path=index, key=name)
            self._where[name] = (file, entry)
        if missing:
            listed = sorted(set(missing))
            raise CorruptCheckpointError(f"{index}: shard file(s) {', '.join(listed)} listed in the index are "
                                         "missing; the checkpoint is incomplete", path=index, found=listed)
        first = next(iter(self._files.values()), None)
        self.metadata = dict(first.metadata) if first else {}

    @property
    def files(self) -> list[Path]:
        return [Path(p) for p in self._files]

    def keys(self) -> list[str]:
        return sorted(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def _lookup(self, name: str) -> tuple[_File, _Entry]:
        found = self._where.get(name)
        if found is None:
            import difflib

            close = difflib.get_close_matches(name, list(self._where), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise CheckpointNotFoundError(f"{self.path}: no tensor named {name!r}{hint}", path=self.path,
                                          key=name, available=close)
        return found

    def info(self, name: str) -> TensorInfo:
        file, entry = self._lookup(name)
        shard = os.path.basename(file.path) if len(self._files) > 1 else None
        return TensorInfo(name, dtype_name(entry.dtype), entry.shape, entry.end - entry.begin, shard,
                          file.data_start + entry.begin)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: self._where[name][1].shape for name in self.keys()}

    def dtypes(self) -> dict[str, np.dtype]:
        return {name: self._where[name][1].dtype for name in self.keys()}

    def get(self, name: str) -> np.ndarray:
        file, entry = self._lookup(name)
        return file.array(entry)

    def close(self) -> None:
        for file in self._files.values():
            file.close()


def open(path: str | os.PathLike, *, names: str = "raw") -> SafetensorsSource:  # noqa: A001
    """Open a safetensors file, index or directory (see :class:`SafetensorsSource`)."""
    return SafetensorsSource(path, names=names)


# ====================================================================================================== writing


def _contiguous_le(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array if array.flags.c_contiguous else np.ascontiguousarray(array).reshape(array.shape)


def _header_bytes(items: list[tuple[str, str, tuple[int, ...], int, int]], metadata: dict[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for name, st_dtype, shape, begin, end in items:
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [begin, end]}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def _copy(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Copy ``length`` bytes from ``src_fd`` at ``offset`` to the current position of ``dst_fd``."""
    copy_range = getattr(os, "copy_file_range", None)
    while length > 0:
        step = min(length, _COPY_CHUNK)
        done = 0
        if copy_range is not None:
            try:
                done = copy_range(src_fd, dst_fd, step, offset)
            except OSError:
                copy_range = None
                done = 0
        if not done:
            data = os.pread(src_fd, step, offset)
            if not data:
                raise OSError("temporary data file is shorter than what was written to it")
            view = memoryview(data)
            while view:
                view = view[os.write(dst_fd, view):]
            done = len(data)
        offset += done
        length -= done


class _Shard:
    def __init__(self, directory: str, token: str, number: int) -> None:
        self.staging = os.path.join(directory, f".ckpt-staging-{token}-{number}")
        self.fd = _fs.create_scratch(self.staging)
        self.size = 0
        self.items: list[tuple[str, str, tuple[int, ...], int, int]] = []  # name, dtype, shape, staged at, nbytes

    def add(self, name: str, st_dtype: str, array: np.ndarray) -> None:
        view = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        offset = self.size
        while view:
            written = os.write(self.fd, view[:1 << 30])
            view = view[written:]
            self.size += written
        self.items.append((name, st_dtype, tuple(array.shape), offset, self.size - offset))

    def assemble(self, final: str, metadata: dict[str, str] | None, sync: bool) -> None:
        ordered = sorted(self.items, key=lambda it: (-_RANK[it[1]], it[0]))
        layout, position = [], 0
        for name, st_dtype, shape, _, nbytes in ordered:
            layout.append((name, st_dtype, shape, position, position + nbytes))
            position += nbytes
        header = _header_bytes(layout, metadata)
        tmp = f"{final}.tmp-{secrets.token_hex(4)}"
        fd = _fs.create(tmp)
        try:
            head = memoryview(struct.pack("<Q", len(header)) + header)
            while head:
                head = head[os.write(fd, head):]
            for _, _, _, staged, nbytes in ordered:
                _copy(self.fd, fd, staged, nbytes)
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, final)

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        _unlink(self.staging)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _metadata_strings(metadata: Any) -> dict[str, str] | None:
    if not metadata:
        return None
    return {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in dict(metadata).items()}


def shard_names(path: str, count: int) -> list[str]:
    """Hugging Face's shard names for ``path`` = ``dir/model.safetensors``: ``dir/model-00001-of-00003.safetensors``."""
    stem = path[: -len(".safetensors")]
    return [f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def write(path: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]], *, metadata: Any = None,
          shard_size: int | None = None, sync: bool = True) -> list[Path]:
    """Write ``(name, array)`` pairs as a safetensors file, streaming one tensor at a time.

    Args:
        path: The ``.safetensors`` file to create (``model.safetensors``). With ``shard_size``, the shards go beside
            it as ``model-00001-of-0000N.safetensors`` and the index as ``model.safetensors.index.json``.
        tensors: ``(name, array)`` pairs; each array is written when it is reached and can be dropped after.
        metadata: ``__metadata__``; non-string values are stored as JSON text.
        shard_size: Largest shard in bytes of tensor data; a tensor larger than that gets a shard of its own. When
            everything fits in one shard, one plain file is written (as Hugging Face does).
        sync: fsync each file before it is renamed into place.

    Returns:
        The files written, the index (if any) last.

    Raises:
        DTypeNotSupportedError: a tensor safetensors cannot hold (strings, complex128, ...); nothing is left behind.
        ValueError: a repeated or reserved name.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    if shard_size is not None and not path.endswith(".safetensors"):
        raise ValueError(f"a sharded safetensors checkpoint needs a path ending in .safetensors, not {path!r}")
    if shard_size is not None and shard_size <= 0:
        raise ValueError("shard_size must be positive")
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    meta = _metadata_strings(metadata)
    token = secrets.token_hex(4)
    shards: list[_Shard] = []
    seen: set[str] = set()
    done: list[str] = []
    try:
        shards.append(_Shard(directory, token, 0))
        for name, value in tensors:
            array = _contiguous_le(np.asarray(value))
            admit(name, array, path=path, check=check, seen=seen)
            st_dtype = _FROM_NUMPY[array.dtype]
            shard = shards[-1]
            if shard_size is not None and shard.items and shard.size + array.nbytes > shard_size:
                shard = _Shard(directory, token, len(shards))
                shards.append(shard)
            shard.add(name, st_dtype, array)
            del array, value
        if len(shards) == 1:
            shards[0].assemble(path, meta, sync)
            written = [Path(path)]
        else:
            names = shard_names(path, len(shards))
            for shard, final in zip(shards, names):
                shard.assemble(final, meta, sync)
                done.append(final)
            weight_map = {name: os.path.basename(final) for shard, final in zip(shards, names)
                          for name, *_ in shard.items}
            total = sum(nbytes for shard in shards for *_, nbytes in shard.items)
            index = {"metadata": {"total_size": total, **(meta or {})},
                     "weight_map": dict(sorted(weight_map.items()))}
            index_path = path + INDEX_SUFFIX
            tmp = f"{index_path}.tmp-{token}"
            with os.fdopen(_fs.create(tmp), "w", encoding="utf-8") as f:
                json.dump(index, f, indent=2, ensure_ascii=False)
                f.write("\n")
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, index_path)
            written = [Path(p) for p in names] + [Path(index_path)]
    except BaseException:
        for shard in shards:
            shard.discard()
        for final in done:
            _unlink(final)
        raise
    for shard in shards:
        shard.discard()
    return written
