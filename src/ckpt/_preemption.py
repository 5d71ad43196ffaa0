"""Signal handlers for ``Manager.handle_preemption``: install, chain to the previous handler, uninstall.

What happens on a signal is the manager's business (``Manager._preempted``); this module only owns the handler
table. A handler is a bound method of a :class:`Handlers` object; after :meth:`Handlers.uninstall` it only passes
signals on (it may stay reachable when another handler installed later chains to it).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

logger = logging.getLogger("ckpt.manager")

#: The signals schedulers send before they stop a job: SIGTERM (Kubernetes, SLURM at the time limit, most
#: schedulers), SIGUSR1 (what SLURM's ``--signal=USR1@<seconds>`` asks for ahead of the limit).
DEFAULT_SIGNALS: tuple[int, ...] = tuple(s for s in (getattr(signal, "SIGTERM", None),
                                                     getattr(signal, "SIGUSR1", None)) if s is not None)


def check_signals(signals: Iterable[Any]) -> tuple[int, ...]:
    """The signal numbers in ``signals``, checked (ValueError names a bad one)."""
    out = []
    valid = signal.valid_signals()
    for sig in signals:
        if isinstance(sig, bool) or not isinstance(sig, int) or sig not in valid:
            raise ValueError(f"not a signal: {sig!r}")
        if sig in (getattr(signal, "SIGKILL", -1), getattr(signal, "SIGSTOP", -1)):
            raise ValueError(f"{signal.Signals(sig).name} cannot be handled")
        out.append(int(sig))
    if not out:
        raise ValueError("`signals` is empty")
    return tuple(dict.fromkeys(out))


class Handlers:
    """Our handler for each of ``signals``, calling ``on_signal(signum, frame)``; the previous handlers are kept
    to chain to. Must be created (and uninstalled) in the main thread, as Python requires."""

    def __init__(self, signals: tuple[int, ...], on_signal: Callable[[int, FrameType | None], None]) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("handle_preemption() must be called from the main thread (Python only lets the main "
                             "thread install signal handlers)")
        self.on_signal = on_signal
        self.active = True
        self.previous: dict[int, Any] = {}
        try:
            for signum in signals:
                self.previous[signum] = signal.signal(signum, self.handle)
        except BaseException:
            self.uninstall()
            raise

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.active:
            self.on_signal(signum, frame)
        else:
            self.chain(signum, frame, exit=True)

    def chain(self, signum: int, frame: FrameType | None, *, exit: bool) -> None:
        """Pass the signal on to the handler that was installed before ours. For the default action (terminate),
        only with ``exit``: put the default back and raise the signal again, so the process ends as the signal
        would have ended it (exit status 128 + signum, e.g. 143 for SIGTERM)."""
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        elif exit:
            self.active = False
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def uninstall(self) -> None:
        """Put the previous handlers back where ours is still installed; elsewhere ours only passes signals on."""
        self.active = False
        for signum, previous in self.previous.items():
            try:
                if signal.getsignal(signum) == self.handle:
                    signal.signal(signum, signal.SIG_DFL if previous is None else previous)
            except ValueError:  # not the main thread: ours stays installed, inactive (it passes signals on)
                logger.debug("ckpt.Manager: could not uninstall the handler of signal %d here", signum)
