"""Preemption (issue 12, item 5): SIGTERM / SIGUSR1 while a Manager saves, with real signals.

The subprocess tests signal a training loop at random moments (seeded) and check, after it exited, that every
save it reported (``save()`` returned, or the preemption callback ran) is on disk, loads with the right values,
and that the directory verifies. Nothing is timed: the random sleeps only move the moment of the signal.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import ckpt
from ckpt import _fs
from ckpt.errors import CheckpointError

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")

CHILD = textwrap.dedent("""
    import os, random, sys, time
    import numpy as np
    import ckpt
    from ckpt import _fs

    directory, seed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    real_write = _fs.write

    def write(fd, data):  # slow, jittery writes: signals land inside background saves too
        time.sleep(rng.random() * 0.004)
        return real_write(fd, data)

    _fs.write = write
    manager = ckpt.Manager(directory, max_to_keep=None, rng=False, async_save=mode != "sync",
                           save_interval_steps=2)
    current = {"step": 0}

    def now():
        step = current["step"]
        os.write(1, f"preempt {step}\\n".encode())  # not print(): the signal may have interrupted a print
        return step, {"w": np.full(300, float(step)), "step": step}

    manager.handle_preemption(None if mode == "plain" else now)
    start = manager.restore_or_initialize({"w": np.zeros(300), "step": 0}) or 0
    print("ready", flush=True)
    for step in range(start + 1, start + 400):
        current["step"] = step
        if manager.save(step, {"w": np.full(300, float(step)), "step": step}) is not None:
            print(f"saved {step}", flush=True)
        if step % 7 == 0:
            manager.wait()
            print(f"committed {manager.latest_step}", flush=True)  # wait() returned: committed
    manager.close()
    print("finished", flush=True)
