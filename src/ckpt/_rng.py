"""Capturing and restoring global random number generator state (``ckpt.save(..., rng=True)``).

Python's ``random``, NumPy's global ``RandomState``, and, when the framework is already imported, torch's CPU and
CUDA generators and TensorFlow's global generator. Frameworks are never imported here just to look.
"""

from __future__ import annotations

import base64
import random
import sys
from typing import Any

import numpy as np


def capture() -> dict[str, Any]:
    """The current global RNG states as JSON data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, np.asarray(keys, dtype=np.uint32).tolist(), int(pos), int(has_gauss), float(cached)],
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = _b64(torch.get_rng_state().numpy())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["torch_cuda"] = [_b64(s.numpy()) for s in torch.cuda.get_rng_state_all()]
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "random") and hasattr(tf.random, "get_global_generator"):
        try:
            gen = tf.random.get_global_generator()
            state["tensorflow"] = {"state": np.asarray(gen.state.numpy()).tolist(), "algorithm": int(gen.algorithm)}
        except Exception:  # graph mode or an uninitialised runtime: nothing to capture
            pass
    return state


def restore(state: dict[str, Any]) -> None:
    """Put back what :func:`capture` recorded (parts for frameworks not imported are skipped)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch = sys.modules.get("torch")
    if torch is not None:
        if "torch" in state:
            torch.set_rng_state(torch.from_numpy(_unb64(state["torch"])))
        if "torch_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.from_numpy(_unb64(s)) for s in state["torch_cuda"]])
    tf = sys.modules.get("tensorflow")
    if tf is not None and "tensorflow" in state:
        gen = tf.random.get_global_generator()
        gen.reset(np.asarray(state["tensorflow"]["state"], dtype=np.int64))


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy()
