"""Hugging Face ``transformers.Trainer``: checkpoints of a training run saved and resumed through ckpt.

    >>> from ckpt.huggingface import Trainer                              # doctest: +SKIP
    >>> trainer = Trainer(model=model, args=TrainingArguments("out", save_steps=50), train_dataset=ds)
    >>> trainer.train(resume_from_checkpoint=True)                        # continues from out/checkpoint-N

``ckpt.huggingface.Trainer`` is ``transformers.Trainer`` with its checkpoint hooks replaced (or mix
:class:`CkptTrainerMixin` into your own Trainer subclass, before ``Trainer``). Each ``checkpoint-N`` directory gets
one TensorFlow-compatible ckpt checkpoint, ``checkpoint-N/ckpt``, holding the model's state dict, the optimizer and
scheduler states and the global random generators (Python, NumPy, torch), instead of ``optimizer.pt``,
``scheduler.pt`` and ``rng_state.pth``; resuming reads it back without pickle. The Trainer still writes its JSON
``trainer_state.json`` (global step, epoch, logs), from which it finds the data position: on resume it skips the
batches of the current epoch already seen, so a resumed run continues with the batch it would have seen next. The
model is also saved the Hugging Face way (``model.safetensors`` + config) so ``from_pretrained`` still works on a
checkpoint directory. Single-process training only (one optimizer and scheduler, no DeepSpeed/FSDP).

Only this module imports transformers (``import ckpt`` does not).
"""

from __future__ import annotations

import os
from typing import Any

import transformers

from . import api
from .errors import CheckpointNotFoundError
from .reader import Reader

__all__ = ["CkptTrainerMixin", "Trainer", "STEM"]

#: The prefix stem inside each ``checkpoint-N`` directory.
STEM = "ckpt"


def _prefix(checkpoint_dir: str) -> str:
    return os.path.join(os.fspath(checkpoint_dir), STEM)


class CkptTrainerMixin:
    """Replaces the Trainer's optimizer/scheduler/RNG/model checkpoint hooks with one ckpt checkpoint."""

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        state: dict[str, Any] = {"model": self.model.state_dict()}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.lr_scheduler is not None:
            state["scheduler"] = self.lr_scheduler.state_dict()
        # rng=True: the generators as they are now, which is what the Trainer's own rng_state.pth holds
        api.save(state, _prefix(output_dir), rng=True)

    def _save_rng_state(self, output_dir: str) -> None:
        """Saved with the optimizer in the ckpt checkpoint."""

    def _loaded(self, checkpoint: str) -> dict[str, Any] | None:
        prefix = _prefix(checkpoint)
        if not os.path.exists(prefix + ".index"):
            return None
        cache = getattr(self, "_ckpt_cache", None)
        if cache is None or cache[0] != prefix:
            cache = (prefix, api.load(prefix, framework="torch"))
            self._ckpt_cache = cache
        return cache[1]

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        loaded = self._loaded(resume_from_checkpoint)
        if loaded is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        (model or self.model).load_state_dict(loaded["model"])

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        loaded = None if checkpoint is None else self._loaded(checkpoint)
        if loaded is None:
            return super()._load_optimizer_and_scheduler(checkpoint)
        if "optimizer" in loaded:
            self.optimizer.load_state_dict(loaded["optimizer"])
        if "scheduler" in loaded:
            self.lr_scheduler.load_state_dict(loaded["scheduler"])

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None or not os.path.exists(_prefix(checkpoint) + ".index"):
            return super()._load_rng_state(checkpoint)
        from . import _rng

        record = Reader(_prefix(checkpoint)).record
        if "rng" not in record:
            raise CheckpointNotFoundError(f"{_prefix(checkpoint)}: no random generator state recorded",
                                          path=_prefix(checkpoint))
        _rng.restore(record["rng"])
        self._ckpt_cache = None  # resume done: free the loaded tensors


class Trainer(CkptTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` saving and resuming its checkpoints through ckpt (see the module docstring)."""
