"""Dict key types survive ``save`` -> ``load``; unrecordable keys are refused at save time."""

from __future__ import annotations

import collections
import os
import shutil

import numpy as np
import pytest

import ckpt
from ckpt.reader import METADATA_KEY

HERE = os.path.dirname(__file__)


def test_every_supported_key_type_comes_back(tmp_path):
    state = {
        0: np.arange(3, dtype=np.int32), 1: {"x": 1.5}, -7: "neg",
        True: "t", None: "none", 2.5: np.float32(1), float("inf"): 1, -0.5: [1],
        (1, "a", (2.0, None, False)): "tuple", (): "empty tuple", ("solo",): 2,
        "str": {10: {20: np.zeros(2)}},
    }
    ckpt.save(state, tmp_path / "c")
    loaded = ckpt.load(tmp_path / "c")
    assert list(loaded) == list(state)
    for saved_key, loaded_key in zip(state, loaded):
        assert type(saved_key) is type(loaded_key) and saved_key == loaded_key
    assert list(loaded["str"]) == [10] and list(loaded["str"][10]) == [20]
    assert loaded[(1, "a", (2.0, None, False))] == "tuple"
    # Names stay what TensorFlow and ckpt 0.1 used: str(key) for int keys.
    assert "str/10/20" in ckpt.Reader(tmp_path / "c").keys()
    assert "0" in ckpt.Reader(tmp_path / "c").keys()


def test_torch_optimizer_state_dict_keys_are_ints(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    ckpt.save({"optimizer": opt.state_dict()}, tmp_path / "c")
    loaded = ckpt.load(tmp_path / "c")["optimizer"]
    assert list(loaded["state"]) == [0, 1]
    assert loaded["param_groups"][0]["params"] == [0, 1]
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded["param_groups"][0]["foreach"] is None


def test_ordered_dict_comes_back_ordered(tmp_path):
    state = {"sd": collections.OrderedDict([("b", np.ones(1)), ("a", np.zeros(1))])}
    ckpt.save(state, tmp_path / "c")
    loaded = ckpt.load(tmp_path / "c")
    assert type(loaded["sd"]) is collections.OrderedDict and list(loaded["sd"]) == ["b", "a"]


@pytest.mark.parametrize("key", [b"bytes", frozenset({1}), float("nan"), (1, b"x"), np.int64(3), object()])
def test_unrecordable_key_is_refused_before_writing(tmp_path, key):
    with pytest.raises(ckpt.errors.InvalidStateError, match=r"key .* is a "):
        ckpt.save({"ok": np.ones(1), "sub": {key: np.ones(1)}}, tmp_path / "c")
    assert not os.listdir(tmp_path)


def test_int_and_str_key_of_the_same_name_collide_clearly(tmp_path):
    with pytest.raises(ckpt.errors.InvalidStateError, match="two values map to this name"):
        ckpt.save({1: np.ones(1), "1": np.zeros(1)}, tmp_path / "c")


def test_plain_str_dicts_still_write_no_record(tmp_path):
    ckpt.save({"a": {"b": np.ones(2, np.float32)}}, tmp_path / "c")
    with ckpt.Reader(tmp_path / "c") as r:
        assert r.record == {}
    assert METADATA_KEY.encode() not in (tmp_path / "c.index").read_bytes()


def test_int_keys_need_a_record(tmp_path):
    ckpt.save({0: np.ones(2, np.float32)}, tmp_path / "c")
    with ckpt.Reader(tmp_path / "c") as r:
        assert r.record["tree"]["keys"] == [0]


def test_checkpoint_of_ckpt_0_1_loads_as_before(tmp_path):
    """ckpt 0.1 recorded no key types: its int keys come back as the str keys it always gave."""
    shutil.copytree(os.path.join(HERE, "data", "ckpt01_int_keys"), tmp_path / "old")
    loaded = ckpt.load(tmp_path / "old")
    assert list(loaded["optimizer"]["state"]) == ["0", "1"]
    assert loaded["optimizer"]["param_groups"][0]["params"] == [0, 1]
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    np.testing.assert_array_equal(loaded["optimizer"]["state"]["0"]["exp_avg"], np.arange(3, dtype=np.float32))
    assert loaded["epoch"] == 3 and loaded["name"] == "run"
    # and it still restores into today's state by name
    into = {"optimizer": {"state": {0: {"exp_avg": np.zeros(3, np.float32), "step": np.float32(0)},
                                    1: {"exp_avg": np.zeros(2, np.float32), "step": np.float32(0)}},
                          "param_groups": [{"lr": 0.0, "params": [0, 0], "betas": (0.0, 0.0)}]},
            "epoch": 0, "name": ""}
    out = ckpt.restore(tmp_path / "old", into)
    assert out["epoch"] == 3 and list(out["optimizer"]["state"]) == [0, 1]
    np.testing.assert_array_equal(into["optimizer"]["state"][1]["exp_avg"], np.ones(2, np.float32))


def test_malformed_keys_in_record_are_a_clear_error(tmp_path):
    from ckpt import tree

    with pytest.raises(ValueError):
        tree.rebuild({"dict": [["a", {"none": True}]], "keys": [{"set": [1]}]}, lambda n: None)
    with pytest.raises(ValueError):
        tree.rebuild({"dict": [["a", {"none": True}]], "keys": []}, lambda n: None)
