"""Counting work instead of timing it: tests bound what code does (lines run, calls made), never how long it takes."""

from __future__ import annotations

import sys


class LinesRun:
    """Counts the Python lines this thread runs inside the ``with`` block: a measure of work that does not depend
    on the machine's speed (a loop over a forged count shows up; allocations are checked with tracemalloc)."""

    def __enter__(self) -> LinesRun:
        self.lines = 0

        def trace(frame, event, arg):
            if event == "line":
                self.lines += 1
            return trace

        self._previous = sys.gettrace()
        sys.settrace(trace)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(self._previous)
