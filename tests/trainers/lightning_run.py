"""Child process of tests/test_trainers.py: a tiny deterministic Lightning run through ckpt.lightning.

usage: lightning_run.py CKPT_DIR OUT.npz MODE   (MODE: plain | kill | resume; ASYNC=lightning|ckpt in the env)
"""

import os
import sys

import numpy as np
import torch

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO

import ckpt.lightning

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters({"lr": 0.05})
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.body(x), y)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


class Kill(Callback):
    """Dies in the middle of the second epoch, once the end-of-epoch checkpoint is on disk."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            io = trainer.strategy.checkpoint_io
            io.wait() if hasattr(io, "wait") else io.teardown()  # the end-of-epoch save is complete
            os._exit(3)


def main():
    ckpt_dir, out, mode = sys.argv[1:4]
    L.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(40, 4, generator=g), torch.randn(40, 2, generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)
    io = (AsyncCheckpointIO(ckpt.lightning.CheckpointIO()) if os.environ.get("ASYNC") == "lightning"
          else ckpt.lightning.CheckpointIO(async_save=True))
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=-1)]
    if mode == "kill":
        callbacks.append(Kill())
    trainer = L.Trainer(max_epochs=2, plugins=[io], callbacks=callbacks, logger=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    net = Net()
    trainer.fit(net, loader, ckpt_path="last" if mode == "resume" else None)
    np.savez(out, **{k: v.detach().numpy() for k, v in net.state_dict().items()},
             lr=np.float64(trainer.optimizers[0].param_groups[0]["lr"]))


if __name__ == "__main__":
    main()
