"""Retention and save-cadence policies for :class:`ckpt.Manager`: small frozen dataclasses, pure functions of a list.

Two kinds of policy exist, modelled on Orbax's preservation and save-decision policies:

* A **keep policy** answers "which of these checkpoints stay on disk?":
  ``keep(checkpoints, *, context) -> list[bool]``, one answer per checkpoint. ``checkpoints`` is a sequence of
  :class:`CheckpointInfo` in the order they were committed, oldest first (by step, unless a lower step was saved
  after a higher one: then the later save is the newer checkpoint, as in TensorFlow's state file). A keep policy may also say which checkpoints are *preserved
  forever* (``preserve(checkpoints, *, context) -> list[bool]``); the manager records those and never lets a later
  decision delete them. Only :class:`KeepEveryNHours` preserves.
* A **save policy** answers "should step ``step`` be saved now?":
  ``should_save(step, checkpoints, *, context) -> bool``, given the checkpoints saved so far.

Policies see nothing but their arguments (no disk, no clock), so they are unit-tested as tables. The context objects
are keyword-only dataclasses, so new fields can be added without changing any policy's signature.

Combining keep policies: a checkpoint is kept if **any** policy keeps it (:class:`KeepAny`). :class:`KeepLast`
keeps the ``n`` newest checkpoints whether or not another policy keeps them too, so checkpoints kept by the other
policies never take one of those ``n`` places.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "CheckpointInfo", "KeepContext", "SaveContext", "KeepPolicy", "SavePolicy",
    "KeepLast", "KeepEveryNHours", "KeepEveryNSteps", "KeepBest", "KeepAny",
    "SaveEveryNSteps", "SaveEveryNSeconds", "SaveAny",
]

_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint a :class:`ckpt.Manager` wrote.

    Attributes:
        step: The training step it was saved at.
        prefix: Its prefix (``directory/name-step``); the files are ``prefix.index`` and ``prefix.data-*``.
        time: When it was saved, in seconds since the epoch (from the manager's clock).
        metrics: The ``metrics`` passed to ``save`` (``{name: float}``), or None.
    """

    step: int
    prefix: str
    time: float
    metrics: Mapping[str, float] | None = field(default=None, hash=False)


@dataclass(frozen=True, kw_only=True)
class KeepContext:
    """What a keep policy may know besides the checkpoints.

    Attributes:
        now: The manager clock's current time (seconds since the epoch).
        last_preserved: Time of the newest checkpoint preserved forever so far, or, before any was, the time the
            manager's history began minus one second (TensorFlow 2's ``last_preserved_timestamp``).
        preserved: Steps already preserved forever.
    """

    now: float
    last_preserved: float = -math.inf
    preserved: frozenset[int] = frozenset()


@dataclass(frozen=True, kw_only=True)
class SaveContext:
    """What a save policy may know besides the step and the checkpoints.

    Attributes:
        now: The manager clock's current time (seconds since the epoch).
    """

    now: float


@runtime_checkable
class KeepPolicy(Protocol):
    """Decides which checkpoints stay. ``preserve`` is optional (default: nothing is preserved forever)."""

    def keep(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]: ...


@runtime_checkable
class SavePolicy(Protocol):
    """Decides whether a step is saved."""

    def should_save(self, step: int, checkpoints: Sequence[CheckpointInfo], *, context: SaveContext) -> bool: ...


