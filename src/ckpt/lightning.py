"""PyTorch Lightning: save and resume every Lightning checkpoint through ckpt.

    >>> import lightning as L, ckpt.lightning                             # doctest: +SKIP
    >>> trainer = L.Trainer(plugins=[ckpt.lightning.CheckpointIO()],
    ...                     callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath="ckpts", save_last=True)])
    >>> trainer.fit(model, ckpt_path="last")                              # resumes when ckpts/last.ckpt exists

Lightning's ``ModelCheckpoint``, ``save_top_k``, ``ckpt_path="last"`` and ``Trainer.save_checkpoint`` work
unchanged: each checkpoint path Lightning names (``ckpts/epoch=1-step=20.ckpt``) becomes a directory holding an
ordinary ckpt / TensorFlow checkpoint (``ckpt.index`` + data file; ``ckpt.Reader``, ``ckpt inspect`` and
``tf.train.load_checkpoint`` read it). Everything Lightning puts in the checkpoint dict is saved: the model's
``state_dict``, optimizer and scheduler states (integer keys kept), loop and callback states, hyperparameters.
Asynchronous saving: ``CheckpointIO(async_save=True)`` copies the tensors on the training thread and writes in one
background thread; removals Lightning asks for (``save_top_k``) are queued behind the writes, so a checkpoint still
being written is never left behind, and a write error is raised by the next save, load or at teardown. Lightning's
own ``AsyncCheckpointIO(ckpt.lightning.CheckpointIO())`` works too (a removal then waits for a write of that path
in flight).

Loading uses no pickle. Only this module imports Lightning (``import ckpt`` does not).
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO as _LightningCheckpointIO

from . import api
from .errors import CheckpointNotFoundError

__all__ = ["CheckpointIO", "STEM"]

#: The prefix stem inside each checkpoint directory.
STEM = "ckpt"


class CheckpointIO(_LightningCheckpointIO):
    """A Lightning ``CheckpointIO`` plugin writing ckpt checkpoints.

    Args:
        sync: fsync the files before a save returns (as ``ckpt.save``).
        num_shards: Data files per checkpoint.
        async_save: Write in a background thread (see the module docstring).
    """

    def __init__(self, *, sync: bool = True, num_shards: int = 1, async_save: bool = False) -> None:
        super().__init__()
        self.sync = sync
        self.num_shards = num_shards
        self.async_save = async_save
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []
        self._error: BaseException | None = None
        # Paths being written right now (by any thread); remove_checkpoint waits for them.
        self._writing: set[str] = set()
        self._cond = threading.Condition()

    # -- background queue: one worker, so writes and removals happen in the order Lightning asked for them --------

    def _submit(self, fn, *args) -> None:
        self._raise_error()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-lightning")

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # raised on the training thread by the next call
                self._error = self._error or exc

        self._futures = [f for f in self._futures if not f.done()] + [self._executor.submit(run)]

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def wait(self) -> None:
        """Block until queued saves and removals are done; raise the first error of a background save."""
        for f in list(self._futures):
            f.result()
        self._futures = []
        self._raise_error()

    def teardown(self) -> None:
        """Lightning calls this at the end of ``fit``: finish the background work."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    # -- CheckpointIO ----------------------------------------------------------------------------------------------

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` as the directory ``path``; an existing checkpoint there is replaced only once the
        new one is complete."""
        if storage_options is not None:
            raise TypeError(f"ckpt.lightning.CheckpointIO takes no storage_options (got {storage_options!r})")
        path = os.fspath(path)
        if self.async_save:
            snapshot = _map(checkpoint, lambda t: t.detach().clone())  # consistent at the time of the call
            self._submit(self._write, snapshot, path)
        else:
            self._write(checkpoint, path)

    def _write(self, checkpoint: dict[str, Any], path: str) -> None:
        with self._cond:
            while path in self._writing:
                self._cond.wait()
            self._writing.add(path)
        try:
            self._write_now(checkpoint, path)
        finally:
            with self._cond:
                self._writing.discard(path)
                self._cond.notify_all()

    def _write_now(self, checkpoint: dict[str, Any], path: str) -> None:
        parent = os.path.dirname(path) or "."
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(path)}.ckpt-tmp-{secrets.token_hex(4)}")
        try:
            api.save(checkpoint, os.path.join(tmp, STEM), sync=self.sync, num_shards=self.num_shards, rng=False)
            if os.path.lexists(path):
                old = os.path.join(parent, f".{os.path.basename(path)}.ckpt-old-{secrets.token_hex(4)}")
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                _remove(tmp)

    def load_checkpoint(self, path: Any, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """The checkpoint dict saved at ``path``, tensors as CPU torch tensors (moved by ``map_location``)."""
        self.wait()  # a checkpoint still being written is loaded complete
        path = os.fspath(path)
        prefix = os.path.join(path, STEM)
        if not os.path.exists(prefix + ".index"):
            raise CheckpointNotFoundError(f"{path}: not a checkpoint written by ckpt.lightning.CheckpointIO "
                                          f"(no {STEM}.index inside)", path=path, tried=[prefix + ".index"])
        loaded = api.load(prefix, framework="torch")
        if map_location is not None:
            import torch

            loaded = _map(loaded, lambda t: t.to(map_location) if isinstance(map_location, (str, torch.device))
                          else t)
        return loaded

    def remove_checkpoint(self, path: Any) -> None:
        """Delete the checkpoint directory (or file) at ``path``; nothing there is not an error."""
        path = os.fspath(path)
        if self.async_save:
            self._submit(self._remove_now, path)
        else:
            self._remove_now(path)

    def _remove_now(self, path: str) -> None:
        with self._cond:
            while path in self._writing:  # wrapped in Lightning's AsyncCheckpointIO: the write of it in flight
                self._cond.wait()
            if os.path.lexists(path):
                _remove(path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _map(tree: Any, fn) -> Any:
    import torch

    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return type(tree)((k, _map(v, fn)) for k, v in tree.items())
    if isinstance(tree, list):
        return [_map(v, fn) for v in tree]
    if isinstance(tree, tuple) and not hasattr(tree, "_fields"):
        return tuple(_map(v, fn) for v in tree)
    return tree
