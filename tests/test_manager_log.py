"""Manager(log_dir=...): each committed save logged as TensorBoard scalars; TensorBoard reads them."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ckpt
from ckpt.summary import read


def _scalars(logdir):
    out = {}
    for r in read(logdir):
        if r.kind == "scalar":
            out.setdefault(r.tag, []).append((r.step, r.value))
    return out


@pytest.mark.parametrize("async_save", [False, True])
def test_manager_logs_duration_bytes_and_best_metric(tmp_path, async_save):
    state = {"w": np.arange(1000, dtype=np.float32)}
    with ckpt.Manager(tmp_path, log_dir=True, best_metric="loss", keep_best=1, max_to_keep=2,
                      async_save=async_save) as m:
        for step, loss in [(1, 0.9), (2, 0.5), (3, 0.7)]:
            m.save(step, state, metrics={"loss": loss, "acc": 1 - loss})
    got = _scalars(tmp_path / "logs")
    assert got["ckpt/loss"] == [(1, pytest.approx(0.9)), (2, pytest.approx(0.5)), (3, pytest.approx(0.7))]
    assert [s for s, _ in got["ckpt/save_seconds"]] == [1, 2, 3]
    assert all(v >= 0 for _, v in got["ckpt/save_seconds"])
    sizes = dict(got["ckpt/save_bytes"])
    for step in (2, 3):  # still on disk: the logged size is the checkpoint's files
        on_disk = sum(e.stat().st_size for e in os.scandir(tmp_path) if e.name.startswith(f"ckpt-{step}."))
        assert sizes[step] == on_disk and on_disk > 4000
    assert "ckpt/acc" not in got
    assert m.all_steps() == [2, 3] and os.path.isdir(tmp_path / "logs")
    assert ckpt.Manager(tmp_path).all_steps() == [2, 3]  # the logs directory does not disturb the manager


def test_manager_log_dir_path_and_default_off(tmp_path):
    with ckpt.Manager(tmp_path / "a") as m:
        m.save(1, {"w": np.zeros(3)})
    assert not (tmp_path / "a" / "logs").exists()
    with ckpt.Manager(tmp_path / "b", log_dir=tmp_path / "tb") as m:
        m.save(5, {"w": np.zeros(3)})
        m.save(6, {"w": np.zeros(3)})
    assert [s for s, _ in _scalars(tmp_path / "tb")["ckpt/save_bytes"]] == [5, 6]


@pytest.mark.tf
def test_tensorboard_reads_the_manager_log(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    with ckpt.Manager(tmp_path, log_dir=True, best_metric="loss") as m:
        m.save(10, {"w": np.zeros(3)}, metrics={"loss": float("nan")})
    acc = ea.EventAccumulator(str(tmp_path / "logs"))
    acc.Reload()
    assert np.isnan(acc.Scalars("ckpt/loss")[0].value) and acc.Scalars("ckpt/save_bytes")[0].step == 10


def test_log_failure_does_not_fail_the_save(tmp_path):
    (tmp_path / "blocker").write_text("a file where the log directory should be")
    with ckpt.Manager(tmp_path / "run", log_dir=tmp_path / "blocker" / "logs") as m:
        with pytest.warns(RuntimeWarning, match="could not log"):
            assert m.save(1, {"w": np.zeros(3)}) is not None
    assert ckpt.Manager(tmp_path / "run").all_steps() == [1]
