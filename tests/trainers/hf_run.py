"""Child process of tests/test_trainers.py: a tiny deterministic transformers.Trainer run through ckpt.huggingface.

usage: hf_run.py OUTPUT_DIR OUT.npz MODE   (MODE: plain | kill | resume). No downloads: the model is built here.
"""

import os
import sys

import numpy as np
import torch
import transformers

from ckpt.huggingface import Trainer

torch.set_num_threads(1)


class Config(transformers.PretrainedConfig):
    model_type = "ckpt-tiny"

    def __init__(self, hidden=8, **kw):
        super().__init__(**kw)
        self.hidden = hidden


class Tiny(transformers.PreTrainedModel):
    config_class = Config

    def __init__(self, config):
        super().__init__(config)
        self.body = torch.nn.Sequential(torch.nn.Linear(4, config.hidden), torch.nn.Tanh(),
                                        torch.nn.Dropout(0.2), torch.nn.Linear(config.hidden, 2))
        self.post_init()

    def forward(self, x, labels=None):
        out = self.body(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class Data(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(40, 4, generator=g), torch.randn(40, 2, generator=g)

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class Kill(transformers.TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 7:  # checkpoint-5 is on disk; mid-epoch 2 (5 steps per epoch)
            os._exit(3)


def main():
    out_dir, out, mode = sys.argv[1:4]
    args = transformers.TrainingArguments(
        out_dir, num_train_epochs=2, per_device_train_batch_size=8, learning_rate=0.05, save_strategy="steps",
        save_steps=3, logging_strategy="no", report_to=[], seed=0, data_seed=0, use_cpu=True,
        dataloader_num_workers=0, lr_scheduler_type="linear", warmup_steps=2, disable_tqdm=True,
        full_determinism=True)
    transformers.set_seed(0)
    model = Tiny(Config())
    trainer = Trainer(model=model, args=args, train_dataset=Data(),
                      callbacks=[Kill()] if mode == "kill" else [])
    trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
    np.savez(out, **{k: v.detach().numpy() for k, v in model.state_dict().items()},
             lr=np.float64(trainer.optimizer.param_groups[0]["lr"]))


if __name__ == "__main__":
    main()
