"""Trainer integrations against the real trainers: a run killed mid-way and resumed through ckpt ends with the same
weights, bit for bit, as an uninterrupted run (CPU, deterministic, tiny models, each in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent / "trainers"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _child(script, *args, env=None, expect=0):
    full = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    proc = subprocess.run([sys.executable, str(HERE / script), *map(str, args)], env=full, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == expect, proc.stderr[-4000:]
    return proc


def _same(a, b):
    x, y = np.load(a), np.load(b)
    assert sorted(x.files) == sorted(y.files)
    for k in x.files:
        assert x[k].tobytes() == y[k].tobytes(), k


@pytest.mark.slow
def test_lightning_killed_and_resumed_matches_uninterrupted(tmp_path):
    pytest.importorskip("lightning")
    # the uninterrupted run saves through Lightning's AsyncCheckpointIO, the killed/resumed one through ckpt's
    _child("lightning_run.py", tmp_path / "a", tmp_path / "plain.npz", "plain", env={"ASYNC": "lightning"})
    assert sorted(os.listdir(tmp_path / "a")) == ["epoch=0-step=5.ckpt", "epoch=1-step=10.ckpt", "last.ckpt"]
    env = {"ASYNC": "ckpt"}
    _child("lightning_run.py", tmp_path / "b", tmp_path / "never.npz", "kill", env=env, expect=3)
    assert not (tmp_path / "never.npz").exists()
    assert sorted(os.listdir(tmp_path / "b")) == ["epoch=0-step=5.ckpt", "last.ckpt"]
    _child("lightning_run.py", tmp_path / "b", tmp_path / "resumed.npz", "resume", env=env)
    _same(tmp_path / "plain.npz", tmp_path / "resumed.npz")
    assert sorted(os.listdir(tmp_path / "b")) == ["epoch=0-step=5.ckpt", "epoch=1-step=10.ckpt", "last.ckpt"]
    # the files are ordinary checkpoints: TensorFlow's reader lists Lightning's state in them
    import ckpt

    names = ckpt.Reader(str(tmp_path / "b" / "last.ckpt" / "ckpt")).keys()
    assert any(n.startswith("state_dict/") for n in names) and any("optimizer_states" in n for n in names)


@pytest.mark.slow
def test_keras_killed_and_resumed_matches_uninterrupted(tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    _child("keras_run.py", tmp_path / "a", tmp_path / "plain.npz", "plain")
    _child("keras_run.py", tmp_path / "b", tmp_path / "never.npz", "kill", expect=3)
    import ckpt

    assert ckpt.Manager(tmp_path / "b").all_steps() == [5]  # the end of epoch 1 (5 batches)
    _child("keras_run.py", tmp_path / "b", tmp_path / "resumed.npz", "resume")
    _same(tmp_path / "plain.npz", tmp_path / "resumed.npz")
    assert int(np.load(tmp_path / "resumed.npz")["iterations"]) == 15


@pytest.mark.slow
def test_huggingface_trainer_killed_and_resumed_matches_uninterrupted(tmp_path):
    pytest.importorskip("transformers")
    _child("hf_run.py", tmp_path / "a", tmp_path / "plain.npz", "plain")
    _child("hf_run.py", tmp_path / "b", tmp_path / "never.npz", "kill", expect=3)
    checkpoint = tmp_path / "b" / "checkpoint-6"  # saved every 3 steps; killed at step 7, mid-epoch 2
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint-3", "checkpoint-6"]
    files = os.listdir(checkpoint)
    assert "ckpt.index" in files and "trainer_state.json" in files
    assert not {"optimizer.pt", "scheduler.pt", "rng_state.pth"} & set(files)
    _child("hf_run.py", tmp_path / "b", tmp_path / "resumed.npz", "resume")
    _same(tmp_path / "plain.npz", tmp_path / "resumed.npz")


def test_import_ckpt_imports_no_trainer():
    code = ("import sys, ckpt, ckpt.summary; "
            "bad = [m for m in ('lightning', 'transformers', 'accelerate', 'keras', 'tensorflow', 'torch', "
            "'tensorboardX', 'PIL') if m in sys.modules]; assert not bad, bad; "
            "assert ckpt.summary.SummaryWriter")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SRC})
