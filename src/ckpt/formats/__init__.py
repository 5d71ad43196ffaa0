"""Checkpoint file formats behind one small interface: detection, a registry, sources (readers) and writers.

Every format module (``tensorflow``, ``safetensors``, ``torch``, ``numpy``, ``keras``) offers the same verbs:

* ``open(path, *, names="raw") -> Source``: a lazy reader with ``keys()``, ``shapes()``, ``dtypes()``,
  ``get(name) -> np.ndarray``, ``info(name) -> TensorInfo``, ``metadata``, ``path``, ``format`` and
  ``close()``; it is a context manager;
* ``write(path, tensors, *, metadata=None, shard_size=None) -> list[Path]`` (not for ``keras``): ``tensors`` is an
  iterable of ``(name, array)`` consumed one at a time, so peak memory stays near the largest tensor;
* ``check(name, dtype) -> str | None``: why the format cannot store that tensor (None when it can), so that a
  conversion can list every problem before writing a byte.

The format of a file is detected from its content (:func:`detect`), never only from its name. A module is imported
on first use; ``torch`` is imported only for PyTorch files and ``h5py`` only for Keras files.
"""

from __future__ import annotations

import contextlib
import importlib
import secrets
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import _fs
from ..errors import DTypeNotSupportedError, UnsupportedError

__all__ = ["FORMATS", "TensorInfo", "Source", "detect", "open", "get", "destination_format", "canonical",
           "admit", "atomic_output"]

#: Format name -> module under ``ckpt.formats``.
FORMATS = {"tensorflow": "tensorflow", "safetensors": "safetensors", "torch": "torch", "numpy": "numpy",
           "keras": "keras"}
_ALIASES = {"tf": "tensorflow", "bundle": "tensorflow", "checkpoint": "tensorflow", "pytorch": "torch",
            "pt": "torch", "npz": "numpy", "np": "numpy", "h5": "keras", "hdf5": "keras", "st": "safetensors"}
_EXTRAS = {"torch": "pip install 'ckpt[torch]'", "keras": "pip install h5py"}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)  # the last 8 bytes of an SSTable (.index) file
# A torch.save file of the legacy (non-zip) format starts with a pickled magic number.
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


@dataclass(frozen=True)
class TensorInfo:
    """What a source says about one tensor without reading it.

    Attributes:
        name: The tensor's name in this source (clean or raw, as the source was opened).
        dtype: ckpt's dtype name (``float32``, ``bfloat16``, ``string``, TensorFlow's ``qint8`` ...).
        shape: Its shape.
        nbytes: Bytes of its value in memory (payload bytes for strings).
        shard: The file (or TensorFlow shard number) that holds it, when the format has several.
        offset: Byte offset of its data in that file, when the format stores it raw.
        partitioned: A TensorFlow partitioned variable (stored in slices).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    shard: int | str | None = None
    offset: int | None = None
    partitioned: bool = False

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class Source:
    """Base class of the readers: lazy, read-only access to one checkpoint's tensors.

    Subclasses set ``path``, ``format`` and ``metadata`` and implement ``keys``, ``info`` and ``get``; the rest is
    derived. Not thread-safe unless a subclass says so.
    """

    path: Path
    format: str = ""
    metadata: dict[str, Any]

    def keys(self) -> list[str]:
        raise NotImplementedError

    def info(self, name: str) -> TensorInfo:
        raise NotImplementedError

    def get(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: self.info(name).shape for name in self.keys()}

    def dtypes(self) -> dict[str, np.dtype | str]:
        out = {}
        for name in self.keys():
            dtype = self.info(name).dtype
            out[name] = dtype if dtype == "string" else _np_dtype(dtype)
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in set(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self):
        return iter(self.keys())

    def items(self):
        for name in self.keys():
            yield name, self.get(name)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {str(self.path)!r}>"


def _np_dtype(name: str) -> np.dtype | str:
    import ml_dtypes

    try:
        return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)
    except TypeError:
        return name


def dtype_name(dtype: np.dtype) -> str:
    """ckpt's name for a NumPy dtype (``string`` for object/bytes/str arrays)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "string"
    return dtype.name


def canonical(fmt: str) -> str:
    """``"pt"`` -> ``"torch"`` ...; raises for an unknown format name."""
    name = _ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise UnsupportedError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return name


def get(fmt: str) -> ModuleType:
    """The module of format ``fmt`` (imported on first use)."""
    name = canonical(fmt)
    try:
        return importlib.import_module(f"{__name__}.{FORMATS[name]}")
    except ImportError as exc:
        hint = _EXTRAS.get(name, "")
        raise UnsupportedError(f"reading {name} files needs a package that is not installed ({exc})"
                               + (f"; {hint}" if hint else "")) from None


def open(path: str | os.PathLike, *, format: str | None = None, names: str = "raw") -> Source:  # noqa: A001
    """Open a checkpoint of any supported format for reading (detected from the content when ``format`` is None)."""
    fmt = canonical(format) if format else detect(path)
    return get(fmt).open(path, names=names)


def _zip_kind(path: str) -> str | None:
    try:
        with _fs.open_read(path) as f, zipfile.ZipFile(f) as zf:
            names = zf.namelist()
    except Exception:  # zipfile raises BadZipFile, struct.error, NotImplementedError ... for damaged archives
        return None
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) and \
            any(n == "version" or n.endswith("/version") or n.endswith("/.data/version") for n in names):
        return "torch"
    if names and all(n.endswith(".npy") for n in names):
        return "numpy"
    if not names:
        return "numpy"  # np.savez of nothing
    return None


