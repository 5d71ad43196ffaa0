"""The helper threads of saves and restores, with their interleavings forced instead of hoped for (issue 12).

Every concurrent step of ckpt calls ``ckpt._seam.point(name)``; these tests set ``ckpt._seam.hook`` to delay or
yield at those points in chosen threads (a slow CRC thread, a slow shard writer, a slow snapshot copy, a reader
that yields between pieces, a slow asynchronous save), then check that the results are bit-identical and that no
false error is raised, and that the delayed thread really took part (``reached``). Which thread owns which buffer
when is written down at each seam in the source (``tf/bundle_reader.py``: ``_PieceChecks``; ``tf/_write_workers.py``: ``_Shard``,
``_WriteWorker``; ``api._snapshot``; ``_async``).
"""

from __future__ import annotations

import collections
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ckpt
from ckpt import _seam
from ckpt.errors import ChecksumMismatchError
from ckpt.tf.bundle import BundleReader, data_filename
from ckpt.tf.bundle_reader import _READ_CHUNK

PIECE = _READ_CHUNK  # bytes per preadv piece on restore


class Seam:
    """Rules for ``_seam.hook``: ``on(point, thread_prefix, action)``; ``reached[(point, thread)]`` counts visits
    (threads named by their prefix: ``ckpt-crc``, ``ckpt-write``, ``ckpt-snapshot``, ``MainThread``, ...)."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, str, object]] = []
        self.reached: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def on(self, point: str, thread: str, action) -> None:
        self.rules.append((point, thread, action))

    def __call__(self, point: str) -> None:
        name = threading.current_thread().name
        with self._lock:
            self.reached[(point, name.split("_")[0])] += 1
        for rule_point, thread, action in self.rules:
            if rule_point == point and name.startswith(thread):
                action()


@pytest.fixture
def seam(monkeypatch) -> Seam:
    hooks = Seam()
    monkeypatch.setattr(_seam, "hook", hooks)
    return hooks


def sleep(seconds: float):
    return lambda: time.sleep(seconds)


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def f32(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n, dtype=np.float32)


# Tensors in file order (names sort as written). Each layout puts a tensor larger than one read piece where its
# last piece shares a preadv call with small tensors (checked in the calling thread) while its first pieces are
# checked in the CRC thread: the interleaving that raised false checksum errors.
LAYOUTS = {
    # 2 MiB + 4 KiB, then small tensors: the 4 KiB tail is checked inline right after the first piece is handed off
    "tail-with-small": {"a": f32(PIECE // 4 + 1024, 1), **{f"b{i}": f32(256, 10 + i) for i in range(8)}},
    # GPT-2-shaped: 768x768 .. 768x3072 float32 (2.4 MB to 9.4 MB), several pieces each, followed by a bias
    "gpt2": {"h0_attn": f32(768 * 2304, 2), "h0_bias": f32(768, 3), "h0_fc": f32(768 * 3072, 4),
             "h0_ln": f32(768, 5), "h0_proj": f32(768 * 768, 6), "h1_ln": f32(768, 7)},
    # many small tensors in one piece, then a multi-piece tensor, then more small ones
    "small-large-small": {**{f"a{i:03d}": f32(64, 100 + i) for i in range(100)}, "m": f32(3 * PIECE // 4 + 17, 8),
                          **{f"z{i:03d}": f32(64, 300 + i) for i in range(100)}},
}


def save_layout(tmp_path, layout: str, **kwargs) -> tuple[str, dict[str, np.ndarray]]:
    state = LAYOUTS[layout]
    prefix = ckpt.save(state, str(tmp_path / layout), sync=False, **kwargs)
    return prefix, state


def restore_and_check(prefix: str, state: dict[str, np.ndarray]) -> None:
    into = {k: np.zeros_like(v) for k, v in state.items()}
    ckpt.restore(prefix, into)
    for name, value in state.items():
        assert identical(into[name], value), name


# ============================================================================================ restore


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("alignment", [1, 4096])
def test_restore_with_a_slow_crc_thread(tmp_path, seam, layout, alignment):
    prefix, state = save_layout(tmp_path, layout, alignment=alignment)
    seam.on("read.check", "ckpt-crc", sleep(0.02))
    restore_and_check(prefix, state)
    assert seam.reached[("read.check", "ckpt-crc")] > 0  # pieces were checked in the delayed thread ...
    if layout != "gpt2" or alignment == 1:
        assert seam.reached[("read.check", "MainThread")] > 0  # ... and in the calling thread, after them


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_restore_with_a_reader_that_yields_between_pieces(tmp_path, seam, layout):
    prefix, state = save_layout(tmp_path, layout)
    seam.on("read.piece", "MainThread", sleep(0.005))  # the CRC thread runs ahead of the reader
    restore_and_check(prefix, state)
    assert seam.reached[("read.piece", "MainThread")] > 1


@pytest.mark.parametrize("seed", range(6))
def test_restore_under_random_schedules(tmp_path, seam, seed):
    prefix, state = save_layout(tmp_path, "gpt2" if seed % 2 else "small-large-small")
    rng = random.Random(seed)
    seam.on("read.check", "", lambda: time.sleep(rng.choice([0, 0, 0.001, 0.005])))
    seam.on("read.piece", "MainThread", lambda: time.sleep(rng.choice([0, 0, 0.001, 0.003])))
    for _ in range(3):
        restore_and_check(prefix, state)


def test_reading_many_tensors_alone_and_together(tmp_path, seam):
    """Reader.read_into one at a time, and Reader[name] (the mapped path), agree with the batched restore."""
    prefix, state = save_layout(tmp_path, "gpt2")
    seam.on("read.check", "ckpt-crc", sleep(0.01))
    with ckpt.Reader(prefix) as reader:
        for name, value in state.items():
            out = np.zeros_like(value)
            reader.read_into(name, out)
            assert identical(out, value) and identical(reader[name], value), name


def test_concurrent_restores_share_the_crc_thread(tmp_path, seam):
    prefixes = [save_layout(tmp_path / str(i), layout) for i, layout in enumerate(["gpt2", "tail-with-small"])]
    seam.on("read.check", "ckpt-crc", sleep(0.003))
    errors = []

    def run(prefix, state):
        try:
            for _ in range(3):
                restore_and_check(prefix, state)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=p, name=f"restorer{i}") for i, p in enumerate(prefixes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("slow", [False, True], ids=["plain", "slow-crc"])
@pytest.mark.parametrize("piece", ["second", "last"])
def test_a_corrupted_piece_of_a_multi_piece_tensor_is_caught(tmp_path, seam, slow, piece):
    state = {"a_before": f32(1000, 1), "big": f32(PIECE // 4 * 3 + 300, 2), "c_after": f32(1000, 3)}
    prefix = ckpt.save(state, str(tmp_path / "c"), sync=False)
    path = data_filename(prefix, 0, 1)
    with BundleReader(prefix) as bundle:
        entry = bundle.entry("big")
    # "second": inside the second 2 MiB piece (checked in the CRC thread); "last": the small tail piece (checked
    # inline, after the CRC thread's pieces)
    at = entry.offset + (PIECE + 12345 if piece == "second" else entry.size - 5)
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))
    if slow:
        seam.on("read.check", "ckpt-crc", sleep(0.02))
    into = {k: np.zeros_like(v) for k, v in state.items()}
    with pytest.raises(ChecksumMismatchError) as exc_info:
        ckpt.restore(prefix, into)
    error = exc_info.value
    assert error.path == path and error.key == "big"
    assert path in str(error) and "'big'" in str(error)
    # the tensors around it were read and checked: they are intact
    assert identical(into["a_before"], state["a_before"]) and identical(into["c_after"], state["c_after"])
    with pytest.raises(ChecksumMismatchError, match="'big'"):
        ckpt.Reader(prefix)["big"]


# ============================================================================================ save


@pytest.mark.parametrize("num_shards", [1, 3])
def test_save_with_a_slow_crc_thread(tmp_path, seam, num_shards):
    state = {f"w{i}": f32((4 << 20) // 4 + 1000 * i, i) for i in range(4)}  # at least 4 MiB: CRC overlapped
    state.update({f"s{i}": f32(100, 50 + i) for i in range(20)})
    seam.on("write.crc", "ckpt-crc", sleep(0.03))
    prefix = ckpt.save(state, str(tmp_path / "s"), num_shards=num_shards, sync=False)
    assert seam.reached[("write.crc", "ckpt-crc")] == 4
    seam.rules.clear()
    restore_and_check(prefix, state)  # verifies every stored CRC
    with ckpt.Reader(prefix) as reader:
        for name, value in state.items():
            assert identical(reader[name], value), name


@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("sync", [False, True])
def test_save_with_slow_writers_keeps_every_batch_buffer_intact(tmp_path, seam, num_shards, sync):
    # ~26 MiB of small tensors: several 8 MiB write buffers per shard are filled while earlier ones are written
    state = {f"s{i:04d}": np.full(16_000, i, np.float32) + f32(16_000, i) for i in range(420)}
    state.update({f"w{i}": f32((5 << 20) // 4 + i, 1000 + i) for i in range(2)})
    writer = "ckpt-write" if num_shards > 1 else "MainThread"
    seam.on("write.out", writer, sleep(0.02))
    prefix = ckpt.save(state, str(tmp_path / "w"), num_shards=num_shards, sync=sync)
    assert seam.reached[("write.out", writer)] >= 4
    seam.rules.clear()
    restore_and_check(prefix, state)


def test_a_slow_writer_and_a_slow_crc_thread_together(tmp_path, seam):
    state = {f"w{i}": f32((6 << 20) // 4 + i, i) for i in range(4)}
    state.update({f"s{i:03d}": f32(50_000, 100 + i) for i in range(200)})
    rng = random.Random(3)
    seam.on("write.out", "ckpt-write", lambda: time.sleep(rng.choice([0, 0.002, 0.01])))
    seam.on("write.crc", "ckpt-crc", lambda: time.sleep(rng.choice([0, 0.002, 0.01])))
    prefix = ckpt.save(state, str(tmp_path / "ws"), num_shards=2, sync=False)
    seam.rules.clear()
    restore_and_check(prefix, state)


# ============================================================================================ asynchronous saves


def big_state(seed: int, count: int = 4) -> dict[str, np.ndarray]:
    """Tensors above the two-thread snapshot copy threshold (1 MiB), plus a small one."""
    state = {f"big{i}": f32(300_000 + 1000 * i, seed * 10 + i) for i in range(count)}
    state["small"] = f32(10, seed)
    return state


def test_async_save_with_a_slow_snapshot_copy(tmp_path, seam):
    state = big_state(1)
    expected = {k: v.copy() for k, v in state.items()}
    seam.on("snapshot.copy", "ckpt-snapshot", sleep(0.05))
    prefix = ckpt.save(state, str(tmp_path / "a"), blocking=False)
    assert seam.reached[("snapshot.copy", "ckpt-snapshot")] > 0  # the helper copied its half before save returned
    for value in state.values():  # changed right after the call returned: not part of the checkpoint
        value[...] = -1
    ckpt.wait()
    restore_and_check(prefix, expected)


def test_two_threads_saving_asynchronously_never_share_a_snapshot(tmp_path, seam):
    """Thread A is in the middle of its snapshot copy when thread B snapshots and submits: each checkpoint still
    holds exactly its own thread's state (the buffers of the previous save are claimed by one snapshot)."""
    ckpt.save(big_state(0), str(tmp_path / "warm"), blocking=False)  # leaves reusable buffers behind
    ckpt.wait()
    states = {"A": big_state(1), "B": big_state(2)}
    b_done = threading.Event()
    a_copying = threading.Event()

    def a_waits_for_b():
        a_copying.set()
        assert b_done.wait(30)

    seam.on("snapshot.copy", "A", a_waits_for_b)
    errors = []

    def run(name):
        try:
            ckpt.save(states[name], str(tmp_path / name), blocking=False)
        except BaseException as exc:  # reported below
            errors.append(exc)

    a = threading.Thread(target=run, args=("A",), name="A")
    a.start()
    assert a_copying.wait(30)
    run("B")  # snapshots and submits while A's snapshot is half done
    b_done.set()
    a.join()
    ckpt.wait()
    assert not errors, errors
    for name, state in states.items():
        restore_and_check(str(tmp_path / name), state)


