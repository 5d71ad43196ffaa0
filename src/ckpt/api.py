"""``ckpt.save``, ``ckpt.load`` and ``ckpt.restore``: state trees in, TensorFlow-compatible checkpoints out, and back.

A save is planned completely before a byte is written: the state is walked once (``ckpt.tree``), every tensor
named, every problem collected and raised at once. Then, holding the directory lock (``ckpt._lock``, so two
processes never interleave their saves), leftovers of interrupted saves are swept, the bundle is written (data,
then index, each under a temporary name until renamed, index last, fsync'd) and only then is the ``checkpoint``
state file updated, by atomic replace. A save that fails (raises) leaves no new file behind, removes the new
checkpoint again if the state file could not be updated, and never touches older checkpoints; a save that is
killed leaves either the old or the new checkpoint as the latest, and temporary files the next save sweeps.

A restore compares everything first (missing, unexpected and mismatched names, shapes and dtypes) and touches no
target before that comparison passes.
"""

from __future__ import annotations

import difflib
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from . import _async, _fs, _json, _rng, _seam, tree
from ._lock import DirectoryLock, check_timeout
from ._paths import local_path
from .errors import (CheckpointError, CorruptCheckpointError, InvalidStateError, StateMismatchError,
                     UnsupportedError)
from .tf.bundle import BundleWriter, data_filename, index_filename
from .tf.state_file import STATE_FILENAME, CheckpointState, read_state, resolve, write_state
from .reader import METADATA_KEY, Reader

__all__ = ["save", "load", "restore", "RestoreReport", "NameMap", "flatten", "write_checkpoint", "wait",
           "FRAMEWORKS"]

#: ``{name_in_checkpoint: name_in_state}``, a callable returning the state name (or None to skip), or a list of
#: ``(regex, replacement)`` rules (the first rule that matches a checkpoint name rewrites it).
NameMap = Union[Mapping[str, str], Callable[[str], "str | None"], Sequence[tuple[str, str]]]

logger = logging.getLogger("ckpt")


def flatten(state: Any) -> dict[str, np.ndarray]:
    """``name -> array`` for every tensor ``save`` would write (tied tensors once).

    Raises:
        InvalidStateError: listing every unsupported value, bad key and name collision at once.
    """
    walked = tree.walk(state)
    _raise_problems(walked.problems)
    return {name: leaf.get() for name, leaf in walked.leaves.items()}


def _raise_problems(problems: list[str]) -> None:
    if problems:
        listing = "\n  ".join(problems)
        raise InvalidStateError(f"cannot save this state ({len(problems)} problem(s)):\n  {listing}")


def _is_plain(spec: Any) -> bool:
    """True when names alone describe the tree (nested dicts of NumPy arrays): no record is needed, and the files
    equal what TensorFlow's Saver writes for the same tensors."""
    if "dict" in spec:
        if "keys" in spec or "ordered" in spec:  # key types or the container type need the record
            return False
        for _, child in spec["dict"]:
            if child.get("kind") != "ndarray" or "leaf" not in child:
                if "dict" not in child or not _is_plain(child):
                    return False
        return True
    return "leaf" in spec and spec.get("kind") == "ndarray"


@dataclass(frozen=True)
class _Plan:
    """Everything a save writes, checked: the walked state and the encoded ckpt record (None: no record)."""

    walked: Any
    record: bytes | None


def write_checkpoint(state: Any, prefix: str, *, metadata: Mapping[str, Any] | None = None, rng: bool = False,
                     num_shards: int = 1, sync: bool = True, extra_record: Mapping[str, Any] | None = None,
                     alignment: int = 1) -> str:
    """Write one checkpoint at ``prefix`` without touching the ``checkpoint`` state file and without locking (the
    manager's building block; the caller holds the directory lock). Returns ``prefix``.

    ``alignment`` (bytes, default 1: packed, byte-identical to TensorFlow's default) pads the data file with zeros
    after each tensor so that every tensor starts at a multiple of it (TensorFlow's ``data_alignment``; readers
    including TensorFlow ignore the padding), e.g. 64 for aligned memory-mapped views."""
    prefix = local_path(prefix, what="checkpoint")
    with _no_gc():
        plan = _plan(state, metadata=metadata, rng=rng, extra_record=extra_record)
        _fs.makedirs(os.path.dirname(prefix) or ".")
        _write_planned(plan, prefix, num_shards=num_shards, sync=sync, alignment=alignment)
    return prefix


class _no_gc:
    """Pause the cyclic garbage collector: walking a state makes many small objects, and collections triggered
    by them cost more than the walk itself for states of many small tensors."""

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc) -> None:
        if self.was_enabled:
            gc.enable()


