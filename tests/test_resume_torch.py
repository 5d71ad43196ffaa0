"""Exact resume under a hard kill: a PyTorch run SIGKILLed at random points (also mid-save) and resumed with
ckpt.Manager ends with the same parameters, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ckpt

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

TOTAL_STEPS = 40

SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    import torch
    import ckpt
    import ckpt.tf._write_workers as bundle

    directory, total = sys.argv[1], int(sys.argv[2])
    die_on = os.environ.get("DIE_ON")  # "write:N" or "replace:N": SIGKILL ourselves inside a save
    if die_on:
        what, n = die_on.split(":")
        calls = {"n": 0}
        def dying(original):
            def wrapper(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == int(n):
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(*args, **kwargs)
            return wrapper
        if what == "write":
            bundle._Shard.write = dying(bundle._Shard.write)
        else:
            os.replace = dying(os.replace)

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    data = np.random.RandomState(0)
    features = data.randn(256, 8).astype(np.float32)
    x = torch.from_numpy(features)
    y = torch.from_numpy(features.dot(data.randn(8, 3).astype(np.float32)).argmax(1))
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    shuffle = torch.Generator().manual_seed(1)
    perm = torch.randperm(256, generator=shuffle)
    state = {"model": model, "optimizer": optimizer, "shuffle": shuffle, "perm": perm}

    manager = ckpt.Manager(directory, max_to_keep=3)
    start = manager.restore_or_initialize(state) or 0
    print(f"start {start}", flush=True)
    steps_per_epoch, batch = 8, 32
    for step in range(start, total):
        if step % steps_per_epoch == 0 and step:
            perm.copy_(torch.randperm(256, generator=shuffle))
        idx = perm[(step % steps_per_epoch) * batch:(step % steps_per_epoch + 1) * batch]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 3 == 0 or step + 1 == total:
            manager.save(step + 1, state)
        print(f"step {step + 1}", flush=True)
    ckpt.save(model, os.path.join(directory, "final", "model"), sync=False)
    print("done", flush=True)
''')


def _run(script: Path, directory: Path, *, kill_at_step: int | None = None, die_on: str | None = None) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if die_on:
        env["DIE_ON"] = die_on
    proc = subprocess.Popen([sys.executable, str(script), str(directory), str(TOTAL_STEPS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if kill_at_step is not None and line.strip() == f"step {kill_at_step}":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    if kill_at_step is None and die_on is None:
        assert proc.returncode == 0, proc.stderr.read()
    else:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.read())
    return "\n".join(lines)


def _final(directory: Path) -> dict[str, np.ndarray]:
    return ckpt.load(directory / "final", flat=True)


def test_sigkilled_run_resumes_bit_for_bit(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    reference = tmp_path / "reference"
    _run(script, reference)
    expected = _final(reference)

    run = tmp_path / "run"
    rng = np.random.RandomState(2024)
    kill_steps = sorted(rng.choice(np.arange(2, 14), size=2, replace=False).tolist())
    _run(script, run, kill_at_step=kill_steps[0])                  # killed between or right after saves
    _run(script, run, kill_at_step=kill_steps[1] + 10)
    _run(script, run, die_on="write:3")                            # killed while writing tensor data
    assert ckpt.latest(run) is not None and ckpt.Reader(ckpt.latest(run)).keys()
    _run(script, run, die_on="replace:2")                          # killed between the data and index renames
    assert ckpt.latest(run) is not None
    out = _run(script, run)                                        # resumes and finishes
    assert "done" in out and not out.startswith("start 0")
    got = _final(run)
    assert expected.keys() == got.keys()
    for name in expected:
        assert expected[name].tobytes() == got[name].tobytes(), name
    # No leftovers of the interrupted saves remain after the later saves swept them.
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
