"""``ckpt.verify``: read a checkpoint, or a whole checkpoint directory, completely and list everything wrong with it.

Reading a tensor already checks what concerns that tensor (its bounds, size and CRC32C, the checksum of each index
block on the way). ``verify`` does that for every tensor of every checkpoint, without building any value, and
collects every problem instead of stopping at the first: a bad block checksum, an entry that does not parse, a
truncated or missing data file, a tensor whose bytes do not match their checksum (strings and partitioned tensors
included). For a directory it also checks the ``checkpoint`` state file and the ``Manager`` records, and reports
leftovers of interrupted saves (temporary files, data files without their index).

Files of the other formats ``ckpt.Reader`` opens are checked with what each format offers (:data:`CHECKS`):
safetensors its header, offsets and sizes; ``.npz`` and zip PyTorch files the CRC-32 of every zip member; every
tensor of every format is read completely.

It only reads; it never changes or deletes anything. ``Manager.restore`` and ``ckpt.latest(..., verify=True)`` use
the same per-checkpoint check to fall back to the newest checkpoint that verifies.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _fs, _json
from ._lock import LOCK_FILENAME
from . import formats as _formats
from ._paths import local_path
from .api import TEMPORARY_RE
from .errors import CheckpointError, CheckpointNotFoundError, UnsupportedError
from .tf._crc import crc32c
from .tf.bundle import BundleReader, check_bundle, index_filename
from .tf.state_file import STATE_FILENAME, read_state, resolve
from .manager import RECORD_SUFFIX, read_record
from .reader import METADATA_KEY, resolve_checkpoint

__all__ = ["verify", "VerifyReport", "Problem", "CHECKS"]

#: What :func:`verify` checks, per format.
CHECKS = {
    "tensorflow": "index block checksums, every entry, data files present, every tensor's bounds, size and CRC32C",
    "safetensors": "header, dtypes, shapes, offsets and sizes; every tensor read",
    "numpy": "every member's .npy header, size and zip CRC-32; every tensor read",
    "torch": "storage sizes and (zip files) every member's CRC-32; every tensor read",
    "keras": "HDF5 structure; every dataset read (HDF5 files carry no checksums by default)",
}

#: ``progress(done_bytes, total_bytes, name)``.
ProgressCallback = Callable[[int, int, str], None]

_DATA_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong.

    Attributes:
        file: The file involved (an ``.index``, a ``.data-*`` file, the state file, a record, a leftover).
        what: What is wrong, in words.
        tensor: The tensor involved, when there is one.
        checkpoint: The checkpoint prefix involved, when there is one.
    """

    file: Path
    what: str
    tensor: str | None = None
    checkpoint: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "tensor": self.tensor,
                "checkpoint": None if self.checkpoint is None else str(self.checkpoint), "what": self.what}

    def __str__(self) -> str:
        tensor = "" if self.tensor is None else f" tensor {self.tensor!r}:"
        return f"{self.file}:{tensor} {self.what}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` checked and found.

    Attributes:
        path: What was asked for (a checkpoint or a directory).
        checkpoints: Every checkpoint prefix checked.
        problems: Everything wrong, in the order found; empty when all is well.
        tensors: Tensors checked completely.
        bytes: Tensor payload bytes checked.
        busy: A save was in progress in the directory, so temporary files were not reported as leftovers.
        format: The format checked (``"tensorflow"`` for a directory of TensorFlow checkpoints); :data:`CHECKS`
            says what was checked.
    """

    path: Path
    checkpoints: tuple[Path, ...]
    problems: tuple[Problem, ...]
    tensors: int
    bytes: int
    busy: bool = False
    format: str = "tensorflow"

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what ``ckpt verify --json`` prints)."""
        return {"path": str(self.path), "ok": self.ok, "checkpoints": [str(p) for p in self.checkpoints],
                "tensors": self.tensors, "bytes": self.bytes, "busy": self.busy, "format": self.format,
                "checked": CHECKS.get(self.format, ""), "problems": [p.to_dict() for p in self.problems]}