def _plan(state: Any, *, metadata: Mapping[str, Any] | None, rng: bool,
          extra_record: Mapping[str, Any] | None = None) -> _Plan:
    """Walk and check ``state`` and encode the record; no I/O. Raises InvalidStateError listing every problem."""
    walked = tree.walk(state)
    problems = list(walked.problems)
    if METADATA_KEY in walked.leaves:
        problems.append(f"{METADATA_KEY!r}: reserved for ckpt's metadata")
    for name in walked.leaves:
        try:
            name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            problems.append(f"{name!r}: not a valid tensor name ({exc.reason})")
            continue
        if name.startswith("\x00"):
            problems.append(f"{name!r}: names must not start with a NUL byte (that marks slice entries)")
    _raise_problems(problems)
    record: dict[str, Any] = {}
    if metadata is not None:
        record["user"] = dict(metadata)
    if rng:
        record["rng"] = _rng.capture()
    if walked.aliases:
        record["aliases"] = walked.aliases
    if extra_record:
        record.update(extra_record)
    if record or not _is_plain(walked.spec):
        record["tree"] = walked.spec
        return _Plan(walked, _json.encode_record(record))  # refuses what loading would refuse
    return _Plan(walked, None)


def _write_planned(plan: _Plan, prefix: str, *, num_shards: int, sync: bool, alignment: int = 1,
                   arrays: Mapping[str, np.ndarray] | None = None) -> None:
    """Write the planned checkpoint; ``arrays`` (name -> value, a snapshot) replaces reading the leaves."""
    leaves = plan.walked.leaves
    with BundleWriter(prefix, num_shards=num_shards, sync=sync, alignment=alignment) as writer:
        add = writer.add
        for name in sorted(leaves, key=lambda n: n.encode("utf-8", "surrogateescape")):
            add(name, leaves[name].get() if arrays is None else arrays[name])
        if plan.record is not None:
            add(METADATA_KEY, np.asarray(plan.record, dtype=object))
        writer.finish()


def _snapshot(plan: _Plan, saver: _async.AsyncSaver | None = None) -> dict[str, np.ndarray]:
    """A host-memory copy of every tensor of the plan, consistent at the moment of the call.

    With ``saver``, the buffers of its last finished save are claimed (``AsyncSaver.take_buffers``) and reused where
    name, shape and dtype match: copying into memory that is already mapped avoids a page fault per 4 KiB, which
    otherwise costs more than the copy itself. Pass the result to ``saver.submit(job, buffers=...)``, which gives
    it back to the saver once the job has written it.

    Ownership: this thread and one ``ckpt-snapshot`` helper fill disjoint sets of tensors (the helper the second
    half of the large ones); the helper has been joined before this returns or raises, so the caller owns the
    whole result.
    """
    reuse = saver.take_buffers() if saver is not None else {}
    out: dict[str, np.ndarray] = {}
    large: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for name, leaf in plan.walked.leaves.items():
        value = np.asarray(leaf.get())
        buf = reuse.get(name)
        if buf is not None and not (buf.shape == value.shape and buf.dtype == value.dtype and value.dtype != object):
            buf = None
        if value.nbytes >= _PARALLEL_COPY_MIN:
            large.append((name, value, buf))
            out[name] = None  # filled below; keeps the order of the leaves
        else:
            out[name] = _copy(value, buf)
    if large:
        # Two halves of the large tensors copied at once: the copy (and the page faults of new memory) run on two
        # cores, NumPy releasing the GIL while it copies.
        large.sort(key=lambda item: -item[1].nbytes)
        halves: list[list] = [[], []]
        loads = [0, 0]
        for item in large:
            side = 0 if loads[0] <= loads[1] else 1
            halves[side].append(item)
            loads[side] += item[1].nbytes

        failed: list[BaseException] = []

        def copy_half(items: list) -> None:
            try:
                for name, value, buf in items:
                    _seam.point("snapshot.copy")
                    out[name] = _copy(value, buf)
            except BaseException as exc:  # e.g. MemoryError: raised by the caller below
                failed.append(exc)

        helper = threading.Thread(target=copy_half, args=(halves[1],), name="ckpt-snapshot", daemon=True)
        helper.start()
        try:
            copy_half(halves[0])
        finally:
            helper.join()
        if failed:
            raise failed[0]
    return out


_PARALLEL_COPY_MIN = 1 << 20  # tensors this large are copied by two threads when snapshotting


def _copy(value: np.ndarray, buf: np.ndarray | None) -> np.ndarray:
    if buf is not None:
        np.copyto(buf, value, casting="no")
        return buf
    return np.array(value, copy=True, order="C")


#: Asynchronous ``ckpt.save(..., blocking=False)`` calls: one in flight at a time.
_SAVER = _async.AsyncSaver("ckpt-save")


