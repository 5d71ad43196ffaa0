"""PyTorch state-dict files (``.pt``, ``.bin``, ``.pth``): read only through ``torch.load(weights_only=True)``.

PyTorch files are pickles. ckpt never unpickles anything itself: reading goes through
``torch.load(path, weights_only=True, mmap=True, map_location="cpu")``, PyTorch's restricted unpickler, which only
rebuilds tensors and plain containers and refuses any other global, so a file crafted to run code on load is
refused (:class:`~ckpt.errors.UnsupportedError` naming the file and the reason) before it can do anything. With
``mmap=True`` the tensor data stays in the file and is paged in when read.

Nested containers are flattened with ``/`` (``{"model": {"fc.weight": t}}`` gives ``model/fc.weight``); Python
numbers become 0-d arrays; other values (strings, ``None``) are not tensors and are listed in ``skipped``.

Writing is ``torch.save`` of a plain ``{name: tensor}`` dict, which ``torch.load(weights_only=True)`` accepts.
``torch.save`` needs every tensor at once, so arrays that are not already backed by a file (for instance freshly
cast ones) are first spilled to a temporary file in the destination directory and handed to PyTorch as
memory-mapped tensors: anonymous memory stays near one tensor even though the whole state dict is alive.

Importing this module imports torch.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import pickletools
import re
import secrets
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _fs
from ..adapters.torch import from_numpy, numpy_dtype, to_numpy
from ..errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from . import Source, TensorInfo, admit, atomic_output, dtype_name

__all__ = ["open", "write", "check", "TorchSource"]

_WRITABLE = {"bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "float16",
             "float32", "float64", "bfloat16", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2",
             "float8_e4m3fnuz", "float8_e5m2fnuz"}


def check(name: str, dtype: str) -> str | None:
    """Why a tensor of ckpt dtype name ``dtype`` cannot be stored in a PyTorch file, or None."""
    del name
    return None if dtype in _WRITABLE else f"PyTorch has no {dtype} tensors"


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor | np.ndarray], skipped: list[str]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}/{key}" if prefix else str(key), out, skipped)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _flatten(value, f"{prefix}/{i}" if prefix else str(i), out, skipped)
    elif isinstance(obj, (bool, int, float)) and not isinstance(obj, type):
        try:
            out[prefix] = np.asarray(obj)
        except OverflowError:
            skipped.append(prefix)
    else:
        skipped.append(prefix)


# Bytes per element of the storage types a state dict's pickle names (unknown types count 1: a lower bound).
_ELEMENT_SIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                 "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                 "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1, "QInt32Storage": 4,
                 "UInt16Storage": 2, "UInt32Storage": 4, "UInt64Storage": 8}
_MARK = object()
_CRC_CHUNK = 1 << 20


def _storages(data: bytes | io.BytesIO) -> list[tuple[str, int]]:
    """``(key, bytes)`` of every storage a torch pickle refers to, found by walking its opcodes without running
    any (a tiny stack machine that tracks only constants, memo entries, tuples and persistent ids)."""
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    stack: list[Any] = []
    memo: dict[Any, Any] = {}
    found: list[tuple[str, int]] = []
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name == "MARK":
            stack.append(_MARK)
        elif name in ("GLOBAL",):
            stack.append(("global", arg))
        elif name == "STACK_GLOBAL":
            names = stack[-2:]
            del stack[-2:]
            stack.append(("global", " ".join(str(n) for n in names)))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if stack:
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg))
        elif name == "TUPLE":
            at = len(stack) - 1 - stack[::-1].index(_MARK) if _MARK in stack else 0
            items = tuple(stack[at + 1:])
            del stack[at:]
            stack.append(items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name in ("BINPERSID", "PERSID"):
            pid = stack.pop() if name == "BINPERSID" and stack else arg
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                kind, key, numel = pid[1], pid[2], pid[4]
                type_name = kind[1].rpartition(" ")[2].rpartition(".")[2] if isinstance(kind, tuple) else ""
                if not isinstance(numel, int) or numel < 0:
                    raise ValueError(f"storage {key!r} has an invalid element count {numel!r}")
                found.append((str(key), numel * _ELEMENT_SIZE.get(type_name, 1)))
            stack.append(None)
        elif op.arg is not None and name not in ("PROTO", "FRAME") and not op.stack_before:
            stack.append(arg)  # a constant: string, bytes, int, float
        elif name in ("NONE", "NEWTRUE", "NEWFALSE", "EMPTY_TUPLE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}[name])
        else:  # anything else: pop what it consumes, push an unknown for what it produces
            for item in reversed(op.stack_before):
                if item is pickletools.markobject:
                    while stack and stack.pop() is not _MARK:
                        pass
                elif stack:
                    stack.pop()
            stack.extend([None] * len(op.stack_after))
    return found


def _check_sizes(path: str) -> None:
    """Refuse a file whose storages need more bytes than it holds, before torch allocates them.

    In a zip file every storage must be a stored (uncompressed) member at least as large as the tensor data the
    pickle says it holds, and every member's CRC-32 must match; in a legacy file each storage the pickle lists must
    lie inside the file, in the order its key list gives."""
    def bad(why: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{path}: {why}", path=path)

    size = os.path.getsize(path)
    with _fs.open_read(path) as f:
        head = f.read(4)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        with zipfile.ZipFile(path) as zf:
            infos = {info.filename: info for info in zf.infolist()}
            pkl = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise bad(f"a PyTorch zip holds one data.pkl, this one {len(pkl)}")
            prefix = pkl[0][: -len("data.pkl")]
            if infos[pkl[0]].file_size > size * 1032 + 1024:
                raise bad("data.pkl declares more bytes than the file could hold")
            for key, need in _storages(zf.read(pkl[0])):
                info = infos.get(f"{prefix}data/{key}")
                if info is None:
                    raise bad(f"storage {key!r} named by data.pkl is missing from the archive")
                if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                    raise bad(f"storage {key!r} is compressed; PyTorch stores storages uncompressed")
                if info.file_size < need:
                    raise bad(f"storage {key!r} holds {info.file_size} bytes but its tensors need {need}: the "
                              "entry is truncated")
                if info.header_offset + info.file_size > size:
                    raise bad(f"storage {key!r} runs past the end of the {size}-byte file")
            for info in infos.values():  # zipfile checks the CRC-32 when a member has been read to its end
                with zf.open(info) as member:
                    while member.read(_CRC_CHUNK):
                        pass
        return
    from . import TORCH_LEGACY_MAGIC

    if not head or not TORCH_LEGACY_MAGIC.startswith(head):
        return  # some other pickle: torch.load(weights_only=True) refuses it with a clear reason
    with _fs.open_read(path) as f:
        stream = io.BytesIO(f.read(min(size, 64 << 20)))  # the pickles come first; data is checked by offset
    for _ in range(3):  # magic number, protocol version, system info
        for _ in pickletools.genops(stream):
            pass
    storages = _storages(stream)
    keys = [arg for op, arg, _ in pickletools.genops(stream) if isinstance(arg, str)]
    position = stream.tell()
    sizes = dict(storages)
    with _fs.open_read(path) as f:
        for key in keys:
            if key not in sizes:
                raise bad(f"storage {key!r} is listed but no tensor uses it")
            f.seek(position)
            raw = f.read(8)
            if len(raw) < 8:
                raise bad(f"the file ends before storage {key!r}: it is truncated")
            (numel,) = struct.unpack("<q", raw)
            need = sizes[key]
            if numel < 0 or position + 8 + need > size:
                raise bad(f"storage {key!r} needs {need} bytes at offset {position + 8} of a {size}-byte file: it "
                          "is truncated or its size is forged")
            position += 8 + need


def load(path: str) -> Any:
    """``torch.load`` under the safe settings, with its errors turned into ckpt errors.

    Declared sizes are checked against the file first (:func:`_check_sizes`), so a forged size allocates
    nothing; any exception torch raises for a malformed file becomes a :class:`CorruptCheckpointError`."""
    kwargs = dict(weights_only=True, map_location="cpu")
    try:
        _check_sizes(path)
        if path.endswith(".safetensors"):
            # torch.load hands paths with this suffix to the safetensors loader; the content said PyTorch, so
            # give it the bytes (no memory map for this odd case).
            with _fs.open_read(path) as f:
                return torch.load(f, **kwargs)
        _fs.check_regular(path)  # torch.load opens it by name: never a FIFO or a device
        try:
            return torch.load(path, mmap=True, **kwargs)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # only legacy (non-zip) files cannot be memory-mapped
                raise
            return torch.load(path, **kwargs)
    except pickle.UnpicklingError as exc:
        raise UnsupportedError(_refusal(path, str(exc)), path=path) from None
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"no PyTorch file at {path}", path=path, tried=[path]) from None
    except IsADirectoryError:
        raise CorruptCheckpointError(f"{path} is a directory, not a PyTorch file", path=path) from None
    except CheckpointError:
        raise
    except (Exception, MemoryError) as exc:  # torch and zipfile raise every type for malformed files
        raise CorruptCheckpointError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})",
                                     path=path) from None


def _refusal(path: str, reason: str) -> str:
    """Why a pickled file is refused and how to convert it, in short lines (torch's own reason is a paragraph)."""
    found = re.search(r"GLOBAL ([\w.]+)", reason)
    what = f" ({found.group(1)})" if found else ""
    stem = os.path.splitext(path)[0]
    return (f"{path}: refusing to unpickle it: it holds more than tensors{what}, and loading it would run code.\n"
            "If you trust it, re-save its tensors once (for a dict, save the entry that holds them, e.g. m['model']):\n"
            f"  python -c \"import torch; m = torch.load({path!r}, weights_only=False); "
            f"torch.save(m.state_dict(), {stem + '.weights.pt'!r})\"")


class TorchSource(Source):
    """A PyTorch state-dict file, opened with ``torch.load(weights_only=True, mmap=True)``.

    Attributes:
        skipped: Names of values that are not tensors or numbers (left out).
    """

    format = "torch"

    def __init__(self, path: str | os.PathLike, *, names: str = "raw") -> None:
        del names
        self.path = Path(path)
        obj = load(os.fspath(path))
        self._tensors: dict[str, torch.Tensor | np.ndarray] = {}
        self.skipped: list[str] = []
        _flatten(obj, "", self._tensors, self.skipped)
        self.metadata: dict[str, Any] = {}

    def keys(self) -> list[str]:
        return sorted(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def _value(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self._tensors), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise CheckpointNotFoundError(f"{self.path}: no tensor named {name!r}{hint}", path=self.path, key=name,
                                          available=close) from None

    def info(self, name: str) -> TensorInfo:
        value = self._value(name)
        if isinstance(value, np.ndarray):
            return TensorInfo(name, dtype_name(value.dtype), tuple(value.shape), value.nbytes)
        shape = tuple(value.shape)
        n = 1
        for d in shape:
            n *= d
        np_dtype = numpy_dtype(value.dtype)
        dtype = dtype_name(np_dtype) if np_dtype is not None else str(value.dtype).replace("torch.", "")
        return TensorInfo(name, dtype, shape, n * value.element_size())

    def get(self, name: str) -> np.ndarray:
        value = self._value(name)
        if isinstance(value, np.ndarray):
            return value
        if value.layout != torch.strided:
            raise UnsupportedError(f"{self.path}: tensor {name!r} is {value.layout}; only dense tensors are read",
                                   path=self.path, key=name)
        try:
            return to_numpy(value)
        except TypeError as exc:
            raise UnsupportedError(f"{self.path}: tensor {name!r} has dtype {value.dtype}, which NumPy cannot hold "
                                   f"({exc})", path=self.path, key=name) from None

    def close(self) -> None:
        self._tensors = {}


def open(path: str | os.PathLike, *, names: str = "raw") -> TorchSource:  # noqa: A001
    """Open a PyTorch state-dict file (see :class:`TorchSource`)."""
    return TorchSource(path, names=names)


def _file_backed(array: np.ndarray) -> bool:
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, mmap.mmap) or (isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap))


