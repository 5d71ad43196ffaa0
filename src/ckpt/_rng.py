"""Capturing and restoring global random number generator state (``ckpt.save(..., rng=True)``).

Python's ``random``, NumPy's global ``RandomState``, and, when the framework is already imported, torch's CPU and
CUDA generators and TensorFlow's global generator. Frameworks are never imported here just to look.
"""

from __future__ import annotations

import base64
import binascii
import random
import sys
from collections.abc import Callable
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


def restore(state: Any) -> None:
    """Put back what :func:`capture` recorded (parts for frameworks not imported are skipped).

    Raises:
        ValueError: the record is malformed (nothing was changed).
    """
    prepare(state)()


def prepare(state: Any) -> Callable[[], None]:
    """Check a recorded RNG state completely and decode it; return what puts it back.

    Everything that can fail fails here, before any generator (or anything else) is touched: each part is
    decoded and tried on a fresh generator of the same kind. The returned function only assigns.

    Raises:
        ValueError: the record is malformed, naming the part.
    """
    if not isinstance(state, dict):
        raise ValueError("the random state record is not an object")
    steps: list[Callable[[], None]] = []
    for part, check in (("python", _python), ("numpy", _numpy), ("torch", _torch), ("torch_cuda", _torch_cuda),
                        ("tensorflow", _tensorflow)):
        if part in state:
            try:
                step = check(state[part])
            except (ValueError, TypeError, OverflowError, IndexError, KeyError, RuntimeError,
                    binascii.Error) as exc:
                raise ValueError(f"bad {part} random state ({type(exc).__name__}: {exc})") from None
            if step is not None:
                steps.append(step)

    def apply() -> None:
        for step in steps:
            step()

    return apply


def _python(raw: Any) -> Callable[[], None]:
    version, internal, gauss = raw
    if not isinstance(internal, list) or not all(type(v) is int for v in internal):
        raise ValueError("the internal state is not a list of ints")
    if gauss is not None and (isinstance(gauss, bool) or not isinstance(gauss, (int, float))):
        raise ValueError("the cached gauss value is not a number")
    value = (version, tuple(internal), None if gauss is None else float(gauss))
    random.Random().setstate(value)  # raises on anything random.setstate refuses
    return lambda: random.setstate(value)


def _numpy(raw: Any) -> Callable[[], None]:
    kind, keys, pos, has_gauss, cached = raw
    if kind != "MT19937" or not isinstance(keys, list) or len(keys) != 624:
        raise ValueError("not an MT19937 state of 624 words")
    for name, value in (("pos", pos), ("has_gauss", has_gauss)):
        if type(value) is not int:
            raise ValueError(f"{name} is not an int")
    if not 0 <= pos <= 624 or has_gauss not in (0, 1):
        raise ValueError(f"pos {pos} / has_gauss {has_gauss} out of range")
    if isinstance(cached, bool) or not isinstance(cached, (int, float)):
        raise ValueError("the cached gauss value is not a number")
    if not all(type(v) is int and 0 <= v < 2**32 for v in keys):
        raise ValueError("a key is not a 32-bit unsigned int")
    value = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, float(cached))
    np.random.RandomState().set_state(value)
    return lambda: np.random.set_state(value)


def _torch(raw: Any) -> Callable[[], None] | None:
    data = _unb64(raw)
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    value = torch.from_numpy(data)
    torch.Generator().set_state(value)  # a fresh CPU generator: same state layout as the global one
    return lambda: torch.set_rng_state(value)


def _torch_cuda(raw: Any) -> Callable[[], None] | None:
    if not isinstance(raw, list):
        raise ValueError("not a list of device states")
    data = [_unb64(s) for s in raw]
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    current = torch.cuda.get_rng_state_all()
    if len(data) > len(current) or any(d.size != c.numel() for d, c in zip(data, current)):
        raise ValueError(f"{len(data)} device state(s) do not fit the {len(current)} device(s) here")
    value = [torch.from_numpy(d) for d in data]
    return lambda: torch.cuda.set_rng_state_all(value)


def _tensorflow(raw: Any) -> Callable[[], None] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("state"), list):
        raise ValueError("not an object with a state list")
    if not all(type(v) is int for v in raw["state"]):
        raise ValueError("the state is not a list of ints")
    value = np.asarray(raw["state"], dtype=np.int64)  # OverflowError beyond 64 bits
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    gen = tf.random.get_global_generator()
    if tuple(value.shape) != tuple(gen.state.shape):
        raise ValueError(f"{value.shape} words, but the generator here has {tuple(gen.state.shape)}")
    return lambda: gen.reset(value)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(text: Any) -> np.ndarray:
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8).copy()
