"""ckpt.Manager and ckpt.policies: retention, cadence, restarts, crash safety, and restoring through the manager."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckpt
from ckpt import api
from ckpt.policies import (CheckpointInfo, KeepAny, KeepBest, KeepContext, KeepEveryNHours, KeepEveryNSteps,
                           KeepLast, SaveAny, SaveContext, SaveEveryNSeconds, SaveEveryNSteps)

HOUR = 3600.0


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def infos(*steps, times=None, metrics=None):
    times = times or [float(s) for s in steps]
    metrics = metrics or [None] * len(steps)
    return [CheckpointInfo(s, f"ckpt-{s}", t, m) for s, t, m in zip(steps, times, metrics)]


def kept_steps(policy, checkpoints, **context):
    answer = policy.keep(checkpoints, context=KeepContext(now=context.pop("now", 0.0), **context))
    return [c.step for c, k in zip(checkpoints, answer) if k]


def state(value: float = 0.0):
    return {"w": np.full([2, 3], value, np.float32), "step": np.int64(value)}


def files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def manager(tmp_path, clock=None, **options):
    options.setdefault("sync", False)
    return ckpt.Manager(tmp_path, clock=clock or FakeClock(), **options)


# ============================================================================================== keep policies


@pytest.mark.parametrize("n, expected", [
    (None, [1, 2, 3, 4, 5]),
    (0, []),
    (1, [5]),
    (3, [3, 4, 5]),
    (10, [1, 2, 3, 4, 5]),
])
def test_keep_last(n, expected):
    assert kept_steps(KeepLast(n), infos(1, 2, 3, 4, 5)) == expected


def test_keep_last_empty():
    assert KeepLast(2).keep([], context=KeepContext(now=0)) == []


@pytest.mark.parametrize("n, steps, expected", [
    (1, [1, 2, 3], [1, 2, 3]),
    (3, [1, 2, 3, 4, 5, 6, 7], [3, 6]),
    (10, [0, 5, 10, 15, 20], [0, 10, 20]),
    (4, [1, 2, 3], []),
])
def test_keep_every_n_steps(n, steps, expected):
    assert kept_steps(KeepEveryNSteps(n), infos(*steps)) == expected


LOSSES = [{"loss": 0.5}, {"loss": 0.2}, None, {"acc": 1.0}, {"loss": 0.9}, {"loss": 0.1}, {"loss": float("nan")}]


@pytest.mark.parametrize("mode, n, expected", [
    ("min", 1, [6]),
    ("min", 2, [2, 6]),
    ("min", 3, [1, 2, 6]),
    ("max", 1, [5]),
    ("max", 2, [1, 5]),
    ("min", 10, [1, 2, 5, 6]),  # without the metric (3, 4) or NaN (7): never candidates
])
def test_keep_best(mode, n, expected):
    assert kept_steps(KeepBest("loss", mode, n), infos(1, 2, 3, 4, 5, 6, 7, metrics=LOSSES)) == expected


def test_keep_best_tie_prefers_newer():
    checkpoints = infos(1, 2, 3, metrics=[{"loss": 1.0}, {"loss": 1.0}, {"loss": 2.0}])
    assert kept_steps(KeepBest("loss", "min", 1), checkpoints) == [2]
    assert kept_steps(KeepBest("loss", "max", 2), checkpoints) == [2, 3]


# TensorFlow 2's documented example: saves every 0.4 h (and one at 3.5 h), one preserved per hour, counting from the
# manager's construction at t = 0 minus one second.
TF_TIMES = [h * HOUR for h in (0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 3.5)]


@pytest.mark.parametrize("hours, times, last_preserved, preserved, expected", [
    (1, TF_TIMES, -1.0, frozenset(), [4, 7, 8]),
    (1, TF_TIMES[:5], -1.0, frozenset(), [4]),
    (1, TF_TIMES, 1.2 * HOUR, frozenset({4}), [4, 7, 8]),  # the same, continued from a record
    (1, TF_TIMES, 0.0, frozenset(), [4, 7, 8]),
    (1, TF_TIMES, -HOUR, frozenset(), [1, 4, 7, 8]),  # history began an hour before the first save
    (2, TF_TIMES, -1.0, frozenset(), [6]),  # 2.0 h is 2 h after -1 s; 3.5 h is not 2 h after 2.0 h
    (1, TF_TIMES, 3 * HOUR, frozenset({2}), [2]),  # already preserved stays; nothing new is an hour past 3 h
    (0.5, [0.0, 0.2 * HOUR, 0.6 * HOUR, 0.7 * HOUR, 1.1 * HOUR], -1.0, frozenset(), [3, 5]),
])
def test_keep_every_n_hours(hours, times, last_preserved, preserved, expected):
    checkpoints = infos(*range(1, len(times) + 1), times=times)
    policy = KeepEveryNHours(hours)
    context = KeepContext(now=times[-1], last_preserved=last_preserved, preserved=preserved)
    assert [c.step for c, k in zip(checkpoints, policy.keep(checkpoints, context=context)) if k] == expected
    assert policy.preserve(checkpoints, context=context) == policy.keep(checkpoints, context=context)


def test_keep_any_is_a_union_and_forwards_preservation():
    checkpoints = infos(*range(1, 9), times=TF_TIMES, metrics=[{"loss": 8 - i} for i in range(8)])
    checkpoints[0] = CheckpointInfo(1, "ckpt-1", 0.0, {"loss": -1.0})
    policy = KeepAny([KeepLast(2), KeepEveryNSteps(3), KeepEveryNHours(1), KeepBest("loss", "min", 1)])
    assert isinstance(policy.policies, tuple)
    context = KeepContext(now=0, last_preserved=-1.0)
    assert kept_steps(policy, checkpoints, last_preserved=-1.0) == [1, 3, 4, 6, 7, 8]
    assert [c.step for c, p in zip(checkpoints, policy.preserve(checkpoints, context=context)) if p] == [4, 7, 8]
    assert KeepAny([]).keep(checkpoints, context=context) == [False] * 8


def test_keep_any_rejects_a_wrong_answer_length():
    class Broken:
        def keep(self, checkpoints, *, context):
            return [True]

    with pytest.raises(ValueError, match="answered for 1 checkpoints instead of 3"):
        KeepAny([Broken()]).keep(infos(1, 2, 3), context=KeepContext(now=0))
    with pytest.raises(TypeError, match="not a keep policy"):
        KeepAny([SaveEveryNSteps(2)])


@pytest.mark.parametrize("make, message", [
    (lambda: KeepLast(-1), "KeepLast.n"),
    (lambda: KeepLast(1.5), "KeepLast.n"),
    (lambda: KeepEveryNSteps(0), "KeepEveryNSteps.n"),
    (lambda: KeepEveryNHours(0), "KeepEveryNHours.hours"),
    (lambda: KeepEveryNHours(float("nan")), "KeepEveryNHours.hours"),
    (lambda: KeepBest("loss", "median", 1), "KeepBest.mode"),
    (lambda: KeepBest("", "min", 1), "KeepBest.metric"),
    (lambda: KeepBest("loss", "min", 0), "KeepBest.n"),
    (lambda: SaveEveryNSteps(0), "SaveEveryNSteps.n"),
    (lambda: SaveEveryNSeconds(-1), "SaveEveryNSeconds.secs"),
])
def test_policy_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_policies_are_frozen_and_hashable():
    policy = KeepBest("loss", "min", 2)
    with pytest.raises(AttributeError):
        policy.n = 3  # type: ignore[misc]
    assert policy == KeepBest("loss", "min", 2) and hash(policy) == hash(KeepBest("loss", "min", 2))
    assert hash(CheckpointInfo(1, "p", 0.0, {"loss": 1.0})) == hash(CheckpointInfo(1, "p", 0.0, {"loss": 2.0}))


# ============================================================================================== save policies


@pytest.mark.parametrize("policy, step, history, now, expected", [
    (SaveEveryNSteps(5), 0, [], 0.0, True),  # first save always
    (SaveEveryNSteps(5), 4, [0], 0.0, False),
    (SaveEveryNSteps(5), 5, [0], 0.0, True),
    (SaveEveryNSteps(5), 12, [0, 5, 10], 0.0, False),
    (SaveEveryNSteps(5), 15, [0, 5, 10], 0.0, True),
    (SaveEveryNSeconds(60), 1, [], 0.0, True),
    (SaveEveryNSeconds(60), 2, [1], 60.9, False),  # history times equal the steps here: last save at t = 1
    (SaveEveryNSeconds(60), 2, [1], 61.0, True),
    (SaveAny([SaveEveryNSteps(10), SaveEveryNSeconds(60)]), 3, [1], 10.0, False),
    (SaveAny([SaveEveryNSteps(10), SaveEveryNSeconds(60)]), 3, [1], 61.0, True),
    (SaveAny([SaveEveryNSteps(10), SaveEveryNSeconds(60)]), 11, [1], 10.0, True),
    (SaveAny([]), 11, [], 10.0, False),
])
def test_save_policies(policy, step, history, now, expected):
    assert policy.should_save(step, infos(*history), context=SaveContext(now=now)) is expected


def test_save_every_n_steps_counts_from_the_most_recent_save():
    # Saved step 10 first, then (after restoring an older state) step 3: the last save is step 3.
    history = [CheckpointInfo(3, "ckpt-3", 20.0), CheckpointInfo(10, "ckpt-10", 10.0)]
    assert SaveEveryNSteps(5).should_save(8, history, context=SaveContext(now=30.0))


# ============================================================================================== retention on disk


def test_max_to_keep(tmp_path):
    m = manager(tmp_path, max_to_keep=3)
    for step in range(1, 8):
        assert m.save(step, state(step)) == os.path.join(str(tmp_path), f"ckpt-{step}")
    assert m.all_steps() == [5, 6, 7]
    assert [f for f in files(tmp_path) if f.startswith("ckpt-")] == [
        "ckpt-5.data-00000-of-00001", "ckpt-5.index", "ckpt-6.data-00000-of-00001", "ckpt-6.index",
        "ckpt-7.data-00000-of-00001", "ckpt-7.index"]


def test_default_keeps_five_and_none_keeps_all(tmp_path):
    a = manager(tmp_path / "a")
    b = manager(tmp_path / "b", max_to_keep=None)
    for step in range(10):
        a.save(step, state())
        b.save(step, state())
    assert a.all_steps() == [5, 6, 7, 8, 9]
    assert b.all_steps() == list(range(10))


def test_keep_every_n_hours_tf2_example(tmp_path):
    clock = FakeClock(0.0)
    m = manager(tmp_path, clock=clock, max_to_keep=2, keep_every_n_hours=1)
    survivors = []
    for step, t in enumerate(TF_TIMES, start=1):
        clock.t = t
        m.save(step, state(step))
        survivors.append(m.all_steps())
    # As TensorFlow 2's CheckpointManager: ckpt-4 (1.2 h >= -1 s + 1 h) is preserved; 5 and 6 are under an hour
    # after it; 7 (2.4 h) is an hour after 4, and 8 (3.5 h) an hour after 7.
    assert survivors == [[1], [1, 2], [2, 3], [3, 4], [4, 5], [4, 5, 6], [4, 6, 7], [4, 7, 8]]
    assert sorted(f for f in files(tmp_path) if f.endswith(".index")) == ["ckpt-4.index", "ckpt-7.index",
                                                                          "ckpt-8.index"]
    record = json.loads((tmp_path / "ckpt.manager.json").read_text())
    assert [c["step"] for c in record["checkpoints"] if c["preserved"]] == [4, 7, 8]
    assert record["last_preserved"] == 3.5 * HOUR


def _tf2_reference(times, max_to_keep, hours, constructed_at):
    """TensorFlow 2 CheckpointManager's retention, as docs/format.md section 3 describes it (decide when popped)."""
    last_preserved = constructed_at - 1.0
    managed, on_disk = [], set()
    for step, t in enumerate(times, start=1):
        managed.append((step, t))
        on_disk.add(step)
        while len(managed) > max_to_keep:
            popped, stamp = managed.pop(0)
            if stamp - hours * HOUR >= last_preserved:
                last_preserved = stamp
            else:
                on_disk.discard(popped)
    return sorted(on_disk)


