"""ckpt: save, restore, inspect and convert model state in TensorFlow-compatible checkpoint files.

Importing ckpt imports no machine-learning framework; support for each is loaded on first use.

Example:
    >>> import ckpt, numpy as np                                   # doctest: +SKIP
    >>> prefix = ckpt.save({"alpha": np.float32(0.3)}, "model/regression.ckpt", step=25)
    >>> ckpt.latest("model")
    'model/regression.ckpt-25'
    >>> ckpt.Reader(prefix)["alpha"]
    array(0.3, dtype=float32)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._paths import local_path
from .api import RestoreReport, flatten, load, restore, save, wait
from . import errors
# Only the base class and the errors a user typically catches; the rest are in ckpt.errors.
from .errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from .tf.state_file import latest as _latest
from .manager import Manager
from .policies import (CheckpointInfo, KeepAny, KeepBest, KeepEveryNHours, KeepEveryNSteps, KeepLast, SaveAny,
                       SaveEveryNSeconds, SaveEveryNSteps)
from .reader import Reader
from ._verify import VerifyReport, verify

if TYPE_CHECKING:  # imported on first use below; listed here for type checkers and IDEs
    from . import graph
    from ._convert import ConvertResult, convert
    from ._diff import DiffResult, diff
    from ._fetch import fetch

__version__ = "0.2.0"

# Loaded on first access, to keep `import ckpt` (and so `ckpt --version`) fast: name -> (module, attribute or None
# for the module itself). The graph protobuf modules and ml_dtypes (convert's bfloat16 cast) are the costly parts.
_LAZY = {
    "graph": (".graph", None),
    "convert": ("._convert", "convert"), "ConvertResult": ("._convert", "ConvertResult"),
    "diff": ("._diff", "diff"), "DiffResult": ("._diff", "DiffResult"),
    "fetch": ("._fetch", "fetch"),
    # optional integrations: importing them imports their framework
    "summary": (".summary", None), "lightning": (".lightning", None), "huggingface": (".huggingface", None),
    "keras": (".keras", None),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ckpt' has no attribute {name!r}") from None
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "save", "load", "restore", "flatten", "wait", "RestoreReport", "latest", "Reader",
    "Manager", "CheckpointInfo", "KeepLast", "KeepEveryNHours", "KeepEveryNSteps", "KeepBest", "KeepAny",
    "SaveEveryNSteps", "SaveEveryNSeconds", "SaveAny",
    "convert", "ConvertResult", "fetch", "diff", "DiffResult", "verify", "VerifyReport", "graph",
    "errors", "CheckpointError", "CheckpointNotFoundError", "CorruptCheckpointError", "UnsupportedError",
    "__version__",
]



def latest(directory, *, verify: bool = False) -> str | None:
    """The newest complete checkpoint prefix in ``directory`` (TensorFlow's ``latest_checkpoint``), or None.

    Uses the directory's ``checkpoint`` state file; paths recorded as absolute that no longer exist are looked up
    by base name in the directory; a missing, empty or garbled state file falls back to scanning for complete
    checkpoints, newest first. With ``verify=True`` each candidate is read completely (every checksum) and damaged
    ones are skipped with a ``ckpt.errors.CorruptCheckpointWarning`` naming them: the newest that verifies.
    """
    return _latest(local_path(directory, what="directory"), verify=verify)
