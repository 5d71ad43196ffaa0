"""``ckpt.load(framework=...)``: what a trainer does, save state dicts, load them elsewhere, ``load_state_dict``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckpt

torch = pytest.importorskip("torch")


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _trained(steps: int):
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model, opt, x, y


def test_torch_state_dicts_load_straight_into_load_state_dict(tmp_path):
    model, opt, _, _ = _trained(3)
    ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "c")
    loaded = ckpt.load(tmp_path / "c", framework="torch")
    assert loaded["epoch"] == 3 and type(loaded["epoch"]) is int
    assert all(isinstance(v, torch.Tensor) for v in loaded["model"].values())
    model2 = _model()
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    assert len(opt2.state) == len(list(model2.parameters()))  # every moment is there
    for p, p2 in zip(model.parameters(), model2.parameters()):
        s, s2 = opt.state[p], opt2.state[p2]
        assert s2["step"].dtype == s["step"].dtype == torch.float32 and s2["step"].shape == ()
        assert torch.equal(s2["step"], s["step"])
        assert torch.equal(s2["exp_avg"], s["exp_avg"]) and torch.equal(s2["exp_avg_sq"], s["exp_avg_sq"])
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    assert model2[1].num_batches_tracked.dtype == torch.int64 and int(model2[1].num_batches_tracked) == 3


def test_torch_tensors_from_load_are_private_and_writable(tmp_path):
    ckpt.save({"w": torch.arange(4.0), "b": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "c")
    loaded = ckpt.load(tmp_path / "c", framework="torch")
    assert loaded["b"].dtype == torch.bfloat16
    loaded["w"] += 1  # a private copy: the file is untouched
    assert torch.equal(ckpt.load(tmp_path / "c", framework="torch")["w"], torch.arange(4.0))


def test_tied_tensors_come_back_as_one_tensor(tmp_path):
    shared = torch.arange(3.0)
    ckpt.save({"a": shared, "b": shared}, tmp_path / "c")
    loaded = ckpt.load(tmp_path / "c", framework="torch")
    assert loaded["a"] is loaded["b"]


def test_auto_gives_each_tensor_its_saved_framework(tmp_path):
    jax = pytest.importorskip("jax")
    state = {"t": torch.ones(2), "n": np.ones(2, np.float32), "j": jax.numpy.ones(3), "s": np.array(["x"], object),
             "scalar": np.float32(2), "py": 1.5}
    ckpt.save(state, tmp_path / "c")
    auto = ckpt.load(tmp_path / "c", framework="auto")
    assert isinstance(auto["t"], torch.Tensor) and type(auto["n"]) is np.ndarray
    assert isinstance(auto["j"], jax.Array) and auto["s"].dtype == object
    assert type(auto["scalar"]) is np.float32 and type(auto["py"]) is float
    as_jax = ckpt.load(tmp_path / "c", framework="jax")
    assert isinstance(as_jax["t"], jax.Array) and as_jax["t"].dtype == np.float32
    assert as_jax["s"].dtype == object  # JAX has no strings


def test_jax_refuses_to_narrow_64_bit_tensors(tmp_path):
    jax = pytest.importorskip("jax")
    if jax.config.jax_enable_x64:
        pytest.skip("x64 enabled: nothing narrows")
    ckpt.save({"d": np.arange(3, dtype=np.float64)}, tmp_path / "c")
    with pytest.raises(ckpt.UnsupportedError, match=r"'d'.*float64.*jax_enable_x64") as info:
        ckpt.load(tmp_path / "c", framework="jax")
    assert info.value.path == str(tmp_path / "c")


def test_torch_refuses_a_dtype_it_lacks(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ckpt.save({"q": np.zeros(4, ml_dtypes.int4)}, tmp_path / "c")
    with pytest.raises(ckpt.UnsupportedError, match="'q'.*int4"):
        ckpt.load(tmp_path / "c", framework="torch")


def test_foreign_checkpoints_and_flat_loads_convert_too(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file({"a.w": np.ones(2, np.float32)}, str(tmp_path / "m.safetensors"))
    assert isinstance(ckpt.load(tmp_path / "m.safetensors", framework="torch")["a.w"], torch.Tensor)
    ckpt.save({"x": {"y": np.ones(1)}}, tmp_path / "c")
    assert isinstance(ckpt.load(tmp_path / "c", flat=True, framework="torch")["x/y"], torch.Tensor)


def test_unknown_framework_is_refused(tmp_path):
    ckpt.save({"x": np.ones(1)}, tmp_path / "c")
    with pytest.raises(ValueError, match="framework must be one of"):
        ckpt.load(tmp_path / "c", framework="tf")


_RESUME = textwrap.dedent('''
    import sys
    import torch
    import ckpt
    sys.path.insert(0, sys.argv[3])
    from test_load_framework import _model

    loaded = ckpt.load(sys.argv[1], framework="torch")
    assert loaded["epoch"] == 3
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.5)  # the saved lr must win
    model.load_state_dict(loaded["model"])
    opt.load_state_dict(loaded["optimizer"])
    assert len(opt.state) == 6, "optimizer moments were dropped"
    torch.manual_seed(0)
    x, y = loaded["batch"]["x"], loaded["batch"]["y"]
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, sys.argv[2])
''')


def test_trainer_resume_in_a_new_process_is_bit_identical(tmp_path):
    model, opt, x, y = _trained(3)
    ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "batch": {"x": x, "y": y}},
              tmp_path / "saved")
    # the uninterrupted run takes one more step
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    script = tmp_path / "resume.py"
    script.write_text(_RESUME)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "saved"), str(tmp_path / "after"),
                           os.path.dirname(__file__)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = ckpt.load(tmp_path / "after", framework="torch")
    expected = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    assert list(after["model"]) == list(expected["model"])
    for key, value in expected["model"].items():
        assert after["model"][key].dtype == value.dtype
        assert after["model"][key].numpy().tobytes() == value.numpy().tobytes(), key
    assert list(after["optimizer"]["state"]) == list(expected["optimizer"]["state"])
    for index, slots in expected["optimizer"]["state"].items():
        for slot, value in slots.items():
            assert after["optimizer"]["state"][index][slot].numpy().tobytes() == value.numpy().tobytes()
    assert after["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