@settings(max_examples=25, deadline=None)
@given(gaps=st.lists(st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0, 1.5]), min_size=1, max_size=9),
       max_to_keep=st.integers(1, 3), hours=st.sampled_from([0.5, 1.0, 2.0]), start=st.sampled_from([0.0, -0.7]))
def test_keep_every_n_hours_matches_tensorflow(gaps, max_to_keep, hours, start):
    times = list(np.cumsum(gaps) * HOUR)
    clock = FakeClock(start * HOUR)
    with tempfile.TemporaryDirectory() as directory:
        m = ckpt.Manager(directory, clock=clock, sync=False, max_to_keep=max_to_keep, keep_every_n_hours=hours,
                         rng=False)
        for step, t in enumerate(times, start=1):
            clock.t = float(t)
            m.save(step, {"x": np.zeros(1)})
        assert m.all_steps() == _tf2_reference(times, max_to_keep, hours, start * HOUR)


def test_manager_keeps_every_n_steps(tmp_path):
    m = manager(tmp_path, max_to_keep=2, keep_every_n_steps=3)
    for step in range(1, 11):
        m.save(step, state())
    assert m.all_steps() == [3, 6, 9, 10]


def test_keep_best_min(tmp_path):
    m = manager(tmp_path, max_to_keep=1, best_metric="loss", keep_best=2)
    losses = {1: 0.9, 2: 0.3, 3: 0.5, 4: 0.1, 5: 0.8, 6: 0.7}
    for step, loss in losses.items():
        m.save(step, state(), metrics={"loss": loss})
    assert m.all_steps() == [2, 4, 6]
    assert m.best == os.path.join(str(tmp_path), "ckpt-4")
    assert m.checkpoints[1].metrics == {"loss": 0.1}


