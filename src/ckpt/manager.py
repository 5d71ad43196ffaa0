"""``ckpt.Manager``: numbered checkpoints in one directory, with retention and save-cadence policies.

Design, in the order a save happens:

0. **Lock.** The whole save (sweep, write, record, retention) holds the directory lock (``ckpt._lock``): a second
   process saving into the same directory waits (up to ``lock_timeout``), so saves never interleave; a holder that
   dies releases it. The record is re-read under the lock, so another process's saves are seen.
1. **Sweep.** Leftovers of interrupted saves are removed: temporary files (``*.tmp-<8 hex digits>``, which only a
   ckpt save that died can have left while nobody holds the lock), and ``{name}-{step}.data-*`` files whose
   ``.index`` is missing (a checkpoint exists iff its ``.index`` does, because the index is renamed into place
   last), but only of steps the record lists or marks ``unfinished`` (a save records the step it is about to
   write before writing it): any other such file may be another tool's, half copied. Record entries whose
   ``.index`` was deleted by hand are dropped. Complete ``{name}-{step}`` checkpoints that the record does not list
   but whose own metadata says this manager wrote them (a crash between writing a checkpoint and recording it) are
   adopted back into the record.
2. **Write** the checkpoint (``ckpt.api.write_checkpoint``: data, then index, under temporary names, fsync'd,
   index renamed last, directory fsync'd). A failure here leaves everything else exactly as it was.
3. **Record** it: the TensorFlow ``checkpoint`` state file (so ``tf.train.latest_checkpoint`` and ``ckpt.latest``
   see it), then the manager record ``{name}.manager.json``, each replaced atomically and fsync'd. Both list the
   checkpoints that are about to be deleted too, so a crash during step 4 leaves no checkpoint that nobody
   remembers. If recording fails, the new checkpoint is deleted again and the old state file and record are put
   back, so a save that raises leaves the previous checkpoint as the latest.
4. **Delete** what the keep policies dropped (``.index`` first, then ``.data-*``, then ``.meta``), and record the
   survivors in the state file and the record again. The new checkpoint is already committed: failures here are
   logged and retried by the next save, never raised.

The record is what lets a new process (a new Manager on the same directory) continue the same retention: it
holds every checkpoint's step, time and metrics, which checkpoints are preserved forever and the time of the last
one. TensorFlow's ``Saver`` keeps that history in memory only, so a restarted job orphans old files; ckpt does not.
Retention only ever deletes ``{name}-{step}`` files of checkpoints in this record: never files of other tools, of
other managers (other ``name``) in the same directory, or paths the record file names.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np

from . import _async, _fs, _preemption, _rng, api
from ._lock import DirectoryLock, check_timeout
from ._paths import local_path
from .errors import (CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, CorruptCheckpointWarning,
                     UnsupportedError)
from .tf.bundle import TMP_MARKER, check_bundle, index_filename
from .tf.state_file import STATE_FILENAME, CheckpointState, _describe, read_state, resolve, write_state
from .policies import (CheckpointInfo, KeepAny, KeepBest, KeepContext, KeepEveryNHours, KeepEveryNSteps, KeepLast,
                       KeepPolicy, SaveAny, SaveContext, SaveEveryNSeconds, SaveEveryNSteps, SavePolicy,
                       preserved_by, rank_best)
from .reader import Reader

__all__ = ["Manager", "ManagerRecord", "RECORD_SUFFIX", "read_record"]

logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".manager.json"  # the record file is f"{name}{RECORD_SUFFIX}" inside the directory
RECORD_FORMAT = 1  # version of the record file's layout; a newer one is refused rather than misread
_RECORD_MAX_BYTES = 64 * 1024 * 1024  # a record is ~100 bytes per checkpoint; refuse to slurp a huge garbage file
_NAME_BAD = re.compile(r"[/\\\x00]")


def _encode_metric(value: float) -> float | str:
    """JSON has no NaN or infinity: those are stored as the strings ``"nan"``, ``"inf"`` and ``"-inf"``."""
    return value if math.isfinite(value) else str(value)


def _decode_metrics(raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("metrics is not an object")
    out = {}
    for key, value in raw.items():
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):
            out[key] = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
        else:
            raise ValueError(f"metric {key!r} is not a number")
    return out


def _check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of floats, not {type(metrics).__name__}")
    out, problems = {}, []
    for key, value in metrics.items():
        if not isinstance(key, str):
            problems.append(f"key {key!r} is not a string")
            continue
        if not isinstance(value, (int, float)) and callable(getattr(value, "item", None)):
            try:  # NumPy / torch / JAX / TensorFlow scalars
                value = value.item()
            except (TypeError, ValueError, RuntimeError):
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            problems.append(f"{key!r}: {type(value).__name__} is not a number")
            continue
        out[key] = float(value)
    if problems:
        raise TypeError("metrics must be a dict of floats: " + "; ".join(problems))
    return out


def _exclusive(method):
    """A public Manager method that a preemption signal must not interrupt with a save of its own.

    Python runs signal handlers in the main thread between bytecodes, so a handler that saved there could re-enter
    a save half done (its snapshot buffers, the directory lock). While the main thread is inside such a method, a
    preemption signal is only noted, and acted on when the outermost one returns; a handler that finds another
    thread inside waits for it (``_busy`` is held for the whole call).
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._busy:
            if not self._depth:
                self._holder = threading.get_ident()
            self._depth += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    self._holder = None
                    pending, self._preempt_pending = self._preempt_pending, None
                    if pending is not None:
                        self._on_preemption(*pending)

    return wrapper


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise TypeError(f"step must be a non-negative int, not {step!r}")
    return int(step)


