"""A TensorFlow 2 Keras checkpoint restored into the equivalent PyTorch model, by names, with no TensorFlow needed
at restore time.

    python examples/tf2_to_torch.py DIR     # trains a small Keras MLP, saves tf.train.Checkpoint, restores it
                                            # into torch, converts it to safetensors, and compares the outputs

1. Names. A TF2 checkpoint stores ``model/hidden/kernel`` as
   ``optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE`` (Keras 3 models are tracked through their
   optimizer too). ``names="clean"`` reads the object graph in the checkpoint and gives every variable its
   object path instead: ``model/hidden/kernel``, ``model/hidden/bias``, and Adam's slots attached to them as
   ``optimizer/model/hidden/kernel/momentum``. Two regex rules then map those names to PyTorch's:

       model/<layer>/kernel -> <layer>.weight        model/<layer>/bias -> <layer>.bias

   and a last catch-all rule with an empty replacement drops everything else (optimizer state, save counter).

2. Layouts. A Keras ``Dense`` kernel is ``[in, out]`` (``y = x @ kernel + bias``); a PyTorch ``Linear`` weight is
   ``[out, in]`` (``y = x @ weight.T + bias``), so every kernel is transposed. Biases are the same. (A Conv2D
   kernel would go HWIO -> OIHW: ``transpose(3, 2, 0, 1)``.)

``ckpt.restore`` checks names and shapes before anything is assigned, so the restore first fills NumPy arrays
shaped like the TensorFlow variables (under the PyTorch names), then copies them, transposed where needed, into
the module.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np

import ckpt

# Clean TF2 names -> PyTorch state-dict names. The first matching rule applies; an empty result drops the tensor.
RULES = [
    (r"^model/(\w+)/kernel$", r"\1.weight"),
    (r"^model/(\w+)/bias$", r"\1.bias"),
    (r"^.*$", ""),
]
# PyTorch names whose TensorFlow value is the transpose of what torch.nn.Linear holds.
TRANSPOSED = re.compile(r"\.weight$")


def tf_layout(name: str, torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape TensorFlow stores for a PyTorch tensor of ``torch_shape`` named ``name``."""
    return tuple(reversed(torch_shape)) if TRANSPOSED.search(name) else tuple(torch_shape)


def restore_into_torch(checkpoint: str | os.PathLike, module) -> None:
    """Restore a TF2 (Keras) checkpoint into ``module`` (a ``torch.nn.Module`` with Linear layers named like the
    Keras layers). Raises ``ckpt.errors.StateMismatchError`` listing every name or shape that does not line up."""
    import torch

    state = module.state_dict()
    staged = {name: np.empty(tf_layout(name, tuple(t.shape)), dtype=np.float32) for name, t in state.items()}
    staged = ckpt.restore(checkpoint, staged, map=RULES, names="clean")
    with torch.no_grad():
        for name, tensor in state.items():
            value = staged[name].T if TRANSPOSED.search(name) else staged[name]
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def to_safetensors(checkpoint: str | os.PathLike, path: str | os.PathLike):
    """The same checkpoint as a safetensors file with readable names (model and optimizer state, TF layout)."""
    return ckpt.convert(checkpoint, path, names="clean")


# ---------------------------------------------------------------------------------------------- demo


def build_keras():
    import keras

    class MLP(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.head = keras.layers.Dense(3)

        def call(self, x):
            return self.head(self.hidden(x))

    return MLP()


def build_torch():
    import torch

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(4, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.head(torch.relu(self.hidden(x)))

    return MLP()


def train_and_save(directory: str | os.PathLike) -> tuple[str, np.ndarray, np.ndarray]:
    """Train the Keras MLP for a few steps, save it with ``tf.train.Checkpoint``; returns (prefix, x, outputs)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = rng.normal(size=(32, 3)).astype(np.float32)
    model = build_keras()
    optimizer = tf.keras.optimizers.Adam(0.01)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).save(os.path.join(os.fspath(directory), "ckpt"))
    return prefix, x, np.asarray(model(x))


def main(directory: str) -> int:
    import torch

    prefix, x, expected = train_and_save(directory)
    net = build_torch()
    restore_into_torch(prefix, net)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    result = to_safetensors(prefix, os.path.join(directory, "model.safetensors"))
    print(f"{prefix}: {len(ckpt.Reader(prefix, names='clean').keys())} tensors; wrote {result.destination}")
    print(f"max |keras - torch| = {np.abs(got - expected).max():.2e}")
    return 0 if np.allclose(got, expected, atol=1e-5) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "tf2_to_torch"))