""")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(Path(ckpt.__file__).resolve().parents[1]))


def _signal_at_random(directory: Path, seed: int, mode: str, signum: int) -> tuple[int, list[str], str]:
    """Run the child, send ``signum`` after a random number of its lines (and a random pause), return its exit
    code, its stdout lines and its stderr."""
    rng = random.Random(seed)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(seed), mode], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        assert child.stdout.readline().strip() == "ready"
        for _ in range(rng.randrange(0, 12)):
            line = child.stdout.readline().strip()
            if not line:
                break
            lines.append(line)
        threading.Event().wait(rng.random() * 0.02)  # not a measurement: only moves the moment of the signal
        if child.poll() is None:
            child.send_signal(signum)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, lines + out.split(), err


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["async", "plain", "sync"])
def test_every_reported_save_survives_a_signal_at_a_random_moment(tmp_path, mode):
    for round_ in range(3):
        seed = 1000 * round_ + len(mode)
        signum = (signal.SIGTERM, signal.SIGUSR1)[round_ % 2]
        directory = tmp_path / f"run{round_}"
        code, out, err = _signal_at_random(directory, seed, mode, signum)
        words = " ".join(out).split()
        reported = {int(n) for what, n in zip(words, words[1:]) if what in ("saved", "committed", "preempt")}
        if "finished" not in words:  # (the loop may also have finished before the signal)
            assert code == -signum, (code, err)  # ended by the signal, as without ckpt: exit status 128 + signum
            assert signal.Signals(signum).name in err  # and the user is told
        on_disk = {int(p.name[len("ckpt-"):-len(".index")]) for p in directory.glob("ckpt-*.index")}
        assert reported <= on_disk, (round_, sorted(reported - on_disk), err)
        for step in reported:
            loaded = ckpt.load(directory / f"ckpt-{step}")
            assert loaded["step"] == step and (loaded["w"] == step).all(), step
        assert ckpt.verify(directory).ok, ckpt.verify(directory).problems
        assert not [p.name for p in directory.iterdir() if ".tmp-" in p.name]
        if mode != "plain" and reported:
            assert ckpt.latest(directory) == str(directory / f"ckpt-{max(reported)}")
        # A restarted job resumes from what was saved.
        resumed = ckpt.Manager(directory, rng=False)
        assert resumed.latest_step == (max(on_disk) if on_disk else None)


def test_without_handle_preemption_no_handler_is_installed(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with ckpt.Manager(tmp_path, async_save=True, rng=False) as manager:
        manager.save(1, {"w": np.zeros(2)})
        assert {s: signal.getsignal(s) for s in before} == before
    assert {s: signal.getsignal(s) for s in before} == before


def test_close_puts_the_previous_handlers_back_and_is_idempotent(tmp_path):
    calls = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        installed = signal.getsignal(signal.SIGUSR1)
        manager = ckpt.Manager(tmp_path, async_save=True, rng=False)
        manager.handle_preemption(exit=False, signals=[signal.SIGUSR1])
        assert signal.getsignal(signal.SIGUSR1) != installed
        manager.save(1, {"w": np.zeros(2)})
        manager.close()
        assert signal.getsignal(signal.SIGUSR1) == installed
        manager.close()  # again: nothing happens
        assert manager._saver.buffers == {} and not manager._saver.pending
        with pytest.raises(CheckpointError, match="closed"):
            manager.save(2, {"w": np.zeros(2)})
        with pytest.raises(CheckpointError, match="closed"):
            manager.handle_preemption()
        target = {"w": np.ones(2)}
        manager.restore(target)  # restoring still works
        assert (target["w"] == 0).all()
        signal.raise_signal(signal.SIGUSR1)
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_signal_during_a_save_in_the_main_thread_is_handled_after_it(tmp_path, monkeypatch):
    """The handler runs between bytecodes of the main thread: here, in the middle of a save's data writes. It must
    not start its own save there; it acts when the interrupted save returns, and chains to the previous
    handler (a Python one here, so the test process lives on)."""
    events = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: events.append("previous handler"))
    try:
        manager = ckpt.Manager(tmp_path, max_to_keep=None, rng=False, async_save=False)
        manager.handle_preemption(lambda: (events.append("callback") or 9, {"w": np.full(2, 9.0)}),
                                  signals=[signal.SIGUSR1])
        real = _fs.write
        fired = []

        def write(fd, data):
            if not fired:
                fired.append(True)
                signal.raise_signal(signal.SIGUSR1)  # delivered now, in the main thread, inside save(1)
                events.append("write after the signal")
            return real(fd, data)

        monkeypatch.setattr(_fs, "write", write)
        manager.save(1, {"w": np.full(2, 1.0)})
        events.append("save(1) returned")
        assert events == ["write after the signal", "callback", "previous handler", "save(1) returned"]
        assert manager.reached_preemption
        assert [c.step for c in manager.checkpoints] == [1, 9] and ckpt.verify(tmp_path).ok
        assert ckpt.load(tmp_path / "ckpt-9")["w"].tolist() == [9.0, 9.0]
        manager.close()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_exit_false_keeps_running_and_saves_at_the_next_step(tmp_path, monkeypatch):
    manager = ckpt.Manager(tmp_path, rng=False, async_save=True, save_interval_steps=100)
    manager.handle_preemption(exit=False, signals=[signal.SIGUSR1])
    try:
        manager.save(1, {"w": np.zeros(2)})
        assert manager.save(2, {"w": np.zeros(2)}) is None  # the save policy says not yet
        signal.raise_signal(signal.SIGUSR1)  # finishes the save in flight; the process goes on
        assert manager.reached_preemption and manager.latest_step == 1
        assert manager.save(3, {"w": np.zeros(2)}) is not None  # now every save saves (as Orbax's should_save)
        manager.wait()
        assert manager.latest_step == 3
    finally:
        manager.close()


def test_exit_false_reports_an_error_of_the_save_in_flight_later(tmp_path, monkeypatch):
    manager = ckpt.Manager(tmp_path, rng=False, async_save=True)
    manager.handle_preemption(exit=False, signals=[signal.SIGUSR1])
    try:
        def failing(fd, data):
            raise OSError(5, "I/O error (injected)")

        monkeypatch.setattr(_fs, "write", failing)
        manager.save(1, {"w": np.zeros(2)})
        signal.raise_signal(signal.SIGUSR1)  # the handler logs it; it does not raise into the interrupted code
        monkeypatch.undo()
        with pytest.raises(OSError, match="injected"):
            manager.wait()
        manager.wait()  # raised once
    finally:
        manager.close()


def test_handle_preemption_checks_its_arguments(tmp_path):
    manager = ckpt.Manager(tmp_path, rng=False)
    with pytest.raises(ValueError, match="not a signal"):
        manager.handle_preemption(signals=[12345])
    with pytest.raises(ValueError, match="cannot be handled"):
        manager.handle_preemption(signals=[signal.SIGKILL])
    with pytest.raises(TypeError, match="callable"):
        manager.handle_preemption(save=(1, {}))
    errors = []
    thread = threading.Thread(target=lambda: _catch(errors, manager.handle_preemption))
    thread.start()
    thread.join()
    assert errors and "main thread" in str(errors[0])
    manager.close()


def _catch(errors: list, fn) -> None:
    try:
        fn()
    except ValueError as exc:
        errors.append(exc)
