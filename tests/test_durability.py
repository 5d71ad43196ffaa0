"""What is durable when ``save`` returns: fsync order, proven on the recorded file-system steps of real saves.

With ``sync=True`` (the default) every file is fsync'd after its last write and before it is renamed into place,
every rename is followed by an fsync of the directory before anything depends on it (the state file is renamed
only once the checkpoint's renames are durable; old checkpoints are deleted only once the state file and the
record naming the new one are durable), and nothing is left un-synced when ``save`` returns. With ``sync=False``
there is no fsync at all, anywhere.
"""

from __future__ import annotations

import errno
import inspect
import os

import numpy as np
import pytest

import ckpt
from ckpt import _fs
from ckpt.tf.bundle import BundleWriter
from faults import SCENARIOS, Injector, copy_dir, record


def check_fsync_order(steps, directory_name: str) -> None:
    """The durability rules, checked on a recorded trace of ``ckpt._fs`` steps."""
    written_since_sync: set[str] = set()  # temporary files written but not fsync'd since
    synced: set[str] = set()  # temporary files fsync'd after their last write
    undurable: list[str] = []  # renames and deletions not yet followed by a directory fsync
    replaced_bundle = False
    for step in steps:
        if step.op == "write" and step.path != ".ckpt.lock":
            written_since_sync.add(step.path)
            synced.discard(step.path)
        elif step.op == "fsync" and step.path == directory_name:
            undurable.clear()
        elif step.op == "fsync":
            written_since_sync.discard(step.path)
            synced.add(step.path)
        elif step.op == "replace":
            source, _, target = step.path.partition(" -> ")
            assert source in synced, f"{step}: renamed into place before it was fsync'd"
            if target == "checkpoint":
                assert not [u for u in undurable if ".index" in u or ".data-" in u], \
                    f"{step}: the state file points at a checkpoint whose renames are not durable yet: {undurable}"
            if target.endswith(".index"):
                replaced_bundle = True
            undurable.append(str(step))
        elif step.op == "unlink" and step.path != ".ckpt.lock" and ".tmp-" not in step.path:
            pending = [u for u in undurable if " replace " in u]
            assert not pending, f"{step}: deleting before {pending} are durable"
            undurable.append(str(step))
    assert replaced_bundle
    assert not undurable, f"save returned with {undurable} not durable (no directory fsync after them)"
    assert not written_since_sync


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_file_and_rename_is_durable_in_order_when_save_returns(name, tmp_path):
    scenario = SCENARIOS[name]
    scenario.prepare(tmp_path / "d")
    save, _ = scenario.saver(tmp_path / "d")
    steps, _ = record(save)
    check_fsync_order(steps, "d")
    fsyncs = [str(s) for s in steps if s.op == "fsync"]
    assert len(fsyncs) >= (5 if name == "save" else 10), fsyncs


def test_sharded_save_fsyncs_every_data_file_before_the_index_is_renamed(tmp_path):
    steps, _ = record(lambda: ckpt.save({f"t{i}": np.arange(10) + i for i in range(7)}, tmp_path / "m",
                                        num_shards=3))
    check_fsync_order(steps, tmp_path.name)
    index_placed = next(s.index for s in steps if s.op == "replace" and s.path.endswith("-> m.index"))
    for shard in range(3):
        data = f"m.data-{shard:05d}-of-00003.tmp-*"
        assert any(s.op == "fsync" and s.path == data and s.index < index_placed for s in steps), data


def test_the_order_checker_catches_a_missing_fsync(tmp_path):
    """The rules above have teeth: the trace of a save with one fsync taken out fails them."""
    steps, _ = record(lambda: ckpt.save({"a": np.ones(3)}, tmp_path / "m"))
    check_fsync_order(steps, tmp_path.name)
    without_index_fsync = [s for s in steps if not (s.op == "fsync" and s.path.startswith("m.index"))]
    with pytest.raises(AssertionError, match="before it was fsync'd"):
        check_fsync_order(without_index_fsync, tmp_path.name)
    dir_fsyncs = [s.index for s in steps if s.op == "fsync" and s.path == tmp_path.name]
    without_first_dir_fsync = [s for s in steps if s.index != dir_fsyncs[0]]
    with pytest.raises(AssertionError, match="renames are not durable yet"):
        check_fsync_order(without_first_dir_fsync, tmp_path.name)
    without_last_dir_fsync = [s for s in steps if s.index != dir_fsyncs[-1]]
    with pytest.raises(AssertionError, match="not durable"):
        check_fsync_order(without_last_dir_fsync, tmp_path.name)


def test_sync_false_never_fsyncs(tmp_path):
    directory = tmp_path / "scratch"
    manager = ckpt.Manager(directory, max_to_keep=1, sync=False, rng=False)

    def work():
        ckpt.save({"a": np.ones(3)}, directory / "model", step=1, sync=False)
        for step in range(1, 4):
            manager.save(step, {"w": np.full(4, step)})  # deletes older ones: retention is covered too
        manager.delete(3)
        with BundleWriter(str(directory / "raw"), sync=False) as writer:
            writer.add("x", np.zeros(2))
            writer.finish()

    steps, _ = record(work)
    assert not [str(s) for s in steps if s.op in ("fsync", "open_dir")]
    assert ckpt.Reader(directory / "model-1")["a"].tolist() == [1.0, 1.0, 1.0]


def test_sync_is_on_by_default_everywhere():
    assert inspect.signature(ckpt.save).parameters["sync"].default is True
    assert inspect.signature(ckpt.Manager).parameters["sync"].default is True
    assert inspect.signature(BundleWriter).parameters["sync"].default is True


def test_fsync_really_reaches_the_os(tmp_path, monkeypatch):
    """The seam's primitives call the real os functions (patched here to count)."""
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    ckpt.save({"a": np.ones(3)}, tmp_path / "m")
    assert len(calls) >= 5  # data, index, directory, state file, directory


@pytest.mark.parametrize("code, raises", [(errno.EIO, True), (errno.ENOSPC, True), (errno.EINVAL, False),
                                          (errno.EOPNOTSUPP, False)])
def test_directory_fsync_errors_are_raised_unless_unsupported(tmp_path, monkeypatch, code, raises):
    def failing(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(_fs, "fsync", failing)
    if raises:
        with pytest.raises(OSError) as exc_info:
            _fs.fsync_dir(str(tmp_path))
        assert exc_info.value.errno == code
    else:
        _fs.fsync_dir(str(tmp_path))


def test_a_save_whose_directory_fsync_fails_is_rolled_back(tmp_path):
    """EIO on the final directory fsync: the save raises and the checkpoint is not left looking complete."""
    scenario = SCENARIOS["save"]
    scenario.prepare(tmp_path / "base")
    directory = copy_dir(tmp_path / "base", tmp_path / "d")

    def eio_on_dir_fsync(step, real, args):
        if step.op == "fsync" and step.path == "d":
            raise OSError(errno.EIO, "I/O error")
        return real(*args)

    with Injector(eio_on_dir_fsync), pytest.raises(OSError, match="I/O error"):
        ckpt.save(scenario.state(2), directory / "model", step=2)
    assert ckpt.latest(directory) == str(directory / "model-1")
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in (tmp_path / "base").iterdir())