def test_a_slow_async_save_then_the_next_one(tmp_path, seam):
    seam.on("async.job", "ckpt-save", sleep(0.1))
    state = big_state(3)
    first_values = {k: v.copy() for k, v in state.items()}
    first = ckpt.save(state, str(tmp_path / "n"), step=1, blocking=False)
    for value in state.values():
        value += 1
    second_values = {k: v.copy() for k, v in state.items()}
    second = ckpt.save(state, str(tmp_path / "n"), step=2, blocking=False)  # waits for the first, then snapshots
    for value in state.values():
        value += 1
    ckpt.wait()
    assert seam.reached[("async.job", "ckpt-save")] == 2
    restore_and_check(first, first_values)
    restore_and_check(second, second_values)
    assert ckpt.latest(str(tmp_path)) == second


def test_an_async_error_is_raised_once_when_two_threads_wait(tmp_path, seam):
    def fail():
        time.sleep(0.05)
        raise OSError("injected")

    seam.on("async.job", "ckpt-save", fail)
    ckpt.save(big_state(4), str(tmp_path / "e"), blocking=False)
    raised = []

    def waiter():
        try:
            ckpt.wait()
            raised.append(None)
        except OSError as exc:
            raised.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, raised)) == ["None", "injected"]
    assert not (tmp_path / "e.index").exists()
    seam.rules.clear()
    ckpt.save(big_state(4), str(tmp_path / "e"), blocking=False)  # the saver works again
    ckpt.wait()
    restore_and_check(str(tmp_path / "e"), big_state(4))