def wait() -> None:
    """Wait for every pending asynchronous save (``ckpt.save(..., blocking=False)`` and managers created with
    ``async_save=True``) to be committed.

    Raises:
        The first error a background save raised (after waiting for all of them); each error is raised once.
    """
    _async.wait_all()


#: Temporary files of a checkpoint save (data, index, ``.meta``, state file, manager record), as
#: ``_fs.temporary_name`` names them.
TEMPORARY_RE = re.compile(
    r"^(?:.+\.index|.+\.data-\d{5}-of-\d{5}|.+\.meta|checkpoint|.+\.manager\.json)\.tmp-[0-9a-f]{8}$")


def sweep_temporaries(directory: str, stem: str) -> list[str]:
    """Delete the temporary files that interrupted saves of checkpoints ``{stem}`` / ``{stem}-<step>`` (and of
    manager ``stem``'s record and of the ``checkpoint`` state file) left in ``directory``.

    Only safe while holding the directory lock: every ckpt save holds it while its temporary files exist, so such
    a file found then belongs to a save that died. Temporaries of other names are left alone (they may belong to
    another tool); so are state-file temporaries not named exactly as ckpt names them. Returns the names deleted.
    """
    mine = re.compile(rf"^(?:{re.escape(stem)}(?:-\d+)?\.(?:index|data-\d{{5}}-of-\d{{5}}|meta)|"
                      rf"{re.escape(stem)}\.manager\.json)\.tmp-[0-9a-f]{{8}}$|^checkpoint\.tmp-[0-9a-f]{{8}}$")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if mine.match(name):
            try:
                _fs.unlink(os.path.join(directory, name))
                removed.append(name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("ckpt: could not remove %s, left over by an interrupted save: %s", name, exc)
    if removed:
        logger.info("ckpt: removed %s, left over by interrupted saves", ", ".join(sorted(removed)))
    return removed


def save(state: Any, prefix: str | os.PathLike, *, step: int | None = None,
         metadata: Mapping[str, Any] | None = None, rng: bool = False, num_shards: int = 1,
         sync: bool = True, lock_timeout: float | None = None, graph: Any = None, alignment: int = 1,
         blocking: bool = True) -> str:
    """Save ``state`` as a TensorFlow-compatible checkpoint and record it in the directory's ``checkpoint`` file.

    Args:
        state: A tree of dicts, lists, tuples, namedtuples and dataclasses whose leaves are NumPy arrays or
            scalars, Python numbers/bools/strings, torch tensors, modules, optimizers, LR schedulers and
            generators, JAX arrays, ``tf.Variable``\\ s, ``tf.Module``\\ s and Keras models, and any object with
            ``state_dict()``/``load_state_dict()`` (saved through ``state_dict()``). Names join the path with
            ``/`` (``{"model": net}`` gives ``model/fc1/weight``). Tensors shared by several names are stored once.
            Dict keys may be str, int, bool, None, float (not NaN) or tuples of these; their types are recorded.
        prefix: Checkpoint prefix, e.g. ``"model/regression.ckpt"``. Missing directories are created. A URL
            (``s3://...``) raises UnsupportedError; ``file:///abs/path`` is the local path.
        step: Appended as ``-<step>`` (TensorFlow's ``global_step``).
        metadata: JSON-serialisable data stored with the checkpoint, read back as ``Reader(...).metadata``.
        rng: Also capture the global random generators (Python, NumPy, torch, TensorFlow); ``restore`` puts them
            back.
        num_shards: Number of data files. Several are written by parallel threads (up to one per file, at most
            the number of CPUs and 8).
        sync: fsync data, index, state file and directory before returning (default), so the checkpoint and the
            state file naming it survive a power loss once ``save`` returns. ``False`` skips every fsync for
            scratch runs: a crash of the process still never leaves a half-written checkpoint, but a power loss
            may lose recent saves.
        lock_timeout: Seconds to wait while another process saves into the same directory (None, the default:
            as long as it takes; 0: fail at once).
        graph: Also write ``PREFIX.meta`` (a MetaGraphDef, as TensorFlow's ``Saver`` does) from a
            :class:`ckpt.graph.Graph`, a GraphDef/MetaGraphDef (ckpt's or TensorFlow's) or a ``tf.Graph``; for
            PyTorch pass ``ckpt.graph.from_torch(model, example_inputs)``. Written atomically once the checkpoint
            itself is complete.
        alignment: Start every tensor's bytes at a multiple of this many bytes in the data file, padding with
            zeros (TensorFlow's ``data_alignment``; TensorFlow and every reader ignore the padding, sizes never
            include it). The default 1 writes packed files, byte-identical to TensorFlow's; e.g. 64 makes the
            memory-mapped arrays ``Reader`` returns aligned for vectorised code.
        blocking: True (default): return once the checkpoint is written and committed. False: copy every tensor
            to host memory (a snapshot consistent at the moment of the call: later changes to the state are not
            saved), return the prefix at once and write and commit in a background thread (lock, data, index,
            state file: the ``checkpoint`` file names the new checkpoint only once it is complete). At most one
            asynchronous save is in flight: the next ``save`` waits for it first. An error of a background save
            is raised by the next ``save`` call or by :func:`ckpt.wait`; pending saves are completed before the
            interpreter exits. The host copy is kept and reused by the next asynchronous save of the same
            tensors (no new allocation, no page faults).

    Returns:
        The prefix written (with the step suffix).

    Raises:
        InvalidStateError: the state holds something that cannot be saved (every problem listed).
        LockTimeoutError: another process kept saving into the directory for longer than ``lock_timeout``.
        OSError: writing failed (disk full, I/O error, permissions); nothing new is left behind and the previous
            checkpoint is still the latest.

    Example:
        >>> ckpt.save({"alpha": np.float32(0.24), "beta": np.float32(0.21)}, "model/regression.ckpt", step=25)
        'model/regression.ckpt-25'
    """
    prefix = local_path(prefix, what="checkpoint")  # before waiting: a URL is refused at once
    _SAVER.wait()  # at most one asynchronous save in flight; its error (if any) is raised here
    prefix = _with_step(prefix, step)
    if "torch" in sys.modules:
        from . import distributed

        if distributed.has_dtensor(state):  # collective: every rank writes its shards (ckpt.distributed)
            if metadata is not None or rng or num_shards != 1 or graph is not None or alignment != 1 or not blocking:
                raise UnsupportedError("saving DTensors supports only state, prefix, step and sync so far")
            return distributed.save_collective(state, prefix, sync=sync)
    lock_timeout = check_timeout(lock_timeout)
    with _no_gc():
        plan = _plan(state, metadata=metadata, rng=rng)
        arrays = None if blocking else _snapshot(plan, _SAVER)
    write_meta = None
    if graph is not None:  # checked and serialized before anything is written
        from .graph import meta_writer

        write_meta = meta_writer(graph)
    stem = os.path.basename(prefix if step is None else prefix[: -len(f"-{int(step)}")])

    def commit() -> None:
        directory = os.path.dirname(prefix) or "."
        _fs.makedirs(directory)
        with DirectoryLock(directory, timeout=lock_timeout):
            sweep_temporaries(directory, stem)
            with _no_gc():
                _write_planned(plan, prefix, num_shards=num_shards, sync=sync, alignment=alignment, arrays=arrays)
            try:
                if write_meta is not None:
                    write_meta(prefix, sync=sync)
                record_in_state(directory, prefix, sync=sync)
            except BaseException:
                _remove_checkpoint(prefix, num_shards, meta=write_meta is not None)
                _unrecord(directory, prefix, sync=sync)
                raise

    if blocking:
        commit()
    else:
        _SAVER.submit(commit, buffers=arrays)
    return prefix


def _remove_checkpoint(prefix: str, num_shards: int, *, meta: bool = False) -> None:
    """Best effort: delete a checkpoint this save wrote, index first (it stops existing at once)."""
    paths = [index_filename(prefix)] + [data_filename(prefix, i, num_shards) for i in range(num_shards)]
    for path in paths + ([f"{prefix}.meta"] if meta else []):
        try:
            _fs.unlink(path)
        except OSError:
            pass


def _unrecord(directory: str, prefix: str, *, sync: bool) -> None:
    """Best effort: drop ``prefix`` from the state file if a failed save already listed it there."""
    try:
        state = read_state(directory)
        if state is None:
            return
        name = os.path.relpath(prefix, directory)

        def ours(recorded: str) -> bool:
            return recorded in (name, prefix) or resolve(directory, recorded) == prefix

        paths = list(state.all_model_checkpoint_paths)
        stamps = list(state.all_model_checkpoint_timestamps)
        keep = [i for i, p in enumerate(paths) if not ours(p)]
        if len(keep) == len(paths) and not ours(state.model_checkpoint_path):
            return
        if not keep:
            _fs.unlink(os.path.join(directory, STATE_FILENAME))
            return
        state.all_model_checkpoint_paths = [paths[i] for i in keep]
        state.all_model_checkpoint_timestamps = [stamps[i] for i in keep] if len(stamps) == len(paths) else []
        state.model_checkpoint_path = paths[keep[-1]]
        write_state(directory, state, sync=sync)
    except (OSError, CheckpointError):
        pass


def _with_step(prefix: str, step: int | None) -> str:
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"step must be an int, not {type(step).__name__}")
        prefix = f"{prefix}-{int(step)}"
    if os.path.isdir(prefix):
        raise CheckpointError(f"{prefix} is a directory; pass a prefix inside it, e.g. {os.path.join(prefix, 'ckpt')}",
                              path=prefix)
    return prefix


