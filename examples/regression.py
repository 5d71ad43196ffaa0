"""The seed tutorial's workflow with ckpt: train a regression, save, restore in a new process, continue.

    y = 0.1 * x + 0.3, 100 samples, gradient descent with step 0.5 (seed 000, first section),
    in NumPy (hand-written gradients) or PyTorch (autograd + torch.optim.SGD).

    python examples/regression.py train  --framework torch --dir model --steps 25   # saves regressionModel.ckpt-25
    python examples/regression.py resume --framework torch --dir model --steps 51   # a new process continues
    python examples/regression.py check  --framework torch --dir model              # == an uninterrupted run?

The checkpoint holds `alpha`, `beta` and `global_step`, the names TensorFlow 1's Saver gives the seed's
variables, so a checkpoint written by TensorFlow for the seed model resumes here too (and ours restores there).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import ckpt

N = 100
TRUE_ALPHA, TRUE_BETA = 0.3, 0.1
LEARNING_RATE = 0.5


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """The seed's data, as float32 (what TensorFlow feeds its float32 variables)."""
    rng = np.random.RandomState(1234)
    x = rng.rand(N).astype(np.float32)
    return x, (x * np.float32(TRUE_BETA) + np.float32(TRUE_ALPHA)).astype(np.float32)


class NumpyRegression:
    """Parameters as NumPy arrays, updated in place (so ckpt.restore writes straight into them)."""

    def __init__(self) -> None:
        rng = np.random.RandomState(1234)
        self.state = {"alpha": np.zeros([1], np.float32),
                      "beta": rng.uniform(-1.0, 1.0, size=[1]).astype(np.float32),
                      "global_step": np.zeros([], np.int64)}

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        alpha, beta = self.state["alpha"], self.state["beta"]
        err = (x * beta + alpha) - y
        grad_alpha = np.mean(np.float32(2) * err, dtype=np.float32)
        grad_beta = np.mean(np.float32(2) * err * x, dtype=np.float32)
        alpha -= np.float32(LEARNING_RATE) * grad_alpha
        beta -= np.float32(LEARNING_RATE) * grad_beta
        self.state["global_step"] += 1

    def values(self) -> tuple[float, float, int]:
        return float(self.state["alpha"][0]), float(self.state["beta"][0]), int(self.state["global_step"])


class TorchRegression:
    """The same model in PyTorch: two parameters, autograd and torch.optim.SGD."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        rng = np.random.RandomState(1234)
        self.alpha = torch.nn.Parameter(torch.zeros(1))
        self.beta = torch.nn.Parameter(torch.from_numpy(rng.uniform(-1.0, 1.0, size=[1]).astype(np.float32)))
        self.global_step = torch.zeros((), dtype=torch.int64)
        self.optimizer = torch.optim.SGD([self.alpha, self.beta], lr=LEARNING_RATE)
        self.state = {"alpha": self.alpha, "beta": self.beta, "global_step": self.global_step}

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        torch = self.torch
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        loss = torch.mean(torch.square(xt * self.beta + self.alpha - yt))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.global_step += 1

    def values(self) -> tuple[float, float, int]:
        return float(self.alpha.detach()[0]), float(self.beta.detach()[0]), int(self.global_step)


def make_model(framework: str):
    return TorchRegression() if framework == "torch" else NumpyRegression()


def train(model, steps: int, *, every: int = 1, quiet: bool = False) -> None:
    x, y = make_data()
    for step in range(steps):
        model.step(x, y)
        if not quiet and step % every == 0:
            alpha, beta, _ = model.values()
            print("Step: %d, alpha: %f, beta: %f" % (step, alpha, beta))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "resume", "check"])
    parser.add_argument("--framework", choices=["numpy", "torch"], default="numpy")
    parser.add_argument("--dir", default="model", help="checkpoint directory")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    prefix = os.path.join(args.dir, "regressionModel.ckpt")
    model = make_model(args.framework)

    if args.command == "train":
        train(model, args.steps or 25)
        path = ckpt.save(model.state, prefix, step=model.values()[2])
        print("Model saved in file: %s" % path)
    elif args.command == "resume":
        path = ckpt.latest(args.dir)
        if path is None:
            print(f"no checkpoint in {args.dir}; run 'train' first", file=sys.stderr)
            return 1
        ckpt.restore(path, model.state)  # in place: NumPy arrays and torch parameters keep their identity
        alpha, beta, step = model.values()
        print("Restored from %s (step %d): alpha: [%.8f], beta: [%.8f]" % (path, step, alpha, beta))
        train(model, args.steps or 51, every=10)
        path = ckpt.save(model.state, prefix, step=model.values()[2])
        print("Model saved in file: %s" % path)
    else:
        resumed = ckpt.load(args.dir)
        steps = int(resumed["global_step"])
        train(model, steps, quiet=True)
        straight = ckpt.flatten(model.state)
        same = all(np.asarray(resumed[k]).tobytes() == straight[k].tobytes() for k in ("alpha", "beta", "global_step"))
        print(f"resumed run ({args.framework}) after {steps} steps equals an uninterrupted {steps}-step run "
              f"bit for bit: {same}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
