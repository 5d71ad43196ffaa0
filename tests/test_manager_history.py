"""Which checkpoint is the latest after a rewind, and which files a Manager may delete (issue 13, items 9, 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ckpt
from ckpt.errors import CheckpointError
from ckpt.tf.state_file import read_state


def state(value: float):
    return {"w": np.full(4, value, np.float32)}


def value_of(prefix) -> float:
    return float(ckpt.load(prefix)["w"][0])


def state_file_names(directory) -> tuple[str, list[str]]:
    st = read_state(str(directory))
    return os.path.basename(st.model_checkpoint_path), [os.path.basename(p) for p in st.all_model_checkpoint_paths]


# ------------------------------------------------------------------------------ 10. the latest after a rewind


def test_after_a_rewind_the_checkpoint_just_saved_is_the_latest(tmp_path):
    m = ckpt.Manager(tmp_path, max_to_keep=None, rng=False, sync=False)
    for step in range(1, 6):
        m.save(step, state(step))
    assert m.save(4, state(40), force=True) == str(tmp_path / "ckpt-4")
    assert m.latest_step == 4 and m.latest == str(tmp_path / "ckpt-4")
    assert ckpt.latest(tmp_path) == str(tmp_path / "ckpt-4")
    assert state_file_names(tmp_path) == ("ckpt-4", ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-5", "ckpt-4"])
    # Step 5 is kept (abandoned, not deleted) ...
    assert m.all_steps() == [1, 2, 3, 4, 5] and [c.step for c in m.checkpoints] == [1, 2, 3, 5, 4]
    # ... and a new process resumes from the rewound timeline, not from it.
    again = ckpt.Manager(tmp_path, max_to_keep=None, rng=False, sync=False)
    assert again.latest_step == 4
    target = state(0)
    assert again.restore_or_initialize(target) == 4
    assert target["w"][0] == 40
    # The rewound run reaching step 5 replaces the abandoned checkpoint without force=True.
    again.save(5, state(50))
    assert again.latest_step == 5 and value_of(tmp_path / "ckpt-5") == 50
    assert state_file_names(tmp_path)[0] == "ckpt-5"
    with pytest.raises(CheckpointError, match="already saved"):
        again.save(3, state(30))  # a step of the current timeline still needs force=True


def test_saving_a_lower_new_step_also_makes_it_the_latest(tmp_path):
    m = ckpt.Manager(tmp_path, max_to_keep=2, rng=False, sync=False)
    for step in (10, 20):
        m.save(step, state(step))
    m.save(15, state(15))  # e.g. restarted from an older checkpoint that retention had already deleted
    assert m.latest_step == 15 and ckpt.latest(tmp_path) == str(tmp_path / "ckpt-15")
    assert [c.step for c in m.checkpoints] == [20, 15]  # max_to_keep counts the most recently committed


def test_retention_after_a_rewind_deletes_in_commit_order(tmp_path):
    m = ckpt.Manager(tmp_path, max_to_keep=3, rng=False, sync=False)
    for step in range(1, 6):
        m.save(step, state(step))
    m.save(4, state(40), force=True)
    assert [c.step for c in m.checkpoints] == [3, 5, 4]
    m.save(5, state(50))  # replaces the abandoned 5
    assert [c.step for c in m.checkpoints] == [3, 4, 5]
    m.save(6, state(60))
    assert [c.step for c in m.checkpoints] == [4, 5, 6]
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-4.index", "ckpt-5.index", "ckpt-6.index"]
    assert ckpt.verify(tmp_path).ok


def test_a_record_in_commit_order_survives_a_restart(tmp_path):
    m = ckpt.Manager(tmp_path, max_to_keep=None, rng=False, sync=False)
    for step in (1, 2, 3):
        m.save(step, state(step))
    m.save(2, state(20), force=True)
    record = json.loads((tmp_path / "ckpt.manager.json").read_text())
    assert [c["step"] for c in record["checkpoints"]] == [1, 3, 2]
    again = ckpt.Manager(tmp_path, max_to_keep=None, rng=False, sync=False)
    assert [c.step for c in again.checkpoints] == [1, 3, 2] and again.latest_step == 2


def test_rewind_matches_tensorflow_checkpoint_manager(tmp_path):
    """The same saves through TensorFlow's CheckpointManager leave the same state file, and TensorFlow's
    latest_checkpoint reads ours as ckpt.latest does."""
    tf = pytest.importorskip("tensorflow")
    steps = [1, 2, 3, 4, 5, 4, 5, 6]
    theirs = tmp_path / "tf"
    checkpoint = tf.train.Checkpoint(w=tf.Variable(np.zeros(4, np.float32)))
    tf_manager = tf.train.CheckpointManager(checkpoint, str(theirs), max_to_keep=3, checkpoint_name="ckpt")
    ours = tmp_path / "ours"
    m = ckpt.Manager(ours, max_to_keep=3, rng=False, sync=False)
    for i, step in enumerate(steps):
        checkpoint.w.assign(np.full(4, float(i), np.float32))
        tf_manager.save(checkpoint_number=step)
        m.save(step, state(i), force=i == 5)  # the first 4 again is the rewind
        assert state_file_names(ours) == state_file_names(theirs), (i, step)
        assert tf.train.latest_checkpoint(str(ours)) == ckpt.latest(ours) == str(ours / f"ckpt-{step}")
        assert value_of(ckpt.latest(ours)) == i
    # TensorFlow's manager started on our directory continues from the same newest checkpoint.
    resumed = tf.train.CheckpointManager(checkpoint, str(ours), max_to_keep=3, checkpoint_name="ckpt")
    assert resumed.latest_checkpoint == str(ours / "ckpt-6")


# ------------------------------------------------------------------------- 9. deleting only what it wrote


def test_another_tools_data_file_without_index_is_never_deleted(tmp_path):
    foreign = {"ckpt-7.data-00000-of-00001": b"half copied by rsync",
               "ckpt-2.data-00000-of-00001": b"another tool's, old"}
    for name, data in foreign.items():
        (tmp_path / name).write_bytes(data)
    m = ckpt.Manager(tmp_path, max_to_keep=1, rng=False, sync=False)
    for step in (1, 3, 4):
        m.save(step, state(step))  # sweeps and retention run before and after every save
    m.delete(4)
    for name, data in foreign.items():
        assert (tmp_path / name).read_bytes() == data, name
    # Saving over them needs force=True, as over another tool's complete checkpoint.
    with pytest.raises(CheckpointError, match=r"not written by this manager \(ckpt-7\.data-00000-of-00001\)"):
        m.save(7, state(7))
    assert (tmp_path / "ckpt-7.data-00000-of-00001").read_bytes() == foreign["ckpt-7.data-00000-of-00001"]
    m.save(7, state(7), force=True)
    assert value_of(tmp_path / "ckpt-7") == 7


_CRASH = textwrap.dedent("""
    import os, sys
    import numpy as np
    import ckpt
    from ckpt import _fs

    real = _fs.replace

    def replace(src, dst):
        if dst.endswith(sys.argv[2]):
            os._exit(3)  # the process dies here: no clean-up runs
        return real(src, dst)

    m = ckpt.Manager(sys.argv[1], rng=False)
    m.save(1, {"w": np.ones(4, np.float32)})
    _fs.replace = replace
    m.save(2, {"w": np.ones(4, np.float32)})