def test_keep_best_max_and_checkpoints_without_the_metric(tmp_path):
    m = manager(tmp_path, max_to_keep=1, best_metric="acc", best_mode="max", keep_best=1)
    m.save(1, state(), metrics={"acc": 0.7})
    m.save(2, state())  # no metrics: not a candidate, deleted once it is not the newest
    m.save(3, state(), metrics={"loss": 1.0})
    m.save(4, state(), metrics={"acc": 0.6})
    assert m.all_steps() == [1, 4]
    m.save(5, state(), metrics={"acc": np.float32(0.75)})
    assert m.all_steps() == [5]
    assert m.best.endswith("ckpt-5")


def test_best_without_keep_best(tmp_path):
    m = manager(tmp_path, max_to_keep=3, best_metric="loss")
    assert m.best is None
    for step, loss in enumerate([3.0, 1.0, 2.0, float("nan"), 5.0], start=1):
        m.save(step, state(), metrics={"loss": loss})
    assert m.all_steps() == [3, 4, 5]
    assert m.best.endswith("ckpt-3")  # best among what is left; NaN is never best
    assert manager(tmp_path / "x").best is None  # no best_metric


def test_combined_policies(tmp_path):
    clock = FakeClock()
    m = manager(tmp_path, clock=clock, max_to_keep=2, keep_every_n_steps=5, best_metric="loss", keep_best=1,
                keep_every_n_hours=1)
    for step in range(1, 13):
        clock.t = step * 0.25 * HOUR
        m.save(step, state(), metrics={"loss": abs(step - 7) + 0.5})
    # newest 2: 11, 12; multiples of 5: 5, 10; best loss: 7; every hour (from -1 s): 4 (1 h), 8 (2 h), 12 (3 h).
    assert m.all_steps() == [4, 5, 7, 8, 10, 11, 12]