def record_in_state(directory: str, prefix: str, *, sync: bool = True, timestamp: float | None = None) -> None:
    """Make ``prefix`` the newest entry of ``directory/checkpoint`` (relative paths, timestamps kept aligned)."""
    try:
        state = read_state(directory) or CheckpointState()
    except CheckpointError:
        state = CheckpointState()  # a garbled state file is replaced, as TensorFlow does
    name = os.path.relpath(prefix, directory)
    now = time.time() if timestamp is None else timestamp
    paths = list(state.all_model_checkpoint_paths)
    stamps = list(state.all_model_checkpoint_timestamps)
    if len(stamps) != len(paths):
        stamps = [_mtime(resolve(directory, p), now) for p in paths]
    kept = [(p, t) for p, t in zip(paths, stamps) if resolve(directory, p) != prefix and p != name]
    kept.append((name, now))
    state.all_model_checkpoint_paths = [p for p, _ in kept]
    state.all_model_checkpoint_timestamps = [t for _, t in kept]
    state.model_checkpoint_path = name
    write_state(directory, state, sync=sync)


def _mtime(prefix: str, default: float) -> float:
    try:
        return os.stat(index_filename(prefix)).st_mtime
    except OSError:
        return default


# ============================================================================================== load


#: What ``ckpt.load(..., framework=...)`` accepts.
FRAMEWORKS = ("numpy", "torch", "jax", "auto")


