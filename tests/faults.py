"""Fault injection for ckpt saves: record every file-system step a save makes, then kill or fail each one.

Every call a save makes that changes the file system goes through the primitives of ``ckpt._fs`` (creating,
writing, fsyncing, closing, renaming and deleting files, creating directories, opening the lock file). An
:class:`Injector` replaces those primitives with wrappers that number the calls ("steps") and can, at step ``k``:

* record only (to enumerate the steps of a save),
* kill the process with SIGKILL before the step runs (``kill``), or after writing only half of a ``write``
  (``truncate``: a file cut short mid-write, then the process dies),
* raise ``OSError`` with a given errno instead of running the step (ENOSPC, EIO, EACCES; for ``close`` the
  descriptor is closed first, as Linux does; for ``write``, ``partial`` writes half first).

Killing runs in forked children of one helper process (``python tests/faults.py kill-server``, fed jobs as JSON
on stdin), so hundreds of kills cost milliseconds each. The checks run in the test process afterwards.

A *scenario* describes one save to break: how to prepare the history before it, the save itself, how a restarted
job resumes and saves again, and what must hold after any fault (:func:`check_after_fault`,
:func:`check_recovery`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ckpt
from ckpt import _fs
from ckpt.tf import bundle_writer as _bundle
from ckpt.errors import CorruptCheckpointWarning

FAULT_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EACCES)
STEP_RE = re.compile(r"-(\d+)$")
_TMP_TOKEN = re.compile(r"\.tmp-[0-9a-f]{8}")
CLOCK = 1_700_000_000.0  # a fixed time, so every run of a scenario makes the same calls

#: Figures for the test session's summary (tests/conftest.py prints them).
FIGURES: dict[str, int] = {}


def count(figure: str, n: int = 1) -> None:
    FIGURES[figure] = FIGURES.get(figure, 0) + n


# ============================================================================================ the injector


@dataclass(frozen=True)
class Step:
    """One file-system call of a save: its number, the primitive and the file (temporary tokens normalised)."""

    index: int
    op: str
    path: str

    def __str__(self) -> str:
        return f"#{self.index} {self.op} {self.path}"


def _normalise(path: Any) -> str:
    return _TMP_TOKEN.sub(".tmp-*", os.path.basename(os.fspath(path)) or os.fspath(path))


class Injector:
    """Wraps every primitive of ``ckpt._fs``; ``action(step, real, args)`` runs each call (default: just run it).

    Use as a context manager; it restores the primitives on exit.
    """

    def __init__(self, action: Callable[[Step, Callable, tuple], Any] | None = None, *,
                 parallel: bool = False) -> None:
        self.action = action or (lambda step, real, args: real(*args))
        self.steps: list[Step] = []
        self._paths: dict[int, str] = {}  # descriptor -> file, for fsync/write/close
        self._saved: dict[str, Callable] = {}
        # Steps are enumerated once and then killed or failed one by one, so every run of a save must make the same
        # calls in the same order: by default shards are written one after the other. ``parallel=True`` keeps
        # ckpt's parallel shard writes (steps from several threads, in no fixed order).
        self.parallel = parallel
        self._parallel_before = _bundle._PARALLEL_WRITES
        self._lock = threading.Lock()

    def __enter__(self) -> Injector:
        self._parallel_before = _bundle._PARALLEL_WRITES
        _bundle._PARALLEL_WRITES = self.parallel
        for name in _fs.PRIMITIVES:
            real = getattr(_fs, name)
            self._saved[name] = real
            setattr(_fs, name, self._wrap(name, real))
        return self

    def __exit__(self, *exc) -> None:
        for name, real in self._saved.items():
            setattr(_fs, name, real)
        self._saved.clear()
        _bundle._PARALLEL_WRITES = self._parallel_before

    def _wrap(self, op: str, real: Callable) -> Callable:
        def wrapper(*args):
            if op in ("write", "fsync", "close"):
                path = self._paths.get(args[0], f"fd{args[0]}")
            elif op == "replace":
                path = f"{_normalise(args[0])} -> {_normalise(args[1])}"
            else:
                path = _normalise(args[0])
            with self._lock:
                step = Step(len(self.steps), op, path)
                self.steps.append(step)
            result = self.action(step, real, args)
            if op in ("create", "open_dir", "open_lock"):
                self._paths[result] = path
            return result

        return wrapper


def record(fn: Callable[[], Any]) -> tuple[list[Step], Any]:
    """Run ``fn`` recording every file-system step; returns (steps, what ``fn`` returned)."""
    with Injector() as injector:
        result = fn()
    return injector.steps, result


def failing_at(k: int, code: int, *, partial: bool = False) -> Injector:
    """An injector whose step ``k`` raises ``OSError(code)`` (``partial``: a write writes half first)."""

    def action(step: Step, real: Callable, args: tuple) -> Any:
        if step.index != k:
            return real(*args)
        if step.op == "close":
            real(*args)  # Linux frees the descriptor even when close reports an error
        elif step.op == "write" and partial:
            data = memoryview(args[1]).cast("B")
            real(args[0], data[: len(data) // 2])
        raise OSError(code, f"{os.strerror(code)} (injected at step {step})", step.path)

    return Injector(action)


def killing_at(k: int, *, truncate: bool = False, expect: str | None = None) -> Injector:
    """An injector that SIGKILLs this process at step ``k`` (``truncate``: after writing half of a write).

    Exits with status 4 instead if step ``k`` is not the ``expect``-ed primitive (the save changed its steps).
    """

    def action(step: Step, real: Callable, args: tuple) -> Any:
        if step.index == k:
            if expect is not None and step.op != expect:
                os._exit(4)
            if truncate and step.op == "write":
                data = memoryview(args[1]).cast("B")
                real(args[0], data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)

    return Injector(action)


# ============================================================================================ scenarios


def state_for(step: int) -> dict[str, Any]:
    """The tiny state saved at ``step``: floats, an int, strings, an empty tensor; every value depends on step."""
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3) + step,
            "opt": {"count": np.int64(step), "m": np.full(3, step / 2, np.float64)},
            "names": np.array([b"step", str(step).encode(), b""], dtype=object),
            "empty": np.zeros((0, 3), np.float32)}


def big_state_for(step: int) -> dict[str, Any]:
    """A state with many tensors and long strings, for the exhaustive runs."""
    out = {f"layer{i}/kernel": np.arange(40, dtype=np.float32).reshape(5, 8) * (i + 1) + step for i in range(8)}
    out["vocab"] = np.array([f"token-{step}-{i}".encode() * 20 for i in range(50)], dtype=object)
    out["step"] = np.int64(step)
    return out


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}/{key}" if prefix else key))
        return out
    return {prefix: tree}


def assert_values(prefix: str | os.PathLike, expected: dict[str, Any]) -> None:
    """The checkpoint at ``prefix`` holds exactly ``expected`` (names, dtypes, shapes, values)."""
    loaded = ckpt.load(prefix, flat=True)
    want = flat(expected)
    assert sorted(loaded) == sorted(want), (prefix, sorted(loaded), sorted(want))
    for name, value in want.items():
        value = np.asarray(value)
        got = loaded[name]
        assert got.shape == value.shape and got.dtype == value.dtype, (prefix, name, got, value)
        assert np.array_equal(got, value), (prefix, name, got, value)


def step_of(prefix: str | os.PathLike) -> int:
    return int(STEP_RE.search(os.fspath(prefix)).group(1))


def checkpoints_on_disk(directory: Path) -> dict[int, str]:
    """step -> prefix of every ``.index`` in ``directory``."""
    out = {}
    for p in directory.iterdir():
        if p.name.endswith(".index") and ".tmp-" not in p.name:
            out[step_of(str(p)[: -len(".index")])] = str(p)[: -len(".index")]
    return out


def leftovers(directory: Path) -> list[str]:
    """Temporary files, data files without their index, and lock files."""
    names = {p.name for p in directory.iterdir()}
    bad = [n for n in names if ".tmp-" in n or n == ".ckpt.lock"]
    for n in names:
        m = re.match(r"^(.+)\.data-\d{5}-of-\d{5}$", n)
        if m and f"{m.group(1)}.index" not in names:
            bad.append(n)
    return sorted(bad)


@dataclass
class Scenario:
    """One save to break, and how a restarted job resumes after it.

    Attributes:
        name: Short name (test ids).
        history: Steps saved before (oldest first); empty for a first save.
        step: The step whose save is broken.
        keep: The steps that must survive whatever happens (history minus what retention may delete).
        kind: ``"manager"`` (``ckpt.Manager``) or ``"save"`` (``ckpt.save`` + state file).
        options: Extra keyword arguments for the Manager / ``ckpt.save``.
        state: ``step -> state`` to save.
        max_to_keep: The manager's retention.
    """

    name: str
    history: tuple[int, ...]
    step: int
    keep: tuple[int, ...]
    kind: str = "manager"
    options: dict[str, Any] = field(default_factory=dict)
    state: Callable[[int], dict[str, Any]] = state_for
    max_to_keep: int = 3

    @property
    def previous(self) -> int | None:
        return self.history[-1] if self.history else None

    def manager(self, directory: Path) -> ckpt.Manager:
        return ckpt.Manager(directory, max_to_keep=self.max_to_keep, rng=False, clock=lambda: CLOCK,
                            **self.options)

    def save(self, directory: Path, step: int, manager: ckpt.Manager | None = None) -> None:
        if self.kind == "manager":
            (manager or self.manager(directory)).save(step, self.state(step))
        else:
            ckpt.save(self.state(step), directory / "model", step=step, **self.options)

    def prepare(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        manager = self.manager(directory) if self.kind == "manager" else None
        for step in self.history:
            self.save(directory, step, manager)

    def saver(self, directory: Path) -> tuple[Callable[[], None], ckpt.Manager | None]:
        """The save to break, ready to run (constructing the manager is not part of it), and the manager."""
        manager = self.manager(directory) if self.kind == "manager" else None
        return (lambda: self.save(directory, self.step, manager)), manager

    def blank(self) -> dict[str, Any]:
        """A state of the same structure with nothing in it, to restore into."""

        def empty(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: empty(v) for k, v in value.items()}
            value = np.asarray(value)
            return np.full(value.shape, b"", dtype=object) if value.dtype == object else np.zeros_like(value)

        return empty(self.state(0))

    def resume(self, directory: Path) -> tuple[int | None, ckpt.Manager | None]:
        """What a restarted job does: restore the newest checkpoint. Returns (step restored, manager)."""
        into = self.blank()
        if self.kind == "manager":
            manager = self.manager(directory)
            got = manager.restore_or_initialize(into)
            if got is not None:
                assert_tree(manager.restored, self.state(got))
            return got, manager
        latest = ckpt.latest(directory)
        if latest is None:
            return None, None
        restored = ckpt.restore(directory, into)
        assert_tree(restored, self.state(step_of(latest)))
        return step_of(latest), None


def assert_tree(tree: Any, expected: dict[str, Any]) -> None:
    got, want = flat(tree), flat(expected)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert np.array_equal(np.asarray(got[name]), np.asarray(value)), (name, got[name], value)


SCENARIOS = {
    # A manager saving step 4 after 1, 2, 3 with max_to_keep=3: the save also deletes checkpoint 1.
    "manager": Scenario("manager", history=(1, 2, 3), step=4, keep=(2, 3)),
    # ckpt.save of step 2 after step 1 (checkpoint data + state file).
    "save": Scenario("save", history=(1,), step=2, keep=(1,), kind="save"),
}

EXHAUSTIVE_SCENARIOS = {
    "manager-big": Scenario("manager-big", history=(10, 20), step=30, keep=(10, 20), state=big_state_for),
    "manager-first": Scenario("manager-first", history=(), step=1, keep=()),
    "manager-keep1": Scenario("manager-keep1", history=(5, 6), step=7, keep=(), max_to_keep=1),
    "save-sharded": Scenario("save-sharded", history=(1, 2), step=3, keep=(1, 2), kind="save",
                             options={"num_shards": 3}, state=big_state_for),
    "save-first": Scenario("save-first", history=(), step=1, keep=(), kind="save"),
    "manager-nosync": Scenario("manager-nosync", history=(1, 2, 3), step=4, keep=(2, 3),
                               options={"sync": False}),
}


# ============================================================================================ the checks


def check_after_fault(scenario: Scenario, directory: Path, *, outcome: str) -> int | None:
    """What must hold right after a fault; returns the step ``ckpt.latest`` names (None: no checkpoint yet).

    ``outcome``: ``"raised"`` (the save raised), ``"returned"`` (it returned normally) or ``"killed"``.
    """
    previous, new = scenario.previous, scenario.step
    latest = ckpt.latest(directory)
    if latest is None:
        assert previous is None and outcome != "returned", f"ckpt.latest found nothing ({outcome})"
    else:
        got = step_of(latest)
        assert got in (previous, new), f"ckpt.latest names step {got}, neither {previous} nor {new}"
        if outcome == "raised":
            assert got == previous, f"the save raised, yet ckpt.latest names the new checkpoint {latest}"
        if outcome == "returned":
            assert got == new, f"the save returned, yet ckpt.latest names {latest}"
        with warnings.catch_warnings():
            warnings.simplefilter("error", CorruptCheckpointWarning)
            assert ckpt.latest(directory, verify=True) == latest
        assert_values(latest, scenario.state(got))
    # No checkpoint on disk is damaged: each one verifies and holds what was saved at its step.
    on_disk = checkpoints_on_disk(directory)
    for step, prefix in on_disk.items():
        report = ckpt.verify(prefix)
        assert report.ok, [str(p) for p in report.problems]
        assert_values(prefix, scenario.state(step))
    missing = [s for s in scenario.keep if s not in on_disk]
    assert not missing, f"earlier checkpoints {missing} are gone"
    if outcome == "raised":
        assert new not in on_disk or new in scenario.history, "a save that raised left its checkpoint behind"
    return None if latest is None else step_of(latest)


def check_recovery(scenario: Scenario, directory: Path) -> None:
    """A restarted job resumes from a correct checkpoint, saves the next step, and the directory is clean."""
    got, manager = scenario.resume(directory)
    assert got in (scenario.previous, scenario.step), got
    following = scenario.step if got is None else got + 1
    scenario.save(directory, following, manager)
    assert ckpt.latest(directory) == str(directory / (f"ckpt-{following}" if scenario.kind == "manager"
                                                      else f"model-{following}"))
    assert_values(ckpt.latest(directory), scenario.state(following))
    assert leftovers(directory) == [], leftovers(directory)
    report = ckpt.verify(directory)
    assert report.ok, [str(p) for p in report.problems]
    if scenario.kind == "manager":
        steps = set(scenario.history) | {following} | ({got} if got is not None else set())
        expected = sorted(steps)[-scenario.max_to_keep:]
        assert manager.all_steps() == expected, (manager.all_steps(), expected)
        assert sorted(checkpoints_on_disk(directory)) == expected


# ============================================================================================ killing


@dataclass(frozen=True)
class KillJob:
    """Kill the ``phase`` (``"save"``: the scenario's save; ``"recover"``: resume + next save) at ``step``."""

    scenario: str
    directory: str
    step: int
    expect: str
    truncate: bool = False
    phase: str = "save"


def all_scenarios() -> dict[str, Scenario]:
    return {**SCENARIOS, **EXHAUSTIVE_SCENARIOS}


def recover_action(scenario: Scenario, directory: Path) -> Callable[[], None]:
    def run() -> None:
        got, manager = scenario.resume(directory)
        scenario.save(directory, scenario.step if got is None else got + 1, manager)

    return run


def run_kill_jobs(jobs: Sequence[KillJob], timeout: float = 600) -> list[str]:
    """Run each job in a forked child of one fresh helper process. Returns per job ``"killed"`` or
    ``"exit <status>"`` (0: the save finished before the step was reached)."""
    import subprocess

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = str(Path(ckpt.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__, "kill-server"], input=json.dumps([j.__dict__ for j in jobs]),
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _kill_server() -> None:
    jobs = [KillJob(**j) for j in json.loads(sys.stdin.read())]
    scenarios = all_scenarios()
    results = []
    for job in jobs:
        scenario = scenarios[job.scenario]
        directory = Path(job.directory)
        pid = os.fork()
        if pid == 0:  # the child: break one save, never return
            try:
                warnings.simplefilter("ignore")
                if job.phase == "save":
                    action, _ = scenario.saver(directory)
                else:
                    action = recover_action(scenario, directory)
                with killing_at(job.step, truncate=job.truncate, expect=job.expect):
                    action()
                os._exit(0)
            except BaseException:  # noqa: BLE001 - report, never fall back into the server's loop
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            results.append("killed" if os.WTERMSIG(status) == signal.SIGKILL else f"signal {os.WTERMSIG(status)}")
        else:
            results.append(f"exit {os.WEXITSTATUS(status)}")
    sys.stdout.write(json.dumps(results))


def copy_dir(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


if __name__ == "__main__":
    if sys.argv[1:] == ["kill-server"]:
        _kill_server()
    else:
        sys.exit("usage: python tests/faults.py kill-server < jobs.json")
