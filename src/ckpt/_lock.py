"""The directory lock that keeps two processes from saving into one directory at the same time.

A save (``ckpt.save``, ``Manager.save``, ``Manager.delete``) holds an exclusive ``flock(2)`` on
``directory/.ckpt.lock`` from before it writes its first byte until it has updated the ``checkpoint`` state file
(and, for a manager, the record and retention). The kernel releases the lock when its holder exits, however it
exits (SIGKILL included), so a dead holder never blocks anyone. The holder writes its pid and host name into the
file, so that a process that has to wait, or gives up, can say who holds it.

The holder deletes the lock file when it releases the lock (while still holding it), so a directory is left as it
was. A process that locked a file that was deleted meanwhile notices (the path no longer names the file it locked)
and tries again. A stale lock file left by a killed holder is harmless: nobody holds a lock on it.

The lock file is never opened through a symbolic link and must be a regular file (``_fs.open_lock``): a link
there is refused with a ckpt error, so a save never writes its record over a link's target or creates a file
elsewhere through a dangling link.

Within one process the lock is re-entrant for the thread that holds it; other threads wait like other processes.
Readers never take the lock: every file a save writes appears by an atomic rename, complete.

Where ``fcntl`` is missing (Windows) there is no lock; where the file system does not support ``flock`` (some
network file systems answer ENOLCK), saves go ahead unlocked and a warning is logged once per directory.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time

from . import _fs
from .errors import LockTimeoutError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DirectoryLock", "LOCK_FILENAME", "check_timeout"]

logger = logging.getLogger("ckpt")

LOCK_FILENAME = ".ckpt.lock"
_POLL_FIRST = 0.005  # seconds between the first attempts to take a held lock; doubles up to _POLL_MAX
_POLL_MAX = 0.1  # seconds: a waiter notices a released lock at most this late
_WARN_AFTER = 2.0  # seconds of waiting before saying so in the log
_HOLDER_WIDTH = 96  # bytes: the fixed-size "pid host" record, so a rewrite always covers an older one
_BUSY = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}
_UNSUPPORTED = {errno.ENOLCK, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL),
                getattr(errno, "EOPNOTSUPP", errno.EINVAL)}


class _Held:
    """This process's hold on one lock file."""

    __slots__ = ("rlock", "depth", "fd")

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_registry: dict[str, _Held] = {}
_registry_guard = threading.Lock()
_unsupported_warned: set[str] = set()


def check_timeout(timeout: float | None, option: str = "lock_timeout") -> float | None:
    """Validate a lock timeout: None (wait as long as it takes) or a number of seconds >= 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"`{option}` must be None (wait as long as needed) or a number of seconds >= 0, "
                         f"not {timeout!r}")
    return float(timeout)


class DirectoryLock:
    """An exclusive, process-crash-safe lock on saving into ``directory`` (a context manager).

    Thread-safe and process-safe; re-entrant within the thread that holds it.

    Args:
        directory: The directory saves go to (it must exist).
        timeout: Seconds to wait for another holder: None waits as long as it takes, 0 tries once.

    Raises:
        LockTimeoutError: (on entering) still held by another process (or thread) after ``timeout`` seconds;
            the message names the holder's pid.
    """

    def __init__(self, directory: str | os.PathLike, *, timeout: float | None = None) -> None:
        self.directory = os.fspath(directory) or "."
        self.path = os.path.join(self.directory, LOCK_FILENAME)
        self.timeout = check_timeout(timeout)
        self._key = os.path.join(os.path.realpath(self.directory), LOCK_FILENAME)
        self._held: _Held | None = None

    def acquire(self) -> None:
        """Take the lock (waiting up to ``timeout``)."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with _registry_guard:
            held = _registry.setdefault(self._key, _Held())
        if not held.rlock.acquire(timeout=-1 if self.timeout is None else self.timeout):
            raise self._timeout_error(os.getpid(), socket.gethostname(), self.timeout or 0.0, thread=True)
        try:
            if held.depth == 0:
                held.fd = self._lock_file(deadline)
            held.depth += 1
        except BaseException:
            held.rlock.release()
            raise
        self._held = held

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits. Returns whether it was taken."""
        saved, self.timeout = self.timeout, 0.0
        try:
            self.acquire()
            return True
        except LockTimeoutError:
            return False
        finally:
            self.timeout = saved

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        held.depth -= 1
        if held.depth == 0 and held.fd is not None:
            fd, held.fd = held.fd, None
            try:
                _fs.unlink(self.path)  # still holding it: nobody can have locked this file meanwhile
            except OSError:
                pass
            try:
                _fs.close(fd)  # releases the flock
            except OSError:
                pass
        held.rlock.release()

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ internals

    def _lock_file(self, deadline: float | None) -> int | None:
        if fcntl is None:
            return None
        started = time.monotonic()
        delay = _POLL_FIRST
        warned = False
        while True:
            fd = _fs.open_lock(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd) if exc.errno in _BUSY else (None, None)
                _close_quietly(fd)
                if exc.errno in _UNSUPPORTED:
                    if self._key not in _unsupported_warned:
                        _unsupported_warned.add(self._key)
                        logger.warning("ckpt: %s does not support file locks (%s); saving without the lock that "
                                       "keeps concurrent saves apart", self.directory, exc)
                    return None
                if exc.errno not in _BUSY:
                    raise
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise self._timeout_error(*holder, now - started) from None
                if not warned and now - started >= _WARN_AFTER:
                    warned = True
                    logger.warning("ckpt: waiting for %s to finish saving into %s", _who(*holder), self.directory)
                pause = delay if deadline is None else min(delay, max(deadline - now, 0.0))
                time.sleep(pause)
                delay = min(delay * 2, _POLL_MAX)
                continue
            except BaseException:
                _close_quietly(fd)
                raise
            # Locked. If the previous holder deleted the file between our open and our flock, the lock we hold is
            # on a file nobody else will look at: try again on the file the path names now.
            try:
                here = os.stat(self.path)
                mine = os.fstat(fd)
                same = (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                same = False
            except BaseException:
                _close_quietly(fd)
                raise
            if not same:
                _close_quietly(fd)
                continue
            record = f"{os.getpid()} {socket.gethostname()}".encode("utf-8", "replace")[:_HOLDER_WIDTH - 1]
            try:
                _fs.write(fd, record.ljust(_HOLDER_WIDTH - 1) + b"\n")
            except OSError:
                pass  # only used to name the holder in messages
            return fd

    def _timeout_error(self, pid: int | None, host: str | None, waited: float, *,
                       thread: bool = False) -> LockTimeoutError:
        who = "another thread of this process" if thread else _who(pid, host)
        return LockTimeoutError(
            f"{self.directory}: {who} is saving into this directory (lock {self.path}); gave up after "
            f"{waited:.1f} s. Wait for that save to finish, pass a longer lock_timeout (None waits as long as "
            f"needed), or save into another directory", path=self.path, holder_pid=pid, holder_host=host,
            waited=waited)


def _who(pid: int | None, host: str | None) -> str:
    if pid is None:
        return "another process"
    if host and host != socket.gethostname():
        return f"process {pid} on host {host}"
    return f"process {pid}"


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    """The ``pid host`` a holder wrote into the lock file, or (None, None)."""
    try:
        raw = os.pread(fd, _HOLDER_WIDTH, 0)
        pid, _, host = raw.decode("utf-8", "replace").strip().partition(" ")
        return int(pid), host.strip() or None
    except (OSError, ValueError, AttributeError):
        return None, None


def _close_quietly(fd: int) -> None:
    try:
        _fs.close(fd)
    except OSError:
        pass