class Manager:
    """Save numbered checkpoints into one directory and keep only those the retention policies want.

    Checkpoint ``step`` goes to ``directory/f"{name}-{step}"`` (``.index`` + ``.data-00000-of-00001``), readable by
    TensorFlow; the directory's ``checkpoint`` state file lists this manager's checkpoints (relative paths, oldest
    first) so ``tf.train.latest_checkpoint`` and ``ckpt.latest`` find the newest. The manager's own record,
    ``directory/f"{name}.manager.json"``, lets a new process continue where the last one stopped.

    **Retention.** The keyword options become keep policies (``ckpt.policies``), and a checkpoint is kept if *any*
    of them keeps it:

    * ``max_to_keep=N`` → ``KeepLast(N)``: the N newest (most recently committed) checkpoints. Checkpoints kept by the other
      policies do not count toward N: they are kept *in addition to* the N newest. ``max_to_keep=None`` keeps
      every checkpoint.
    * ``keep_every_n_hours=H`` → ``KeepEveryNHours(H)``: TensorFlow 2's rule. Going through the checkpoints oldest
      first, one is *preserved forever* if its time is at least ``H`` hours after the last preserved one (at
      first: after the time this directory's history began, minus one second). Preserved checkpoints are written
      in the record and never deleted by retention, even by a later manager with other options (``delete(step)``
      still deletes them). The decision is made when a checkpoint is saved, independently of the other policies;
      with ``max_to_keep`` alone this leaves exactly the checkpoints TensorFlow's ``CheckpointManager`` leaves.
    * ``keep_every_n_steps=K`` → ``KeepEveryNSteps(K)``: checkpoints whose ``step % K == 0``.
    * ``keep_best=k`` (with ``best_metric`` and ``best_mode``) → ``KeepBest(best_metric, best_mode, k)``: the k
      best by ``metrics[best_metric]``; checkpoints without that metric (or with NaN) are not candidates, and on a
      tie the newer checkpoint wins.
    * The newest checkpoint is never deleted, nor is the one a save just wrote.

    **Rewinding.** Checkpoints are ordered by commit: "newest" and ``latest`` mean the checkpoint saved last, as in
    TensorFlow's ``checkpoint`` state file, not the highest step. After a rewind (steps 1-5 saved, then
    ``save(4, force=True)``, or any save of a lower step), ``latest``, ``ckpt.latest`` and
    ``restore_or_initialize`` give that step; the higher steps stay, as older checkpoints that retention judges in
    commit order, and a later save of one of them (the rewound run reaching it) replaces it without ``force``.

    ``keep=`` takes any keep policy instead (it replaces ``max_to_keep`` and cannot be combined with
    ``keep_every_n_hours``, ``keep_every_n_steps`` or ``keep_best``), e.g.
    ``keep=KeepAny([KeepLast(3), KeepBest("loss", "min", 1)])``.

    **Cadence.** ``save_interval_steps=n`` → ``SaveEveryNSteps(n)`` (save when ``step - last_saved_step >= n``),
    ``save_interval_secs=s`` → ``SaveEveryNSeconds(s)``; both → ``SaveAny`` of the two (save when either says
    so); neither → every ``save`` call saves. The first save always happens. ``save_policy=`` takes any save
    policy instead. ``save(..., force=True)`` saves regardless.

    **Safety.** Retention acts only on checkpoints in this manager's record (same directory and ``name``); files
    of other tools or of managers with other names in the same directory are never deleted, and a checkpoint
    another tool wrote at ``{name}-{step}`` is never overwritten without ``force=True``. Deletion happens only
    after the new checkpoint, the state file and the record are committed. The ``checkpoint`` state file lists
    every kept checkpoint of the manager that saved last (preserved ones included, unlike TensorFlow, whose list
    drops them).

    **Concurrency.** Not thread-safe: use one Manager per directory from one thread. Process-safe for writers:
    ``save`` and ``delete`` hold the directory lock (shared with ``ckpt.save`` and managers of other names), so a
    second process saving into the same directory waits for the first (up to ``lock_timeout``, then
    ``LockTimeoutError`` naming the holder's pid) and re-reads the record before it saves. Other processes may read
    concurrently without any lock (``ckpt.latest``, ``ckpt.restore``, TensorFlow): every file is replaced
    atomically, a checkpoint only appears once complete, and on POSIX a reader that opened a checkpoint keeps
    working if retention deletes it.

    **Damaged checkpoints.** ``restore()`` and ``restore_or_initialize()`` (without an explicit ``step``) read the
    newest checkpoint completely first; if it does not verify (a bad checksum, a truncated or missing file) they
    warn (``ckpt.errors.CorruptCheckpointWarning``) naming it and what is wrong, and fall back to the newest
    checkpoint that verifies. A later ``save`` of a skipped step replaces it.

    Args:
        directory: Where the checkpoints go; created if missing.
        name: File name stem: checkpoints are ``{name}-{step}``.
        max_to_keep: Keep the N newest checkpoints (None: all). At least 1.
        keep_every_n_hours: Also preserve one checkpoint every this many hours, forever.
        keep_every_n_steps: Also keep checkpoints whose step is a multiple of this.
        best_metric: The ``metrics`` key that ranks checkpoints (for ``best`` and ``keep_best``).
        best_mode: ``"min"`` (lower is better) or ``"max"``.
        keep_best: Also keep the k best checkpoints by ``best_metric``.
        save_interval_steps: Save only every this many steps (``save`` returns None otherwise).
        save_interval_secs: Save only every this many seconds.
        rng: Save the global random generator states with each checkpoint and put them back on restore.
        sync: fsync every file before it is renamed into place and the directory after (default): once ``save``
            returns, the checkpoint, the state file and the record naming it survive a power loss. False skips
            every fsync, for scratch runs (a killed process still never leaves a partial checkpoint).
        clock: Returns the time in seconds since the epoch; used for checkpoint times, intervals and
            ``keep_every_n_hours`` (inject a fake clock in tests).
        keep: A keep policy that replaces the retention options.
        save_policy: A save policy that replaces ``save_interval_steps`` / ``save_interval_secs``.
        lock_timeout: Seconds ``save``/``delete`` wait while another process saves into the directory (None, the
            default: as long as it takes; 0: fail at once).
        async_save: ``save`` copies the state to host memory (a snapshot consistent at the moment of the call),
            returns the prefix at once and writes and commits the checkpoint (state file, record, retention) in a
            background thread. The step, metrics and time are captured when ``save`` is called; at most one save
            is in flight (the next ``save``, and ``delete``/``restore``, wait for it first); an error of the
            background save is raised by the next ``save``, by :meth:`wait` or by :meth:`close`, never
            swallowed. ``ckpt.wait()`` waits for every manager; interpreter exit completes pending saves. The
            ``checkpoint`` state file and ``latest`` move to the new checkpoint only once it is committed.
        log_dir: Log each committed save as TensorBoard scalars (``ckpt/save_seconds``, ``ckpt/save_bytes`` and
            ``ckpt/<best_metric>``) into this directory; ``True`` means ``directory/logs``. See
            :mod:`ckpt.summary._manager`.

    Raises:
        ValueError: an option is invalid or options conflict (the message names them).
        CorruptCheckpointError: the record file exists but is not a valid record.

    Example:
        >>> with ckpt.Manager("runs/exp1", max_to_keep=3, best_metric="loss", keep_best=1) as manager:
        ...     start = manager.restore_or_initialize({"model": net, "opt": opt})
        ...     for step in range((start or 0) + 1, 1001):
        ...         loss = train_step()
        ...         manager.save(step, {"model": net, "opt": opt}, metrics={"loss": loss})
    """

    def __init__(self, directory: str | os.PathLike, *, name: str = "ckpt", max_to_keep: int | None = 5,
                 keep_every_n_hours: float | None = None, keep_every_n_steps: int | None = None,
                 best_metric: str | None = None, best_mode: str = "min", keep_best: int | None = None,
                 save_interval_steps: int | None = None, save_interval_secs: float | None = None,
                 rng: bool = True, sync: bool = True, clock: Callable[[], float] = time.time,
                 keep: KeepPolicy | None = None, save_policy: SavePolicy | None = None,
                 lock_timeout: float | None = None, async_save: bool = False,
                 log_dir: str | os.PathLike | bool | None = None) -> None:
        if not isinstance(name, str) or not name or _NAME_BAD.search(name) or TMP_MARKER in name \
                or name in (".", ".."):
            raise ValueError(f"`name` must be a plain file name stem (no path separators, no {TMP_MARKER!r}), "
                             f"not {name!r}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"`best_mode` must be 'min' or 'max', not {best_mode!r}")
        if best_metric is not None and (not isinstance(best_metric, str) or not best_metric):
            raise ValueError(f"`best_metric` must be a non-empty string, not {best_metric!r}")
        if keep_best is not None and best_metric is None:
            raise ValueError("`keep_best` needs `best_metric` (the metrics key that ranks checkpoints)")
        if not callable(clock):
            raise TypeError("`clock` must be a callable returning seconds since the epoch")
        self.lock_timeout = check_timeout(lock_timeout)

        if keep is not None:
            conflicting = [opt for opt, value in (("keep_every_n_hours", keep_every_n_hours),
                                                  ("keep_every_n_steps", keep_every_n_steps),
                                                  ("keep_best", keep_best)) if value is not None]
            if conflicting:
                raise ValueError(f"`keep` replaces the retention options; drop {', '.join(conflicting)} or add the "
                                 f"matching policies to `keep`")
            if not callable(getattr(keep, "keep", None)):
                raise TypeError(f"`keep` must be a keep policy (an object with a keep() method), not {keep!r}")
            self.keep_policy: KeepPolicy = keep
        else:
            if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                            or max_to_keep < 1):
                raise ValueError(f"`max_to_keep` must be an int >= 1, or None to keep every checkpoint, not "
                                 f"{max_to_keep!r}")
            policies: list[KeepPolicy] = [KeepLast(max_to_keep)]
            try:
                if keep_every_n_hours is not None:
                    policies.append(KeepEveryNHours(keep_every_n_hours))
                if keep_every_n_steps is not None:
                    policies.append(KeepEveryNSteps(keep_every_n_steps))
                if keep_best is not None:
                    policies.append(KeepBest(best_metric, best_mode, keep_best))
            except ValueError as exc:  # name the Manager option, not the policy field
                option = {"KeepEveryNHours.hours": "keep_every_n_hours", "KeepEveryNSteps.n": "keep_every_n_steps",
                          "KeepBest.n": "keep_best"}
                message = str(exc)
                for field_name, opt in option.items():
                    message = message.replace(f"`{field_name}`", f"`{opt}`")
                raise ValueError(message) from None
            self.keep_policy = policies[0] if len(policies) == 1 else KeepAny(tuple(policies))

        if save_policy is not None:
            conflicting = [opt for opt, value in (("save_interval_steps", save_interval_steps),
                                                  ("save_interval_secs", save_interval_secs)) if value is not None]
            if conflicting:
                raise ValueError(f"`save_policy` replaces the interval options; drop {', '.join(conflicting)}")
            if not callable(getattr(save_policy, "should_save", None)):
                raise TypeError(f"`save_policy` must be a save policy (an object with a should_save() method), "
                                f"not {save_policy!r}")
            self.save_policy: SavePolicy | None = save_policy
        else:
            cadence: list[SavePolicy] = []
            try:
                if save_interval_steps is not None:
                    cadence.append(SaveEveryNSteps(save_interval_steps))
                if save_interval_secs is not None:
                    cadence.append(SaveEveryNSeconds(save_interval_secs))
            except ValueError as exc:
                raise ValueError(str(exc).replace("`SaveEveryNSteps.n`", "`save_interval_steps`")
                                 .replace("`SaveEveryNSeconds.secs`", "`save_interval_secs`")) from None
            self.save_policy = None if not cadence else cadence[0] if len(cadence) == 1 else SaveAny(tuple(cadence))

        self.directory = local_path(directory, what="directory")
        self.name = name
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.rng = rng
        self.sync = sync
        self.clock = clock
        self._log = None
        if log_dir is not None and log_dir is not False:
            from .summary._manager import SaveLog

            self._log = SaveLog(os.path.join(self.directory, "logs") if log_dir is True else os.fspath(log_dir))
        #: The tree returned by the last ``restore_or_initialize`` that restored something (None otherwise); the
        #: only way to get restored immutable values such as JAX arrays.
        self.restored: Any = None
        self.async_save = bool(async_save)
        self._saver = _async.AsyncSaver(f"ckpt-manager-{name}") if self.async_save else None
        self._closed = False
        self._infos: dict[int, CheckpointInfo] = {}
        self._preserved: set[int] = set()
        self._foreign: set[tuple[str, int, int]] = set()  # {name}-{step} files known not to be ours
        self._damaged: set[int] = set()  # steps a restore skipped because they did not verify
        # Steps not (or no longer) in the record whose data files are this manager's, per the record: the step a
        # save is writing, a deletion that could not remove every file. The sweep may delete those.
        self._unfinished: set[int] = set()
        self._busy = threading.RLock()  # held by public methods (see _exclusive); with the two below
        self._depth, self._holder = 0, None
        self._preemption: _preemption.Handlers | None = None  # installed by handle_preemption()
        self._preempt_save: Callable[[], tuple[int, Any]] | None = None
        self._preempt_exit = True
        self._preempt_pending: tuple[int, FrameType | None] | None = None  # a signal noted while busy
        self._preempt_error: BaseException | None = None  # raised by the next wait() (exit=False)
        self._handling = False
        self._reached = False
        self._meta_written = False  # PREFIX.meta is written on the first save given a graph (write_meta_graph)
        _fs.makedirs(self.directory)
        self._step_re = re.compile(rf"^{re.escape(name)}-(\d+)\.(.+)$")
        # TensorFlow 2 starts counting "every N hours" at construction time minus one second; a record that
        # exists carries on from its stored value.
        self._last_preserved = float(clock()) - 1.0
        self._load_record()
        # Tidy up now if nobody is saving; otherwise the next save does it (under the lock, where it is safe).
        lock = DirectoryLock(self.directory, timeout=0)
        try:
            locked = lock.try_acquire()
        except OSError:  # e.g. a read-only directory: a manager used for restoring only
            locked = False
        if locked:
            try:
                self._sweep()
            finally:
                lock.release()

    # ------------------------------------------------------------------ queries

    @property
    def checkpoints(self) -> list[CheckpointInfo]:
        """This manager's checkpoints in the order they were committed, oldest first (the last is ``latest``)."""
        return list(self._infos.values())  # read once: an asynchronous save's thread replaces the dict (never changes it)

    def all_steps(self) -> list[int]:
        """The steps of this manager's checkpoints, ascending."""
        return sorted(self._infos)

    @property
    def latest_step(self) -> int | None:
        """The step of the most recently committed checkpoint (not always the highest step: see "Rewinding"), or
        None."""
        return next(reversed(self._infos), None)

    @property
    def latest(self) -> str | None:
        """The prefix of the most recently committed checkpoint (what the ``checkpoint`` state file names), or
        None."""
        infos = self._infos  # read once, as in ``checkpoints``
        step = next(reversed(infos), None)
        return None if step is None else infos[step].prefix

    @property
    def best(self) -> str | None:
        """The prefix of the best checkpoint by ``best_metric`` / ``best_mode`` (None without ``best_metric`` or
        when no checkpoint has that metric). Works whether or not ``keep_best`` is set."""
        if self.best_metric is None:
            return None
        infos = self.checkpoints
        ranked = rank_best(infos, self.best_metric, self.best_mode)
        return infos[ranked[0]].prefix if ranked else None

    def should_save(self, step: int) -> bool:
        """Whether ``save(step, ...)`` would write a checkpoint now (False if ``step`` is already saved)."""
        return self._should_save(_check_step(step), float(self.clock()))

    def _abandoned(self, step: int) -> bool:
        """Whether ``step`` is a checkpoint above the latest one: left behind by a rewind, replaced when saved."""
        latest = self.latest_step
        return step in self._infos and latest is not None and step > latest

    def _should_save(self, step: int, now: float) -> bool:
        if step in self._infos and not self._abandoned(step):
            return False
        if self.save_policy is None or self._reached:  # after a preemption signal, every save saves
            return True
        return bool(self.save_policy.should_save(step, self.checkpoints, context=SaveContext(now=now)))

    def prefix_for(self, step: int) -> str:
        """Where checkpoint ``step`` is (or would be) written."""
        return os.path.join(self.directory, f"{self.name}-{_check_step(step)}")

    # ------------------------------------------------------------------ saving

    @_exclusive
    def save(self, step: int, state: Any, *, metrics: Mapping[str, float] | None = None,
             metadata: Mapping[str, Any] | None = None, force: bool = False, graph: Any = None,
             write_meta_graph: bool | None = None) -> str | None:
        """Save ``state`` as checkpoint ``step`` if the save policy says so, then apply retention.

        Args:
            step: The training step (a non-negative int); the checkpoint is ``directory/{name}-{step}``.
            state: Anything ``ckpt.save`` accepts (NumPy, torch modules and optimizers, JAX, TensorFlow, ...).
            metrics: ``{name: float}`` stored with the checkpoint and in the record (for ``best``/``keep_best``).
                NaN and infinities are allowed (NaN is never best).
            metadata: JSON-serialisable data stored with the checkpoint (``Reader(prefix).metadata``).
            force: Save even if the save policy says not yet, and replace an existing checkpoint of this step.
            graph: A graph (:class:`ckpt.graph.Graph`, GraphDef, MetaGraphDef, ``tf.Graph`` or
                ``ckpt.graph.from_torch(...)``) to write as ``PREFIX.meta`` beside the checkpoint. Like TensorFlow's
                ``write_meta_graph``, it is written once per manager (the graph does not change between saves)
                unless ``write_meta_graph=True`` asks for it again; ``write_meta_graph=False`` skips it.

        Returns:
            The prefix written, or None when the save policy said not to save this step.

        Raises:
            CheckpointError: ``step`` is already saved, or another tool's checkpoint is at its prefix (pass
                ``force=True`` to replace it); or the manager is closed.
            InvalidStateError: the state cannot be saved (nothing was written).
        """
        step = _check_step(step)
        metrics = _check_metrics(metrics)
        self._check_open()
        self.wait()  # the previous asynchronous save: committed (or its error raised) before this one starts
        write_meta = None
        if graph is not None and (write_meta_graph or (write_meta_graph is None and not self._meta_written)):
            from .graph import meta_writer

            write_meta = meta_writer(graph)  # checked and serialized before anything is written
        if self._saver is not None:
            return self._save_async(step, state, metrics, metadata, force, write_meta)
        with DirectoryLock(self.directory, timeout=self.lock_timeout):
            prefix = self._save_locked(step, state, metrics, metadata, force, write_meta)
        if prefix is not None and write_meta is not None:
            self._meta_written = True
        return prefix

    def _checkpoint_record(self, step: int, metrics: dict[str, float] | None, now: float) -> dict[str, Any]:
        """What a checkpoint records about the manager that wrote it (lets a crashed save be adopted later)."""
        encoded = None if metrics is None else {k: _encode_metric(v) for k, v in metrics.items()}
        return {"manager": {"name": self.name, "step": step, "metrics": encoded, "time": now}}

    def _save_async(self, step: int, state: Any, metrics: dict[str, float] | None,
                    metadata: Mapping[str, Any] | None, force: bool, write_meta) -> str | None:
        """Decide and snapshot now; write, commit and apply retention in the background."""
        now = float(self.clock())
        prefix = self.prefix_for(step)
        if step in self._infos and not force and step not in self._damaged and not self._abandoned(step):
            raise CheckpointError(f"step {step} is already saved at {prefix}; pass force=True to replace it",
                                  path=prefix)
        if not force and not self._should_save(step, now):
            return None
        with api._no_gc():
            plan = api._plan(state, metadata=metadata, rng=self.rng,
                             extra_record=self._checkpoint_record(step, metrics, now))
            arrays = api._snapshot(plan, self._saver)

        def commit() -> None:
            with DirectoryLock(self.directory, timeout=self.lock_timeout):
                done = self._save_locked(step, state, metrics, metadata, force, write_meta, now=now,
                                         prepared=(plan, arrays))
            if done is not None and write_meta is not None:
                self._meta_written = True

        self._saver.submit(commit, buffers=arrays)
        return prefix

    def _save_locked(self, step: int, state: Any, metrics: dict[str, float] | None,
                     metadata: Mapping[str, Any] | None, force: bool, write_meta=None, *, now: float | None = None,
                     prepared: tuple[Any, Any] | None = None) -> str | None:
        now = float(self.clock()) if now is None else now
        started = time.perf_counter()
        self._load_record()  # another process may have saved since
        self._sweep()
        prefix = self.prefix_for(step)
        if step in self._damaged and step in self._infos:
            force = True  # restore skipped it as damaged: a new save of this step replaces it
        if step in self._infos and not force and not self._abandoned(step):
            raise CheckpointError(f"step {step} is already saved at {prefix}; pass force=True to replace it",
                                  path=prefix)
        if step not in self._infos and not force and self._foreign_files(step):
            raise CheckpointError(f"{prefix} exists but was not written by this manager "
                                  f"({', '.join(self._foreign_files(step))}); pass force=True to replace it, or "
                                  f"use another `name`", path=prefix)
        if not force and prepared is None and not self._should_save(step, now):
            return None  # (an asynchronous save decided when it was requested)
        if step not in self._infos:
            # The record says which step is being written before any of its files can appear under their final
            # names: a crash between the data and index renames leaves data files that the sweep can prove are
            # ours (every other {name}-{step}.data-* without an index may be another tool's, half copied).
            self._write_record(self.checkpoints, self._preserved, self._last_preserved,
                               unfinished=self._unfinished | {step})
            self._unfinished.add(step)
        try:
            if prepared is None:
                api.write_checkpoint(state, prefix, metadata=metadata, rng=self.rng, sync=self.sync,
                                     extra_record=self._checkpoint_record(step, metrics, now))
            else:
                _fs.makedirs(self.directory)
                with api._no_gc():
                    api._write_planned(prepared[0], prefix, num_shards=1, sync=self.sync, arrays=prepared[1])
        except BaseException:
            self._sweep_files()  # whatever a failing writer left behind
            self._unmark(step)
            raise
        try:
            if write_meta is not None:
                write_meta(prefix, sync=self.sync)
        except BaseException:
            api._remove_checkpoint(prefix, 1, meta=True)
            self._sweep_files()  # whatever a failing writer left behind
            self._unmark(step)
            raise
        infos = dict(self._infos)
        infos.pop(step, None)  # a replaced checkpoint is a new checkpoint: the newest, committed last
        infos[step] = CheckpointInfo(step, prefix, now, metrics)
        preserved = self._preserved - {step}
        self._retain(infos, preserved, protect=step, now=now)
        self._damaged.discard(step)
        if self._log is not None:
            self._log.saved(step, prefix, time.perf_counter() - started, metrics, self.best_metric, now)
        return prefix

    def _retain(self, infos: dict[int, CheckpointInfo], preserved: set[int], *, protect: int, now: float) -> None:
        """Decide what to keep, record everything, delete what was dropped, record the survivors.

        Nothing in memory changes until the state file and the record are written, so a save that fails before
        that leaves the manager as it was.
        """
        ordered = list(infos.values())  # commit order: the newest last
        last_preserved = self._last_preserved
        context = KeepContext(now=now, last_preserved=last_preserved, preserved=frozenset(preserved))
        keep = _answer(self.keep_policy, self.keep_policy.keep(ordered, context=context), len(ordered))
        preserve = _answer(self.keep_policy, preserved_by(self.keep_policy, ordered, context=context), len(ordered))
        preserved = set(preserved)
        for info, keep_forever in zip(ordered, preserve):
            if keep_forever and info.step not in preserved:
                preserved.add(info.step)
                last_preserved = max(last_preserved, info.time)
        doomed = [info.step for i, (info, kept) in enumerate(zip(ordered, keep))
                  if not kept and info.step not in preserved and info.step != protect and i != len(ordered) - 1]
        # Commit first: the new checkpoint becomes visible while the doomed ones are still listed, so a crash
        # while deleting leaves nothing that no record mentions.
        try:
            self._commit(infos, preserved, last_preserved)
        except BaseException:
            self._roll_back(protect)
            raise
        if not doomed:
            return
        # The save is committed (and durable): from here on, failures are logged and retried by the next save.
        left = set()  # deleted steps with data files that could not be removed: still ours, for the next sweep
        for step in doomed:
            logger.info("ckpt.Manager: deleting %s (kept by no policy of %r)", infos[step].prefix, self.keep_policy)
            if self._delete_files(step):
                infos.pop(step)
                if self._data_files(step):
                    left.add(step)
        try:
            if self.sync:
                _fs.fsync_dir(self.directory)
            self._commit(infos, preserved, last_preserved, self._unfinished | left)
        except OSError as exc:
            logger.warning("ckpt.Manager: could not record the deletion of old checkpoints in %s (%s); the next "
                           "save will", self.directory, exc)

    def _roll_back(self, step: int) -> None:
        """Undo a save whose recording failed: delete the new checkpoint, then put the old state file and record
        back (best effort: if that fails too, they list a checkpoint that no longer exists, which readers skip
        and the next sweep forgets)."""
        self._delete_files(step)
        infos = {s: info for s, info in self._infos.items() if s != step}  # a replaced step is gone as well
        unfinished = {s for s in self._unfinished | {step} if s not in infos and self._data_files(s)}
        try:
            self._commit(infos, self._preserved, self._last_preserved, unfinished)
        except Exception as exc:  # noqa: BLE001 - already handling the original error
            logger.warning("ckpt.Manager: could not restore the state file and record of %s after a failed save "
                           "(%s); the next save will", self.directory, exc)

    def _commit(self, infos: dict[int, CheckpointInfo], preserved: set[int], last_preserved: float,
                unfinished: set[int] | None = None) -> None:
        """Write the state file, then the record, then adopt the new history in memory. ``unfinished`` (default:
        those not committed now) replaces the steps whose leftovers are ours."""
        ordered = list(infos.values())
        preserved = {s for s in preserved if s in infos}
        unfinished = self._unfinished - set(infos) if unfinished is None else set(unfinished)
        self._write_state(ordered, last_preserved)
        self._write_record(ordered, preserved, last_preserved, unfinished=unfinished)
        self._infos, self._preserved, self._last_preserved = dict(infos), preserved, last_preserved
        self._unfinished = unfinished

    @_exclusive
    def delete(self, step: int) -> None:
        """Delete checkpoint ``step`` (even one preserved forever) and forget it.

        Raises:
            CheckpointNotFoundError: this manager has no checkpoint ``step``.
        """
        self.wait()  # a pending asynchronous save first
        step = _check_step(step)
        self._check_open()
        with DirectoryLock(self.directory, timeout=self.lock_timeout):
            self._load_record()
            if step not in self._infos:
                raise CheckpointNotFoundError(f"{self.name} has no checkpoint at step {step} in {self.directory}; "
                                              f"steps: {self.all_steps() or 'none'}", path=self.prefix_for(step),
                                              available=[str(s) for s in self.all_steps()])
            if not self._delete_files(step):
                raise CheckpointError(f"could not delete {self.prefix_for(step)}.index", path=self.prefix_for(step))
            if self.sync:
                _fs.fsync_dir(self.directory)
            infos = dict(self._infos)
            del infos[step]
            left = {step} if self._data_files(step) else set()  # removed by the next sweep
            self._commit(infos, self._preserved, self._last_preserved, self._unfinished | left)

    def _delete_files(self, step: int) -> bool:
        """Remove checkpoint ``step``: ``.index`` first (it stops existing), then ``.data-*``, then ``.meta``.

        Returns False (and deletes nothing else) if the index could not be removed.
        """
        prefix = self.prefix_for(step)
        try:
            _fs.unlink(index_filename(prefix))
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("ckpt.Manager: could not delete %s: %s (will retry later)", index_filename(prefix), exc)
            return False
        base = os.path.basename(prefix)
        for entry in self._listdir():
            if entry.startswith(base + ".data-") or entry == base + ".meta":
                try:
                    _fs.unlink(os.path.join(self.directory, entry))
                except FileNotFoundError:
                    pass
                except OSError as exc:  # an orphan data file is swept by the next sweep
                    logger.warning("ckpt.Manager: could not delete %s: %s", entry, exc)
        return True

    # ------------------------------------------------------------------ restoring

    @_exclusive
    def restore(self, into: Any, step: int | None = None, *, map: api.NameMap | None = None,
                strict: bool = True) -> Any:
        """Restore checkpoint ``step`` (default: the newest that verifies) into ``into``, as ``ckpt.restore`` does.

        Without ``step``, the newest checkpoint is read completely first (every checksum); if it is damaged, a
        ``CorruptCheckpointWarning`` names it and what is wrong, and the next older one is tried, and so on.

        Returns:
            The restored tree (or a ``RestoreReport`` with ``strict=False``).

        Raises:
            CheckpointNotFoundError: no checkpoint yet, or none at ``step``.
            CorruptCheckpointError: every checkpoint is damaged (without ``step``), or checkpoint ``step`` is.
            StateMismatchError: (strict) names or shapes differ; nothing was modified.
        """
        self.wait()  # a pending asynchronous save first
        if step is None:
            prefix = self._newest_intact().prefix
        else:
            step = _check_step(step)
            if step not in self._infos:
                raise CheckpointNotFoundError(
                    f"{self.name} has no checkpoint at step {step} in {self.directory}; steps: "
                    f"{self.all_steps() or 'none'}", path=self.prefix_for(step),
                    available=[str(s) for s in self.all_steps()])
            prefix = self._infos[step].prefix
        return api.restore(prefix, into, map=map, strict=strict, rng=self.rng)

    @_exclusive
    def restore_or_initialize(self, into: Any, init_fn: Callable[[], Any] | None = None) -> int | None:
        """Restore the newest checkpoint into ``into`` (in place) if there is one, else call ``init_fn()``.

        The restored tree is also kept in ``self.restored`` (for immutable trees such as JAX arrays); it is None
        when nothing was restored.

        Returns:
            The restored step, or None when there was no checkpoint.
        """
        self.wait()  # a pending asynchronous save first
        self.restored = None
        if self.latest_step is None:
            if init_fn is not None:
                init_fn()
            return None
        step = self._newest_intact().step
        self.restored = self.restore(into, step)
        return step

    def _newest_intact(self) -> CheckpointInfo:
        """The newest checkpoint that verifies completely; warns about each newer one that does not."""
        infos = self.checkpoints
        if not infos:
            raise CheckpointNotFoundError(f"no checkpoint named {self.name}-<step> in {self.directory} yet",
                                          path=self.directory)
        skipped = []
        for info in reversed(infos):
            result = check_bundle(info.prefix)
            if result.ok and (problem := self._record_problem(info.prefix)) is not None:
                skipped.append((info.prefix, problem))
                self._damaged.add(info.step)
                continue
            if result.ok:
                if skipped:
                    message = (f"ckpt.Manager: skipped damaged checkpoint(s) {_describe(skipped)}; restoring "
                               f"{info.prefix} instead (a later save of a skipped step replaces it)")
                    warnings.warn(message, CorruptCheckpointWarning, stacklevel=3)
                return info
            skipped.append((info.prefix, result.problems[0]))
            self._damaged.add(info.step)
        raise CorruptCheckpointError(f"every checkpoint of {self.name} in {self.directory} is damaged: "
                                     f"{_describe(skipped)}; run `ckpt verify {self.directory}` for details",
                                     path=self.directory)

    def _record_problem(self, prefix: str) -> CheckpointError | None:
        """What is wrong with the ckpt record of a checkpoint whose data verified (None: nothing), as restoring it
        would find it: malformed, too deep or too large, or a random state that cannot be put back."""
        try:
            with Reader(prefix) as reader:
                record = reader.record
            if self.rng and "rng" in record:
                _rng.prepare(record["rng"])
        except CheckpointError as exc:
            return exc
        except ValueError as exc:
            return CorruptCheckpointError(f"{prefix}: malformed ckpt metadata ({exc})", path=prefix)
        return None

    # ------------------------------------------------------------------ lifecycle

    @_exclusive
    def wait(self) -> None:
        """Wait until the pending asynchronous save (``async_save=True``) is committed; raise its error if it
        failed (each error is raised once). Returns at once for synchronous managers."""
        error, self._preempt_error = self._preempt_error, None
        if error is not None:
            raise error
        if self._saver is not None:
            self._saver.wait()

    @_exclusive
    def close(self) -> None:
        """Wait for the pending asynchronous save (raising its error if it failed), uninstall the preemption
        handlers and release the snapshot buffers. Later ``save`` and ``delete`` calls raise; restoring still
        works. Calling it again does nothing. ``with Manager(...) as manager:`` closes on leaving the block."""
        try:
            self.wait()
        finally:
            self._closed = True
            if self._preemption is not None:
                self._preemption.uninstall()
                self._preemption = None
            if self._saver is not None:
                self._saver.close()
            if self._log is not None:
                self._log.close()

    # ------------------------------------------------------------------ preemption

    def handle_preemption(self, save: Callable[[], tuple[int, Any]] | None = None, *,
                          signals: Sequence[int] = _preemption.DEFAULT_SIGNALS, exit: bool = True) -> None:
        """Handle the signals a scheduler sends before it stops the job (opt-in; nothing is installed otherwise).

        On SIGTERM or SIGUSR1 (``signals``), in this order:

        1. The save in flight (``async_save=True``) is finished and committed. If a save of this manager was
           running in the main thread when the signal came, it completes first: the handler acts when it returns.
        2. With ``save``, ``step, state = save()`` is called and saved at once (``force=True``: whatever the save
           policy says), unless that step is already the latest checkpoint.
        3. A warning (logger ``ckpt.manager``) says what was saved, and what failed if anything did.
        4. With ``exit=True`` (default), every other pending asynchronous save of the process is finished too,
           and the signal goes on to the handler installed before: by default the process then ends by the signal
           (exit status 143 for SIGTERM, 138 for SIGUSR1), as it would have without ckpt; a Python handler is
           called; an ignored signal stays ignored. With ``exit=False`` the process continues (a previous
           Python handler is still called): the training loop sees :attr:`reached_preemption` and stops itself,
           and every later :meth:`save` saves, whatever the save policy says (as Orbax does).

        A repeated signal while this runs is ignored. An error (of the save in flight, of ``save()``) is logged;
        with ``exit=False`` it is also raised by the next :meth:`wait` / :meth:`save`. :meth:`close` puts the
        previous handlers back. Call from the main thread (Python installs signal handlers only there).

        Args:
            save: Returns ``(step, state)`` to save now (e.g. ``lambda: (step, {"model": net, "opt": opt})``);
                None: only finish the save in flight.
            signals: The signal numbers to handle.
            exit: Pass the signal on to the previous handler (by default: end the process) once saved.

        Raises:
            ValueError: a bad signal, or not called from the main thread.
            CheckpointError: the manager is closed.
        """
        self._check_open()
        if save is not None and not callable(save):
            raise TypeError(f"`save` must be a callable returning (step, state), not {save!r}")
        signals = _preemption.check_signals(signals)
        if self._preemption is not None:
            self._preemption.uninstall()
            self._preemption = None
        self._preempt_save, self._preempt_exit = save, bool(exit)
        self._preemption = _preemption.Handlers(signals, self._preempted)

    @property
    def reached_preemption(self) -> bool:
        """True once a signal handled by :meth:`handle_preemption` arrived."""
        return self._reached

    def _preempted(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler (main thread)."""
        self._reached = True
        if self._handling:
            logger.warning("ckpt.Manager: %s again while handling the last one; ignored", _signal_name(signum))
            return
        if self._depth and self._holder == threading.get_ident():
            self._preempt_pending = (signum, frame)  # this thread is inside a save: act when it returns
            return
        self._on_preemption(signum, frame)

    @_exclusive
    def _on_preemption(self, signum: int, frame: FrameType | None) -> None:
        name = _signal_name(signum)
        handlers, errors, done = self._preemption, [], []
        self._handling = True
        try:
            try:
                if self._saver is not None and self._saver.pending:
                    logger.warning("ckpt.Manager: %s: finishing the save in flight in %s", name, self.directory)
                self.wait()
            except Exception as exc:  # noqa: BLE001 - reported below; the process may be about to end
                errors.append(("the save in flight", exc))
            if self._preempt_save is not None and not self._closed:
                try:
                    step, state = self._preempt_save()
                    step = _check_step(step)
                    if step == self.latest_step:
                        done.append(f"step {step} was already saved")
                    else:
                        prefix = self.save(step, state, force=True)
                        self.wait()
                        done.append(f"saved step {step} to {prefix}")
                except Exception as exc:  # noqa: BLE001
                    errors.append(("the save on preemption", exc))
            if self._preempt_exit:
                try:
                    _async.wait_all()  # every other asynchronous save of the process, before it ends
                except Exception as exc:  # noqa: BLE001
                    errors.append(("another asynchronous save", exc))
        finally:
            self._handling = False
        latest = self.latest
        for what, exc in errors:
            logger.error("ckpt.Manager: %s: %s failed: %s: %s", name, what, type(exc).__name__, exc)
        logger.warning("ckpt.Manager: %s: %s; the latest checkpoint in %s is %s%s", name,
                       "; ".join(done) or "nothing new to save", self.directory, latest,
                       "; exiting" if self._preempt_exit else "")
        if errors and not self._preempt_exit and self._preempt_error is None:
            self._preempt_error = errors[0][1]
        if handlers is not None:
            handlers.chain(signum, frame, exit=self._preempt_exit)

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Manager({self.directory!r}, name={self.name!r}, steps={self.all_steps()}, "
                f"keep={self.keep_policy!r}, save_policy={self.save_policy!r})")

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"this Manager of {self.directory} is closed", path=self.directory)

    # ------------------------------------------------------------------ files

    @property
    def record_path(self) -> str:
        return os.path.join(self.directory, f"{self.name}{RECORD_SUFFIX}")

    def _listdir(self) -> list[str]:
        try:
            return os.listdir(self.directory)
        except FileNotFoundError:
            return []

    def _sweep_files(self) -> None:
        """Remove leftovers of interrupted saves: temporary files (named as ckpt names them), and data files
        without their index of steps the record lists or says were being written. Other ``{name}-{step}`` files
        are left alone: they may be another tool's (a checkpoint half copied by rsync). Call only while holding
        the directory lock."""
        api.sweep_temporaries(self.directory, self.name)
        entries = self._listdir()
        present = set(entries)
        mine = set(self._infos) | self._unfinished
        for entry in entries:
            match = self._step_re.match(entry)
            if match and TMP_MARKER not in entry and match.group(2).startswith("data-") \
                    and f"{self.name}-{match.group(1)}.index" not in present and int(match.group(1)) in mine:
                try:
                    _fs.unlink(os.path.join(self.directory, entry))
                    logger.info("ckpt.Manager: removed %s, left over by an interrupted save", entry)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    logger.warning("ckpt.Manager: could not remove leftover %s: %s", entry, exc)

    def _sweep(self) -> None:
        """Sweep leftovers, forget checkpoints deleted by hand, adopt unrecorded checkpoints this manager wrote."""
        self._sweep_files()
        entries = set(self._listdir())
        infos = dict(self._infos)
        for step in list(infos):
            if f"{self.name}-{step}.index" not in entries:
                logger.warning("ckpt.Manager: %s.index disappeared; forgetting step %d", infos[step].prefix, step)
                del infos[step]
        adopted = []
        for entry in sorted(entries):
            match = self._step_re.match(entry)
            if not match or match.group(2) != "index" or int(match.group(1)) in infos:
                continue
            info = self._adopt(entry, int(match.group(1)))
            if info is not None:
                logger.info("ckpt.Manager: adopting %s, written by this manager but not recorded", info.prefix)
                adopted.append(info)
        for info in sorted(adopted, key=lambda i: i.time):  # committed after everything recorded
            infos[info.step] = info
        unfinished = {s for s in self._unfinished if s not in infos and self._data_files(s)}  # what is left
        if list(infos.items()) != list(self._infos.items()) or unfinished != self._unfinished:
            self._commit(infos, self._preserved, self._last_preserved, unfinished)

    def _unmark(self, step: int) -> None:
        """After a failed save of ``step`` (its files removed again): the record as it was."""
        if step not in self._unfinished or self._data_files(step):
            return
        try:
            self._write_record(self.checkpoints, self._preserved, self._last_preserved,
                               unfinished=self._unfinished - {step})
            self._unfinished.discard(step)
        except OSError as exc:  # the next save's sweep clears it
            logger.warning("ckpt.Manager: could not rewrite %s after a failed save: %s", self.record_path, exc)

    def _data_files(self, step: int) -> list[str]:
        """The data files of ``{name}-{step}`` (not temporary ones) in the directory."""
        base = f"{self.name}-{step}.data-"
        return sorted(e for e in self._listdir() if e.startswith(base) and TMP_MARKER not in e)

    def _foreign_files(self, step: int) -> list[str]:
        """The index and data files of ``{name}-{step}`` in the directory (of a checkpoint this manager did not
        record: another tool's, complete or not)."""
        base = f"{self.name}-{step}"
        return sorted(e for e in self._listdir()
                      if e == base + ".index" or (e.startswith(base + ".data-") and TMP_MARKER not in e))

    def _adopt(self, entry: str, step: int) -> CheckpointInfo | None:
        """The record of a complete checkpoint that this manager wrote (per its own metadata), else None."""
        path = os.path.join(self.directory, entry)
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (entry, st.st_mtime_ns, st.st_size)
        if key in self._foreign:
            return None
        prefix = self.prefix_for(step)
        try:
            with Reader(prefix) as reader:
                mine = reader.record.get("manager")
            if not (isinstance(mine, dict) and mine.get("name") == self.name and mine.get("step") == step):
                raise ValueError("not written by this manager")
            info = CheckpointInfo(step, prefix, float(mine["time"]), _decode_metrics(mine.get("metrics")))
        except (CheckpointError, OSError, ValueError, TypeError, KeyError):
            self._foreign.add(key)
            return None
        return info

    def _write_state(self, infos: list[CheckpointInfo], last_preserved: float) -> None:
        """Point the TensorFlow ``checkpoint`` state file at this manager's checkpoints (relative, oldest first)."""
        if not infos:
            self._forget_in_state()
            return
        names = [os.path.basename(info.prefix) for info in infos]
        state = CheckpointState(model_checkpoint_path=names[-1], all_model_checkpoint_paths=names,
                                all_model_checkpoint_timestamps=[info.time for info in infos],
                                last_preserved_timestamp=last_preserved)
        write_state(self.directory, state, sync=self.sync)

    def _forget_in_state(self) -> None:
        """No checkpoint left: remove the state file if it points at one of ours (TensorFlow treats a state file
        without ``model_checkpoint_path`` as an error), and leave any other state file alone."""
        try:
            state = read_state(self.directory)
        except CheckpointError:
            return
        if state is None or not state.model_checkpoint_path:
            return
        newest = os.path.basename(state.model_checkpoint_path)
        match = re.match(rf"^{re.escape(self.name)}-(\d+)$", newest)
        if match and not os.path.exists(index_filename(resolve(self.directory, state.model_checkpoint_path))):
            try:
                _fs.unlink(os.path.join(self.directory, STATE_FILENAME))
            except OSError:
                pass

    def _write_record(self, infos: list[CheckpointInfo], preserved: set[int], last_preserved: float, *,
                      unfinished: set[int] = frozenset()) -> None:
        """Atomically replace ``{name}.manager.json`` (temporary file, fsync, rename, fsync the directory).
        ``infos`` in commit order; ``unfinished``: see ``ManagerRecord.unfinished``."""
        record = {
            "format": RECORD_FORMAT,
            "name": self.name,
            "last_preserved": last_preserved,
            **({"unfinished": sorted(unfinished)} if unfinished else {}),
            "checkpoints": [
                {"step": info.step, "prefix": os.path.basename(info.prefix), "time": info.time,
                 "metrics": None if info.metrics is None else {k: _encode_metric(float(v))
                                                               for k, v in info.metrics.items()},
                 "preserved": info.step in preserved}
                for info in infos],
        }
        text = json.dumps(record, indent=1, allow_nan=False) + "\n"
        _fs.write_atomic(self.record_path, text.encode("utf-8"), sync=self.sync)

    def _load_record(self) -> None:
        record = read_record(self.directory, self.name)
        if record is None:
            return
        self._infos = dict(record.checkpoints)
        self._preserved = set(record.preserved)
        self._last_preserved = record.last_preserved
        self._unfinished = set(record.unfinished)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclass(frozen=True)
class ManagerRecord:
    """The contents of a ``{name}.manager.json`` record.

    Attributes:
        checkpoints: step -> CheckpointInfo, in the order they were committed (the last one is the latest).
        preserved: Steps preserved forever.
        last_preserved: Time of the last checkpoint preserved by ``keep_every_n_hours``.
        unfinished: Steps whose data files are this manager's although no complete checkpoint is recorded: the
            step a save is writing (until it is committed), or one whose deletion could not remove every file. A
            data file of such a step without its index is a leftover the next sweep deletes; any other
            ``{name}-{step}`` file may be another tool's and is never deleted.
    """

    checkpoints: dict[int, CheckpointInfo]
    preserved: frozenset[int]
    last_preserved: float
    unfinished: frozenset[int] = frozenset()


def read_record(directory: str | os.PathLike, name: str = "ckpt") -> ManagerRecord | None:
    """Read the record of manager ``name`` in ``directory``; None when there is none.

    Raises:
        CorruptCheckpointError: the file is not a valid record (the message says how to recover).
        UnsupportedError: the record was written by a newer ckpt.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, f"{name}{RECORD_SUFFIX}")
    try:
        with _fs.open_read(path) as f:
            # read(n) allocates n bytes up front: ask only for what the file holds (plus one, to see a cap hit).
            raw = f.read(min(os.fstat(f.fileno()).st_size, _RECORD_MAX_BYTES) + 1)
    except FileNotFoundError:
        return None
    how_to_fix = ("; delete it to rebuild the record from the checkpoints' own metadata (which checkpoints "
                  "were preserved forever is then lost)")
    if len(raw) > _RECORD_MAX_BYTES:
        raise CorruptCheckpointError(f"{path}: too large to be a manager record{how_to_fix}", path=path)
    try:
        record = json.loads(raw.decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        version = record.get("format")
        if isinstance(version, int) and not isinstance(version, bool) and version > RECORD_FORMAT:
            raise UnsupportedError(f"{path}: manager record format {version} is newer than this ckpt "
                                   f"understands ({RECORD_FORMAT}); upgrade ckpt", path=path)
        if version != RECORD_FORMAT or record.get("name") != name:
            raise ValueError(f"expected format {RECORD_FORMAT} and name {name!r}")
        last = record.get("last_preserved")
        if isinstance(last, bool) or not isinstance(last, (int, float)):
            raise ValueError("last_preserved is not a number")
        infos, preserved = {}, set()
        for item in record["checkpoints"]:
            step = item["step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"bad step {step!r}")
            if step in infos:
                raise ValueError(f"step {step} is listed twice")
            if item.get("prefix") != f"{name}-{step}":
                # Deletion only ever targets {name}-{step}: a record naming other files is not trusted.
                raise ValueError(f"step {step} has prefix {item.get('prefix')!r}")
            stamp = item["time"]
            if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
                raise ValueError(f"step {step}: time is not a number")
            infos[step] = CheckpointInfo(step, os.path.join(directory, f"{name}-{step}"), float(stamp),
                                         _decode_metrics(item.get("metrics")))
            if item.get("preserved") is True:
                preserved.add(step)
        unfinished = record.get("unfinished", [])
        if not isinstance(unfinished, list) or \
                not all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in unfinished):
            raise ValueError(f"bad unfinished {unfinished!r}")
    except UnsupportedError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptCheckpointError(f"{path}: not a valid manager record ({exc}){how_to_fix}",
                                     path=path) from None
    return ManagerRecord(infos, frozenset(preserved), float(last), frozenset(unfinished))


def _answer(policy: Any, answer: Sequence[Any], expected: int) -> list[bool]:
    answer = [bool(a) for a in answer]
    if len(answer) != expected:
        raise ValueError(f"{policy!r} answered for {len(answer)} checkpoints instead of {expected}")
    return answer