def verify(path: str | os.PathLike, *, progress: ProgressCallback | None = None) -> VerifyReport:
    """Check a checkpoint, or every checkpoint in a directory, completely.

    For one checkpoint (a prefix or one of its files): the index (footer, every block checksum, the metaindex
    block, key order, every entry), that every data file exists, and every tensor's bounds, size and checksum
    (strings' length checksums, each slice of a partitioned tensor and how the slices tile it), and ckpt's own
    metadata record.

    For a directory: every checkpoint the ``checkpoint`` state file lists and every other ``.index`` on disk, as
    above; that the state file parses and that what it lists exists; every ``Manager`` record
    (``*.manager.json``): that it parses and that what it lists exists; and leftovers of interrupted saves
    (temporary files, ``.data-*`` files whose ``.index`` is missing), unless a save holds the directory lock right
    now.

    A file of another format ``ckpt.Reader`` opens (safetensors, also sharded, PyTorch, ``.npz``, Keras ``.h5``),
    or a directory holding one sharded safetensors checkpoint: opened (which checks its header, or the CRC-32 of
    every zip member of a PyTorch file) and every tensor read completely (which checks each ``.npz`` member's
    CRC-32); see :data:`CHECKS`.

    Nothing is changed or deleted.

    Args:
        path: A checkpoint prefix, one of its files, a directory, or a file of another format.
        progress: Called as ``progress(done_bytes, total_bytes, name)`` as tensors are checked (for a progress
            bar); ``total_bytes`` is the size of the data files.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is True when nothing is wrong.

    Raises:
        CheckpointNotFoundError: ``path`` is neither a directory nor a checkpoint.

    Example:
        >>> report = ckpt.verify("runs/exp1")                      # doctest: +SKIP
        >>> for problem in report.problems:
        ...     print(problem)
        runs/exp1/ckpt-30.data-00000-of-00001: tensor 'model/w': checksum mismatch (stored 0x..., computed 0x...)
    """
    target = local_path(path, what="checkpoint")
    fmt = _format_of(target)
    if fmt != "tensorflow":
        return _verify_other(target, fmt, progress)
    if os.path.isdir(target):
        return _verify_directory(target, progress)
    prefix = resolve_checkpoint(target)
    problems: list[Problem] = []
    tensors, nbytes = _verify_checkpoint(prefix, problems, _Tally([prefix], progress))
    return VerifyReport(Path(target), (Path(prefix),), tuple(problems), tensors, nbytes)


def _format_of(target: str) -> str:
    """The format to verify ``target`` as; a file whose damaged content matches no format goes by its suffix."""
    if os.path.isdir(target):
        try:
            entries = os.listdir(target)
        except OSError:
            return "tensorflow"
        if "checkpoint" in entries or any(e.endswith(".index") for e in entries):
            return "tensorflow"
        return _formats.detect(target)
    try:
        return _formats.detect(target)
    except UnsupportedError:
        suffix = os.path.splitext(target)[1].lower()
        by_suffix = _formats._BY_SUFFIX.get(suffix)
        if by_suffix is None:
            raise
        return by_suffix


