"""``ckpt.Reader``: lazy, dict-like access to a checkpoint's tensors (TensorFlow's ``NewCheckpointReader``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import CheckpointNotFoundError, CorruptCheckpointError
from .format.bundle import BundleReader, TensorEntry, index_filename
from .format.state_file import find_checkpoints, latest

__all__ = ["Reader", "resolve_checkpoint", "METADATA_KEY"]

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
    path = os.fspath(path)
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
    directory = os.path.dirname(path) or "."
    available = [os.path.relpath(p, directory) for p in find_checkpoints(directory)]
    hint = f"; checkpoints in {directory}: {', '.join(available)}" if available else \
        (f"; {directory} holds no checkpoint" if os.path.isdir(directory) else f"; {directory} does not exist")
    raise CheckpointNotFoundError(f"no checkpoint at {path} (tried {', '.join(tried)}){hint}",
                                  path=path, tried=tried, available=available)


class Reader:
    """Read a checkpoint's tensors by name, lazily.

    Works on checkpoints written by TensorFlow 1's ``Saver`` (including sharded saves and partitioned variables),
    TensorFlow 2's ``tf.train.Checkpoint``, and ckpt. Nothing is read before it is asked for; POD tensors come back
    as read-only memory-mapped views. Safe to share between threads.

    Args:
        path: A checkpoint prefix (``model.ckpt-30``), one of its files, or a directory (its newest checkpoint).
        verify_checksums: Check each tensor's CRC32C when it is read (default True). Sizes and index block
            checksums are always checked.

    Example:
        >>> with ckpt.Reader("model/") as r:                       # doctest: +SKIP
        ...     print(r.shapes())
        ...     w = r["conv_layer_1/W_conv_1"]
    """

    def __init__(self, path: str | os.PathLike, *, verify_checksums: bool = True) -> None:
        self.prefix: str = resolve_checkpoint(path)
        self._bundle = BundleReader(self.prefix, verify_checksums=verify_checksums)
        self._entries: dict[str, TensorEntry] | None = None
        self._record: dict[str, Any] | None = None

    # ------------------------------------------------------------------ listing

    def _all(self) -> dict[str, TensorEntry]:
        if self._entries is None:
            self._entries = {e.name: e for e in self._bundle.entries() if e.name not in _HIDDEN}
        return self._entries

    def keys(self) -> list[str]:
        """Tensor names, sorted (slice entries of partitioned tensors and ckpt's metadata are hidden)."""
        return list(self._all())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name to shape, like TensorFlow's ``get_variable_to_shape_map``."""
        return {name: e.shape for name, e in self._all().items()}

    def dtypes(self) -> dict[str, np.dtype | str]:
        """Name to the NumPy dtype its array has, or TensorFlow's type name where NumPy has none (``qint8``)."""
        return {name: (e.dtype.numpy if e.dtype.native else e.dtype.name) for name, e in self._all().items()}

    def entry(self, name: str) -> TensorEntry:
        """Where and how tensor ``name`` is stored (shard, offset, size, checksum)."""
        entry = self._entries.get(name) if self._entries is not None else self._bundle.entry(name)
        if entry is None or name in _HIDDEN:
            raise self._missing(name)
        return entry

    def _missing(self, name: str) -> CheckpointNotFoundError:
        import difflib

        close = difflib.get_close_matches(name, self.keys(), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return CheckpointNotFoundError(f"{self.prefix}: no tensor named {name!r}{hint}", path=self.prefix,
                                       key=name, available=close)

    # ------------------------------------------------------------------ values

    def __getitem__(self, name: str) -> np.ndarray:
        return self._bundle.read_entry(self.entry(name))

    def get(self, name: str, default: Any = None) -> Any:
        """``reader[name]``, or ``default`` when there is no such tensor."""
        return self[name] if name in self else default

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or name in _HIDDEN:
            return False
        if self._entries is not None:
            return name in self._entries
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
                raw = self._bundle.read_entry(entry)
                try:
                    record = json.loads(raw.reshape(()).item().decode("utf-8"))
                except (ValueError, UnicodeDecodeError, AttributeError) as exc:
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
