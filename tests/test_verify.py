"""``ckpt.verify`` / ``ckpt verify`` and falling back to the newest checkpoint that verifies.

Every kind of damage is made by hand on a fresh checkpoint and must come back as one structured problem naming
the file, the tensor (where there is one) and what is wrong; a directory check also covers the state file, the
manager records and leftovers of interrupted saves. ``Manager.restore`` / ``restore_or_initialize`` and
``ckpt.latest(..., verify=True)`` skip damaged checkpoints with a warning naming them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import ckpt
from ckpt.cli.main import main
from ckpt.errors import CorruptCheckpointError, CorruptCheckpointWarning
from ckpt.tf.bundle import BundleReader, BundleWriter
from ckpt._verify import Problem

DATA = Path(__file__).parent / "data"


def state(step: int) -> dict:
    return {"layer": {"kernel": np.full((4, 4), step, np.float32), "bias": np.arange(4, dtype=np.float64) + step},
            "names": np.array([b"a", f"step-{step}".encode()], dtype=object), "step": np.int64(step)}


def blank() -> dict:
    return {"layer": {"kernel": np.zeros((4, 4), np.float32), "bias": np.zeros(4)},
            "names": np.array([b"", b""], dtype=object), "step": np.int64(0)}


@pytest.fixture
def run(tmp_path) -> Path:
    """A manager directory with checkpoints 1, 2, 3."""
    directory = tmp_path / "run"
    manager = ckpt.Manager(directory, max_to_keep=5, rng=False)
    for step in (1, 2, 3):
        manager.save(step, state(step))
    return directory


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(data)


def offset_of(prefix: Path, name: str) -> int:
    with BundleReader(prefix) as reader:
        return reader.entry(name).offset


def only(report) -> Problem:
    assert len(report.problems) == 1, [str(p) for p in report.problems]
    return report.problems[0]


# ============================================================================================ ckpt.verify


def test_intact_directory_and_golden_files_verify(run):
    report = ckpt.verify(run)
    assert report.ok and report.problems == ()
    assert [p.name for p in report.checkpoints] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert report.tensors == 3 * 5 and report.bytes > 3 * 100  # 4 tensors + ckpt's metadata, each
    assert report.to_dict()["ok"] is True
    for folder in ("tf1_saver", "tf1_adam", "tf1_sharded", "dtypes", "tf2_checkpoint", "tf2_plain"):
        assert ckpt.verify(DATA / folder).ok, folder


def test_a_flipped_tensor_byte(run):
    data = run / "ckpt-3.data-00000-of-00001"
    flip(data, offset_of(run / "ckpt-3", "layer/kernel") + 5)
    problem = only(ckpt.verify(run))
    assert problem.file == data and problem.tensor == "layer/kernel" and problem.checkpoint == run / "ckpt-3"
    assert problem.what.startswith("checksum mismatch for tensor 'layer/kernel' (stored 0x")
    assert str(problem).startswith(f"{data}: tensor 'layer/kernel': checksum mismatch")
    assert only(ckpt.verify(run / "ckpt-3")) == problem  # the checkpoint alone, by prefix
    assert only(ckpt.verify(data)) == problem  # or by one of its files


def test_a_damaged_string_tensor(run):
    flip(run / "ckpt-2.data-00000-of-00001", offset_of(run / "ckpt-2", "names") + 7)
    problem = only(ckpt.verify(run))
    assert problem.tensor == "names" and "checksum mismatch" in problem.what


def test_every_damaged_tensor_is_listed(run):
    data = run / "ckpt-1.data-00000-of-00001"
    flip(data, offset_of(run / "ckpt-1", "layer/kernel"))
    flip(data, offset_of(run / "ckpt-1", "layer/bias"))
    report = ckpt.verify(run)
    assert sorted(p.tensor for p in report.problems) == ["layer/bias", "layer/kernel"]


def test_a_truncated_data_file(run):
    data = run / "ckpt-3.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:10])
    report = ckpt.verify(run)
    assert report.problems and all(p.file == data for p in report.problems)
    assert all("truncated" in p.what for p in report.problems)


def test_a_missing_data_file_is_one_problem(run):
    (run / "ckpt-2.data-00000-of-00001").unlink()
    problem = only(ckpt.verify(run / "ckpt-2"))
    assert problem.file == run / "ckpt-2.data-00000-of-00001" and problem.tensor is None
    assert problem.what == "data file is missing (5 tensor(s) are stored in it); the checkpoint is incomplete"


def test_a_damaged_index_block(run):
    index = run / "ckpt-1.index"
    flip(index, 10)  # inside the first data block
    problem = only(ckpt.verify(run))
    assert problem.file == index and problem.what.startswith("checksum mismatch in the data block 0 at offset 0")


def test_the_metaindex_block_is_checked_too(tmp_path):
    prefix = ckpt.save({"a": np.ones(2)}, tmp_path / "m")
    index = Path(f"{prefix}.index")
    with BundleReader(prefix) as reader:
        offset, _ = reader._table._meta_handle
    flip(index, offset)
    assert ckpt.Reader(prefix)["a"].tolist() == [1.0, 1.0]  # readers never look at it
    assert "metaindex block" in only(ckpt.verify(prefix)).what


def test_an_index_that_is_not_a_table(run):
    (run / "ckpt-2.index").write_bytes(b"garbage")
    problem = only(ckpt.verify(run))
    assert problem.file == run / "ckpt-2.index" and "too short to be an sstable" in problem.what


def test_partitioned_tensor_slices_are_checked_one_by_one(tmp_path):
    with BundleWriter(str(tmp_path / "p")) as writer:
        writer.add_slice("w", (4, 2), ((0, 2), (0, -1)), np.ones((2, 2), np.float32))
        writer.add_slice("w", (4, 2), ((2, 2), (0, -1)), np.zeros((2, 2), np.float32))
        writer.finish()
    assert ckpt.verify(tmp_path / "p").ok
    flip(tmp_path / "p.data-00000-of-00001", 20)  # inside the second slice
    problem = only(ckpt.verify(tmp_path / "p"))
    assert problem.tensor == "w[2,2:-]" and "checksum mismatch" in problem.what


def test_the_state_file_and_records_are_checked(run):
    (run / "ckpt-1.index").unlink()
    (run / "ckpt-1.data-00000-of-00001").unlink()
    problems = {str(p) for p in ckpt.verify(run).problems}
    assert problems == {f"{run / 'checkpoint'}: lists 'ckpt-1', but {run / 'ckpt-1.index'} does not exist",
                        f"{run / 'ckpt.manager.json'}: lists step 1, but {run / 'ckpt-1.index'} does not exist"}
    (run / "checkpoint").write_text("garbage {")
    (run / "ckpt.manager.json").write_text("[]")
    whats = [p.what for p in ckpt.verify(run).problems]
    assert any(w.startswith("not a valid checkpoint state file") for w in whats), whats
    assert any(w.startswith("not a valid manager record (not a JSON object)") for w in whats), whats


def test_leftovers_of_interrupted_saves(run):
    (run / "ckpt-4.data-00000-of-00001.tmp-0123abcd").write_bytes(b"x")
    (run / "ckpt-5.data-00000-of-00001").write_bytes(b"x")
    (run / "notes.txt").write_bytes(b"x")  # not ours: not a problem
    problems = {p.file.name: p.what for p in ckpt.verify(run).problems}
    assert sorted(problems) == ["ckpt-4.data-00000-of-00001.tmp-0123abcd", "ckpt-5.data-00000-of-00001"]
    assert "left over by an interrupted save" in problems["ckpt-4.data-00000-of-00001.tmp-0123abcd"]
    assert "ckpt-5.index is missing" in problems["ckpt-5.data-00000-of-00001"]
    ckpt.Manager(run).save(6, state(6))  # the next save sweeps the temporary file, which only ckpt names so
    # ... but not the data file: without a record saying this manager wrote it, it may be another tool's (a
    # checkpoint half copied), and stays a problem until someone who knows deletes it.
    assert [p.file.name for p in ckpt.verify(run).problems] == ["ckpt-5.data-00000-of-00001"]
    (run / "ckpt-5.data-00000-of-00001").unlink()
    assert ckpt.verify(run).ok


def test_temporary_files_of_a_save_in_progress_are_not_leftovers(run):
    (run / "ckpt-4.index.tmp-0123abcd").write_bytes(b"x")
    env = dict(os.environ, PYTHONPATH=str(Path(ckpt.__file__).resolve().parents[1]))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from ckpt._lock import DirectoryLock
        with DirectoryLock(sys.argv[1]):
            print("locked", flush=True)
            time.sleep(30)
    """), str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        report = ckpt.verify(run)
        assert report.ok and report.busy
    finally:
        holder.kill()
        holder.wait()
    assert not ckpt.verify(run).ok