def test_manager_async_saves_with_slow_jobs_and_copies(tmp_path, seam):
    seam.on("async.job", "ckpt-manager", sleep(0.05))
    seam.on("snapshot.copy", "ckpt-snapshot", sleep(0.01))
    manager = ckpt.Manager(str(tmp_path), async_save=True, rng=False)
    state = big_state(5)
    saved = {}
    for step in range(1, 4):
        saved[step] = {k: v.copy() for k, v in state.items()}
        manager.save(step, state)
        for value in state.values():
            value *= 2
    manager.wait()
    assert manager.all_steps() == [1, 2, 3]
    for step, values in saved.items():
        restore_and_check(manager.prefix_for(step), values)
    manager.close()


# ============================================================================================ stress


BURNER = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    pass\n"


@pytest.mark.slow
def test_save_and_restore_repeatedly_beside_a_cpu_burning_process(tmp_path):
    """Bounded rounds (not a time limit) of every save mode and a verified restore while other processes keep
    every core busy: no false checksum error, every restore bit-identical."""
    burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(2)]
    try:
        state = {k: v for k, v in LAYOUTS["gpt2"].items()}
        state["wte"] = f32(5000 * 768, 9)
        state.update({f"s{i:03d}": f32(300, 500 + i) for i in range(50)})
        for i in range(8):
            kwargs = [{}, {"num_shards": 2}, {"blocking": False}, {"alignment": 64}][i % 4]
            prefix = ckpt.save(state, str(tmp_path / "stress"), step=i, sync=False, **kwargs)
            ckpt.wait()
            restore_and_check(prefix, state)
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()


def test_manager_queries_while_an_async_save_replaces_the_record(tmp_path):
    """The save thread replaces ``_infos`` (retention dropped step 1) between the two reads of a query."""
    manager = ckpt.Manager(str(tmp_path), async_save=True, max_to_keep=1, rng=False)
    manager.save(1, {"w": np.zeros(3)})
    manager.wait()
    after = dict(manager._infos)
    manager.save(2, {"w": np.ones(3)})
    manager.wait()
    after, before = dict(manager._infos), after

    class ReplacedWhileIterated(dict):
        def __iter__(self):
            manager._infos = after  # what the save thread's commit does
            return super().__iter__()

    manager._infos = ReplacedWhileIterated(before)
    assert [info.step for info in manager.checkpoints] == [1]  # the record as it was when the query began
    manager._infos = ReplacedWhileIterated(before)
    assert manager.latest == manager.prefix_for(1)
    manager.close()
