"""Concurrent writers and readers: the directory lock, readers during a save, deleting what a reader has open.

Writers in other processes are real subprocesses (``python -c``), made slow where a test needs a save to be in
progress by wrapping ``ckpt._fs.write`` in the child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ckpt
from ckpt._lock import LOCK_FILENAME, DirectoryLock
from ckpt.errors import CheckpointError, LockTimeoutError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks and deletion semantics")

SRC = str(Path(ckpt.__file__).resolve().parents[1])

HOLDER = textwrap.dedent("""
    import sys, time
    from ckpt._lock import DirectoryLock
    lock = DirectoryLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    if len(sys.argv) > 3:
        open(sys.argv[3], "w").close()  # marks that the lock is about to be released
    lock.release()
    print("released", flush=True)
""")


class FakeClock:
    """Stands in for the ``time`` module of ``ckpt._lock``: ``sleep`` advances ``monotonic`` without waiting, so a
    lock timeout is checked by what the lock did (its polls and pauses), not by how long it took."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def spawn(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(proc: subprocess.Popen, wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == wanted:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited before {wanted!r}: {proc.stderr.read()}")
    raise AssertionError(f"no {wanted!r} within {timeout} s")


def state(step: int) -> dict:
    return {"w": np.full((64, 64), step, np.float32), "step": np.int64(step),
            "tag": np.array([f"step-{step}".encode()], dtype=object)}


def assert_state(prefix, step: int) -> None:
    loaded = ckpt.load(prefix, flat=True)
    assert loaded["step"] == step and np.all(loaded["w"] == step) and loaded["tag"][0] == f"step-{step}".encode()


# ============================================================================================ the lock


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path/run for 30 s (killed at the end)."""
    directory = tmp_path / "run"
    directory.mkdir()
    proc = spawn(HOLDER, directory, 30)
    wait_for_line(proc, "locked")
    yield directory, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_writer_gives_up_with_a_message_naming_the_holder(holder, monkeypatch):
    import ckpt._lock as lock_module

    directory, proc = holder
    clock = FakeClock()
    monkeypatch.setattr(lock_module, "time", clock)
    with pytest.raises(LockTimeoutError) as exc_info:
        ckpt.save(state(1), directory / "model", step=1, lock_timeout=0.3)
    monkeypatch.undo()
    # it polled the lock several times, pausing exactly as long as the timeout in all, then gave up
    assert len(clock.sleeps) > 2 and sum(clock.sleeps) == pytest.approx(0.3)
    error = exc_info.value
    assert error.waited == pytest.approx(0.3)
    assert isinstance(error, CheckpointError) and isinstance(error, TimeoutError)
    assert error.holder_pid == proc.pid
    assert f"process {proc.pid} is saving into this directory" in str(error)
    assert "lock_timeout" in str(error)
    assert sorted(p.name for p in directory.iterdir()) == [LOCK_FILENAME]  # nothing was written

    manager = ckpt.Manager(directory, lock_timeout=0)  # constructing never waits
    with pytest.raises(LockTimeoutError, match=f"process {proc.pid}"):
        manager.save(1, state(1))
    with pytest.raises(LockTimeoutError):
        ckpt.Manager(directory, lock_timeout=0.1).delete(1)  # delete locks too (and would not find step 1)


def test_a_killed_holder_releases_the_lock(holder):
    directory, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (directory / LOCK_FILENAME).exists()  # stale, but nobody holds it
    ckpt.save(state(1), directory / "model", step=1, lock_timeout=0)  # taken at once: no waiting allowed
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint", "model-1.data-00000-of-00001",
                                                           "model-1.index"]


def test_second_writer_waits_for_the_first(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    releasing = tmp_path / "releasing"
    proc = spawn(HOLDER, directory, 0.8, releasing)
    wait_for_line(proc, "locked")
    ckpt.save(state(1), directory / "model", step=1)  # lock_timeout=None: waits as long as needed
    assert releasing.exists()  # the save got the lock only after the holder let it go
    assert proc.wait(timeout=30) == 0
    assert_state(directory / "model-1", 1)


def test_lock_is_reentrant_in_one_thread_and_exclusive_between_threads(tmp_path):
    with DirectoryLock(tmp_path):
        ckpt.save(state(1), tmp_path / "m", step=1)  # no self-deadlock
        result = {}

        def other():
            try:
                ckpt.save(state(2), tmp_path / "m", step=2, lock_timeout=0.2)
            except LockTimeoutError as exc:
                result["error"] = exc

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert "another thread of this process" in str(result["error"])
    ckpt.save(state(2), tmp_path / "m", step=2, lock_timeout=0)
    assert not (tmp_path / LOCK_FILENAME).exists()


def test_invalid_lock_timeout(tmp_path):
    with pytest.raises(ValueError, match="lock_timeout"):
        ckpt.save(state(1), tmp_path / "m", lock_timeout=-1)
    with pytest.raises(ValueError, match="lock_timeout"):
        ckpt.Manager(tmp_path, lock_timeout="soon")


# ============================================================================================ two writers

WRITER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import ckpt, ckpt._lock as lock_mod
    directory, name, steps, log = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    intervals, current = [], [None]
    acquire, release = lock_mod.DirectoryLock.acquire, lock_mod.DirectoryLock.release
    def timed_acquire(self):
        acquire(self)
        self._t0 = time.time()
    def timed_release(self):
        intervals.append((self._t0, time.time(), current[0]))
        time.sleep(0.002)
        release(self)
    lock_mod.DirectoryLock.acquire, lock_mod.DirectoryLock.release = timed_acquire, timed_release
    real_write = ckpt._fs.write
    def slow_write(fd, data):
        time.sleep(0.002)
        return real_write(fd, data)
    ckpt._fs.write = slow_write
    manager = ckpt.Manager(directory, name=name, max_to_keep=int(sys.argv[5]), rng=False)
    print("ready", flush=True)
    for step in steps:
        current[0] = step
        manager.save(step, {"w": np.full((64, 64), step, np.float32), "step": np.int64(step),
                            "tag": np.array([f"step-{step}".encode()], dtype=object)})
    json.dump(intervals, open(log, "w"))
""")