""")


@pytest.mark.parametrize("dies_before", ["ckpt-2.index", "ckpt-2.data-00000-of-00001"])
def test_own_crash_leftovers_are_still_swept(tmp_path, dies_before):
    """Killed between the data and the index renames: the record said step 2 was being written, so the data
    file without its index is provably this manager's and the next manager removes it."""
    env = dict(os.environ, PYTHONPATH=str(Path(ckpt.__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path), dies_before], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    if dies_before == "ckpt-2.index":
        assert "ckpt-2.data-00000-of-00001" in names and "ckpt-2.index" not in names
    assert json.loads((tmp_path / "ckpt.manager.json").read_text())["unfinished"] == [2]
    m = ckpt.Manager(tmp_path, rng=False)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("ckpt-2.")]
    assert "unfinished" not in json.loads((tmp_path / "ckpt.manager.json").read_text())
    assert m.all_steps() == [1] and ckpt.verify(tmp_path).ok
    m.save(2, state(2))  # no force needed: nothing of another tool is there
    assert value_of(tmp_path / "ckpt-2") == 2


def test_a_deletion_that_leaves_a_data_file_behind_is_finished_later(tmp_path, monkeypatch):
    from ckpt import _fs

    m = ckpt.Manager(tmp_path, max_to_keep=1, rng=False, sync=False)
    m.save(1, state(1))
    real = _fs.unlink

    def unlink(path):
        if path.endswith("ckpt-1.data-00000-of-00001"):
            raise PermissionError(13, "injected")
        return real(path)

    monkeypatch.setattr(_fs, "unlink", unlink)
    m.save(2, state(2))  # deletes step 1: its index goes, its data file stays
    monkeypatch.undo()
    assert (tmp_path / "ckpt-1.data-00000-of-00001").exists() and m.all_steps() == [2]
    assert json.loads((tmp_path / "ckpt.manager.json").read_text())["unfinished"] == [1]
    m.save(3, state(3))
    assert not (tmp_path / "ckpt-1.data-00000-of-00001").exists()
    assert ckpt.verify(tmp_path).ok


def test_only_temporary_names_that_ckpt_generates_are_swept(tmp_path):
    ckpt.Manager(tmp_path, rng=False, sync=False).save(1, state(1))
    ours = ["ckpt-5.index.tmp-0a1b2c3d", "ckpt-5.data-00000-of-00001.tmp-0a1b2c3d", "ckpt.manager.json.tmp-deadbeef"]
    theirs = ["ckpt-5.index.tmp-XyZ", "ckpt-5.data-00000-of-00001.tmp-123", ".ckpt-6.index.AbC123"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"x")
    ckpt.Manager(tmp_path, rng=False, sync=False)
    left = set(os.listdir(tmp_path))
    assert not left & set(ours) and set(theirs) <= left