def preserved_by(policy: KeepPolicy, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
    """``policy.preserve(...)`` for policies that define it; all False for the others."""
    preserve = getattr(policy, "preserve", None)
    if preserve is None:
        return [False] * len(checkpoints)
    return list(preserve(checkpoints, context=context))


def _check_count(value, what: str, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"`{what}` must be {allowed}, not {value!r}")


def _check_positive(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{what}` must be a positive number, not {value!r}")


# ============================================================================================== keep policies


@dataclass(frozen=True)
class KeepLast:
    """Keep the ``n`` newest checkpoints (``n=None``: keep every checkpoint). ``max_to_keep`` becomes this."""

    n: int | None

    def __post_init__(self) -> None:
        _check_count(self.n, "KeepLast.n", minimum=0, allow_none=True)

    def keep(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
        del context
        if self.n is None:
            return [True] * len(checkpoints)
        first = len(checkpoints) - self.n
        return [i >= first for i in range(len(checkpoints))]


@dataclass(frozen=True)
class KeepEveryNHours:
    """Preserve one checkpoint per ``hours`` for ever (TensorFlow 2's ``keep_checkpoint_every_n_hours``).

    Going through the checkpoints oldest first, one that is not preserved yet is preserved if
    ``time >= last_preserved + hours * 3600``, and then becomes the new ``last_preserved``. TensorFlow makes this
    decision when a checkpoint is about to be deleted; because checkpoints are considered in the same order and each
    decision only depends on the ones before it, deciding when the checkpoint is saved preserves exactly the same
    checkpoints, and it keeps the decision independent of the other keep policies.
    """

    hours: float

    def __post_init__(self) -> None:
        _check_positive(self.hours, "KeepEveryNHours.hours")

    def preserve(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
        last = context.last_preserved
        interval = self.hours * _SECONDS_PER_HOUR
        out = []
        for info in checkpoints:
            if info.step in context.preserved:
                out.append(True)
                last = max(last, info.time)
            elif info.time - interval >= last:
                out.append(True)
                last = info.time
            else:
                out.append(False)
        return out

    def keep(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
        return self.preserve(checkpoints, context=context)


@dataclass(frozen=True)
class KeepEveryNSteps:
    """Keep every checkpoint whose step is a multiple of ``n``."""

    n: int

    def __post_init__(self) -> None:
        _check_count(self.n, "KeepEveryNSteps.n", minimum=1)

    def keep(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
        del context
        return [info.step % self.n == 0 for info in checkpoints]


def metric_value(info: CheckpointInfo, metric: str) -> float | None:
    """``info.metrics[metric]`` as a float, or None when it is missing or NaN (such a checkpoint is never best)."""
    if not info.metrics or metric not in info.metrics:
        return None
    try:
        value = float(info.metrics[metric])
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def rank_best(checkpoints: Sequence[CheckpointInfo], metric: str, mode: str) -> list[int]:
    """Indices of the checkpoints that have ``metric``, best first; on a tie the newer checkpoint ranks first."""
    scored = [(value, i) for i, info in enumerate(checkpoints) if (value := metric_value(info, metric)) is not None]
    sign = 1.0 if mode == "min" else -1.0
    scored.sort(key=lambda vi: (sign * vi[0], -vi[1]))
    return [i for _, i in scored]


@dataclass(frozen=True)
class KeepBest:
    """Keep the ``n`` best checkpoints by ``metrics[metric]`` (``mode`` ``"min"`` or ``"max"``).

    Checkpoints without the metric (or with NaN) are not candidates. On a tie the newer checkpoint wins.
    """

    metric: str
    mode: str = "min"
    n: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"`KeepBest.metric` must be a non-empty string, not {self.metric!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"`KeepBest.mode` must be 'min' or 'max', not {self.mode!r}")
        _check_count(self.n, "KeepBest.n", minimum=1)

    def keep(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
        del context
        best = set(rank_best(checkpoints, self.metric, self.mode)[: self.n])
        return [i in best for i in range(len(checkpoints))]


@dataclass(frozen=True)
class KeepAny:
    """Keep a checkpoint if any of ``policies`` keeps it (and preserve it if any preserves it)."""

    policies: tuple[KeepPolicy, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(self.policies))
        for policy in self.policies:
            if not callable(getattr(policy, "keep", None)):
                raise TypeError(f"KeepAny: {policy!r} is not a keep policy (it has no keep() method)")

    def keep(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
        out = [False] * len(checkpoints)
        for policy in self.policies:
            out = [a or bool(b) for a, b in zip(out, _checked(policy, policy.keep(checkpoints, context=context),
                                                                 len(checkpoints)))]
        return out

    def preserve(self, checkpoints: Sequence[CheckpointInfo], *, context: KeepContext) -> list[bool]:
        out = [False] * len(checkpoints)
        for policy in self.policies:
            decided = _checked(policy, preserved_by(policy, checkpoints, context=context), len(checkpoints))
            out = [a or bool(b) for a, b in zip(out, decided)]
        return out


def _checked(policy, answer, expected: int) -> list:
    answer = list(answer)
    if len(answer) != expected:
        raise ValueError(f"{policy!r} answered for {len(answer)} checkpoints instead of {expected}")
    return answer


# ============================================================================================== save policies


def _last_saved(checkpoints: Sequence[CheckpointInfo]) -> CheckpointInfo | None:
    # The newest by time; on a tie (a clock that did not move) the later in the list, which is in commit order.
    return max(enumerate(checkpoints), key=lambda ic: (ic[1].time, ic[0]), default=(0, None))[1]


@dataclass(frozen=True)
class SaveEveryNSteps:
    """Save when ``step - last_saved_step >= n``; the first save always happens."""

    n: int

    def __post_init__(self) -> None:
        _check_count(self.n, "SaveEveryNSteps.n", minimum=1)

    def should_save(self, step: int, checkpoints: Sequence[CheckpointInfo], *, context: SaveContext) -> bool:
        del context
        last = _last_saved(checkpoints)
        return last is None or step - last.step >= self.n


@dataclass(frozen=True)
class SaveEveryNSeconds:
    """Save when at least ``secs`` seconds passed since the last save; the first save always happens."""

    secs: float

    def __post_init__(self) -> None:
        _check_positive(self.secs, "SaveEveryNSeconds.secs")

    def should_save(self, step: int, checkpoints: Sequence[CheckpointInfo], *, context: SaveContext) -> bool:
        del step
        last = _last_saved(checkpoints)
        return last is None or context.now - last.time >= self.secs


@dataclass(frozen=True)
class SaveAny:
    """Save if any of ``policies`` says so."""

    policies: tuple[SavePolicy, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(self.policies))
        for policy in self.policies:
            if not callable(getattr(policy, "should_save", None)):
                raise TypeError(f"SaveAny: {policy!r} is not a save policy (it has no should_save() method)")

    def should_save(self, step: int, checkpoints: Sequence[CheckpointInfo], *, context: SaveContext) -> bool:
        return any(p.should_save(step, checkpoints, context=context) for p in self.policies)