def write(path: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]], *, metadata: Any = None,
          shard_size: int | None = None, sync: bool = True) -> list[Path]:
    """Write ``(name, array)`` pairs with ``torch.save`` as a plain ``{name: tensor}`` dict.

    Arrays not backed by a file are spilled to a temporary file (removed afterwards) so that resident memory
    stays near one tensor. ``metadata`` cannot be stored in a plain state dict and is ignored.

    Returns:
        ``[path]``.
    """
    del metadata
    if shard_size is not None:
        raise UnsupportedError("sharding (--shard-size) is only supported for safetensors destinations")
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    token = secrets.token_hex(4)
    spill_path = os.path.join(directory, f".ckpt-spill-{token}")
    state: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    spill = None
    position = 0
    try:
        for name, value in tensors:
            array = np.asarray(value)
            admit(name, array, path=path, check=check, seen=seen)
            if not _file_backed(array) and array.nbytes:
                if spill is None:
                    spill = os.fdopen(_fs.create_scratch(spill_path), "w+b")
                spill.seek(position)
                spill.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
                spill.flush()
                mapped = np.memmap(spill_path, dtype=array.dtype, mode="r", offset=position, shape=array.shape)
                position += array.nbytes
                array = mapped
            del value
            state[name] = from_numpy(array)
        with atomic_output(path, sync=sync, token=token) as tmp:
            torch.save(state, tmp)
    finally:
        state.clear()
        if spill is not None:
            spill.close()
        try:
            os.unlink(spill_path)
        except OSError:
            pass
    return [Path(path)]