def test_explicit_keep_policy(tmp_path):
    m = manager(tmp_path, keep=KeepAny([KeepLast(1), KeepBest("loss", "max", 1)]))
    for step, loss in enumerate([5.0, 9.0, 1.0, 2.0], start=1):
        m.save(step, state(), metrics={"loss": loss})
    assert m.all_steps() == [2, 4]


def test_newest_is_never_deleted(tmp_path):
    m = manager(tmp_path, keep=KeepEveryNSteps(10))
    for step in range(1, 4):
        m.save(step, state())
    assert m.all_steps() == [3]


def test_saving_an_older_step_makes_it_the_latest(tmp_path):
    m = manager(tmp_path, max_to_keep=2)
    m.save(5, state())
    m.save(6, state())
    m.save(3, state())  # e.g. after restoring an older checkpoint: the most recently committed is the newest
    assert m.all_steps() == [3, 6]  # the two most recently committed
    assert [c.step for c in m.checkpoints] == [6, 3] and m.latest_step == 3
    m.save(7, state())
    assert [c.step for c in m.checkpoints] == [3, 7]


def test_explicit_save_policy(tmp_path):
    m = manager(tmp_path, save_policy=SaveEveryNSteps(2))
    assert [s for s in range(6) if m.save(s, state())] == [0, 2, 4]


def test_options_are_translated_into_policies(tmp_path):
    m = manager(tmp_path, max_to_keep=3, keep_every_n_hours=2, keep_every_n_steps=100, best_metric="loss",
                best_mode="max", keep_best=2, save_interval_steps=10, save_interval_secs=60)
    assert m.keep_policy == KeepAny((KeepLast(3), KeepEveryNHours(2), KeepEveryNSteps(100),
                                     KeepBest("loss", "max", 2)))
    assert m.save_policy == SaveAny((SaveEveryNSteps(10), SaveEveryNSeconds(60)))
    plain = manager(tmp_path)
    assert plain.keep_policy == KeepLast(5) and plain.save_policy is None


