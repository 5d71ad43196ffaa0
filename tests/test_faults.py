"""Fault injection: kill a save at every file-system step, make every step fail, cut writes short.

Each save is first run once with every ``ckpt._fs`` primitive recorded (see ``tests/faults.py``), which enumerates
its steps: every file created, written, fsync'd, closed, renamed and deleted, the directory created and fsync'd,
the lock file opened, the ``checkpoint`` state file and the manager record replaced. Then, for every step ``k``:

* a forked process runs the save and is SIGKILLed at step ``k`` (and, for writes, after writing half);
* in-process, step ``k`` raises ``OSError`` with ENOSPC, EIO and EACCES (and a write writes half, then ENOSPC).

After every fault: ``ckpt.latest`` names a complete checkpoint holding exactly what was saved at its step, the
previous or the new one (the previous one if the save raised, the new one if it returned); every checkpoint on
disk verifies and no earlier one is gone; a restarted job resumes from a correct checkpoint and its next save
succeeds and leaves no temporary file, no orphan data file and no lock file, and ``ckpt.verify`` finds nothing.

The default run covers a manager save (with retention deleting a checkpoint) and a ``ckpt.save``; the exhaustive
run (``make faults``, or ``CKPT_EXHAUSTIVE=1``) adds larger states, sharded saves, first saves, ``sync=False``,
``max_to_keep=1`` and double faults (a second kill at every step of the recovery after each first kill).
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import ckpt
import faults
from faults import (EXHAUSTIVE_SCENARIOS, FAULT_ERRNOS, SCENARIOS, KillJob, Scenario, check_after_fault,
                    check_recovery, copy_dir, count, failing_at, record, recover_action, run_kill_jobs)

EXHAUSTIVE = bool(os.environ.get("CKPT_EXHAUSTIVE"))
only_exhaustive = pytest.mark.skipif(not EXHAUSTIVE, reason="long run: make faults (or set CKPT_EXHAUSTIVE=1)")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills run in forked processes (POSIX)")


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """Each scenario's directory before the save under test (prepared once, copied for every fault)."""
    root = tmp_path_factory.mktemp("bases")
    out = {}
    for name, scenario in {**SCENARIOS, **(EXHAUSTIVE_SCENARIOS if EXHAUSTIVE else {})}.items():
        scenario.prepare(root / name)
        out[name] = root / name
    return out


def steps_of(scenario: Scenario, base: Path, tmp_path: Path) -> list[faults.Step]:
    directory = copy_dir(base, tmp_path / "recorded")
    save, _ = scenario.saver(directory)
    steps, _ = record(save)
    check_after_fault(scenario, directory, outcome="returned")
    return steps


# ============================================================================================ enumeration


def test_a_manager_save_goes_through_every_kind_of_step(bases, tmp_path):
    steps = steps_of(SCENARIOS["manager"], bases["manager"], tmp_path)
    ops = {s.op for s in steps}
    assert ops == set(faults._fs.PRIMITIVES), ops
    described = [str(s) for s in steps]
    # The writes of the checkpoint, the state file and the record, and the deletion of the dropped checkpoint.
    for wanted in ("create ckpt-4.data-00000-of-00001.tmp-*", "create ckpt-4.index.tmp-*",
                   "replace ckpt-4.index.tmp-* -> ckpt-4.index", "replace checkpoint.tmp-* -> checkpoint",
                   "replace ckpt.manager.json.tmp-* -> ckpt.manager.json", "unlink ckpt-1.index",
                   "unlink ckpt-1.data-00000-of-00001", "open_lock .ckpt.lock", "unlink .ckpt.lock"):
        assert any(d.endswith(wanted) for d in described), (wanted, described)
    # The index is renamed into place only after every data file, and the state file only after the index.
    names = [f"{s.op} {s.path}" for s in steps]
    index_placed = names.index("replace ckpt-4.index.tmp-* -> ckpt-4.index")
    assert names.index("replace ckpt-4.data-00000-of-00001.tmp-* -> ckpt-4.data-00000-of-00001") < index_placed
    assert index_placed < names.index("replace checkpoint.tmp-* -> checkpoint")
    assert names.index("replace ckpt.manager.json.tmp-* -> ckpt.manager.json") < names.index("unlink ckpt-1.index")


def test_saves_make_the_same_steps_every_time(bases, tmp_path):
    """Fault points are addressed by number, so a save must make the same calls each time it runs."""
    for name, scenario in SCENARIOS.items():
        first = [(s.op, s.path) for s in steps_of(scenario, bases[name], tmp_path / f"{name}-a")]
        second = [(s.op, s.path) for s in steps_of(scenario, bases[name], tmp_path / f"{name}-b")]
        assert first == second


# ============================================================================================ killing


