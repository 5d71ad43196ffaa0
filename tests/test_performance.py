"""Fast paths, asynchronous saves and lazy loads (issue 5, items 1-3): behaviour, not timing.

Timings are printed (run with ``-s``) but never asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import ckpt
from ckpt import _fs
from ckpt.errors import ChecksumMismatchError
from ckpt.tf.bundle import BundleReader, BundleWriter, data_filename
from ckpt.tf.table import TableReader
from counting import LinesRun


def _count_writes(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = _fs.write

    def write(fd, data):
        n = real(fd, data)
        sizes.append(n)
        return n

    monkeypatch.setattr(_fs, "write", write)
    return sizes


# ============================================================================================ writing


def test_small_tensors_are_coalesced_into_few_writes(tmp_path, monkeypatch):
    state = {f"t{i:05d}": np.full(16, i, np.float32) for i in range(10_000)}
    sizes = _count_writes(monkeypatch)
    prefix = ckpt.save(state, str(tmp_path / "small"), sync=False)
    # 640 KB of data in one write, plus the index and the state file: far fewer than one write per tensor.
    assert len(sizes) < 10, len(sizes)
    with ckpt.Reader(prefix) as reader:
        assert reader["t09999"][0] == 9999 and len(reader) == 10_000


def test_per_tensor_overhead_is_small(tmp_path, monkeypatch):
    """Saving and restoring small tensors costs no system call per tensor and a constant amount of Python work per
    tensor (counted, not timed; ``make bench`` times the many-small-tensors workload)."""
    syscalls: list[str] = []
    for name in _fs.PRIMITIVES:
        real = getattr(_fs, name)
        monkeypatch.setattr(_fs, name, lambda *a, _real=real, _name=name: (syscalls.append(_name), _real(*a))[1])
    preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda *a: (syscalls.append("preadv"), preadv(*a))[1])
    cost = {}
    for n in (1_000, 10_000):
        state = {f"t{i:05d}": np.random.rand(16).astype(np.float32) for i in range(n)}
        into = {k: np.zeros_like(v) for k, v in state.items()}
        syscalls.clear()
        with LinesRun() as save:
            prefix = ckpt.save(state, str(tmp_path / f"o{n}"), sync=False)
        saved = list(syscalls)
        syscalls.clear()
        with LinesRun() as restore:
            ckpt.restore(prefix, into)
        assert all(np.array_equal(into[k], v) for k, v in state.items())
        cost[n] = (len(saved), syscalls.count("preadv"), save.lines / n, restore.lines / n)
    (saves_1k, reads_1k, *lines_1k), (saves_10k, reads_10k, *lines_10k) = cost[1_000], cost[10_000]
    assert saves_10k == saves_1k, cost  # 640 KB goes out in one write, like 64 KB
    assert reads_1k == 1 and reads_10k <= 10, cost  # one preadv per ~1,000 adjacent tensors
    for few, many in zip(lines_1k, lines_10k):  # (save, restore) lines per tensor: today about 130 and 180
        assert many <= few * 1.1 + 5 and many < 500, cost  # nothing grows faster than the number of tensors


def test_large_tensor_crc_overlapped_with_writing_is_correct(tmp_path):
    big = np.random.default_rng(0).random((3, 1 << 20))  # 24 MiB: CRC computed in the helper thread
    small = np.arange(10, dtype=np.int64)
    prefix = ckpt.save({"big": big, "small": small}, str(tmp_path / "big"))
    with ckpt.Reader(prefix) as reader:  # checksums verified on read
        np.testing.assert_array_equal(reader["big"], big)
        np.testing.assert_array_equal(reader["small"], small)
    assert ckpt.verify(prefix).ok


def test_a_write_error_in_a_large_tensor_removes_everything(tmp_path, monkeypatch):
    def failing(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fs, "write", failing)
    with pytest.raises(OSError):
        ckpt.save({"big": np.zeros(1 << 21)}, str(tmp_path / "x"))
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".ckpt.lock")] == []


@pytest.mark.parametrize("alignment", [8, 64, 4096])
def test_alignment_pads_between_tensors(tmp_path, alignment):
    state = {"a": np.arange(3, dtype=np.int8), "b": np.arange(5, dtype=np.float32), "c": np.zeros((2, 3)),
             "s": np.asarray([b"xy", b"z"], dtype=object)}
    prefix = ckpt.save(state, str(tmp_path / "aligned"), alignment=alignment)
    with BundleReader(prefix) as reader:
        entries = {e.name: e for e in reader.entries()}
        for name, value in state.items():
            entry = entries[name]
            assert entry.offset % alignment == 0
            if value.dtype != object:
                assert entry.size == value.nbytes  # the size never includes the padding
    back = ckpt.load(prefix)
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value)
    with ckpt.Reader(prefix) as reader:
        assert reader["c"].ctypes.data % min(alignment, mmap_alignment()) == 0


def mmap_alignment() -> int:
    import mmap

    return mmap.PAGESIZE


def test_default_alignment_is_packed(tmp_path):
    prefix = ckpt.save({"a": np.arange(3, dtype=np.int8), "b": np.arange(5, dtype=np.float32)},
                       str(tmp_path / "packed"))
    assert os.path.getsize(data_filename(prefix, 0, 1)) == 3 + 20


def test_invalid_alignment_is_refused(tmp_path):
    for bad in (0, -4, 1.5, True):
        with pytest.raises(ValueError):
            BundleWriter(str(tmp_path / "bad"), alignment=bad)


def test_tensorflow_reads_an_aligned_checkpoint(tmp_path):
    tf = pytest.importorskip("tensorflow")
    state = {"w": np.random.rand(3, 5).astype(np.float32), "b": np.arange(7, dtype=np.int64),
             "h": np.arange(3, dtype=np.float16), "names": np.asarray([b"alpha", b"b"], dtype=object)}
    prefix = ckpt.save(state, str(tmp_path / "tf_aligned"), alignment=64)
    reader = tf.train.load_checkpoint(prefix)
    for name, value in state.items():
        got = reader.get_tensor(name)
        if value.dtype == object:
            assert list(got) == list(value)
        else:
            np.testing.assert_array_equal(got, value)


# ============================================================================================ reading into


def test_read_into_fills_the_target_and_checks_the_crc(tmp_path):
    values = {"f": np.random.rand(4, 5).astype(np.float32), "big": np.random.rand(1 << 20)}
    prefix = ckpt.save(values, str(tmp_path / "ri"))
    with BundleReader(prefix) as reader:
        for name, value in values.items():
            out = np.empty_like(value)
            reader.read_into(reader.entry(name), out)
            np.testing.assert_array_equal(out, value)
        # a non-contiguous target falls back to a copy
        target = np.zeros((5, 4), np.float32).T
        reader.read_into(reader.entry("f"), target)
        np.testing.assert_array_equal(target, values["f"])
        with pytest.raises(ValueError):
            reader.read_into(reader.entry("f"), np.empty((2, 2), np.float32))
    # corrupt one byte of "f": read_into notices
    entry = BundleReader(prefix).entry("f")
    path = data_filename(prefix, 0, 1)
    with open(path, "r+b") as f:
        f.seek(entry.offset + 3)
        byte = f.read(1)
        f.seek(entry.offset + 3)
        f.write(bytes([byte[0] ^ 0xFF]))
    with BundleReader(prefix) as reader, pytest.raises(ChecksumMismatchError):
        reader.read_into(reader.entry("f"), np.empty((4, 5), np.float32))


def _many(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {f"t{i:04d}": rng.standard_normal(int(rng.integers(0, 300))).astype(np.float32) for i in range(n)}
    out["big"] = rng.standard_normal(50_000)
    out["bytes"] = rng.integers(0, 255, 7, dtype=np.uint8)
    return out


@pytest.mark.parametrize("alignment", [1, 64])
def test_read_many_into_batches_adjacent_tensors_and_splits_big_ones(tmp_path, monkeypatch, alignment):
    import ckpt.tf.bundle_reader as bundle

    values = _many()
    prefix = str(tmp_path / "many")
    with BundleWriter(prefix, alignment=alignment) as w:
        for name, value in values.items():
            w.add(name, value)
        w.finish()
    monkeypatch.setattr(bundle, "_READ_CHUNK", 64 << 10)  # the big tensor takes several pieces
    monkeypatch.setattr(bundle, "_IOV_MAX", 16)
    calls = []
    real = os.preadv

    def preadv(fd, buffers, offset):
        calls.append(len(buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    outs = {name: np.full_like(value, 7) for name, value in values.items()}
    with BundleReader(prefix) as reader:
        reader.read_many_into([(reader.entry(n), outs[n]) for n in reversed(list(values))])
    for name, value in values.items():
        np.testing.assert_array_equal(outs[name], value, err_msg=name)
    # 302 tensors in far fewer calls; every call within the limits
    assert len(calls) < 60 and max(calls) <= 16, calls


def test_read_many_into_survives_short_reads(tmp_path, monkeypatch):
    values = _many(50, seed=1)
    prefix = ckpt.save(values, str(tmp_path / "short"))
    real = os.preadv

    def stingy(fd, buffers, offset):  # returns at most 1000 bytes, often ending inside a buffer
        total, kept = 0, []
        for b in buffers:
            take = memoryview(b)[:max(0, 1000 - total)]
            if len(take):
                kept.append(take)
            total += len(take)
        return real(fd, kept, offset)

    monkeypatch.setattr(os, "preadv", stingy)
    outs = {name: np.zeros_like(value) for name, value in values.items()}
    ckpt.restore(prefix, outs)
    for name, value in values.items():
        np.testing.assert_array_equal(outs[name], value, err_msg=name)


def test_read_many_into_names_the_corrupt_tensor_and_a_truncated_file(tmp_path, monkeypatch):
    import ckpt.tf.bundle_reader as bundle

    monkeypatch.setattr(bundle, "_READ_CHUNK", 64 << 10)
    values = _many(40, seed=2)
    prefix = ckpt.save(values, str(tmp_path / "bad"))
    path = data_filename(prefix, 0, 1)
    for victim, at in (("t0017", 0), ("big", 300_000)):  # a small tensor; a piece in the middle of a big one
        entry = BundleReader(prefix).entry(victim)
        with open(path, "r+b") as f:
            f.seek(entry.offset + at)
            byte = f.read(1)
            f.seek(entry.offset + at)
            f.write(bytes([byte[0] ^ 0x10]))
        outs = {name: np.zeros_like(value) for name, value in values.items()}
        with pytest.raises(ChecksumMismatchError, match=victim) as info:
            ckpt.restore(prefix, outs)
        assert info.value.key == victim and info.value.path == path
        with open(path, "r+b") as f:  # repair for the next case
            f.seek(entry.offset + at)
            f.write(byte)
    ckpt.restore(prefix, {name: np.zeros_like(value) for name, value in values.items()})
    # a file cut short after it was opened (the bounds check passed): a clear error, not a hang
    with BundleReader(prefix) as reader:
        entries = [(reader.entry(n), np.zeros_like(v)) for n, v in values.items()]
        os.truncate(path, 1000)
        with pytest.raises(ckpt.CorruptCheckpointError, match="ends early"):
            reader.read_many_into(entries)


def test_restore_reads_straight_into_numpy_arrays(tmp_path, monkeypatch):
    state = {"a": np.random.rand(3, 4), "b": np.arange(6, dtype=np.int32), "s": np.float32(2.5)}
    prefix = ckpt.save(state, str(tmp_path / "np"))
    calls = []
    real = BundleReader.read_many_into

    def counting(self, pairs):
        calls.extend(entry.name for entry, _ in pairs if self._direct(entry, _))
        return real(self, pairs)

    monkeypatch.setattr(BundleReader, "read_many_into", counting)
    target = {"a": np.zeros((3, 4)), "b": np.zeros(6, np.int32), "s": np.float32(0)}
    a, b = target["a"], target["b"]
    restored = ckpt.restore(prefix, target)
    assert sorted(calls) == ["a", "b"]
    assert restored["a"] is a and restored["b"] is b
    np.testing.assert_array_equal(a, state["a"])
    np.testing.assert_array_equal(b, state["b"])
    assert restored["s"] == np.float32(2.5)


def test_restore_reads_straight_into_torch_tensors(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    extra = {"bf": torch.randn(5).to(torch.bfloat16), "strided": torch.randn(4, 6).t()}
    prefix = ckpt.save({"net": net, "extra": extra}, str(tmp_path / "torch"))
    calls = []
    real = BundleReader.read_many_into

    def counting(self, pairs):
        calls.extend(entry.name for entry, _ in pairs if self._direct(entry, _))
        return real(self, pairs)

    monkeypatch.setattr(BundleReader, "read_many_into", counting)
    net2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    extra2 = {"bf": torch.zeros(5, dtype=torch.bfloat16), "strided": torch.zeros(4, 6).t()}
    ckpt.restore(prefix, {"net": net2, "extra": extra2})
    for p, q in zip(net.parameters(), net2.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(extra2["bf"], extra["bf"]) and torch.equal(extra2["strided"], extra["strided"])
    assert "extra/bf" in calls and "net/0/weight" in calls
    assert "extra/strided" not in calls  # not contiguous: restored by copy_


# ============================================================================================ async


def _slow_writes(monkeypatch, delay: float = 0.02) -> threading.Event:
    started = threading.Event()
    real = _fs.write

    def write(fd, data):
        started.set()
        time.sleep(delay)
        return real(fd, data)

    monkeypatch.setattr(_fs, "write", write)
    return started


def _held_async_saves(monkeypatch) -> threading.Event:
    """Background saves wait at their start (the ``async.job`` seam point) until the returned event is set."""
    from ckpt import _seam

    release = threading.Event()

    def hook(point: str) -> None:
        if point == "async.job":
            assert release.wait(60)

    monkeypatch.setattr(_seam, "hook", hook)
    return release


def test_async_save_returns_before_the_files_exist(tmp_path, monkeypatch):
    release = _held_async_saves(monkeypatch)
    state = {"w": np.arange(10.0)}
    prefix = ckpt.save(state, str(tmp_path / "a"), step=3, blocking=False)
    assert prefix == str(tmp_path / "a-3")
    assert not os.path.exists(prefix + ".index")
    assert ckpt.latest(str(tmp_path)) is None  # the state file moves only after the commit
    release.set()
    ckpt.wait()
    assert os.path.exists(prefix + ".index")
    assert ckpt.latest(str(tmp_path)) == prefix
    np.testing.assert_array_equal(ckpt.load(prefix)["w"], np.arange(10.0))


def test_async_save_writes_a_snapshot(tmp_path, monkeypatch):
    release = _held_async_saves(monkeypatch)
    w = np.zeros(1000)
    prefix = ckpt.save({"w": w, "n": 1}, str(tmp_path / "snap"), blocking=False)
    w += 7  # after the call, before the background save writes: not part of the checkpoint
    release.set()
    ckpt.wait()
    np.testing.assert_array_equal(ckpt.load(prefix)["w"], np.zeros(1000))


def test_async_snapshot_of_large_tensors_is_taken_at_the_call_and_reuses_buffers(tmp_path, monkeypatch):
    from ckpt import api

    # several tensors above the two-thread copy threshold, of mixed sizes and dtypes, plus small ones
    state = {f"big{i}": np.random.default_rng(i).standard_normal(300_000 + 1000 * i).astype(dt)
             for i, dt in enumerate([np.float32, np.float64, np.float16, np.float32, np.int64])}
    state["small"] = np.arange(5)
    expected = {k: v.copy() for k, v in state.items()}
    started = _slow_writes(monkeypatch, 0.05)
    first = ckpt.save(state, str(tmp_path / "s"), step=1, blocking=False)
    for v in state.values():  # changed right after the call: not part of the checkpoint
        v[...] = 0
    assert api._SAVER.buffers == {}  # the save in flight owns its snapshot
    assert started.wait(10)
    ckpt.wait()
    buffers = dict(api._SAVER.buffers)  # handed back once written
    assert set(buffers) == set(state)
    for name, value in ckpt.load(first).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # the next save of the same shapes copies into the previous snapshot's memory
    second = ckpt.save(state, str(tmp_path / "s"), step=2, blocking=False)
    ckpt.wait()
    assert all(api._SAVER.buffers[n] is buffers[n] for n in buffers)
    for name, value in ckpt.load(second).items():
        np.testing.assert_array_equal(value, np.zeros_like(expected[name]), err_msg=name)


def test_a_failed_snapshot_copy_raises_and_writes_nothing(tmp_path, monkeypatch):
    from ckpt import api

    real = api._copy

    def failing(value, buf):
        if value.nbytes > 2_000_000:
            raise MemoryError("no room for the snapshot")
        return real(value, buf)

    monkeypatch.setattr(api, "_copy", failing)
    state = {"a": np.zeros(400_000), "b": np.zeros(300_000), "c": np.zeros(200_000)}
    with pytest.raises(MemoryError):
        ckpt.save(state, str(tmp_path / "f"), blocking=False)
    ckpt.wait()
    assert os.listdir(tmp_path) == []


def test_durable_saves_start_writeback_early(tmp_path, monkeypatch):
    import ckpt.tf._write_workers as bundle

    monkeypatch.setattr(bundle, "_WRITEBACK_CHUNK", 1 << 20)
    calls = []
    real = _fs.start_writeback
    monkeypatch.setattr(_fs, "start_writeback", lambda fd, off, n: (calls.append((off, n)), real(fd, off, n)))
    state = {"big": np.random.rand(3 << 17), **{f"s{i}": np.full(1000, i) for i in range(20)}}  # 3 MiB + small
    prefix = ckpt.save(state, str(tmp_path / "d"))
    size = os.path.getsize(data_filename(prefix, 0, 1))
    # every byte of the data file was handed to the kernel's writeback in order, the big tensor in 1 MiB pieces
    assert calls[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(calls, calls[1:]))
    assert calls[-1][0] + calls[-1][1] == size and len(calls) >= 4
    calls.clear()
    ckpt.save(state, str(tmp_path / "nd"), sync=False)
    assert calls == []  # nothing to hurry when nothing will be fsync'd
    np.testing.assert_array_equal(ckpt.load(prefix)["big"], state["big"])


def test_start_writeback_is_harmless(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10000)
    fd = os.open(path, os.O_RDWR)
    try:
        _fs.start_writeback(fd, 0, 10000)
        _fs.start_writeback(fd, 20000, 5)  # beyond the end
    finally:
        os.close(fd)
    _fs.start_writeback(fd, 0, 1)  # a closed descriptor: ignored (it is only a hint)
    assert path.read_bytes() == b"x" * 10000


def test_async_save_of_torch_state_is_a_snapshot(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    release = _held_async_saves(monkeypatch)
    net = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    prefix = ckpt.save({"net": net}, str(tmp_path / "t"), blocking=False)
    with torch.no_grad():
        net.weight.add_(1.0)
    release.set()
    ckpt.wait()
    net2 = torch.nn.Linear(3, 2)
    ckpt.restore(prefix, {"net": net2})
    assert torch.equal(net2.weight, before["weight"])


def test_a_background_error_is_raised_by_the_next_save_and_by_wait(tmp_path, monkeypatch):
    def failing(fd, data):
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(_fs, "write", failing)
    ckpt.save({"w": np.zeros(3)}, str(tmp_path / "e"), step=1, blocking=False)  # returns: the error comes later
    with pytest.raises(OSError, match="injected"):
        ckpt.save({"w": np.zeros(3)}, str(tmp_path / "e"), step=2, blocking=False)
    # step 2 was not started (the error was raised instead); nothing pending now
    ckpt.wait()
    ckpt.save({"w": np.zeros(3)}, str(tmp_path / "e"), step=3, blocking=False)
    with pytest.raises(OSError, match="injected"):
        ckpt.wait()
    ckpt.wait()  # raised once only
    monkeypatch.undo()
    assert ckpt.latest(str(tmp_path)) is None
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n or n.endswith(".index")] == []


def test_at_most_one_async_save_in_flight(tmp_path, monkeypatch):
    active = []
    peak = [0]
    real = _fs.write

    def write(fd, data):
        active.append(threading.get_ident())
        peak[0] = max(peak[0], len({t for t in active}))
        time.sleep(0.01)
        active.remove(threading.get_ident())
        return real(fd, data)

    monkeypatch.setattr(_fs, "write", write)
    for step in range(4):
        ckpt.save({"w": np.full(5, step)}, str(tmp_path / "m"), step=step, blocking=False)
    ckpt.wait()
    assert peak[0] == 1
    assert ckpt.latest(str(tmp_path)) == str(tmp_path / "m-3")
    for step in range(4):
        assert ckpt.load(str(tmp_path / f"m-{step}"))["w"][0] == step


def test_interpreter_exit_drains_pending_saves(tmp_path):
    script = textwrap.dedent(f"""
        import time, numpy as np, ckpt
        from ckpt import _fs
        real = _fs.write
        def slow(fd, data):
            time.sleep(0.2)
            return real(fd, data)
        _fs.write = slow
        ckpt.save({{"w": np.arange(100.0)}}, {str(tmp_path / "exit")!r}, step=1, blocking=False)
        m = ckpt.Manager({str(tmp_path / "mgr")!r}, async_save=True)
        m.save(5, {{"v": np.ones(3)}})
        print("returned", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "returned" in out.stdout
    assert ckpt.latest(str(tmp_path)) == str(tmp_path / "exit-1")
    np.testing.assert_array_equal(ckpt.load(str(tmp_path / "exit-1"))["w"], np.arange(100.0))
    assert ckpt.verify(str(tmp_path / "exit-1")).ok
    assert ckpt.latest(str(tmp_path / "mgr")) == str(tmp_path / "mgr" / "ckpt-5")


def test_manager_async_with_retention(tmp_path, monkeypatch):
    _slow_writes(monkeypatch, 0.005)
    manager = ckpt.Manager(str(tmp_path), max_to_keep=2, async_save=True)
    w = np.zeros(4)
    for step in range(1, 6):
        w[:] = step
        assert manager.save(step, {"w": w}, metrics={"loss": 1.0 / step}) == manager.prefix_for(step)
    w[:] = -1  # after the last call: not saved
    manager.wait()
    assert manager.all_steps() == [4, 5]
    assert ckpt.latest(str(tmp_path)) == manager.prefix_for(5)
    np.testing.assert_array_equal(ckpt.load(manager.prefix_for(5))["w"], np.full(4, 5.0))
    manager.close()
    reopened = ckpt.Manager(str(tmp_path), max_to_keep=2)
    assert reopened.all_steps() == [4, 5]
    target = {"w": np.zeros(4)}
    reopened.restore(target)
    np.testing.assert_array_equal(target["w"], np.full(4, 5.0))


def test_manager_async_errors_surface_on_close(tmp_path, monkeypatch):
    manager = ckpt.Manager(str(tmp_path), async_save=True)
    manager.save(1, {"w": np.zeros(2)})
    manager.wait()

    def failing(fd, data):
        raise OSError(5, "I/O error (injected)")

    monkeypatch.setattr(_fs, "write", failing)
    manager.save(2, {"w": np.zeros(2)})
    with pytest.raises(OSError, match="injected"):
        manager.close()
    monkeypatch.undo()
    assert ckpt.latest(str(tmp_path)) == manager.prefix_for(1)
    assert ckpt.Manager(str(tmp_path)).all_steps() == [1]


def test_manager_async_error_surfaces_on_next_save(tmp_path, monkeypatch):
    manager = ckpt.Manager(str(tmp_path), async_save=True)

    def failing(fd, data):
        raise OSError(5, "I/O error (injected)")

    monkeypatch.setattr(_fs, "write", failing)
    manager.save(1, {"w": np.zeros(2)})
    with pytest.raises(OSError, match="injected"):
        manager.save(2, {"w": np.zeros(2)})
    monkeypatch.undo()
    manager.save(3, {"w": np.zeros(2)})
    manager.close()
    assert ckpt.Manager(str(tmp_path)).all_steps() == [3]


def test_async_blocking_time_compared_with_sync(tmp_path):
    state = {f"layer{i}": np.random.rand(256, 1024) for i in range(32)}  # 64 MiB
    t0 = time.perf_counter()
    ckpt.save(state, str(tmp_path / "sync"))
    sync_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    ckpt.save(state, str(tmp_path / "async"), blocking=False)
    blocked = time.perf_counter() - t0
    ckpt.wait()
    total = time.perf_counter() - t0
    print(f"\nsync save {sync_time:.3f}s; async save blocked {blocked:.3f}s ({blocked / sync_time:.2f}x), "
          f"committed after {total:.3f}s")
    back = ckpt.load(str(tmp_path / "async"))
    np.testing.assert_array_equal(back["layer7"], state["layer7"])


# ============================================================================================ lazy loads


@pytest.fixture(scope="module")
def hundred_thousand(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("lazy") / "many")
    state = {f"layer{i // 100:04d}/t{i % 100:02d}": np.full(4, i, np.float32) for i in range(100_000)}
    ckpt.save(state, prefix, sync=False)
    return prefix


def _count_blocks(monkeypatch) -> list[int]:
    blocks: list[int] = []
    real = TableReader._read_block

    def counting(self, offset, size, *, what):
        blocks.append(offset)
        return real(self, offset, size, what=what)

    monkeypatch.setattr(TableReader, "_read_block", counting)
    return blocks


def _count_data_bytes(monkeypatch) -> list[int]:
    read: list[int] = []
    real_payload, real_preadv = BundleReader._payload, BundleReader._preadv_all

    def payload(self, entry, verify=None):
        read.append(entry.size)
        return real_payload(self, entry, verify)

    def preadv_all(self, fd, items):
        read.extend(entry.size for entry, _ in items)
        return real_preadv(self, fd, items)

    monkeypatch.setattr(BundleReader, "_payload", payload)
    monkeypatch.setattr(BundleReader, "_preadv_all", preadv_all)
    return read


def test_reading_one_tensor_of_100000_reads_a_few_blocks(hundred_thousand, monkeypatch):
    blocks = _count_blocks(monkeypatch)
    t0 = time.perf_counter()
    with ckpt.Reader(hundred_thousand) as reader:
        value = reader["layer0567/t89"]
        assert "layer0999/t99" in reader and "nope" not in reader
    elapsed = time.perf_counter() - t0
    assert value[0] == 56789
    # the index block, the header's data block, the tensor's data block and the two looked up by "in"
    assert len(blocks) <= 5, len(blocks)
    with open(hundred_thousand + ".index", "rb") as f:
        total = TableReader(f.read()).num_blocks
    print(f"\nopen + read one tensor of 100,000: {elapsed * 1e3:.2f} ms warm, {len(blocks)} of {total} blocks read")


def test_subset_restore_with_a_dict_map_reads_only_what_it_needs(hundred_thousand, monkeypatch):
    blocks = _count_blocks(monkeypatch)
    data = _count_data_bytes(monkeypatch)
    target = {"w": np.zeros(4, np.float32)}
    report = ckpt.restore(hundred_thousand, target, map={"layer0123/t45": "w"}, strict=False)
    assert report.ok and report.restored == ["w"]
    assert target["w"][0] == 12345
    assert sum(data) < 10_000_000  # the tensor (16 bytes) and the ckpt record, not the whole data file
    assert len(blocks) <= 10, len(blocks)

    blocks.clear()
    data.clear()
    strict_target = {"w": np.zeros(4, np.float32)}
    ckpt.restore(hundred_thousand, strict_target, map={"layer0123/t45": "w"})
    assert strict_target["w"][0] == 12345 and len(blocks) <= 10
