"""Asynchronous saves: one background writer per owner (``ckpt.save`` has one, each ``Manager`` its own).

A save request first waits for the owner's previous save (at most one is in flight) and raises its error if it
failed; then the caller's snapshot is handed to a fresh non-daemon thread that writes and commits it. Errors are
kept until the next ``submit`` or ``wait`` raises them, never swallowed. Interpreter exit waits for the writers
(non-daemon threads are joined before ``atexit`` handlers run); an error found then is logged, since nobody is
left to raise it to.

Ownership of a snapshot's buffers: the caller's thread fills them; ``submit`` hands them to the job, which alone
reads them while it writes; when the job has ended (committed or failed) its thread puts them in the saver's free
buffers; the next snapshot claims those with ``take_buffers`` (so two threads snapshotting at once never share one).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable

from . import _seam

logger = logging.getLogger("ckpt")

_SAVERS: "weakref.WeakSet[AsyncSaver]" = weakref.WeakSet()
_SAVERS_LOCK = threading.Lock()


class AsyncSaver:
    """Runs one save at a time in the background; see the module docstring."""

    def __init__(self, name: str = "ckpt-async-save") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        #: Free snapshot buffers (name -> array): those of the last finished save, for the next snapshot to reuse.
        self.buffers: dict = {}
        self._buffers_lock = threading.Lock()  # never held while waiting, so the job's thread can always take it
        with _SAVERS_LOCK:
            _SAVERS.add(self)

    @property
    def pending(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def take_buffers(self) -> dict:
        """Claim the free snapshot buffers (empty while the save that wrote them is still running): the caller owns
        them until it passes them, filled, to :meth:`submit`."""
        with self._buffers_lock:
            buffers, self.buffers = self.buffers, {}
        return buffers

    def submit(self, job: Callable[[], object], buffers: dict | None = None) -> None:
        """Wait for the previous save (raising its error), then run ``job`` in a new background thread.

        ``buffers`` (the snapshot ``job`` writes) belong to the job until it ends, then become the free buffers.
        """
        with self._lock:
            self.wait()
            thread = threading.Thread(target=self._run, args=(job, buffers), name=self.name, daemon=False)
            self._thread = thread
            thread.start()

    def _run(self, job: Callable[[], object], buffers: dict | None) -> None:
        try:
            _seam.point("async.job")
            job()
        except BaseException as exc:  # kept for the next submit()/wait(), which raise it
            self._error = exc
        finally:
            if buffers is not None:  # the hand-back: nothing reads them any more
                with self._buffers_lock:
                    self.buffers = buffers

    def wait(self) -> None:
        """Wait until the save in flight (if any) is committed; raise its error if it failed."""
        with self._lock:
            thread = self._thread
            if thread is not None:
                thread.join()
                self._thread = None
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Wait for the save in flight (raising its error), then drop the snapshot buffers and stop being waited
        for by :func:`wait_all` and at exit. The saver can still be waited for (it returns at once)."""
        try:
            self.wait()
        finally:
            self.buffers = {}
            with _SAVERS_LOCK:
                _SAVERS.discard(self)


def wait_all() -> None:
    """Wait for every pending asynchronous save; raise the first error (after waiting for all of them)."""
    with _SAVERS_LOCK:
        savers = list(_SAVERS)
    first: BaseException | None = None
    for saver in savers:
        try:
            saver.wait()
        except BaseException as exc:
            if first is None:
                first = exc
    if first is not None:
        raise first


@atexit.register
def _drain_at_exit() -> None:
    with _SAVERS_LOCK:
        savers = list(_SAVERS)
    for saver in savers:
        try:
            saver.wait()
        except BaseException as exc:  # nobody is left to raise it to
            logger.error("ckpt: an asynchronous save failed: %r", exc)