def _sniff(path: str) -> str | None:
    """The format of one file from its first and last bytes, or None."""
    try:
        with _fs.open_read(path) as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
            tail = b""
            if size >= 48:
                f.seek(size - 8)
                tail = f.read(8)
    except OSError:
        return None
    if head.startswith(HDF5_MAGIC):
        return "keras"
    if head.startswith(ZIP_MAGIC) or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 2 <= n <= size - 8:
            return "safetensors"
    if tail == TABLE_MAGIC:
        return "tensorflow"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"  # some other pickle: only torch.load(weights_only=True) may look at it, and will refuse
    return None


_BY_SUFFIX = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": None,
              ".npz": "numpy", ".h5": "keras", ".hdf5": "keras", ".keras": None, ".index": "tensorflow"}


def detect(path: str | os.PathLike) -> str:
    """The format of the checkpoint at ``path``, from its content.

    * a file: safetensors (8-byte little-endian header length, then ``{``), a zip that holds ``*/data.pkl`` and a
      ``version`` record (PyTorch) or only ``.npy`` members (NumPy ``.npz``), HDF5 (Keras ``.weights.h5``), an
      SSTable (a TensorFlow ``.index``), a pickle (PyTorch's legacy format); a ``*.safetensors.index.json`` is a
      sharded safetensors checkpoint; a ``.data-*`` file belongs to a TensorFlow bundle;
    * a path that is not a file: a TensorFlow prefix (``model.ckpt-30``);
    * a directory: TensorFlow when it holds a ``checkpoint`` state file or ``*.index`` files, else safetensors when
      it holds one ``*.safetensors.index.json`` or one ``*.safetensors`` file.

    Raises:
        CheckpointNotFoundError: nothing at ``path``.
        UnsupportedError: a file whose content matches no supported format.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        try:
            entries = os.listdir(path)
        except OSError:
            entries = []
        if "checkpoint" in entries or any(e.endswith(".index") for e in entries):
            return "tensorflow"
        if len([e for e in entries if e.endswith(".safetensors.index.json")]) == 1 or \
                len([e for e in entries if e.endswith(".safetensors")]) == 1:
            return "safetensors"
        return "tensorflow"  # the bundle reader explains what it looked for
    if not os.path.isfile(path):
        if os.path.isfile(path + ".index"):
            return "tensorflow"
        if os.path.isfile(path + ".index.json"):
            return "safetensors"  # dir/model.safetensors, written as shards plus model.safetensors.index.json
        if os.path.exists(path):
            raise UnsupportedError(f"{path} is not a regular file", path=path)
        return "tensorflow"  # a prefix that does not exist: the bundle reader lists what is there instead
    if path.endswith(".index.json"):
        return "safetensors"
    base = os.path.basename(path)
    if ".data-" in base and base.rpartition(".data-")[2][5:9] == "-of-":
        return "tensorflow"
    if path.endswith(".meta") and os.path.isfile(path[: -len(".meta")] + ".index"):
        return "tensorflow"  # the MetaGraph written beside a TF1 Saver checkpoint names it
    found = _sniff(path)
    if found is not None:
        return found
    suffix = os.path.splitext(path)[1].lower()
    raise UnsupportedError(
        f"{path}: the content matches no supported checkpoint format (safetensors, PyTorch zip, NumPy .npz, "
        f"HDF5/Keras, TensorFlow .index)" + (f"; despite its {suffix} suffix the file is not one" if suffix in
                                             _BY_SUFFIX and _BY_SUFFIX[suffix] else ""), path=path)


def destination_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The format to write at ``path``: ``format`` if given, else from the suffix (``.safetensors``,
    ``.pt``/``.bin``/``.pth``, ``.npz``), else a TensorFlow bundle prefix."""
    if format:
        return canonical(format)
    name = os.fspath(path).lower()
    if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
        return "safetensors"
    for suffix in (".pt", ".bin", ".pth"):
        if name.endswith(suffix):
            return "torch"
    if name.endswith(".npz"):
        return "numpy"
    if name.endswith(".h5") or name.endswith(".hdf5"):
        return "keras"
    return "tensorflow"


# ---------------------------------------------------------------------------------------------- writer helpers


def admit(name: str, array: np.ndarray, *, path: str, check: Callable[[str, str], str | None],
          seen: set[str]) -> None:
    """Raise unless ``array`` can be written to ``path`` as ``name``: a dtype the format stores, a new name."""
    problem = check(name, dtype_name(array.dtype))
    if problem:
        raise DTypeNotSupportedError(f"cannot write tensor {name!r} to {path}: {problem}", path=path, key=name)
    if name in seen:
        raise ValueError(f"tensor {name!r} was already written")
    seen.add(name)


@contextlib.contextmanager
def atomic_output(path: str, *, sync: bool = True, token: str | None = None) -> Iterator[str]:
    """Yield a temporary name beside ``path`` to write to; on success fsync it (``sync``) and rename it over
    ``path``, on failure delete it. Readers of ``path`` never see a partial file.

    The temporary file is created here, exclusively and not through a link (``_fs.create``), before the writer
    opens it by name; a link at ``path`` itself is replaced by the rename, its target left alone."""
    tmp = f"{path}.tmp-{token or secrets.token_hex(4)}"
    _fs.close(_fs.create(tmp))
    try:
        yield tmp
        if sync:
            fd = _fs.open_regular(tmp)
            try:
                _fs.fsync(fd)
            finally:
                _fs.close(fd)
        _fs.replace(tmp, path)
    except BaseException:
        try:
            _fs.unlink(tmp)
        except OSError:
            pass
        raise
