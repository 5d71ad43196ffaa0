"""The ``checkpoint`` state file, ``ckpt.latest``, ``ckpt.Reader`` and the ``save``/``load`` API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import ckpt
from ckpt.errors import (CheckpointError, CheckpointNotFoundError, ChecksumMismatchError, CorruptCheckpointError,
                         InvalidStateError)
from ckpt.tf import _write_workers as workers
from ckpt.tf import bundle as bundle_mod
from ckpt.tf.protos import checkpoint_state_pb2
from ckpt.tf.state_file import CheckpointState, read_state, write_state

DATA = Path(__file__).parent / "data"


def copy_golden(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(DATA / name, dest)
    return dest


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (to prove that nothing changed)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def state_lines(directory: Path) -> list[str]:
    return (directory / "checkpoint").read_text().splitlines()


def small_state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"layer": {"w": rng.standard_normal((3, 2)).astype(np.float32), "b": np.zeros(2, np.float32)},
            "step": np.int64(seed)}


# ============================================================================================ state file format


class TestStateFileFormat:
    @pytest.mark.parametrize("folder", ["tf2_checkpoint", "tf1_adam", "tf1_saver", "tf1_sharded"])
    def test_tensorflow_state_files_round_trip_byte_for_byte(self, folder):
        text = (DATA / folder / "checkpoint").read_text()
        state = CheckpointState.from_text(text)
        assert state.to_text() == text

    def test_parse_tf2_checkpoint_manager_state(self):
        state = read_state(DATA / "tf2_checkpoint")
        assert state.model_checkpoint_path == "ckpt-3"
        assert state.all_model_checkpoint_paths == ["ckpt-2", "ckpt-3"]
        assert state.all_model_checkpoint_timestamps == [1795336315.6733043, 1795336315.7443717]
        assert state.last_preserved_timestamp == 1795336314.3957672

    def test_parse_tf1_saver_state(self):
        state = read_state(DATA / "tf1_adam")
        assert state.model_checkpoint_path == "model.ckpt-3"
        assert state.all_model_checkpoint_paths == ["model.ckpt-3"]
        assert state.all_model_checkpoint_timestamps == []
        absolute = read_state(DATA / "tf1_saver")
        assert absolute.all_model_checkpoint_paths == ["/data/experiments/tf1_saver/model.ckpt-20",
                                                       "/data/experiments/tf1_saver/model.ckpt-30"]

    def test_write_then_read(self, tmp_path):
        state = CheckpointState("b-2", ["a-1", "dir with space/\"quoted\"", "b-2"], [1.5, 2.25, 1e9 + 0.125], 0.5)
        path = write_state(tmp_path, state, sync=False)
        assert path == os.path.join(tmp_path, "checkpoint")
        assert read_state(tmp_path) == state
        # TensorFlow parses the same text with its own proto: same fields, same field names.
        proto = text_format.Parse(Path(path).read_text(), checkpoint_state_pb2.CheckpointState())
        assert list(proto.all_model_checkpoint_paths) == state.all_model_checkpoint_paths
        assert os.listdir(tmp_path) == ["checkpoint"]  # no temporary file left behind

    def test_text_layout_matches_tensorflow(self, tmp_path):
        write_state(tmp_path, CheckpointState("ckpt-3", ["ckpt-2", "ckpt-3"], [1795336315.6733043,
                                                                              1795336315.7443717],
                                              1795336314.3957672), sync=False)
        assert (tmp_path / "checkpoint").read_text() == (DATA / "tf2_checkpoint" / "checkpoint").read_text()

    def test_missing_state_file_reads_as_none(self, tmp_path):
        assert read_state(tmp_path) is None
        assert read_state(tmp_path / "does-not-exist") is None

    @pytest.mark.parametrize("content", [b"model_checkpoint_path: [[[", b"\xff\xfe\x00garbage", b"unknown_field: 3"])
    def test_garbled_state_file_is_a_corrupt_error_naming_the_file(self, tmp_path, content):
        (tmp_path / "checkpoint").write_bytes(content)
        with pytest.raises(CorruptCheckpointError) as exc_info:
            read_state(tmp_path)
        assert str(tmp_path / "checkpoint") in str(exc_info.value)


# ============================================================================================ save and the state


class TestSaveRecordsState:
    def test_relative_paths_and_step_naming(self, tmp_path):
        prefix = ckpt.save(small_state(), tmp_path / "run" / "model.ckpt", step=25, sync=False)
        assert prefix == str(tmp_path / "run" / "model.ckpt-25")
        assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint", "model.ckpt-25.data-00000-of-00001",
                                                        "model.ckpt-25.index"]
        lines = state_lines(tmp_path / "run")
        assert lines[0] == 'model_checkpoint_path: "model.ckpt-25"'  # relative, though the prefix was absolute
        assert lines[1] == 'all_model_checkpoint_paths: "model.ckpt-25"'
        assert re.fullmatch(r"all_model_checkpoint_timestamps: \d+\.\d+", lines[2])
        assert str(tmp_path) not in (tmp_path / "run" / "checkpoint").read_text()

    def test_relative_prefix_from_the_working_directory(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert ckpt.save(small_state(), "runs/ck", step=np.int64(7), sync=False) == "runs/ck-7"
        assert read_state(tmp_path / "runs").model_checkpoint_path == "ck-7"
        assert ckpt.latest("runs") == os.path.join("runs", "ck-7")

    @pytest.mark.parametrize("step", [True, "3", 2.0])
    def test_step_must_be_an_int(self, tmp_path, step):
        with pytest.raises(TypeError):
            ckpt.save(small_state(), tmp_path / "ck", step=step, sync=False)
        assert list(tmp_path.iterdir()) == []

    def test_prefix_that_is_a_directory(self, tmp_path):
        (tmp_path / "ck").mkdir()
        with pytest.raises(CheckpointError, match="is a directory"):
            ckpt.save(small_state(), tmp_path / "ck", sync=False)

    def test_appends_and_updates_with_aligned_timestamps(self, tmp_path):
        times = []
        for step in (1, 2, 3, 2):  # re-saving step 2 moves it to the end
            before = time.time()
            ckpt.save(small_state(step), tmp_path / "ck", step=step, sync=False)
            times.append((before, time.time()))
        state = read_state(tmp_path)
        assert state.all_model_checkpoint_paths == ["ck-1", "ck-3", "ck-2"]
        assert state.model_checkpoint_path == "ck-2"
        stamps = state.all_model_checkpoint_timestamps
        assert len(stamps) == 3
        assert stamps == sorted(stamps)
        for stamp, (before, after) in zip(stamps, [times[0], times[2], times[3]]):
            assert before <= stamp <= after
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-2")
        assert ckpt.Reader(tmp_path)["step"] == 2

    def test_adds_timestamps_to_a_tensorflow_state_without_them(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_adam")
        old_mtime = os.stat(folder / "model.ckpt-3.index").st_mtime
        ckpt.save(small_state(), folder / "model.ckpt", step=4, sync=False)
        state = read_state(folder)
        assert state.all_model_checkpoint_paths == ["model.ckpt-3", "model.ckpt-4"]
        assert len(state.all_model_checkpoint_timestamps) == 2
        assert state.all_model_checkpoint_timestamps[0] == pytest.approx(old_mtime)
        assert state.model_checkpoint_path == "model.ckpt-4"

    def test_replaces_a_garbled_state_file(self, tmp_path):
        (tmp_path / "checkpoint").write_text("this is { not a state file")
        ckpt.save(small_state(), tmp_path / "ck", step=1, sync=False)
        assert read_state(tmp_path).all_model_checkpoint_paths == ["ck-1"]


# ============================================================================================ latest


class TestLatest:
    def test_empty_and_missing_directories(self, tmp_path):
        assert ckpt.latest(tmp_path) is None
        assert ckpt.latest(tmp_path / "nope") is None
        (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gone-3"\n')
        assert ckpt.latest(tmp_path) is None

    def test_follows_the_state_file(self, tmp_path):
        for step in (10, 9):  # saved last: 9, although 10 is the bigger number
            ckpt.save(small_state(step), tmp_path / "ck", step=step, sync=False)
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-9")

    def test_golden_directories(self):
        assert ckpt.latest(DATA / "tf2_checkpoint") == str(DATA / "tf2_checkpoint" / "ckpt-3")
        assert ckpt.latest(DATA / "tf1_adam") == str(DATA / "tf1_adam" / "model.ckpt-3")
        # Absolute paths from another machine (/data/experiments/...) are found by base name.
        assert ckpt.latest(DATA / "tf1_saver") == str(DATA / "tf1_saver" / "model.ckpt-30")
        assert ckpt.latest(DATA / "tf2_plain") == str(DATA / "tf2_plain" / "weights")  # no state file: scan

    def test_moved_directory_with_absolute_paths(self, tmp_path):
        a = tmp_path / "A"
        for step in (1, 2):
            ckpt.save(small_state(step), a / "ck", step=step, sync=False)
        # Written by hand as TF1's Saver does with an absolute save_path; ck-1 is recorded as the newest.
        write_state(a, CheckpointState(str(a / "ck-1"), [str(a / "ck-2"), str(a / "ck-1")]), sync=False)
        b = tmp_path / "B"
        a.rename(b)
        assert not (a / "ck-1.index").exists()
        assert ckpt.latest(b) == str(b / "ck-1")  # not ck-2: the state file was followed
        with ckpt.Reader(b) as reader:
            assert reader["step"] == 1

    @pytest.mark.parametrize("damage", ["empty", "garbled", "binary", "missing", "names-nothing"])
    def test_bad_state_file_falls_back_to_scanning_newest_first(self, tmp_path, damage):
        for step in (2, 10, 9):
            ckpt.save(small_state(step), tmp_path / "ck", step=step, sync=False)
        state_file = tmp_path / "checkpoint"
        if damage == "empty":
            state_file.write_text("")
        elif damage == "garbled":
            state_file.write_text("model_checkpoint_path: [[[ nonsense")
        elif damage == "binary":
            state_file.write_bytes(os.urandom(64) + b"\xff")
        elif damage == "missing":
            state_file.unlink()
        else:
            state_file.write_text('model_checkpoint_path: "other-99"\nall_model_checkpoint_paths: "other-99"\n')
        # by step number (10 > 9 > 2), not by name ("ck-9" > "ck-10") and not by the save order
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-10")

    def test_scan_without_step_numbers_uses_modification_time(self, tmp_path):
        for name, mtime in (("first", 1_000_000), ("second", 2_000_000), ("third", 1_500_000)):
            ckpt.save(small_state(), tmp_path / name, sync=False)
            os.utime(tmp_path / f"{name}.index", (mtime, mtime))
        (tmp_path / "checkpoint").unlink()
        assert ckpt.latest(tmp_path) == str(tmp_path / "second")

    def test_incomplete_checkpoints_are_skipped(self, tmp_path):
        for step in (1, 2, 3):
            ckpt.save(small_state(step), tmp_path / "ck", step=step, sync=False)
        (tmp_path / "ck-3.data-00000-of-00001").unlink()  # newest in the state file, but its data is missing
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-2")
        # Leftovers of a crashed save: a temporary index, and a truncated index.
        shutil.copy(tmp_path / "ck-2.index", tmp_path / "ck-4.index.tmp-deadbeef")
        shutil.copy(tmp_path / "ck-2.data-00000-of-00001", tmp_path / "ck-4.data-00000-of-00001")
        (tmp_path / "ck-5.index").write_bytes((tmp_path / "ck-2.index").read_bytes()[:30])
        shutil.copy(tmp_path / "ck-2.data-00000-of-00001", tmp_path / "ck-5.data-00000-of-00001")
        write_state(tmp_path, CheckpointState("ck-5", ["ck-3", "ck-4", "ck-5"]), sync=False)
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-2")
        (tmp_path / "checkpoint").unlink()
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-2")

    def test_missing_shard_makes_a_checkpoint_incomplete(self, tmp_path):
        ckpt.save(small_state(1), tmp_path / "ck", step=1, sync=False)
        ckpt.save(small_state(2), tmp_path / "ck", step=2, num_shards=2, sync=False)
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-2")
        (tmp_path / "ck-2.data-00001-of-00002").unlink()
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-1")


# ============================================================================================ Reader


class TestReader:
    def test_mapping_interface(self):
        expected = np.load(DATA / "tf1_saver" / "expected_values.npy")
        with ckpt.Reader(DATA / "tf1_saver" / "model.ckpt-30") as reader:
            assert reader.keys() == ["alpha", "beta", "global_step"]
            assert list(reader) == reader.keys()
            assert len(reader) == 3
            assert reader.shapes() == {"alpha": (), "beta": (), "global_step": ()}
            assert reader.dtypes() == {"alpha": np.float32, "beta": np.float32, "global_step": np.int64}
            assert "alpha" in reader and "gamma" not in reader and 3 not in reader
            assert [reader["alpha"], reader["beta"]] == expected.tolist()
            assert reader["global_step"] == 30 and reader["global_step"].dtype == np.int64
            assert dict(reader.items()).keys() == {"alpha", "beta", "global_step"}
            assert reader.get("gamma") is None and reader.get("gamma", 5) == 5
            assert reader.metadata == {}

    def test_quantized_and_string_dtypes(self):
        with ckpt.Reader(DATA / "tf1_sharded") as reader:
            assert reader.dtypes()["dev0/strings"] == np.dtype(object)
            assert reader["dev0/strings"].tolist() == [b"ab", b"", b"cde"]
            assert reader["part/w"].tolist() == np.arange(15, dtype=np.float32).reshape(5, 3).tolist()

    @pytest.mark.parametrize("suffix", ["", ".index", ".data-00000-of-00001", ".meta", "DIR"])
    def test_accepts_prefix_directory_or_file(self, suffix):
        path = DATA / "tf1_saver" if suffix == "DIR" else DATA / "tf1_saver" / f"model.ckpt-30{suffix}"
        with ckpt.Reader(path) as reader:
            assert reader.prefix == str(DATA / "tf1_saver" / "model.ckpt-30")
            assert reader["global_step"] == 30

    def test_data_file_of_another_shard(self):
        with ckpt.Reader(DATA / "tf1_sharded" / "model.ckpt.data-00001-of-00002") as reader:
            assert reader.prefix == str(DATA / "tf1_sharded" / "model.ckpt")

    def test_opening_reads_no_tensor(self, tmp_path, monkeypatch):
        def no_data(*args, **kwargs):
            raise AssertionError("a data file was opened")

        monkeypatch.setattr(bundle_mod.BundleReader, "_shard", no_data)
        with ckpt.Reader(DATA / "tf1_adam") as reader:
            assert len(reader.keys()) == 12
            assert reader.shapes()["conv_layer_1/W_conv_1"] == (2, 2, 1, 2)
            assert "zeta/Adam" in reader
            assert reader.entry("zeta").size == 4
            with pytest.raises(AssertionError, match="data file was opened"):
                reader["zeta"]

    def test_corrupt_data_file_still_opens_and_lists(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_adam")
        data = folder / "model.ckpt-3.data-00000-of-00001"
        data.write_bytes(bytes(255 - b for b in data.read_bytes()))
        with ckpt.Reader(folder) as reader:
            assert len(reader) == 12
            assert reader.shapes()["global_step"] == ()
            with pytest.raises(ChecksumMismatchError) as exc_info:
                reader["global_step"]
            assert str(data) in str(exc_info.value) and "'global_step'" in str(exc_info.value)

    def test_pod_arrays_are_read_only(self):
        with ckpt.Reader(DATA / "tf1_adam") as reader:
            w = reader["conv_layer_1/W_conv_1"]
            assert not w.flags.writeable
            with pytest.raises(ValueError):
                w[0, 0, 0, 0] = 1.0
        assert w.shape == (2, 2, 1, 2)  # still valid after close
        loaded = ckpt.load(DATA / "tf1_adam", flat=True)["conv_layer_1/W_conv_1"]
        assert loaded.flags.writeable
        assert loaded.tolist() == w.tolist()

    def test_unknown_tensor_suggests_close_names(self):
        with ckpt.Reader(DATA / "tf1_saver") as reader:
            with pytest.raises(CheckpointNotFoundError, match=r"did you mean 'alpha'\?") as exc_info:
                reader["alpah"]
        exc = exc_info.value
        assert isinstance(exc, FileNotFoundError)
        assert exc.key == "alpah" and "alpha" in exc.available
        assert "model.ckpt-30" in str(exc)
        with ckpt.Reader(DATA / "tf1_saver") as reader, pytest.raises(CheckpointNotFoundError) as exc_info:
            reader["completely different"]
        assert "did you mean" not in str(exc_info.value)

    def test_missing_prefix_lists_existing_checkpoints(self, tmp_path):
        folder = copy_golden(tmp_path, "tf1_saver")
        with pytest.raises(CheckpointNotFoundError) as exc_info:
            ckpt.Reader(folder / "model.ckpt-25")
        message = str(exc_info.value)
        assert str(folder / "model.ckpt-25") in message
        assert "model.ckpt-20" in message and "model.ckpt-30" in message
        assert exc_info.value.available == ["model.ckpt-20", "model.ckpt-30"]

    def test_missing_directory_and_empty_directory(self, tmp_path):
        with pytest.raises(CheckpointNotFoundError, match="does not exist"):
            ckpt.Reader(tmp_path / "nowhere" / "ck")
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("hi")
        with pytest.raises(CheckpointNotFoundError, match="no complete checkpoint in directory") as exc_info:
            ckpt.Reader(tmp_path / "empty")
        assert "notes.txt" in str(exc_info.value)


# ============================================================================================ save validation


class TestSaveValidation:
    def test_every_unsupported_value_is_reported_at_once(self, tmp_path):
        state = {"ok": np.ones(3), "a_set": {1, 2}, "nested": {"obj": object()},
                 "structured": np.zeros(2, dtype=[("x", "i4"), ("y", "f4")]), "fine": 3}
        with pytest.raises(InvalidStateError) as exc_info:
            ckpt.save(state, tmp_path / "run" / "ck", sync=False)
        message = str(exc_info.value)
        assert "3 problem(s)" in message
        for name in ("'a_set'", "'nested/obj'", "'structured'"):
            assert name in message
        assert "'ok'" not in message and "'fine'" not in message
        assert not (tmp_path / "run").exists() or list((tmp_path / "run").iterdir()) == []

    def test_name_collisions_are_reported(self, tmp_path):
        with pytest.raises(InvalidStateError, match="'a/b'"):
            ckpt.save({"a": {"b": np.ones(1)}, "a/b": np.zeros(1)}, tmp_path / "ck", sync=False)
        assert list(tmp_path.iterdir()) == []

    def test_names_that_cannot_be_stored(self, tmp_path):
        with pytest.raises(InvalidStateError) as exc_info:
            ckpt.save({"\x00lead": np.ones(1), "\ud800lone": np.ones(1), "x": {1}}, tmp_path / "ck", sync=False)
        message = str(exc_info.value)
        assert "'\\x00lead'" in message and "'\\ud800lone'" in message and "'x'" in message
        assert list(tmp_path.iterdir()) == []

    def test_metadata_round_trips(self, tmp_path):
        metadata = {"lr": 0.001, "epochs": [1, 2, 3], "note": "ünïcode", "nested": {"ok": True, "none": None}}
        prefix = ckpt.save(small_state(), tmp_path / "ck", metadata=metadata, sync=False)
        with ckpt.Reader(prefix) as reader:
            assert reader.metadata == metadata
            assert reader.keys() == ["layer/b", "layer/w", "step"]  # the metadata tensor is hidden
            assert "_CKPT_METADATA" not in reader
        assert ckpt.Reader(DATA / "tf1_adam").metadata == {}

    def test_metadata_must_be_json(self, tmp_path):
        with pytest.raises(InvalidStateError, match="JSON"):
            ckpt.save(small_state(), tmp_path / "ck", metadata={"f": object()}, sync=False)
        assert list(tmp_path.iterdir()) == []

    def test_failed_validation_changes_nothing(self, tmp_path):
        ckpt.save(small_state(1), tmp_path / "ck", step=1, sync=False)
        before = snapshot(tmp_path)
        with pytest.raises(InvalidStateError):
            ckpt.save({"good": np.ones(4), "bad": {1}}, tmp_path / "ck", step=2, sync=False)
        with pytest.raises(InvalidStateError):
            ckpt.save({"bad": {1}}, tmp_path / "ck", step=1, sync=False)  # same prefix as the old one
        assert snapshot(tmp_path) == before

    @pytest.mark.parametrize("num_shards", [1, 3])
    def test_failure_mid_write_leaves_no_files(self, tmp_path, monkeypatch, num_shards):
        ckpt.save(small_state(1), tmp_path / "ck", step=1, sync=False)
        before = snapshot(tmp_path)
        real_write, real_append = workers._Shard.write, workers._Shard.append_small
        calls = []

        def failing(real):
            def write(self, data, *rest):
                calls.append(len(memoryview(data).cast("B")))
                if len(calls) > 1:
                    raise OSError(28, "No space left on device")
                return real(self, data, *rest)
            return write

        monkeypatch.setattr(workers._Shard, "write", failing(real_write))
        monkeypatch.setattr(workers._Shard, "append_small", failing(real_append))
        big = {f"t{i}": np.full(100, i, np.float32) for i in range(5)}
        for prefix, step in ((tmp_path / "ck", 2), (tmp_path / "ck", 1)):  # a new and an existing checkpoint
            calls.clear()
            with pytest.raises(OSError, match="No space left"):
                ckpt.save(big, prefix, step=step, sync=False, num_shards=num_shards)
            assert len(calls) == 2
            assert snapshot(tmp_path) == before, "files were added, removed or changed"
        monkeypatch.undo()
        assert ckpt.latest(tmp_path) == str(tmp_path / "ck-1")
        assert ckpt.load(tmp_path / "ck-1", flat=True)["step"] == 1


# ============================================================================================ load


class TestLoad:
    def test_nested_and_flat(self, tmp_path):
        state = small_state(3)
        prefix = ckpt.save(state, tmp_path / "ck", sync=False)
        nested = ckpt.load(prefix)
        assert set(nested) == {"layer", "step"} and set(nested["layer"]) == {"w", "b"}
        assert nested["layer"]["w"].tolist() == state["layer"]["w"].tolist()
        assert nested["layer"]["w"].dtype == np.float32
        assert nested["step"] == 3
        flat = ckpt.load(prefix, flat=True)
        assert set(flat) == {"layer/w", "layer/b", "step"}
        assert all(isinstance(v, np.ndarray) for v in flat.values())
        assert flat["layer/b"].flags.writeable

    def test_load_by_directory(self, tmp_path):
        ckpt.save(small_state(1), tmp_path / "ck", step=1, sync=False)
        ckpt.save(small_state(2), tmp_path / "ck", step=2, sync=False)
        assert ckpt.load(tmp_path)["step"] == 2

    def test_numpy_arrays_sharing_memory_are_stored_once(self, tmp_path):
        base = np.arange(12, dtype=np.float32)
        frame = np.frombuffer(bytearray(base.tobytes()), dtype=np.float32)
        state = {"a": base, "same": base, "view": base[:], "tail1": base[4:], "tail2": base[4:],
                 "reshaped": base.reshape(3, 4), "f1": frame[2:], "f2": frame[2:], "other": base.copy()}
        prefix = ckpt.save(state, tmp_path / "tied", sync=False)
        with ckpt.Reader(prefix) as r:
            # one tensor per distinct (memory, layout); the reshaped view has another shape, the copy other memory
            assert r.keys() == ["a", "f1", "other", "reshaped", "tail1"]
        loaded = ckpt.load(prefix)
        for name, value in state.items():
            np.testing.assert_array_equal(loaded[name], value, err_msg=name)
        target = {name: np.zeros_like(value) for name, value in state.items()}
        target["view"] = target["a"][:]  # tied in the target as in the saved state
        target["same"] = target["a"]
        restored = ckpt.restore(prefix, target)
        np.testing.assert_array_equal(restored["view"], base)

    def test_tensorflow_checkpoint_nests_by_slash(self):
        loaded = ckpt.load(DATA / "tf1_saver")
        assert set(loaded) == {"alpha", "beta", "global_step"}
        sharded = ckpt.load(DATA / "tf1_sharded")
        assert sharded["dev0"]["strings"].tolist() == [b"ab", b"", b"cde"]
        assert sharded["part"]["w"].shape == (5, 3)

    def test_tf1_adam_needs_flat(self):
        with pytest.raises(CheckpointError) as exc_info:
            ckpt.load(DATA / "tf1_adam")
        message = str(exc_info.value)
        assert "flat=True" in message and "both a tensor and a scope" in message
        assert "model.ckpt-3" in message
        flat = ckpt.load(DATA / "tf1_adam", flat=True)
        assert len(flat) == 12
        assert flat["zeta/Adam"].shape == () and flat["conv_layer_1/W_conv_1/Adam_1"].shape == (2, 2, 1, 2)
        assert flat["global_step"] == 3


def test_import_does_not_import_frameworks(tmp_path):
    code = (
        "import sys, numpy as np, ckpt\n"
        "heavy = [m for m in ('torch', 'jax', 'tensorflow', 'keras') if m in sys.modules]\n"
        f"p = ckpt.save({{'w': np.ones(3)}}, {str(tmp_path / 'ck')!r}, sync=False)\n"
        "ckpt.load(p); ckpt.Reader(p).keys()\n"
        "heavy += [m for m in ('torch', 'jax', 'tensorflow', 'keras') if m in sys.modules and m not in heavy]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout
