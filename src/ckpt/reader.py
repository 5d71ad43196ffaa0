"""``ckpt.Reader``: lazy, dict-like access to a checkpoint's tensors (TensorFlow's ``NewCheckpointReader``).

``Reader(path)`` opens any supported format. The format is detected from the content (``ckpt.formats.detect``):
TensorFlow bundles are read here, natively, with everything bundle-specific (``prefix``, ``entry()``, ``record``,
memory-mapped views, clean names for TensorFlow 2 object graphs); every other format (safetensors, PyTorch,
NumPy ``.npz``, Keras ``.weights.h5``) is served by its ``ckpt.formats`` source behind the same interface, as an
instance of the :class:`Reader` subclass ``ForeignReader``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from pathlib import Path

from . import _fs, _json
from . import formats as _formats
from ._paths import local_path
from .errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from .tf.bundle import BundleReader, TensorEntry, index_filename
from .tf.object_graph import OBJECT_GRAPH_KEY, clean_names
from .tf.state_file import find_checkpoints, latest
from .formats import TensorInfo

__all__ = ["Reader", "resolve_checkpoint", "METADATA_KEY", "NAMES"]

#: How tensors are named: ``"raw"`` as stored; ``"clean"``: TensorFlow 2 object-based keys become object paths
#: (``model/layer/kernel``, optimizer slots ``optimizer/model/layer/kernel/m``) and Keras ``.weights.h5`` datasets
#: take their layer names (``layers/hidden/0``); other names are the same either way.
NAMES = ("raw", "clean")

# ckpt's own bookkeeping (user metadata, tree structure) lives in one string tensor under this name. TensorFlow
# readers see it as an ordinary string tensor and ignore it when restoring variables.
METADATA_KEY = "_CKPT_METADATA"
_HIDDEN = frozenset({METADATA_KEY})

_SUFFIXES = (".index", ".meta")


def _strip_file_suffix(path: str) -> str:
    """``model.ckpt-30.index`` or ``model.ckpt-30.data-00000-of-00001`` -> ``model.ckpt-30``."""
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    head, sep, tail = path.rpartition(".data-")
    if sep and len(tail) == 14 and tail[5:9] == "-of-" and tail[:5].isdigit() and tail[9:].isdigit():
        return head
    return path


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """Turn what a user passes (a prefix, a directory, or one of a checkpoint's files) into a prefix.

    A directory means its newest complete checkpoint (via the ``checkpoint`` state file, else a scan).

    Raises:
        CheckpointNotFoundError: nothing usable there; the message lists what was tried and what exists.
    """
    path = local_path(path, what="checkpoint")
    if os.path.isdir(path):
        found = latest(path)
        if found is None:
            try:
                entries = sorted(os.listdir(path))[:20]
            except OSError:
                entries = []
            raise CheckpointNotFoundError(
                f"no complete checkpoint in directory {path} (no usable 'checkpoint' state file and no "
                f"PREFIX.index with its data files); it contains: {', '.join(entries) or 'nothing'}",
                path=path, tried=[os.path.join(path, "checkpoint"), os.path.join(path, "*.index")],
                available=entries)
        return found
    tried = []
    for candidate in dict.fromkeys([path, _strip_file_suffix(path)]):
        tried.append(index_filename(candidate))
        if os.path.isfile(index_filename(candidate)):
            return candidate
        if os.path.exists(index_filename(candidate)):
            _fs.check_regular(index_filename(candidate))  # raises: a FIFO, a device or a directory is there
    directory = os.path.dirname(path) or "."
    available = [os.path.relpath(p, directory) for p in find_checkpoints(directory)]
    hint = f"; checkpoints in {directory}: {', '.join(available)}" if available else \
        (f"; {directory} holds no checkpoint" if os.path.isdir(directory) else f"; {directory} does not exist")
    raise CheckpointNotFoundError(f"no checkpoint at {path} (tried {', '.join(tried)}){hint}",
                                  path=path, tried=tried, available=available)


class Reader:
    """Read a checkpoint's tensors by name, lazily.

    Works on checkpoints written by TensorFlow 1's ``Saver`` (including sharded saves and partitioned variables),
    TensorFlow 2's ``tf.train.Checkpoint``, and ckpt, and on safetensors files (single or sharded), PyTorch
    state-dict files (read only through ``torch.load(weights_only=True)``), NumPy ``.npz`` archives and Keras
    ``.weights.h5`` files; the format is detected from the content. Nothing is read before it is asked for;
    TensorFlow and safetensors tensors come back as read-only memory-mapped views. Safe to share between threads
    for TensorFlow bundles.

    Args:
        path: A checkpoint prefix (``model.ckpt-30``), one of its files, a directory (its newest checkpoint, or
            its sharded safetensors index), or a file of another format.
        verify_checksums: Check each tensor's CRC32C when it is read (default True; TensorFlow bundles). Sizes and
            index block checksums are always checked.
        names: ``"raw"`` (default): names as stored. ``"clean"``: readable names for TensorFlow 2 object-based
            checkpoints and Keras weights (see :data:`NAMES`).
        format: Skip detection: ``"tensorflow"``, ``"safetensors"``, ``"torch"``, ``"numpy"`` or ``"keras"``.

    Attributes:
        prefix: The checkpoint (for TensorFlow, the resolved prefix; else the file, index or directory opened).
        path: ``prefix`` as a ``pathlib.Path``.
        format: The format name.
        names: ``"raw"`` or ``"clean"``.

    Example:
        >>> with ckpt.Reader("model/") as r:                       # doctest: +SKIP
        ...     print(r.shapes())
        ...     w = r["conv_layer_1/W_conv_1"]
        >>> ckpt.Reader("tf2/ckpt-3", names="clean").keys()     # doctest: +SKIP
        ['model/layer/bias', 'model/layer/kernel', 'optimizer/model/layer/kernel/m', ...]
    """

    format = "tensorflow"

    def __new__(cls, path: str | os.PathLike, *, verify_checksums: bool = True, names: str = "raw",
                format: str | None = None):
        path = local_path(path, what="checkpoint")
        fmt = None
        if cls is Reader:
            fmt = _formats.canonical(format) if format else _formats.detect(path)
            if fmt != "tensorflow":
                cls = ForeignReader
        self = super().__new__(cls)
        self._detected = fmt  # ForeignReader.__init__ uses it instead of detecting (reading the file) again
        return self

    def __init__(self, path: str | os.PathLike, *, verify_checksums: bool = True, names: str = "raw",
                 format: str | None = None) -> None:
        del format  # chosen in __new__
        self.names = _check_names(names)
        self.prefix: str = resolve_checkpoint(path)
        self._bundle = BundleReader(self.prefix, verify_checksums=verify_checksums)
        self._entries: dict[str, TensorEntry] | None = None
        self._record: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return Path(self.prefix)

    # ------------------------------------------------------------------ listing

    def _all(self) -> dict[str, TensorEntry]:
        if self._entries is None:
            entries = {e.name: e for e in self._bundle.entries() if e.name not in _HIDDEN}
            graph = entries.get(OBJECT_GRAPH_KEY)
            if self.names == "clean" and graph is not None and graph.dtype.is_string and not graph.shape:
                mapping = clean_names(self._bundle.read_entry(graph).item(), set(entries), path=self.prefix)
                del entries[OBJECT_GRAPH_KEY]
                entries = dict(sorted((mapping.get(k, k), e) for k, e in entries.items()))
            self._entries = entries
        return self._entries

    def keys(self) -> list[str]:
        """Tensor names, sorted (slice entries of partitioned tensors and ckpt's metadata are hidden; with
        ``names="clean"`` the object graph too)."""
        return list(self._all())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name to shape, like TensorFlow's ``get_variable_to_shape_map``."""
        return {name: e.shape for name, e in self._all().items()}

    def dtypes(self) -> dict[str, np.dtype | str]:
        """Name to the NumPy dtype its array has, or TensorFlow's type name where NumPy has none (``qint8``)."""
        return {name: (e.dtype.numpy if e.dtype.native else e.dtype.name) for name, e in self._all().items()}

    def entry(self, name: str) -> TensorEntry:
        """Where and how tensor ``name`` is stored (shard, offset, size, checksum). With clean names, the entry's
        own ``name`` is the raw key in the file."""
        if self._entries is None and self.names == "clean":
            self._all()
        entry = self._entries.get(name) if self._entries is not None else self._bundle.entry(name)
        if entry is None or name in _HIDDEN:
            raise self._missing(name)
        return entry

    def info(self, name: str) -> TensorInfo:
        """Name, dtype, shape and size of tensor ``name`` in the form every format shares."""
        e = self.entry(name)
        return TensorInfo(name, e.dtype.name, e.shape, e.nbytes, e.shard, None if e.slices else e.offset,
                          bool(e.slices))

    def raw_name(self, name: str) -> str:
        """The key tensor ``name`` has in the file (differs from ``name`` only for clean names)."""
        return self.entry(name).name

    def _missing(self, name: str) -> CheckpointNotFoundError:
        import difflib

        close = difflib.get_close_matches(name, self.keys(), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return CheckpointNotFoundError(f"{self.prefix}: no tensor named {name!r}{hint}", path=self.prefix,
                                       key=name, available=close)

    # ------------------------------------------------------------------ values

    def __getitem__(self, name: str) -> np.ndarray:
        return self._bundle.read_entry(self.entry(name))

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        """Read tensor ``name`` into the existing array ``out`` and return it: straight from the file into
        ``out``'s memory when it is C-contiguous, writable and of the tensor's dtype (see
        ``BundleReader.read_into``; the checksum is verified over ``out`` afterwards), else by copying."""
        self._bundle.read_many_into([(self.entry(name), out)])
        return out

    def read_many_into(self, pairs: Iterable[tuple[str, np.ndarray]]) -> None:
        """``read_into`` for many ``(name, out)`` pairs at once: tensors adjacent in the file are read by one
        ``preadv`` call, and checksums are computed while the next bytes are read (``BundleReader.read_many_into``).
        Every name is looked up before anything is read."""
        entry = self.entry
        self._bundle.read_many_into([(entry(name), out) for name, out in pairs])

    def get(self, name: str, default: Any = None) -> Any:
        """``reader[name]``, or ``default`` when there is no such tensor."""
        return self[name] if name in self else default

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or name in _HIDDEN:
            return False
        if self._entries is not None or self.names == "clean":
            return name in self._all()
        return self._bundle.entry(name) is not None

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` for every tensor, reading each when reached."""
        for name in self.keys():
            yield name, self[name]

    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON metadata saved with ``ckpt.save(..., metadata=...)``; empty for other checkpoints."""
        user = self.record.get("user", {})
        return user if isinstance(user, dict) else {}

    @property
    def record(self) -> dict[str, Any]:
        """ckpt's whole bookkeeping record (user metadata, tree spec, RNG state, ...); empty for checkpoints
        written by other tools."""
        if self._record is None:
            entry = self._bundle.entry(METADATA_KEY)
            if entry is None:
                self._record = {}
            else:
                if entry.size > _json.MAX_BYTES:  # checked before anything is read or allocated
                    raise CorruptCheckpointError(f"{self.prefix}: malformed ckpt metadata ({entry.size} bytes, more "
                                                 f"than the {_json.MAX_BYTES} a ckpt record may have)",
                                                 path=self.prefix, key=METADATA_KEY)
                raw = self._bundle.read_entry(entry)
                try:
                    record = _json.loads(raw.reshape(()).item())
                except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as exc:
                    raise CorruptCheckpointError(f"{self.prefix}: malformed ckpt metadata ({exc})",
                                                 path=self.prefix, key=METADATA_KEY) from None
                if not isinstance(record, dict):
                    raise CorruptCheckpointError(f"{self.prefix}: malformed ckpt metadata (not an object)",
                                                 path=self.prefix, key=METADATA_KEY)
                self._record = record
        return self._record

    def close(self) -> None:
        """Release open files. Arrays already returned stay valid."""
        self._bundle.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reader({self.prefix!r})"


def _check_names(names: str) -> str:
    if names not in NAMES:
        raise ValueError(f"names must be one of {', '.join(map(repr, NAMES))}, not {names!r}")
    return names


class ForeignReader(Reader):
    """A :class:`Reader` over a non-TensorFlow format: the same interface, served by a ``ckpt.formats`` source.

    ``entry()`` is TensorFlow-specific and raises :class:`~ckpt.errors.UnsupportedError`; use ``info()``.
    ``record`` is empty; ``metadata`` is the file's own (safetensors ``__metadata__``, HDF5 attributes).
    Thread safety is that of the source (safetensors: safe; PyTorch, NumPy, Keras: one thread at a time).
    """

    def __init__(self, path: str | os.PathLike, *, verify_checksums: bool = True, names: str = "raw",
                 format: str | None = None) -> None:
        del verify_checksums  # only bundles store checksums
        self.names = _check_names(names)
        fmt = self._detected or (_formats.canonical(format) if format else _formats.detect(path))
        self._source = _formats.get(fmt).open(local_path(path, what="checkpoint"), names=names)
        self.format = fmt
        self.prefix = os.fspath(self._source.path)
        self._record = {}

    @property
    def source(self) -> _formats.Source:
        """The underlying ``ckpt.formats`` source."""
        return self._source

    def keys(self) -> list[str]:
        return self._source.keys()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return self._source.shapes()

    def dtypes(self) -> dict[str, np.dtype | str]:
        return self._source.dtypes()

    def info(self, name: str) -> TensorInfo:
        if name not in self._source:
            raise self._missing(name)
        return self._source.info(name)

    def entry(self, name: str) -> TensorEntry:
        raise UnsupportedError(f"{self.prefix}: entry() describes TensorFlow bundle storage; this is a {self.format} "
                               "checkpoint, use info()", path=self.prefix, key=name)

    def raw_name(self, name: str) -> str:
        if name not in self._source:
            raise self._missing(name)
        raw = getattr(self._source, "_raw", None)
        return raw.get(name, name) if isinstance(raw, dict) else name

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._source:
            raise self._missing(name)
        return self._source.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._source

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        out[...] = self[name]
        return out

    def read_many_into(self, pairs: Iterable[tuple[str, np.ndarray]]) -> None:
        for name, out in pairs:
            self.read_into(name, out)

    def __len__(self) -> int:
        return len(self._source.keys())

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._source.metadata)

    @property
    def record(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._source.close()

    def __repr__(self) -> str:
        return f"Reader({self.prefix!r}, format={self.format!r})"
