"""`make demo`: train a small PyTorch model, get killed mid-run, resume from the last checkpoint bit for bit.

    python examples/demo.py train  --dir run --steps 60 --kill-at 37   # saves every 10 steps, SIGKILLs itself at 37
    python examples/demo.py resume --dir run --steps 60                # a new process restores step 30, trains on
    python examples/demo.py check  --dir run --steps 60                # == one uninterrupted 60-step run, every bit?
    python examples/demo.py safetensors run/ckpt-60 run/model.safetensors   # safetensors' own reader agrees?

The model is an MLP with dropout trained by Adam on shuffled mini-batches, so an exact resume needs the weights,
the optimizer's moments and step counts, and the random generators (data order, dropout masks): ckpt.Manager
saves all of them in TensorFlow's checkpoint layout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import numpy as np
import torch

import ckpt

BATCH = 32


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def make_state() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(64, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return {"model": model, "optimizer": optimizer}


def train(state: dict, start: int, stop: int, manager: ckpt.Manager | None = None, kill_at: int | None = None,
          quiet: bool = False) -> None:
    x, y = make_data()
    model, optimizer = state["model"], state["optimizer"]
    for step in range(start + 1, stop + 1):
        batch = torch.randperm(len(x))[:BATCH]  # the global generator: restored with the checkpoint
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if manager is not None and (step % 10 == 0 or step == stop):
            manager.save(step, state, metrics={"loss": loss.item()})
            print(f"  step {step:3d}  loss {loss.item():.6f}  saved {manager.latest}")
        if step == kill_at:
            print(f"  step {step:3d}  kill -9 (no cleanup, no final save)", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "resume", "check", "safetensors"])
    parser.add_argument("paths", nargs="*", help="safetensors: CHECKPOINT FILE")
    parser.add_argument("--dir", default="run")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--kill-at", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command in ("train", "resume"):
        state = make_state()
        with ckpt.Manager(args.dir, max_to_keep=3) as manager:
            start = manager.restore_or_initialize(state) or 0
            if start:
                print(f"  restored step {start} from {manager.latest} (weights, Adam moments, RNG)")
            train(state, start, args.steps, manager, kill_at=args.kill_at)
        return 0

    if args.command == "check":
        state = make_state()
        train(state, 0, args.steps, quiet=True)  # one uninterrupted run in this process
        straight = ckpt.flatten(state)
        reader = ckpt.Reader(args.dir)
        names = [n for n in straight if n in reader]
        differ = [n for n in names if np.asarray(reader[n]).tobytes() != np.asarray(straight[n]).tobytes()]
        print(f"  {reader.prefix}: {len(names)} tensors compared with an uninterrupted {args.steps}-step run, "
              f"{len(differ)} differ" + (f": {differ}" if differ else " (bit for bit)"))
        return 1 if differ or not names else 0

    source, target = args.paths
    from safetensors.numpy import load_file  # the reference reader, not ckpt's

    theirs = load_file(target)
    ours = ckpt.Reader(source)
    differ = [n for n, v in theirs.items() if v.tobytes() != np.asarray(ours[n]).tobytes()]
    print(f"  safetensors.numpy.load_file({target!r}): {len(theirs)} tensors, {len(differ)} differ from {source}")
    return 1 if differ or not theirs else 0


if __name__ == "__main__":
    sys.exit(main())
