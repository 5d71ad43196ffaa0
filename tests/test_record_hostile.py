"""Hostile ckpt records (the ``_CKPT_METADATA`` tensor): bounded before parsing, validated before any target is
touched, and a manager falls back past them (issue 13, items 6 and 7)."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest

import ckpt
from ckpt import _json
from ckpt.cli.main import main
from ckpt.errors import CorruptCheckpointError, CorruptCheckpointWarning, InvalidStateError
from ckpt.tf.bundle import BundleReader, BundleWriter
from ckpt.reader import METADATA_KEY


def write_with_record(prefix, record: bytes | str, tensors=None) -> str:
    """A checkpoint whose data checksums are all correct but whose ckpt record is ``record``."""
    raw = record.encode("utf-8") if isinstance(record, str) else record
    with BundleWriter(str(prefix), sync=False) as writer:
        for name, value in (tensors or {"w": np.arange(3.0)}).items():
            writer.add(name, value)
        writer.add(METADATA_KEY, np.asarray(raw, dtype=object))
        writer.finish()
    return str(prefix)


def deep(n: int) -> str:
    return '{"user": ' + "[" * n + "]" * n + ', "format": 1}'


# ------------------------------------------------------------------------------------------- 6. depth and size


@pytest.mark.parametrize("n", [1_000, 100_000])
def test_deeply_nested_record_is_a_corrupt_checkpoint_everywhere(tmp_path, capsys, n):
    prefix = write_with_record(tmp_path / "deep", deep(n))
    calls = {
        "Reader.metadata": lambda: ckpt.Reader(prefix).metadata,
        "Reader.record": lambda: ckpt.Reader(prefix).record,
        "load": lambda: ckpt.load(prefix),
        "restore": lambda: ckpt.restore(prefix, {"w": np.zeros(3)}),
    }
    for what, call in calls.items():
        with pytest.raises(CorruptCheckpointError, match="nested .* levels deep") as info:
            call()
        assert prefix in str(info.value), what
        assert info.value.key == METADATA_KEY, what
    assert main(["inspect", prefix]) != 0
    assert "nested" in capsys.readouterr().err
    report = ckpt.verify(prefix)
    assert not report.ok and any("nested" in p.what for p in report.problems)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    metadata = {"note": "[" * 10_000 + "{" * 10_000, "escaped": '\\"[[[' * 1000}
    ckpt.save({"w": np.arange(3.0)}, tmp_path / "m", metadata=metadata)
    assert ckpt.Reader(tmp_path / "m").metadata == metadata


def test_depth_scan_counts_across_chunks():
    text = b"[" * 300 + b'"' + b"x" * (3 << 20) + b'"' + b"]" * 300
    assert _json.depth(text) == 300
    assert _json.depth(b'{"a": [1, {"b": "]]]]"}], "c": {}}') == 3
    assert _json.depth(b"") == 0


def test_record_at_the_depth_limit_loads_and_one_more_level_is_refused(tmp_path):
    def spec(levels: int) -> str:
        node = {"leaf": "w", "kind": "ndarray"}
        for _ in range(levels):
            node = {"list": [node]}
        return json.dumps({"tree": node, "format": 1})

    at_limit = spec(_json.MAX_DEPTH // 2 - 1)
    assert _json.depth(at_limit.encode()) == _json.MAX_DEPTH
    value = ckpt.load(write_with_record(tmp_path / "ok", at_limit))
    for _ in range(_json.MAX_DEPTH // 2 - 1):
        value = value[0]
    np.testing.assert_array_equal(value, np.arange(3.0))
    with pytest.raises(CorruptCheckpointError, match="nested 258 levels deep"):
        ckpt.load(write_with_record(tmp_path / "deeper", spec(_json.MAX_DEPTH // 2)))


def test_save_refuses_what_load_would_refuse_before_writing(tmp_path):
    metadata: list = []
    for _ in range(300):
        metadata = [metadata]
    with pytest.raises(InvalidStateError, match="nested too deeply"):
        ckpt.save({"w": np.zeros(2)}, tmp_path / "m", metadata={"deep": metadata})
    nested = np.zeros(2)
    for _ in range(100):  # a deep but legal tree (two JSON levels per list) still round-trips
        nested = [nested]
    ckpt.save({"w": nested}, tmp_path / "ok")
    assert list(tmp_path.iterdir()) and not (tmp_path / "m.index").exists()
    back = ckpt.load(tmp_path / "ok")["w"]
    for _ in range(100):
        back = back[0]
    np.testing.assert_array_equal(back, np.zeros(2))


def test_oversized_record_is_refused_before_it_is_read(tmp_path, monkeypatch):
    prefix = write_with_record(tmp_path / "big", json.dumps({"user": {"x": "y" * 5000}, "format": 1}))
    monkeypatch.setattr(_json, "MAX_BYTES", 1000)
    real = BundleReader.read_entry
    reads = []

    def read_entry(self, entry, *args, **kwargs):
        reads.append(entry.name)
        return real(self, entry, *args, **kwargs)

    monkeypatch.setattr(BundleReader, "read_entry", read_entry)
    with pytest.raises(CorruptCheckpointError, match="more than the 1000"):
        ckpt.Reader(prefix).record
    assert METADATA_KEY not in reads


def test_manager_restore_falls_back_past_a_bad_record(tmp_path):
    manager = ckpt.Manager(tmp_path, rng=False, sync=False)
    for step in (1, 2):
        manager.save(step, {"w": np.full(3, float(step))})
    # Step 2's data still verifies, but its record is hostile.
    for name in ("ckpt-2.index", "ckpt-2.data-00000-of-00001"):
        (tmp_path / name).unlink()
    write_with_record(tmp_path / "ckpt-2", deep(5000), {"w": np.full(3, 2.0)})
    target = {"w": np.zeros(3)}
    with pytest.warns(CorruptCheckpointWarning, match=r"ckpt-2 .*nested"):
        manager.restore(target)
    np.testing.assert_array_equal(target["w"], np.full(3, 1.0))
    again = ckpt.Manager(tmp_path, rng=False, sync=False)
    with pytest.warns(CorruptCheckpointWarning, match="ckpt-2"):
        assert again.restore_or_initialize(target) == 1
    with pytest.raises(CorruptCheckpointError, match="ckpt-2"):
        again.restore(target, step=2)  # an explicit step does not fall back


# --------------------------------------------------------------------------------- 7. the random state record


def _bad_rng_records(good: dict) -> dict[str, object]:
    return {
        "not an object": 5,
        "python gauss": dict(good, python=[3, good["python"][1], "x"]),
        "python words": dict(good, python=[3, [2**40] * 625, None]),
        "python shape": dict(good, python=[3, [1, 2]]),
        "numpy overflow": dict(good, numpy=["MT19937", [2**40] * 624, 0, 0, 0.0]),
        "numpy short": dict(good, numpy=["MT19937", [1] * 10, 0, 0, 0.0]),
        "numpy pos": dict(good, numpy=["MT19937", [1] * 624, 10**30, 0, 0.0]),
        "torch base64": dict(good, torch="!!not base64!!"),
        "torch size": dict(good, torch="AAAA"),
        "torch type": dict(good, torch=12),
        "cuda": dict(good, torch_cuda="AAAA"),
        "tensorflow overflow": dict(good, tensorflow={"state": [2**70, 0, 0], "algorithm": 1}),
        "tensorflow type": dict(good, tensorflow=[1, 2]),
    }


def test_bad_random_state_fails_before_any_target_is_touched(tmp_path):
    torch = pytest.importorskip("torch")
    ckpt.save({"w": np.arange(3.0), "net": torch.nn.Linear(2, 2)}, tmp_path / "good", rng=True)
    good_record = ckpt.Reader(tmp_path / "good").record
    assert {"python", "numpy", "torch"} <= set(good_record["rng"])
    tensors = {k: ckpt.Reader(tmp_path / "good")[k] for k in ckpt.Reader(tmp_path / "good").keys()}
    for what, rng_record in _bad_rng_records(good_record["rng"]).items():
        prefix = write_with_record(tmp_path / what.replace(" ", "_"), json.dumps(dict(good_record, rng=rng_record)),
                                   tensors)
        net = torch.nn.Linear(2, 2)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        target = {"w": np.full(3, -1.0), "net": net}
        random.seed(7)
        np.random.seed(7)
        torch.manual_seed(7)
        states = random.getstate(), np.random.get_state(), torch.get_rng_state().clone()
        with pytest.raises(CorruptCheckpointError, match="random state|not an object") as info:
            ckpt.restore(prefix, target)
        assert prefix in str(info.value) and "nothing was changed" in str(info.value), what
        np.testing.assert_array_equal(target["w"], np.full(3, -1.0), err_msg=what)
        for k, v in net.state_dict().items():
            assert torch.equal(v, before[k]), what
        assert random.getstate() == states[0], what
        assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), states[1])), what
        assert torch.equal(torch.get_rng_state(), states[2]), what
        ckpt.restore(prefix, target, rng=False)  # the tensors themselves are fine
        np.testing.assert_array_equal(target["w"], np.arange(3.0))


def test_good_random_state_is_still_put_back(tmp_path):
    random.seed(1)
    np.random.seed(1)
    ckpt.save({"w": np.zeros(2)}, tmp_path / "m", rng=True)
    expected = random.random(), np.random.random()
    ckpt.restore(tmp_path / "m", {"w": np.zeros(2)})
    assert (random.random(), np.random.random()) == expected


def test_manager_falls_back_past_a_bad_random_state(tmp_path):
    manager = ckpt.Manager(tmp_path, sync=False)  # rng=True by default
    for step in (1, 2):
        manager.save(step, {"w": np.full(3, float(step))})
    record = ckpt.Reader(tmp_path / "ckpt-2").record
    for name in ("ckpt-2.index", "ckpt-2.data-00000-of-00001"):
        (tmp_path / name).unlink()
    record["rng"]["numpy"][1] = [2**40] * 624
    write_with_record(tmp_path / "ckpt-2", json.dumps(record), {"w": np.full(3, 2.0)})
    target = {"w": np.zeros(3)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.restore(target)
    assert any(issubclass(w.category, CorruptCheckpointWarning) and "numpy random state" in str(w.message)
               for w in caught)
    np.testing.assert_array_equal(target["w"], np.full(3, 1.0))
