"""Keras 3: back up a ``model.fit`` run through ckpt and resume it, like ``keras.callbacks.BackupAndRestore``.

    >>> import ckpt.keras                                                 # doctest: +SKIP
    >>> model.fit(x, y, epochs=10, callbacks=[ckpt.keras.BackupAndRestore("backup/")])

Every ``save_freq`` (``"epoch"``, or a number of batches) the model's weights and the optimizer's state (slots,
iteration count, learning rate) are saved with a :class:`ckpt.Manager` (the newest ``max_to_keep`` kept). When
``fit`` starts and a backup exists, it is restored in place and training continues from the epoch after the
last completed one (``initial_epoch``), as Keras' own callback does; a backup taken in the middle of an epoch
restores that step's weights and restarts that epoch, also as Keras does. The files are TensorFlow-compatible
checkpoints (``tf.train.load_checkpoint`` reads them) whatever the Keras backend.

Only this module imports Keras (``import ckpt`` does not).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import keras

from .manager import Manager
from .reader import Reader

__all__ = ["BackupAndRestore"]


class BackupAndRestore(keras.callbacks.Callback):
    """Save the training state through ckpt and restore it when ``fit`` starts.

    Args:
        backup_dir: Directory of the checkpoints (a :class:`ckpt.Manager` directory).
        save_freq: ``"epoch"`` or a positive number of batches.
        max_to_keep: Checkpoints kept.
        delete_checkpoint: Remove ``backup_dir`` when training ends normally (Keras' default is True; ckpt keeps
            them by default, since they are ordinary checkpoints).
    """

    def __init__(self, backup_dir: str | os.PathLike, *, save_freq: str | int = "epoch", max_to_keep: int = 2,
                 delete_checkpoint: bool = False) -> None:
        super().__init__()
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq < 1):
            raise ValueError(f"`save_freq` must be 'epoch' or a positive int, not {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.max_to_keep = max_to_keep
        self.delete_checkpoint = delete_checkpoint
        self.manager: Manager | None = None
        self.restored_epoch: int | None = None
        self._epoch = 0
        self._batches = 0

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"model": self.model}
        if getattr(self.model, "optimizer", None) is not None:
            state["optimizer"] = self.model.optimizer
        return state

    def on_train_begin(self, logs=None) -> None:
        if not self.model.built:
            raise ValueError("ckpt.keras.BackupAndRestore needs a built model before fit() (call it on a batch)")
        self.manager = Manager(self.backup_dir, max_to_keep=self.max_to_keep)
        latest = self.manager.latest
        if latest is None:
            return
        opt = getattr(self.model, "optimizer", None)
        if opt is not None and not opt.built:
            opt.build(self.model.trainable_variables)
        self.manager.restore(self._state())
        meta = Reader(self.manager.latest).metadata or {}
        self._epoch = int(meta.get("epoch", 0))
        self.restored_epoch = self._epoch
        self.model._initial_epoch = self._epoch  # what keras.callbacks.BackupAndRestore sets

    def _save(self) -> None:
        opt = getattr(self.model, "optimizer", None)
        step = int(opt.iterations.numpy()) if opt is not None else self._epoch
        self.manager.save(step, self._state(), metadata={"epoch": self._epoch, "batch": self._batches},
                          force=True)

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._batches = batch + 1
        if self.save_freq != "epoch" and self._batches % self.save_freq == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._epoch, self._batches = epoch + 1, 0
        if self.save_freq == "epoch":
            self._save()

    def on_train_end(self, logs=None) -> None:
        if self.manager is not None:
            self.manager.close()
        if self.delete_checkpoint and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir)