def load(path: str | os.PathLike, *, flat: bool = False, framework: str = "numpy") -> Any:
    """Read every tensor of a checkpoint into memory.

    Args:
        path: A prefix, one of its files, or a directory (its newest checkpoint).
        flat: Return ``{"layer/w": array}`` instead of the tree.
        framework: What tensors come back as. ``"numpy"`` (default): writable NumPy arrays. ``"torch"``: CPU
            torch tensors, so ``model.load_state_dict(loaded["model"])`` and
            ``optimizer.load_state_dict(loaded["optimizer"])`` work directly (Adam's ``step`` comes back as the
            0-d float32 tensor it was). ``"jax"``: ``jax.Array``\\ s on the default device. ``"auto"``: each tensor as
            the framework it was saved from (torch tensors as torch tensors, JAX arrays as JAX arrays, everything
            else as NumPy). String tensors stay NumPy object arrays (neither torch nor JAX has strings); Python and
            NumPy scalars stay scalars. Each tensor is copied once out of the file into a private NumPy array;
            ``"torch"`` wraps that array without a copy (``torch.from_numpy``: the tensor owns no file memory and
            is writable), ``"jax"`` copies it into the device buffer (JAX arrays are immutable).

    Returns:
        For checkpoints written by ``ckpt.save``, the saved tree rebuilt: dicts (with their keys' types: ``int``,
        ``bool``, ``None``, ``float``, tuples; ``OrderedDict`` as ``OrderedDict``), lists and tuples as saved,
        namedtuples and dataclasses as look-alikes, Python scalars as Python scalars, every tensor as
        ``framework`` says, framework objects as what they hold, objects saved through ``state_dict()`` as their
        state dict. For other checkpoints, nested dicts split on ``/``.

    Raises:
        CheckpointError: when nesting a foreign checkpoint is impossible because a name is both a tensor and a
            scope (TensorFlow 1 optimizer slots: ``w`` and ``w/Adam``); pass ``flat=True`` for those.
        UnsupportedError: ``framework`` cannot hold a tensor's dtype exactly (e.g. float64 in JAX without
            ``jax_enable_x64``, int4 in torch); the tensor is named.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {', '.join(map(repr, FRAMEWORKS))}, not {framework!r}")
    path = local_path(path, what="checkpoint")
    with Reader(path) as reader:
        convert = _converter(framework, reader.prefix)
        if flat:
            return {name: _convert_one(convert, array, name) for name, array in reader.items()}
        record = reader.record
        spec = record.get("tree")
        if spec is not None:
            try:
                return tree.rebuild(spec, lambda name: np.array(reader[name], copy=True), convert)
            except CheckpointError:  # a tensor the framework cannot hold (UnsupportedError is a ValueError)
                raise
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise CheckpointError(f"{reader.prefix}: malformed ckpt tree record ({exc})", path=reader.prefix,
                                      key=METADATA_KEY) from None
        values = {name: _convert_one(convert, array, name) for name, array in reader.items()}
        prefix = reader.prefix
    nested: dict[str, Any] = {}
    for name, array in values.items():
        parts = name.split("/")
        node = nested
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _collision(prefix, "/".join(parts[: i + 1]), name)
            node = child
        if parts[-1] in node:
            raise _collision(prefix, name, name)
        node[parts[-1]] = array
    return nested


def _convert_one(convert: Callable[[np.ndarray, str, str], Any] | None, array: np.ndarray, name: str) -> Any:
    array = np.array(array, copy=True)
    return array if convert is None else convert(array, "ndarray", name)


def _converter(framework: str, prefix: str) -> Callable[[np.ndarray, str, str], Any] | None:
    """``convert(array, saved kind, name)`` for ``load(framework=...)``; None keeps NumPy arrays."""
    if framework == "numpy":
        return None
    from .adapters import get_adapter

    def convert(array: np.ndarray, kind: str, name: str) -> Any:
        target = framework
        if framework == "auto":
            target = {"torch": "torch", "jax": "jax"}.get(kind)
            if target is None:
                return array
        if array.dtype.kind in "OSU":  # strings: no torch or JAX counterpart
            return array
        try:
            return get_adapter(target).from_loaded(array, name)
        except UnsupportedError as exc:
            raise UnsupportedError(f"{prefix}: {exc.message}", path=prefix, key=name) from None

    return convert


def _collision(prefix: str, scope: str, name: str) -> CheckpointError:
    return CheckpointError(
        f"{prefix}: {scope!r} is both a tensor and a scope (of {name!r}), so the checkpoint cannot be nested; "
        "use ckpt.load(path, flat=True)", path=prefix, key=name)


# ============================================================================================== restore


@dataclass(frozen=True)
class RestoreReport:
    """What a non-strict restore did.

    Attributes:
        tree: The restored state (the same objects, updated in place where the framework allows; new values for
            immutable leaves such as JAX arrays and Python scalars).
        restored: State names that received checkpoint values.
        missing: State names the checkpoint has no value for (left unchanged).
        unexpected: Checkpoint names nothing in the state asked for.
        mismatched: ``"name: why"`` for names whose shape or dtype differ (left unchanged).
    """

    tree: Any
    restored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _mapper(map: NameMap | None) -> tuple[Callable[[str], str | None], bool]:
    """A function checkpoint name -> state name (None: skip), and whether unmapped names are skipped."""
    if map is None:
        return (lambda name: name), False
    if isinstance(map, Mapping):
        table = dict(map)
        return table.get, True
    if callable(map):
        return map, False
    rules = [(re.compile(pattern), repl) for pattern, repl in map]

    def apply_rules(name: str) -> str | None:
        for pattern, repl in rules:
            new, count = pattern.subn(repl, name, count=1)
            if count:
                return new or None
        return name

    return apply_rules, False


def _map_spec(node: Any, fn: Callable[[str], str | None]) -> Any:
    """The saved spec with every tensor and parameter name rewritten into state names."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("leaf", "alias", "name") and isinstance(value, str):
                out[key] = fn(value) or value
            elif key == "param_groups" and isinstance(value, list):
                out[key] = [dict(g, params=[_map_param(p, fn) for p in g.get("params", [])]) for g in value]
            else:
                out[key] = _map_spec(value, fn)
        return out
    if isinstance(node, list):
        return [_map_spec(v, fn) for v in node]
    return node