def _kill_everywhere(name: str, bases, tmp_path) -> None:
    scenario = faults.all_scenarios()[name]
    steps = steps_of(scenario, bases[name], tmp_path)
    jobs = []
    for step in steps:
        jobs.append(KillJob(name, str(tmp_path / f"kill-{step.index}"), step.index, step.op))
        if step.op == "write":
            jobs.append(KillJob(name, str(tmp_path / f"cut-{step.index}"), step.index, step.op, truncate=True))
    jobs.append(KillJob(name, str(tmp_path / "never"), len(steps), ""))  # control: the save completes
    for job in jobs:
        copy_dir(bases[name], Path(job.directory))
    results = run_kill_jobs(jobs)
    assert results[:-1] == ["killed"] * (len(jobs) - 1), [(str(steps[j.step]), r) for j, r in zip(jobs, results)
                                                          if r != "killed"]
    assert results[-1] == "exit 0"
    for job in jobs:
        directory = Path(job.directory)
        where = "the end" if job.step == len(steps) else str(steps[job.step])
        try:
            check_after_fault(scenario, directory, outcome="returned" if job.step == len(steps) else "killed")
            check_recovery(scenario, directory)
        except AssertionError as exc:
            raise AssertionError(f"{name}: killed at {where}{' mid-write' if job.truncate else ''}: {exc}") from exc
    count("fault points: SIGKILL before a step", len(steps))
    count("fault points: SIGKILL mid-write (half written, then killed)", sum(j.truncate for j in jobs))


@needs_fork
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sigkill_at_every_step(name, bases, tmp_path):
    _kill_everywhere(name, bases, tmp_path)


# ============================================================================================ failing


def _fail_everywhere(name: str, bases, tmp_path) -> None:
    scenario = faults.all_scenarios()[name]
    steps = steps_of(scenario, bases[name], tmp_path)
    cases = [(step, code, False) for step in steps for code in FAULT_ERRNOS]
    cases += [(step, errno.ENOSPC, True) for step in steps if step.op == "write"]
    index_placed = next(s.index for s in steps if s.op == "replace" and s.path.endswith(".index"))
    swallowed = set()
    for i, (step, code, partial) in enumerate(cases):
        directory = copy_dir(bases[name], tmp_path / f"fail-{i}")
        save, manager = scenario.saver(directory)
        what = f"{name}: {errno.errorcode[code]}{' after a partial write' if partial else ''} at {step}"
        try:
            with failing_at(step.index, code, partial=partial):
                try:
                    save()
                    outcome = "returned"
                except OSError as exc:
                    assert exc.errno == code, f"raised {exc!r}"
                    outcome = "raised"
            if outcome == "returned":
                swallowed.add((step.op, step.path))
                # Until the checkpoint is in place, every failure must surface (except writing the lock holder's
                # pid, which only serves messages, and directories that cannot be opened for fsync).
                assert step.index > index_placed or (step.op, step.path) == ("write", ".ckpt.lock") \
                    or (step.op == "open_dir" and code == errno.EACCES), "the save returned despite the error"
            check_after_fault(scenario, directory, outcome=outcome)
            if outcome == "raised" and manager is not None:
                # The same manager retries the same step, and succeeds.
                scenario.save(directory, scenario.step, manager)
                check_after_fault(scenario, directory, outcome="returned")
            check_recovery(scenario, directory)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc
    count("fault points: OSError (ENOSPC, EIO, EACCES, partial write + ENOSPC)", len(cases))
    faults.FIGURES.setdefault(f"best-effort steps ({name})", len(swallowed))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_oserror_at_every_step(name, bases, tmp_path):
    _fail_everywhere(name, bases, tmp_path)


def test_a_failed_save_raises_the_original_error_and_leaves_the_directory_as_it_was(bases, tmp_path):
    scenario = SCENARIOS["manager"]
    directory = copy_dir(bases["manager"], tmp_path / "d")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    steps = steps_of(scenario, bases["manager"], tmp_path)
    first_state_write = next(s.index for s in steps if s.op == "replace" and s.path.endswith("-> checkpoint"))
    save, _ = scenario.saver(directory)
    with failing_at(first_state_write, errno.ENOSPC), pytest.raises(OSError) as exc_info:
        save()
    assert exc_info.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


# ============================================================================================ exhaustive


@pytest.mark.exhaustive
@only_exhaustive
@pytest.mark.parametrize("name", sorted(EXHAUSTIVE_SCENARIOS))
@pytest.mark.parametrize("how", ["sigkill", "oserror"])
def test_exhaustive_scenarios(name, how, bases, tmp_path):
    if how == "sigkill" and not hasattr(os, "fork"):
        pytest.skip("kills run in forked processes (POSIX)")
    (_kill_everywhere if how == "sigkill" else _fail_everywhere)(name, bases, tmp_path)