class _Tally:
    """Turns per-checkpoint byte counts into one ``progress(done, total, name)`` over several checkpoints."""

    def __init__(self, prefixes: list[str], progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.base = 0
        self.total = 0
        if progress is not None:
            for prefix in prefixes:
                for file in glob.glob(glob.escape(prefix) + ".data-?????-of-?????"):
                    try:
                        self.total += os.path.getsize(file)
                    except OSError:
                        pass

    def callback(self) -> Callable[[int, str], None] | None:
        if self.progress is None:
            return None
        base, progress, total = self.base, self.progress, self.total
        return lambda done, name: progress(base + done, max(total, base + done), name)

    def add(self, nbytes: int) -> None:
        self.base += nbytes


def _verify_other(target: str, fmt: str, progress: ProgressCallback | None) -> VerifyReport:
    """Open a file of another format and read every tensor completely, collecting every problem."""
    problems: list[Problem] = []
    tensors = nbytes = 0

    def problem(exc: BaseException, key: str | None = None) -> None:
        file = getattr(exc, "path", None) or target
        message = _strip(str(exc), os.fspath(file))
        if isinstance(exc, CheckpointError):
            key = exc.key or key
        else:
            message = f"cannot be read ({type(exc).__name__}: {exc})"
        problems.append(Problem(Path(file), message, key, Path(target)))

    try:
        source = _formats.open(target, format=fmt)
    except (CheckpointNotFoundError, UnsupportedError):
        raise  # nothing there, or ckpt cannot check it (a pickle it refuses, a package missing): not a finding
    except CheckpointError as exc:  # damaged
        problem(exc)
        return VerifyReport(Path(target), (Path(target),), tuple(problems), 0, 0, format=fmt)
    with source:
        names = source.keys()
        sizes = {}
        for name in names:
            try:
                sizes[name] = source.info(name).nbytes
            except CheckpointError as exc:
                problem(exc, name)
        total = sum(sizes.values())
        for name in names:
            if name not in sizes:
                continue
            try:
                _read_completely(source.get(name))
            except CheckpointError as exc:
                problem(exc, name)
                continue
            except (OSError, ValueError, TypeError, MemoryError) as exc:  # h5py, zipfile on damaged files
                problem(exc, name)
                continue
            tensors += 1
            nbytes += sizes[name]
            if progress is not None:
                progress(nbytes, total, name)
        files = (Path(source.path),)
    return VerifyReport(Path(target), files, tuple(problems), tensors, nbytes, format=fmt)


def _read_completely(value) -> None:
    """Touch every byte of a (possibly memory-mapped) array, so an unreadable page is found here."""
    array = np.asarray(value)
    if array.dtype.kind in "OSU" or not array.size:
        return
    crc32c(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _verify_checkpoint(prefix: str, problems: list[Problem], tally: _Tally | None = None) -> tuple[int, int]:
    """Add the problems of the checkpoint at ``prefix``; returns (tensors, bytes) checked."""
    result = check_bundle(prefix, tally.callback() if tally is not None else None)
    if tally is not None:
        tally.add(result.bytes)
    for error in result.problems:
        problems.append(_problem(error, prefix))
    _check_record(prefix, problems)
    return result.tensors, result.bytes


def _check_record(prefix: str, problems: list[Problem]) -> None:
    """ckpt's metadata tensor, when there is one, must hold a JSON object (read problems are check_bundle's)."""
    try:
        with BundleReader(prefix) as reader:
            entry = reader.entry(METADATA_KEY)
            if entry is None or not entry.dtype.is_string or entry.shape != ():
                return
            if entry.size > _json.MAX_BYTES:
                raise ValueError(f"{entry.size} bytes, more than the {_json.MAX_BYTES} a ckpt record may have")
            raw = reader.read_entry(entry).reshape(()).item()
        record = _json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except CheckpointError:
        return  # already reported by check_bundle
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        problems.append(Problem(Path(index_filename(prefix)), f"malformed ckpt metadata ({exc})", METADATA_KEY,
                                Path(prefix)))


def _problem(error: CheckpointError, prefix: str) -> Problem:
    file = error.path or index_filename(prefix)
    message = str(error)
    for lead in (f"{file}: ", f"{prefix}: "):
        if message.startswith(lead):
            message = message[len(lead):]
            break
    return Problem(Path(file), message, error.key or None, Path(prefix))


def _verify_directory(directory: str, progress: ProgressCallback | None = None) -> VerifyReport:
    problems: list[Problem] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot list {directory}: {exc.strerror or exc}", path=directory) from None
    present = set(names)

    # The state file: it parses, and what it lists exists.
    prefixes: list[str] = []
    state_path = os.path.join(directory, STATE_FILENAME)
    try:
        state = read_state(directory)
    except CheckpointError as exc:
        state = None
        problems.append(Problem(Path(state_path), _strip(str(exc), state_path)))
    if state is not None:
        listed = list(state.all_model_checkpoint_paths)
        if state.model_checkpoint_path and state.model_checkpoint_path not in listed:
            listed.append(state.model_checkpoint_path)
        if not state.model_checkpoint_path and listed:
            problems.append(Problem(Path(state_path), "model_checkpoint_path is empty but checkpoints are listed"))
        for recorded in listed:
            prefix = resolve(directory, recorded)
            if not os.path.exists(index_filename(prefix)):
                problems.append(Problem(Path(state_path), f"lists {recorded!r}, but {index_filename(prefix)} does "
                                                          "not exist", checkpoint=Path(prefix)))
            elif prefix not in prefixes:
                prefixes.append(prefix)

    # Every index on disk (a complete-looking checkpoint), whether listed or not.
    for name in names:
        if name.endswith(".index") and not TEMPORARY_RE.match(name):
            prefix = os.path.join(directory, name[: -len(".index")])
            if prefix not in prefixes:
                prefixes.append(prefix)

    # Manager records: they parse, and what they list exists.
    for name in names:
        if name.endswith(RECORD_SUFFIX) and not TEMPORARY_RE.match(name):
            manager_name = name[: -len(RECORD_SUFFIX)]
            record_path = Path(directory, name)
            try:
                record = read_record(directory, manager_name)
            except CheckpointError as exc:
                problems.append(Problem(record_path, _strip(str(exc), str(record_path))))
                continue
            for step, info in sorted((record.checkpoints if record else {}).items()):
                if not os.path.exists(index_filename(info.prefix)):
                    problems.append(Problem(record_path, f"lists step {step}, but {index_filename(info.prefix)} "
                                                         "does not exist", checkpoint=Path(info.prefix)))

    tensors = nbytes = 0
    tally = _Tally(prefixes, progress)
    for prefix in prefixes:
        t, b = _verify_checkpoint(prefix, problems, tally)
        tensors += t
        nbytes += b

    # Leftovers of interrupted saves, unless a save is running right now (its temporaries are not leftovers).
    busy = _lock_held(directory)
    if not busy:
        for name in names:
            if TEMPORARY_RE.match(name):
                problems.append(Problem(Path(directory, name), "temporary file left over by an interrupted save; "
                                                               "the next save into this directory removes it"))
                continue
            match = _DATA_RE.match(name)
            if match and f"{match['prefix']}.index" not in present:
                problems.append(Problem(Path(directory, name), f"data file without its index "
                                                               f"({match['prefix']}.index is missing): left over by "
                                                               "an interrupted save or a partial deletion"))
    for prefix in prefixes:
        _check_stray_shards(prefix, present, directory, problems)
    return VerifyReport(Path(directory), tuple(Path(p) for p in prefixes), tuple(problems), tensors, nbytes, busy)


def _check_stray_shards(prefix: str, present: set[str], directory: str, problems: list[Problem]) -> None:
    """Data files of ``prefix`` with another shard count than its index says (left by an overwrite)."""
    base = os.path.basename(prefix)
    try:
        with BundleReader(prefix) as reader:
            mine = {os.path.basename(p) for p in reader.data_files()}
    except (CheckpointError, OSError):
        return
    for name in sorted(present):
        match = _DATA_RE.match(name)
        if match and match["prefix"] == base and name not in mine:
            problems.append(Problem(Path(directory, name), f"data file not part of {base} (its index names "
                                                           f"{len(mine)} data file(s))", checkpoint=Path(prefix)))


def _lock_held(directory: str) -> bool:
    """True when a save holds the directory lock (probed without creating or changing anything)."""
    try:
        import fcntl
    except ImportError:
        return False
    path = os.path.join(directory, LOCK_FILENAME)
    try:
        fd = _fs.open_regular(path)  # never blocks: a FIFO here is refused, not opened
    except (OSError, CheckpointError):
        return False  # no lock file (or not one a save could hold): nobody is saving
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock, if we got it
    return False


def _strip(message: str, path: str) -> str:
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message