def _map_param(name: str, fn: Callable[[str], str | None]) -> str:
    return fn(name) or name


def _check_leaf(leaf: tree.Leaf, shape: tuple[int, ...], dtype: Any) -> str | None:
    if isinstance(dtype, np.dtype) and leaf.dtype is not None and leaf.shape == shape and dtype == leaf.dtype:
        return None  # the common case, decided without building anything
    if leaf.shape is not None and tuple(leaf.shape) != tuple(shape):
        return f"{leaf.name}: checkpoint {_dt(dtype)}{list(shape)}, state {_dt(leaf.dtype)}{list(leaf.shape)}"
    if leaf.dtype is None:  # a Python scalar: any value of a compatible kind
        kind = getattr(leaf, "kind", "")
        if kind in ("str", "bytes"):
            ok = dtype == np.dtype(object)
        else:
            ok = isinstance(dtype, np.dtype) and dtype.kind in {"bool": "b", "int": "biu", "float": "biuf",
                                                                 "complex": "biufc"}.get(kind, "biufc")
        if not ok:
            return f"{leaf.name}: checkpoint {_dt(dtype)}, state a Python {kind}"
        return None
    if not isinstance(dtype, np.dtype) or np.dtype(dtype) != np.dtype(leaf.dtype):
        return f"{leaf.name}: checkpoint {_dt(dtype)}{list(shape)}, state {_dt(leaf.dtype)}{list(leaf.shape or ())}"
    return None


def _dt(dtype: Any) -> str:
    if dtype is None:
        return ""
    if isinstance(dtype, np.dtype) and dtype == np.dtype(object):
        return "string"
    return str(dtype)


