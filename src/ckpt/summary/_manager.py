"""What ``Manager(log_dir=...)`` writes after each committed save: scalars in a TensorBoard run directory.

Tags: ``ckpt/save_seconds`` (time spent writing and committing, measured in the saving thread), ``ckpt/save_bytes``
(the checkpoint's files on disk) and ``ckpt/<best_metric>`` (the metric ``keep_best`` ranks by), at the
checkpoint's step. Logging never fails a save: an error writing the log is a warning.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any


class SaveLog:
    """Lazily opened summary writer shared by one manager's saves (async saves log from the saver thread)."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._writer = None
        self._lock = threading.Lock()

    def saved(self, step: int, prefix: str, seconds: float, metrics: dict[str, float] | None,
              best_metric: str | None, wall_time: float) -> None:
        try:
            directory, stem = os.path.split(prefix)
            size = 0
            for entry in os.scandir(directory or "."):
                if entry.name.startswith(stem + ".") and entry.is_file():
                    size += entry.stat().st_size
            values: dict[str, Any] = {"ckpt/save_seconds": seconds, "ckpt/save_bytes": size}
            if best_metric is not None and metrics and best_metric in metrics:
                values[f"ckpt/{best_metric}"] = metrics[best_metric]
            with self._lock:
                if self._writer is None:
                    from . import SummaryWriter

                    self._writer = SummaryWriter(self.log_dir, max_queue=1000)
                self._writer.scalars(values, step, wall_time=wall_time)
                self._writer.flush()
        except (OSError, TypeError, ValueError) as exc:
            warnings.warn(f"ckpt.Manager: could not log save of step {step} to {self.log_dir}: {exc}",
                          RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