def test_verify_never_changes_anything(run):
    flip(run / "ckpt-3.data-00000-of-00001", 0)
    (run / "ckpt-4.index.tmp-0123abcd").write_bytes(b"x")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    ckpt.verify(run)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before


def test_nothing_there(tmp_path):
    with pytest.raises(ckpt.CheckpointNotFoundError):
        ckpt.verify(tmp_path / "nothing")
    report = ckpt.verify(tmp_path)  # an empty directory is fine
    assert report.ok and report.checkpoints == ()


# ============================================================================================ the command


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["verify", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ok(run, capsys):
    code, out, err = cli(capsys, run)
    assert code == 0 and err == ""
    assert out == "OK: 3 checkpoint(s), 15 tensor(s), " + out.split(", ")[2]
    assert out.strip().endswith("verified")


def test_cli_one_line_per_problem(run, capsys):
    data = run / "ckpt-3.data-00000-of-00001"
    flip(data, offset_of(run / "ckpt-3", "layer/kernel") + 1)
    (run / "ckpt-9.index.tmp-0123abcd").write_bytes(b"x")
    code, out, err = cli(capsys, run)
    lines = out.splitlines()
    assert code == 1 and err == ""
    assert lines[0].startswith(f"{data}: tensor layer/kernel: checksum mismatch for tensor 'layer/kernel'")
    assert lines[1] == (f"{run / 'ckpt-9.index.tmp-0123abcd'}: temporary file left over by an interrupted save; "
                        "the next save into this directory removes it")
    assert lines[2].startswith(f"2 problem(s) in {run}: checked 3 checkpoint(s)")
    assert len(lines) == 3


def test_cli_json(run, capsys):
    flip(run / "ckpt-2.data-00000-of-00001", offset_of(run / "ckpt-2", "step"))
    code, out, _ = cli(capsys, run, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["busy"] is False
    assert report["checkpoints"] == [str(run / f"ckpt-{s}") for s in (1, 2, 3)]
    assert report["problems"] == [{"file": str(run / "ckpt-2.data-00000-of-00001"), "tensor": "step",
                                   "checkpoint": str(run / "ckpt-2"),
                                   "what": report["problems"][0]["what"]}]
    assert report["problems"][0]["what"].startswith("checksum mismatch for tensor 'step'")
    code, out, _ = cli(capsys, DATA / "tf1_adam", "--json")
    assert code == 0 and json.loads(out)["problems"] == []


def test_cli_escapes_hostile_names(tmp_path, capsys):
    prefix = ckpt.save({"\x1b[31mred": np.ones(3)}, tmp_path / "m")
    flip(Path(f"{prefix}.data-00000-of-00001"), 2)
    code, out, _ = cli(capsys, prefix)
    assert code == 1 and "\x1b" not in out and "\\x1b[31mred" in out


def test_cli_missing_path(tmp_path, capsys):
    code, out, err = cli(capsys, tmp_path / "nope")
    assert code == 2 and out == "" and err.startswith("Error: no checkpoint at")


def test_cli_is_registered():
    proc = subprocess.run([sys.executable, "-m", "ckpt", "verify", "--help"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(Path(ckpt.__file__).resolve().parents[1])))
    assert proc.returncode == 0 and "--json" in proc.stdout and "examples:" in proc.stdout


# ============================================================================================ falling back


def test_restore_falls_back_to_the_newest_checkpoint_that_verifies(run):
    flip(run / "ckpt-3.data-00000-of-00001", offset_of(run / "ckpt-3", "layer/bias"))
    manager = ckpt.Manager(run, max_to_keep=5, rng=False)
    into = blank()
    with pytest.warns(CorruptCheckpointWarning, match=r"skipped damaged checkpoint\(s\) .*ckpt-3 \(.*checksum "
                                                      r"mismatch for tensor 'layer/bias'.*restoring .*ckpt-2"):
        assert manager.restore_or_initialize(into) == 2
    assert np.all(into["layer"]["kernel"] == 2) and manager.restored["step"] == 2
    with pytest.warns(CorruptCheckpointWarning):
        assert manager.restore(blank())["step"] == 2
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch"):
        manager.restore(blank(), step=3)  # an explicit step does not fall back
    # The resumed run saves step 3 again: it replaces the damaged one.
    manager.save(3, state(3))
    assert ckpt.verify(run).ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ckpt.Manager(run, rng=False).restore_or_initialize(blank()) == 3


def test_restore_when_every_checkpoint_is_damaged(run):
    for step in (1, 2, 3):
        flip(run / f"ckpt-{step}.data-00000-of-00001", 0)
    manager = ckpt.Manager(run, rng=False)
    with pytest.raises(CorruptCheckpointError, match="every checkpoint of ckpt in .* is damaged"):
        manager.restore_or_initialize(blank())


def test_a_damaged_index_is_skipped_too(run):
    (run / "ckpt-3.index").write_bytes(b"\0" * 100)
    with pytest.warns(CorruptCheckpointWarning, match="ckpt-3.*not an sstable"):
        assert ckpt.Manager(run, rng=False).restore_or_initialize(blank()) == 2


def test_latest_with_verify(run):
    flip(run / "ckpt-3.data-00000-of-00001", 3)
    assert ckpt.latest(run) == str(run / "ckpt-3")  # cheap: no checksums
    with pytest.warns(CorruptCheckpointWarning, match=r"skipped .*ckpt-3 \(.*checksum mismatch.*using .*ckpt-2"):
        assert ckpt.latest(run, verify=True) == str(run / "ckpt-2")
    (run / "ckpt-2.index").write_bytes(b"garbage")  # an index that does not open is named too
    with pytest.warns(CorruptCheckpointWarning, match="ckpt-2.*too short"):
        assert ckpt.latest(run, verify=True) == str(run / "ckpt-1")
    for step in (1,):
        flip(run / f"ckpt-{step}.data-00000-of-00001", 0)
    with pytest.warns(CorruptCheckpointWarning, match="no checkpoint in .* verifies"):
        assert ckpt.latest(run, verify=True) is None


def test_latest_with_verify_considers_unlisted_checkpoints_on_disk(tmp_path):
    good = ckpt.save(state(1), tmp_path / "a")
    shutil.copy(f"{good}.index", tmp_path / "b.index")  # b: newer, but its data file is missing
    os.utime(tmp_path / "b.index", (time.time() + 10, time.time() + 10))
    (tmp_path / "checkpoint").unlink()
    assert ckpt.latest(tmp_path) == good  # b is not complete
    with pytest.warns(CorruptCheckpointWarning, match=r"skipped .*/b \(.*b.data-00000-of-00001: data file is "
                                                      r"missing.*using .*/a$"):
        assert ckpt.latest(tmp_path, verify=True) == good


def test_verify_checksums_false_skips_tensor_checksums_only(run):
    flip(run / "ckpt-3.data-00000-of-00001", offset_of(run / "ckpt-3", "layer/kernel"))
    with ckpt.Reader(run / "ckpt-3", verify_checksums=False) as reader:
        assert reader["layer/kernel"].shape == (4, 4)
    with ckpt.Reader(run / "ckpt-3") as reader, pytest.raises(ckpt.errors.ChecksumMismatchError):
        reader["layer/kernel"]
    flip(run / "ckpt-3.index", 10)
    with pytest.raises(ckpt.errors.ChecksumMismatchError, match="data block 0"):
        with ckpt.Reader(run / "ckpt-3", verify_checksums=False) as reader:
            reader.keys()