def restore(path: str | os.PathLike, into: Any, *, map: NameMap | None = None, strict: bool = True,
            rng: bool = True, verify_checksums: bool = True, names: str = "raw") -> Any:
    """Restore a checkpoint into ``into``: in place for torch, NumPy and ``tf.Variable`` state.

    Everything is compared before any target is touched; a strict restore that finds a problem raises one error
    listing every missing, unexpected and mismatched name.

    Args:
        path: A prefix, one of its files, or a directory (its newest checkpoint); or a checkpoint of any other
            format ``ckpt.Reader`` opens (safetensors, PyTorch, ``.npz``, Keras ``.weights.h5``).
        into: The state to fill, shaped like what was saved (any tree ``save`` accepts). Objects with
            ``load_state_dict()`` are given the state their ``state_dict()`` saved.
        map: Rename checkpoint names to state names: a dict ``{name_in_checkpoint: name_in_state}`` (only those
            are restored: TensorFlow's ``var_list`` dict / ``assignment_map``), a callable (return None to skip a
            name), or a list of ``(regex, replacement)`` rules, e.g. ``[(r"^model/", "")]`` strips a prefix and
            ``[(r"^", "net/")]`` adds one.
        strict: Raise on any missing, unexpected or mismatched name (default). With ``strict=False`` whatever
            matches is restored and a :class:`RestoreReport` is returned.
        rng: Put back the global random generator states if the checkpoint recorded them.
        verify_checksums: Check tensor CRCs while reading.
        names: ``"clean"`` restores from the readable names of TensorFlow 2 object-based checkpoints
            (``model/dense/kernel``, see ``ckpt.Reader``); the map then applies to those names.

    Returns:
        The restored tree (the only way to get restored immutable values such as JAX arrays), or with
        ``strict=False`` a :class:`RestoreReport` whose ``tree`` is the restored tree.

    Raises:
        StateMismatchError: (strict) names or shapes differ; nothing was modified.
        CheckpointNotFoundError, CorruptCheckpointError: as for ``Reader``.
    """
    with _no_gc():  # the walk makes many small objects; collections would cost more than the walk
        return _restore(path, into, map=map, strict=strict, rng=rng, verify_checksums=verify_checksums,
                        names=names)