def run_writers(directory: Path, tmp_path: Path, plans: list[tuple[str, list[int]]], max_to_keep: int):
    procs = [spawn(WRITER, directory, name, json.dumps(steps), tmp_path / f"log{i}.json", max_to_keep)
             for i, (name, steps) in enumerate(plans)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    intervals = []
    for i, _ in enumerate(plans):
        intervals += [(a, b, i, step) for a, b, step in json.loads((tmp_path / f"log{i}.json").read_text())]
    return sorted(intervals)


def assert_disjoint(intervals) -> None:
    assert len({i for _, _, i, _ in intervals}) > 1
    for (a0, a1, i, _), (b0, b1, j, _) in zip(intervals, intervals[1:]):
        assert a1 <= b0, f"writers {i} and {j} held the lock at the same time: {(a0, a1)} and {(b0, b1)}"


def test_two_processes_saving_into_one_directory_never_interleave(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    intervals = run_writers(directory, tmp_path, [("a", list(range(1, 9))), ("b", list(range(1, 9)))],
                            max_to_keep=3)
    assert_disjoint(intervals)
    report = ckpt.verify(directory)
    assert report.ok, [str(p) for p in report.problems]
    for name in ("a", "b"):
        manager = ckpt.Manager(directory, name=name, max_to_keep=3)
        assert manager.all_steps() == [6, 7, 8]
        for step in manager.all_steps():
            assert_state(manager.prefix_for(step), step)
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(("a-", "b-"))) == \
        ["a.manager.json", "b.manager.json", "checkpoint"]


def test_two_processes_sharing_one_manager_name_keep_one_consistent_record(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    intervals = run_writers(directory, tmp_path, [("ckpt", [1, 3, 5, 7, 9, 11]), ("ckpt", [2, 4, 6, 8, 10, 12])],
                            max_to_keep=4)
    assert_disjoint(intervals)
    manager = ckpt.Manager(directory, max_to_keep=4)
    # Each save re-reads the record under the lock, so retention saw both processes' checkpoints.
    assert manager.all_steps() == sorted(int(p.name[5:-6]) for p in directory.glob("ckpt-*.index"))
    # Retention keeps the four most recently committed saves (a save commits in its last hold of the lock), and
    # the latest is the last one committed, whichever process made it.
    last_hold = {step: end for _, end, _, step in intervals if step is not None}
    committed = sorted(last_hold, key=last_hold.get)
    assert manager.all_steps() == sorted(committed[-4:])
    assert manager.latest_step == committed[-1]
    assert ckpt.verify(directory).ok


# ============================================================================================ readers

SLOW_SAVER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import ckpt
    directory, go = sys.argv[1], sys.argv[2]
    real_write = ckpt._fs.write
    def slow_write(fd, data):
        if not os.path.exists(go):  # the first write waits until the test has read during the save
            print("writing", flush=True)
            for _ in range(6000):
                if os.path.exists(go):
                    break
                time.sleep(0.01)
        time.sleep(0.01)
        view = memoryview(data).cast("B")
        return real_write(fd, view[:4096])  # short writes: many steps, each slow
    ckpt._fs.write = slow_write
    manager = ckpt.Manager(directory, max_to_keep=2, rng=False)
    print("saving", flush=True)
    manager.save(2, {"w": np.full((64, 64), 2, np.float32), "step": np.int64(2),
                     "tag": np.array([b"step-2"], dtype=object)})
    print("saved", flush=True)
""")


def test_a_reader_during_a_save_sees_the_previous_complete_checkpoint(tmp_path):
    directory = tmp_path / "run"
    ckpt.Manager(directory, max_to_keep=2, rng=False).save(1, state(1))
    go = tmp_path / "go"
    proc = spawn(SLOW_SAVER, directory, go)
    wait_for_line(proc, "writing")  # the save is in progress, held at its first write until `go` exists
    seen = {1: 0, 2: 0}
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if seen[1] == 3:
            go.touch()
        prefix = ckpt.latest(directory)
        step = int(prefix.rsplit("-", 1)[1])
        assert_state(prefix, step)  # never a partial checkpoint: every read is complete and checks out
        with ckpt.Reader(directory) as reader:  # a directory: its newest checkpoint
            assert reader["step"] == int(reader.prefix.rsplit("-", 1)[1])
        seen[step] += 1
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert seen[1] >= 3, seen  # while the save was held, readers saw checkpoint 1
    assert_state(ckpt.latest(directory), 2)


def test_deleting_checkpoints_does_not_break_an_open_reader(tmp_path):
    directory = tmp_path / "run"
    manager = ckpt.Manager(directory, max_to_keep=1, rng=False)
    manager.save(1, state(1))
    reader = ckpt.Reader(directory / "ckpt-1")
    first = reader["w"]  # a memory-mapped view
    manager.save(2, state(2))
    manager.save(3, state(3))  # retention deleted ckpt-1 (and ckpt-2)
    assert not list(directory.glob("ckpt-1.*"))
    # The reader keeps working on the deleted files: tensors already read, and tensors read only now.
    assert np.all(first == 1)
    assert reader["step"] == 1 and reader["tag"][0] == b"step-1" and np.all(reader["w"] == 1)
    reader.close()
    assert np.all(first == 1)  # arrays outlive the reader


def test_replacing_a_checkpoint_does_not_break_an_open_reader(tmp_path):
    prefix = ckpt.save(state(1), tmp_path / "m", step=7)
    with ckpt.Reader(prefix) as reader:
        ckpt.save(state(2), tmp_path / "m", step=7)  # same prefix: new files replace the old ones
        assert reader["step"] == 1 and np.all(reader["w"] == 1)
    assert_state(prefix, 2)