@pytest.mark.parametrize("options, message", [
    ({"max_to_keep": 0}, "`max_to_keep` must be an int >= 1, or None"),
    ({"keep_best": 2}, "`keep_best` needs `best_metric`"),
    ({"best_mode": "median"}, "`best_mode`"),
    ({"keep_every_n_hours": -1}, "`keep_every_n_hours` must be a positive number"),
    ({"keep_every_n_steps": 0}, "`keep_every_n_steps` must be an int >= 1"),
    ({"save_interval_steps": 0}, "`save_interval_steps`"),
    ({"keep": KeepLast(1), "keep_every_n_steps": 3}, "`keep` replaces the retention options; drop keep_every_n"),
    ({"save_policy": SaveEveryNSteps(2), "save_interval_secs": 3}, "`save_policy` replaces"),
    ({"name": "a/b"}, "`name`"),
    ({"name": ""}, "`name`"),
])
def test_manager_option_validation(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        manager(tmp_path, **options)


# ============================================================================================== cadence


def test_save_interval_steps(tmp_path):
    m = manager(tmp_path, save_interval_steps=3)
    saved = [step for step in range(1, 11) if m.save(step, state()) is not None]
    assert saved == [1, 4, 7, 10]
    assert not m.should_save(12) and m.should_save(13)
    assert m.save(11, state(), force=True) is not None
    assert m.all_steps() == [1, 4, 7, 10, 11]
    assert not m.should_save(11)  # already saved


def test_save_interval_secs(tmp_path):
    clock = FakeClock(100.0)
    m = manager(tmp_path, clock=clock, save_interval_secs=60)
    saved = []
    for step in range(1, 11):
        clock.t = 100.0 + 25 * step
        if m.save(step, state()):
            saved.append(step)
    assert saved == [1, 4, 7, 10]  # t = 125, 200, 275, 350


def test_save_intervals_combined(tmp_path):
    clock = FakeClock()
    m = manager(tmp_path, clock=clock, save_interval_steps=5, save_interval_secs=100)
    saved = []
    for step, t in [(1, 0), (2, 100), (3, 150), (6, 160), (7, 170), (8, 300)]:
        clock.t = t
        if m.save(step, state()):
            saved.append(step)
    assert saved == [1, 2, 7, 8]


def test_existing_step_raises_and_force_replaces(tmp_path):
    clock = FakeClock(10.0)
    m = manager(tmp_path, clock=clock)
    m.save(1, state(1.0), metrics={"loss": 1.0})
    with pytest.raises(ckpt.CheckpointError, match="step 1 is already saved.*force=True"):
        m.save(1, state(2.0))
    clock.t = 20.0
    m.save(1, state(2.0), metrics={"loss": 0.5}, force=True)
    assert m.checkpoints == [ckpt.CheckpointInfo(1, os.path.join(str(tmp_path), "ckpt-1"), 20.0, {"loss": 0.5})]
    assert float(ckpt.load(m.latest)["w"][0, 0]) == 2.0
    assert [f for f in files(tmp_path) if ".tmp-" in f] == []


def test_refuses_to_overwrite_a_foreign_checkpoint(tmp_path):
    foreign = ckpt.save(state(7.0), tmp_path / "ckpt", step=3, sync=False)
    m = manager(tmp_path)
    assert m.all_steps() == []  # written by another tool: not adopted
    with pytest.raises(ckpt.CheckpointError, match="not written by this manager"):
        m.save(3, state())
    assert float(ckpt.load(foreign)["w"][0, 0]) == 7.0


# ============================================================================================== restarts


def test_new_manager_continues_retention(tmp_path):
    clock = FakeClock(0.0)
    first = manager(tmp_path, clock=clock, max_to_keep=2, keep_every_n_hours=1, best_metric="loss")
    for step, t in enumerate(TF_TIMES[:5], start=1):
        clock.t = t
        first.save(step, state(step), metrics={"loss": float(step)})
    assert first.all_steps() == [4, 5]
    first.close()
    # A new process: the preserved ckpt-4 and last_preserved come from the record, so the result is the same as
    # one manager doing all eight saves.
    second = manager(tmp_path, clock=clock, max_to_keep=2, keep_every_n_hours=1, best_metric="loss")
    assert second.all_steps() == [4, 5] and second.latest_step == 5
    assert second.checkpoints[0].metrics == {"loss": 4.0} and second.best.endswith("ckpt-4")
    for step, t in enumerate(TF_TIMES[5:], start=6):
        clock.t = t
        second.save(step, state(step))
    assert second.all_steps() == [4, 7, 8]
    # Preserved for ever, even for a manager with stricter options.
    third = manager(tmp_path, clock=clock, max_to_keep=1)
    clock.t = 4 * HOUR
    third.save(9, state())
    assert third.all_steps() == [4, 7, 8, 9]
    third.save(10, state())
    assert third.all_steps() == [4, 7, 8, 10]


def test_restart_in_a_new_process(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, ckpt
        directory, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        m = ckpt.Manager(directory, max_to_keep=2, keep_every_n_steps=4, sync=False, clock=lambda: 1000.0)
        for step in range(first, last + 1):
            m.save(step, {"w": np.full([3], step, np.float32)})
        print(",".join(map(str, m.all_steps())))
    """)

    def run(first, last):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(first), str(last)],
                             capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip()

    assert run(1, 5) == "4,5"
    assert run(6, 9) == "4,8,9"  # the second process deleted checkpoints the first one wrote
    m = manager(tmp_path)
    assert m.all_steps() == [4, 8, 9]
    assert ckpt.latest(tmp_path) == os.path.join(str(tmp_path), "ckpt-9")
    restored = m.restore({"w": np.zeros([3], np.float32)}, step=8)
    np.testing.assert_array_equal(restored["w"], np.full([3], 8, np.float32))


def test_record_entry_deleted_by_hand_is_dropped(tmp_path):
    m = manager(tmp_path, max_to_keep=None)
    for step in (1, 2, 3):
        m.save(step, state())
    os.unlink(tmp_path / "ckpt-2.index")  # a user deletes a checkpoint by hand (the data file is left)
    again = manager(tmp_path, max_to_keep=None)
    assert again.all_steps() == [1, 3]
    assert "ckpt-2.data-00000-of-00001" not in files(tmp_path)
    record = json.loads((tmp_path / "ckpt.manager.json").read_text())
    assert [c["step"] for c in record["checkpoints"]] == [1, 3]
    # also noticed by a running manager before its next save
    os.unlink(tmp_path / "ckpt-1.index")
    again.save(4, state())
    assert again.all_steps() == [3, 4]


def test_unrecorded_checkpoint_of_this_manager_is_adopted(tmp_path, monkeypatch):
    """A crash after the checkpoint was written but before it was recorded: the next manager adopts it."""
    import ckpt.manager as manager_module

    m = manager(tmp_path, max_to_keep=2)
    m.save(1, state(1.0), metrics={"loss": 2.0})
    m.save(2, state(2.0))
    record_before = (tmp_path / "ckpt.manager.json").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(manager_module, "write_state", crash)
    # A crash runs no clean-up (an error that is raised rolls the save back: see tests/test_faults.py).
    monkeypatch.setattr(manager_module.Manager, "_roll_back", lambda self, step: None)
    with pytest.raises(OSError, match="disk full"):
        m.save(3, state(3.0), metrics={"loss": 1.0})
    monkeypatch.undo()
    before, after = (json.loads(r) for r in (record_before, (tmp_path / "ckpt.manager.json").read_bytes()))
    assert after.pop("unfinished") == [3]  # the crash came after the record said step 3 was being written
    assert after == before
    assert m.all_steps() == [1, 2]  # nothing older was deleted
    again = manager(tmp_path, max_to_keep=2)
    assert again.all_steps() == [1, 2, 3]
    assert again.checkpoints[-1].metrics == {"loss": 1.0}
    again.save(4, state())
    assert again.all_steps() == [3, 4]


# ============================================================================================== safety


def test_never_deletes_what_it_did_not_write(tmp_path):
    foreign = [ckpt.save(state(), tmp_path / "model.ckpt", step=5, sync=False),
               ckpt.save(state(), tmp_path / "ckpt", step=100, sync=False),  # same name, written by ckpt.save
               ckpt.save(state(), tmp_path / "ckpt-best", step=1, sync=False)]  # "ckpt-" + something else
    (tmp_path / "ckpt-best-2.data-00000-of-00001").write_bytes(b"not ours")
    (tmp_path / "model.ckpt-9.index.tmp-abcd").write_bytes(b"not ours")
    other = manager(tmp_path, name="other", max_to_keep=1)
    m = manager(tmp_path, max_to_keep=1)
    for step in range(1, 6):
        other.save(step, state())
        m.save(step, state())
    assert m.all_steps() == [5] and other.all_steps() == [5]
    for prefix in foreign + [os.path.join(str(tmp_path), "other-5")]:
        assert os.path.exists(prefix + ".index") and os.path.exists(prefix + ".data-00000-of-00001"), prefix
    assert (tmp_path / "ckpt-best-2.data-00000-of-00001").exists()
    assert (tmp_path / "model.ckpt-9.index.tmp-abcd").exists()
    assert (tmp_path / "other.manager.json").exists() and (tmp_path / "ckpt.manager.json").exists()
    # The state file belongs to whichever manager saved last.
    assert ckpt.latest(tmp_path) == os.path.join(str(tmp_path), "ckpt-5")


def test_deletion_only_after_commit(tmp_path, monkeypatch):
    m = manager(tmp_path, max_to_keep=2)
    m.save(1, state())
    m.save(2, state())
    before = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}

    def failing_write(state, prefix, **kwargs):
        # Leave what an interrupted writer leaves (temporary files), then fail.
        open(f"{prefix}.data-00000-of-00001.tmp-0000dead", "wb").close()
        open(f"{prefix}.index.tmp-0000dead", "wb").close()
        raise OSError("disk full")

    monkeypatch.setattr(api, "write_checkpoint", failing_write)
    with pytest.raises(OSError, match="disk full"):
        m.save(3, state())
    after = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}
    assert after == before  # nothing older deleted, no leftovers, record and state file unchanged
    assert m.all_steps() == [1, 2]
    monkeypatch.undo()
    m.save(3, state())
    assert m.all_steps() == [2, 3]


def test_leftovers_are_swept_at_start(tmp_path):
    m = manager(tmp_path)
    m.save(5, state())
    leftovers = ["ckpt-7.index.tmp-0000abcd", "ckpt-9.data-00000-of-00001.tmp-00001234",
                 "ckpt.manager.json.tmp-0000ffff"]
    # Not provably ours: another tool's data file without its index (e.g. half copied), temporary names that ckpt
    # does not generate, other names.
    kept = ["ckpt-8.data-00000-of-00001", "ckpt-7.index.tmp-abcd", "other-8.data-00000-of-00001",
            "ckpt-best-8.data-00000-of-00001", "checkpoint.tmp-0000", "notes.txt"]
    for name in leftovers + kept:
        (tmp_path / name).write_bytes(b"x")
    again = manager(tmp_path)
    assert again.all_steps() == [5]
    for name in leftovers:
        assert not (tmp_path / name).exists(), name
    for name in kept:
        assert (tmp_path / name).exists(), name
    # ... and before each save.
    (tmp_path / "ckpt-6.index.tmp-00000001").write_bytes(b"x")
    again.save(6, state())
    assert [f for f in files(tmp_path) if ".tmp-" in f] == ["checkpoint.tmp-0000", "ckpt-7.index.tmp-abcd"]


def test_record_file_is_valid_json_and_survives(tmp_path):
    clock = FakeClock(1_700_000_000.25)
    m = ckpt.Manager(tmp_path, clock=clock, max_to_keep=3, best_metric="loss")  # sync=True: the durable path
    m.save(1, state(), metrics={"loss": 0.5, "acc": float("nan"), "ppl": float("inf")})
    text = (tmp_path / "ckpt.manager.json").read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert record["name"] == "ckpt" and record["format"] == 1
    assert record["checkpoints"] == [{"step": 1, "prefix": "ckpt-1", "time": 1_700_000_000.25, "preserved": False,
                                      "metrics": {"loss": 0.5, "acc": "nan", "ppl": "inf"}}]
    again = manager(tmp_path)
    metrics = again.checkpoints[0].metrics
    assert metrics["loss"] == 0.5 and math.isnan(metrics["acc"]) and metrics["ppl"] == math.inf
    assert ckpt.Reader(m.latest).record["manager"] == {"name": "ckpt", "step": 1, "time": 1_700_000_000.25,
                                                       "metrics": {"loss": 0.5, "acc": "nan", "ppl": "inf"}}


def test_garbled_record_is_refused(tmp_path):
    (tmp_path / "ckpt.manager.json").write_text("{not json")
    with pytest.raises(ckpt.CorruptCheckpointError, match="not a valid manager record.*delete it"):
        manager(tmp_path)
    # A record naming other files is not trusted (deletion only ever targets name-step).
    (tmp_path / "ckpt.manager.json").write_text(json.dumps(
        {"format": 1, "name": "ckpt", "last_preserved": 0.0,
         "checkpoints": [{"step": 1, "prefix": "../important", "time": 0.0, "metrics": None, "preserved": False}]}))
    with pytest.raises(ckpt.CorruptCheckpointError, match="prefix"):
        manager(tmp_path)


def test_bad_metrics_are_refused_before_writing(tmp_path):
    m = manager(tmp_path)
    with pytest.raises(TypeError, match="'loss': str is not a number"):
        m.save(1, state(), metrics={"loss": "low"})
    assert files(tmp_path) == []


# ============================================================================================== state file


def test_state_file_is_tensorflow_compatible(tmp_path):
    clock = FakeClock(1000.0)
    m = manager(tmp_path, clock=clock, max_to_keep=3)
    for step in range(1, 6):
        clock.t = 1000.0 + step
        m.save(step * 10, state())
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "ckpt-50"\n'
        'all_model_checkpoint_paths: "ckpt-30"\n'
        'all_model_checkpoint_paths: "ckpt-40"\n'
        'all_model_checkpoint_paths: "ckpt-50"\n'
        "all_model_checkpoint_timestamps: 1003.0\n"
        "all_model_checkpoint_timestamps: 1004.0\n"
        "all_model_checkpoint_timestamps: 1005.0\n"
        "last_preserved_timestamp: 999.0\n")
    assert ckpt.latest(tmp_path) == m.latest == os.path.join(str(tmp_path), "ckpt-50")
    assert m.latest_step == 50


def test_delete(tmp_path):
    m = manager(tmp_path, max_to_keep=None)
    for step in (1, 2, 3):
        m.save(step, state())
    m.delete(3)
    assert m.all_steps() == [1, 2] and not (tmp_path / "ckpt-3.data-00000-of-00001").exists()
    assert ckpt.latest(tmp_path).endswith("ckpt-2")
    with pytest.raises(ckpt.CheckpointNotFoundError, match="no checkpoint at step 3"):
        m.delete(3)
    m.delete(1)
    m.delete(2)
    assert m.all_steps() == [] and m.latest is None
    assert not (tmp_path / "checkpoint").exists()  # it only pointed at deleted checkpoints
    assert files(tmp_path) == ["ckpt.manager.json"]


def test_close_and_context_manager(tmp_path):
    with manager(tmp_path) as m:
        m.save(1, state(1.0))
        m.wait()
    with pytest.raises(ckpt.CheckpointError, match="closed"):
        m.save(2, state())
    assert float(m.restore(state())["w"][0, 0]) == 1.0  # reading still works


# ============================================================================================== restoring


def test_restore_numpy(tmp_path):
    m = manager(tmp_path, max_to_keep=None)
    with pytest.raises(ckpt.CheckpointNotFoundError, match="no checkpoint named ckpt-<step>"):
        m.restore(state())
    initialised = []
    target = state(0.0)
    assert m.restore_or_initialize(target, lambda: initialised.append(True)) is None
    assert initialised == [True] and m.restored is None
    for step in (1, 2, 3):
        m.save(step, state(step))
    fresh = manager(tmp_path)
    target = state(0.0)
    assert fresh.restore_or_initialize(target, lambda: pytest.fail("must not initialise")) == 3
    np.testing.assert_array_equal(target["w"], np.full([2, 3], 3.0, np.float32))  # in place
    assert fresh.restored["step"] == 3
    older = fresh.restore(state(), step=2)
    np.testing.assert_array_equal(older["w"], np.full([2, 3], 2.0, np.float32))
    with pytest.raises(ckpt.CheckpointNotFoundError, match="no checkpoint at step 7"):
        fresh.restore(state(), step=7)
    report = fresh.restore({"w": np.zeros([2, 3], np.float32)}, strict=False)
    assert report.unexpected == ["step"]
    renamed = fresh.restore({"weights": np.zeros([2, 3], np.float32)}, map={"w": "weights"})
    assert float(renamed["weights"][1, 2]) == 3.0


def test_restore_rng(tmp_path):
    m = manager(tmp_path)
    np.random.seed(123)
    m.save(1, state())
    expected = np.random.rand(3)
    np.random.seed(999)
    m.restore(state())
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_restore_torch_model_and_optimizer(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    def make():
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        return net, torch.optim.Adam(net.parameters(), lr=0.01)

    net, opt = make()
    m = manager(tmp_path, max_to_keep=2)
    for step in range(1, 4):
        opt.zero_grad()
        net(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        m.save(step, {"model": net, "opt": opt}, metrics={"loss": 1.0 / step})
    expected_params = {k: v.clone() for k, v in net.state_dict().items()}
    expected_opt = opt.state_dict()

    net2, opt2 = make()
    assert manager(tmp_path).restore_or_initialize({"model": net2, "opt": opt2}) == 3
    for key, value in net2.state_dict().items():
        assert torch.equal(value, expected_params[key]), key
    restored_opt = opt2.state_dict()
    for index, slots in expected_opt["state"].items():
        for slot, value in slots.items():
            assert torch.equal(torch.as_tensor(restored_opt["state"][index][slot]), torch.as_tensor(value)), slot
    assert restored_opt["param_groups"][0]["lr"] == 0.01
    # the restored optimizer keeps training exactly like the original
    batch = torch.randn(5, 4)
    for model, optimizer in ((net, opt), (net2, opt2)):
        optimizer.zero_grad()
        model(batch).pow(2).sum().backward()
        optimizer.step()
    for (key, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(a, b), key


def test_restore_or_initialize_jax_keeps_restored_tree(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    m = manager(tmp_path)
    m.save(4, {"params": {"w": jnp.arange(3.0)}, "step": 4})
    fresh = manager(tmp_path)
    assert fresh.restore_or_initialize({"params": {"w": jnp.zeros(3)}, "step": 0}) == 4
    np.testing.assert_array_equal(np.asarray(fresh.restored["params"]["w"]), [0.0, 1.0, 2.0])
    assert fresh.restored["step"] == 4


# ============================================================================================== against TensorFlow


@pytest.mark.tf
def test_same_survivors_and_state_as_tensorflow(tmp_path, monkeypatch):
    """The TF2 example through the real ``tf.train.CheckpointManager`` (its clock faked) and through ours."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    import time as time_module

    clock = FakeClock(1000.0)
    monkeypatch.setattr(time_module, "time", clock)
    theirs = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(tmp_path / "tf"),
                                        max_to_keep=2, keep_checkpoint_every_n_hours=1)
    ours = manager(tmp_path / "ours", clock=clock, max_to_keep=2, keep_every_n_hours=1)
    for step, t in enumerate(TF_TIMES, start=1):
        clock.t = 1000.0 + t
        theirs.save()
        ours.save(step, {"v": np.float32(step)})
    monkeypatch.undo()
    assert sorted(f for f in files(tmp_path / "tf") if f.endswith(".index")) == \
        sorted(f for f in files(tmp_path / "ours") if f.endswith(".index")) == \
        ["ckpt-4.index", "ckpt-7.index", "ckpt-8.index"]
    # TensorFlow reads our state file: newest last, relative paths resolved against the directory.
    assert tf.train.latest_checkpoint(str(tmp_path / "ours")) == ours.latest
    state = tf.train.get_checkpoint_state(str(tmp_path / "ours"))
    assert list(state.all_model_checkpoint_paths) == [os.path.join(str(tmp_path / "ours"), f"ckpt-{s}")
                                                      for s in (4, 7, 8)]
    assert tf.train.load_checkpoint(ours.latest).get_tensor("v") == 8.0