def _restore(path: str | os.PathLike, into: Any, *, map: NameMap | None, strict: bool, rng: bool,
             verify_checksums: bool, names: str) -> Any:
    path = local_path(path, what="checkpoint")
    if "torch" in sys.modules:
        from . import distributed

        if distributed.has_dtensor(into):  # collective: every rank reads what overlaps its shards
            if map is not None or not strict:
                raise UnsupportedError("restoring into DTensors supports neither map nor strict=False so far")
            from .reader import resolve_checkpoint

            return distributed.restore_collective(resolve_checkpoint(path), into)
    fn, subset = _mapper(map)
    walked = tree.walk(into, restoring=True)
    if walked.problems:
        listing = "\n  ".join(walked.problems)
        raise InvalidStateError(f"cannot restore into this state ({len(walked.problems)} problem(s)):\n  {listing}")
    with Reader(path, verify_checksums=verify_checksums, names=names) as reader:
        record = reader.record
        to_ckpt: dict[str, str] = {}  # state name -> checkpoint name
        collisions = []
        # A dict map names every checkpoint tensor it wants: look those up in the index (logarithmic each)
        # instead of listing the whole checkpoint.
        candidates = sorted(n for n in map if isinstance(n, str) and n in reader) if subset else reader.keys()
        if map is None:  # names as they are: no collisions possible
            to_ckpt = dict(zip(candidates, candidates))
        else:
            for ckpt_name in candidates:
                state_name = fn(ckpt_name)
                if state_name is None:
                    continue
                if state_name in to_ckpt:
                    collisions.append(f"{state_name} (from {to_ckpt[state_name]} and {ckpt_name})")
                    continue
                to_ckpt[state_name] = ckpt_name
        if collisions:
            raise CheckpointError(f"the name map sends several checkpoint names to one state name: "
                                  f"{', '.join(collisions)}", path=reader.prefix)
        if subset:
            infos = {c: reader.info(c) for c in to_ckpt.values()}
            dtypes_of = {c: _numpy_dtype(reader, c) for c in to_ckpt.values()}
            available = {s: (tuple(infos[c].shape), dtypes_of[c]) for s, c in to_ckpt.items()}
        else:
            shapes, dtypes = reader.shapes(), reader.dtypes()
            available = {s: (shapes[c], dtypes[c]) for s, c in to_ckpt.items()}
        for alias, stored in (record.get("aliases") or {}).items():
            alias_state, stored_state = fn(alias), fn(stored)
            if alias_state and stored_state in available and alias_state not in available:
                available[alias_state] = available[stored_state]
                to_ckpt[alias_state] = to_ckpt[stored_state]
        saved_spec = _map_spec(record["tree"], fn) if "tree" in record else None

        wanted = set(map.values()) if subset else None  # a dict selects exactly the state names it lists

        def selected(name: str) -> bool:
            return wanted is None or name in wanted or any(w.startswith(name + "/") for w in wanted)

        missing, mismatched, claimed, ready = [], [], set(), []
        for name, leaf in walked.leaves.items():
            if wanted is not None and not selected(name):
                continue
            if name not in available:
                missing.append(name)
                continue
            claimed.add(name)
            problem = _check_leaf(leaf, *available[name])
            if problem:
                mismatched.append(problem)
            else:
                ready.append(leaf)
        for alias, stored in walked.aliases.items():
            if alias in available:
                claimed.add(alias)
            if stored not in available and alias in available and stored in missing:
                # The checkpoint stores the tied tensor under the other name: restore the storage from there.
                leaf = walked.leaves[stored]
                missing.remove(stored)
                to_ckpt[stored] = to_ckpt[alias]
                problem = _check_leaf(leaf, *available[alias])
                (mismatched.append(problem) if problem else ready.append(leaf))
        plans = []
        for group in walked.groups:
            if not selected(group.name):
                continue
            plan = group.plan(available, tree.find_spec(saved_spec, group.name) if saved_spec is not None else None)
            missing.extend(plan.missing)
            mismatched.extend(plan.mismatched)
            claimed |= plan.claimed
            if not plan.missing and not plan.mismatched and plan.apply is not None:
                plans.append(plan)
        unexpected = sorted(n for n in available if n not in claimed)
        if strict and (missing or unexpected or mismatched):
            raise StateMismatchError(_mismatch_message(reader.prefix, missing, unexpected, mismatched),
                                     path=reader.prefix, missing=missing, unexpected=unexpected,
                                     mismatched=mismatched)

        put_back_rng = None
        if rng and "rng" in record:
            try:  # checked and decoded before any target is touched
                put_back_rng = _rng.prepare(record["rng"])
            except ValueError as exc:
                raise CorruptCheckpointError(f"{reader.prefix}: malformed ckpt metadata ({exc}); nothing was "
                                             f"changed (pass rng=False to restore without it)",
                                             path=reader.prefix, key=METADATA_KEY) from None

        def read(state_name: str) -> np.ndarray:
            return reader[to_ckpt[state_name]]

        # Targets that expose their memory (NumPy arrays, CPU torch tensors) are read into directly.
        direct = reader.format == "tensorflow"
        into = []
        for leaf in ready:
            target = leaf.buffer() if direct and leaf.buffer is not None else None
            if target is not None:
                into.append((to_ckpt[leaf.name], target))
            else:
                leaf.result = leaf.assign(read(leaf.name))
        reader.read_many_into(into)  # one batch: adjacent tensors share system calls, checksums overlap reads
        for plan in plans:
            plan.apply(read)
        if put_back_rng is not None:
            put_back_rng()
        result = walked.rebuild()
    if strict:
        return result
    return RestoreReport(result, sorted(leaf.name for leaf in ready), missing, unexpected, mismatched)


def _numpy_dtype(reader: Reader, name: str) -> np.dtype | str:
    """What ``reader.dtypes()[name]`` says, for one tensor."""
    if reader.format == "tensorflow":
        e = reader.entry(name).dtype
        return e.numpy if e.native else e.name
    return reader.dtypes()[name]


def _mismatch_message(prefix: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    lines = [f"cannot restore {prefix} into this state: {len(missing)} missing, {len(unexpected)} unexpected, "
             f"{len(mismatched)} mismatched (nothing was changed)"]
    if missing:
        lines.append("  missing (in the state, not in the checkpoint):")
        for name in missing[:50]:
            close = difflib.get_close_matches(name, unexpected, n=1, cutoff=0.6)
            lines.append(f"    {name}" + (f"   (the checkpoint has {close[0]!r})" if close else ""))
        if len(missing) > 50:
            lines.append(f"    ... and {len(missing) - 50} more")
    if unexpected:
        lines.append("  unexpected (in the checkpoint, not in the state):")
        lines.extend(f"    {name}" for name in unexpected[:50])
        if len(unexpected) > 50:
            lines.append(f"    ... and {len(unexpected) - 50} more")
    if mismatched:
        lines.append("  mismatched:")
        lines.extend(f"    {m}" for m in mismatched[:50])
    lines.append("hint: rename with map={...} or map=[(regex, replacement)], or pass strict=False to restore what "
                 "matches")
    return "\n".join(lines)