@pytest.mark.exhaustive
@only_exhaustive
@needs_fork
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_double_faults_kill_the_recovery_too(name, bases, tmp_path):
    """After a kill at each step of the save, kill the restarted job at each step of its resume and next save;
    then a third run must still find a correct checkpoint and recover."""
    scenario = SCENARIOS[name]
    steps = steps_of(scenario, bases[name], tmp_path)
    first = [KillJob(name, str(tmp_path / f"first-{s.index}"), s.index, s.op) for s in steps]
    for job in first:
        copy_dir(bases[name], Path(job.directory))
    assert set(run_kill_jobs(first)) == {"killed"}
    second = []
    for job in first:
        probe = copy_dir(Path(job.directory), Path(f"{job.directory}-probe"))
        recovery, _ = record(recover_action(scenario, probe))
        for s in recovery:
            target = copy_dir(Path(job.directory), Path(f"{job.directory}-then-{s.index}"))
            second.append(KillJob(name, str(target), s.index, s.op, phase="recover"))
    results = run_kill_jobs(second)
    assert set(results) == {"killed"}, sorted(set(results))
    for job in second:
        directory = Path(job.directory)
        try:
            latest = faults.ckpt.latest(directory)
            if latest is not None:
                faults.assert_values(latest, scenario.state(faults.step_of(latest)))
            for step, prefix in faults.checkpoints_on_disk(directory).items():
                assert faults.ckpt.verify(prefix).ok
                faults.assert_values(prefix, scenario.state(step))
            got, manager = scenario.resume(directory)
            following = scenario.step if got is None else got + 1
            scenario.save(directory, following, manager)
            assert faults.leftovers(directory) == []
            assert faults.ckpt.verify(directory).ok
        except AssertionError as exc:
            raise AssertionError(f"{name}: second kill in {job.directory}: {exc}") from exc
    count("fault points: double SIGKILL (save, then recovery)", len(second))


# ============================================================================================ parallel shards


def _sharded_state(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    state = {f"big{i}": rng.standard_normal(300_000 + 1000 * i) for i in range(4)}  # written as large payloads
    state.update({f"small{i:03d}": rng.standard_normal(50) for i in range(200)})  # through the write buffers
    return state


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_parallel_shard_writes_match_sequential_ones(tmp_path, monkeypatch):
    import ckpt.tf._write_workers as workers
    import ckpt.tf.bundle_writer as bundle

    state = _sharded_state(0)
    calls = []
    real = workers._Shard._write_out

    def write_out(self, data):
        calls.append(threading.current_thread().name)
        return real(self, data)

    monkeypatch.setattr(workers._Shard, "_write_out", write_out)
    monkeypatch.setattr(bundle.os, "cpu_count", lambda: 4)
    ckpt.save(state, tmp_path / "par" / "ck", num_shards=3)
    assert set(calls) == {"ckpt-write"}  # every payload went through a writer thread
    monkeypatch.setattr(bundle, "_PARALLEL_WRITES", False)
    calls.clear()
    ckpt.save(state, tmp_path / "seq" / "ck", num_shards=3)
    assert threading.current_thread().name in calls and "ckpt-write" not in calls
    par, seq = _files(tmp_path / "par"), _files(tmp_path / "seq")
    del par["checkpoint"], seq["checkpoint"]  # (its timestamps differ)
    assert par == seq  # byte for byte the same data and index files
    loaded = ckpt.load(tmp_path / "par" / "ck")
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


@pytest.mark.parametrize("code", FAULT_ERRNOS)
def test_parallel_shard_writes_fail_cleanly_at_every_write(code, tmp_path, monkeypatch):
    import ckpt.tf.bundle_writer as bundle

    monkeypatch.setattr(bundle.os, "cpu_count", lambda: 4)
    directory = tmp_path / "d"
    ckpt.save(_sharded_state(1), directory / "ck", step=1, num_shards=3)
    before = _files(directory)
    with faults.Injector(parallel=True) as recorder:
        ckpt.save(_sharded_state(2), tmp_path / "probe" / "ck", step=2, num_shards=3)
    writes = sum(1 for s in recorder.steps if s.op == "write" and ".data-" in s.path)
    assert writes >= 6
    for k in range(writes):  # the k-th data write, whichever thread makes it, fails
        seen = []

        def action(step, real, args, k=k, seen=seen):
            if step.op == "write" and ".data-" in step.path:
                seen.append(step)
                if len(seen) == k + 1:
                    raise OSError(code, f"{os.strerror(code)} (injected)", step.path)
            return real(*args)

        with faults.Injector(action, parallel=True), pytest.raises(OSError) as info:
            ckpt.save(_sharded_state(2), directory / "ck", step=2, num_shards=3)
        assert info.value.errno == code
        assert _files(directory) == before, f"write {k}: files were added, removed or changed"
        assert ckpt.latest(directory) == str(directory / "ck-1")
    count("fault points: OSError in parallel shard writes", writes * 1)
