"""PyTorch state: modules, optimizers, schedulers, generators, tied weights, renaming and mismatch reports."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest

import ckpt

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    def __init__(self, hidden: int = 3) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, hidden)
        self.bn = torch.nn.BatchNorm1d(hidden)
        self.fc2 = torch.nn.Linear(hidden, 2)
        self.emb = torch.nn.Embedding(5, hidden)
        self.out = torch.nn.Linear(hidden, 5, bias=False)
        self.out.weight = self.emb.weight  # tied

    def forward(self, x, tokens):
        return self.fc2(torch.relu(self.bn(self.fc1(x)))).sum() + self.out(self.emb(tokens)).sum()


def _trained(seed: int = 0, steps: int = 3):
    torch.manual_seed(seed)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(steps):
        loss = net(torch.randn(8, 4), torch.tensor([1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net, opt, sched


def _fresh():
    torch.manual_seed(123)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return net, opt, sched


def test_names_are_readable_and_slots_follow_their_parameter(tmp_path):
    net, opt, sched = _trained()
    prefix = ckpt.save({"model": net, "optimizer": opt, "scheduler": sched}, tmp_path / "run")
    keys = ckpt.Reader(prefix).keys()
    assert "model/fc1/weight" in keys and "model/bn/running_mean" in keys
    assert "optimizer/model/fc1/weight/exp_avg" in keys and "optimizer/model/fc1/weight/exp_avg_sq" in keys
    assert not any(k.split("/")[1].isdigit() for k in keys if k.startswith("optimizer/")), keys
    # The tied weight is stored once, under its first name.
    assert "model/emb/weight" in keys and "model/out/weight" not in keys


def test_slot_names_do_not_depend_on_tree_order(tmp_path):
    net, opt, _ = _trained()
    a = ckpt.Reader(ckpt.save({"optimizer": opt, "model": net}, tmp_path / "a")).keys()
    b = ckpt.Reader(ckpt.save({"model": net, "optimizer": opt}, tmp_path / "b")).keys()
    assert a == b


def test_full_round_trip_restores_everything_in_place(tmp_path):
    net, opt, sched = _trained()
    gen = torch.Generator().manual_seed(7)
    torch.randn(3, generator=gen)
    prefix = ckpt.save({"model": net, "optimizer": opt, "scheduler": sched, "gen": gen, "epoch": 3}, tmp_path / "c")

    net2, opt2, sched2 = _fresh()
    gen2 = torch.Generator()
    weight_before = net2.fc1.weight
    out = ckpt.restore(prefix, {"model": net2, "optimizer": opt2, "scheduler": sched2, "gen": gen2, "epoch": 0})
    assert out["epoch"] == 3 and out["model"] is net2 and net2.fc1.weight is weight_before
    for (k, v), (k2, v2) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert net2.out.weight is net2.emb.weight  # still tied
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i, slots in s1["state"].items():
        for slot, value in slots.items():
            assert torch.equal(value, s2["state"][i][slot]), (i, slot)
    assert sched2.state_dict() == sched.state_dict()
    assert torch.equal(gen2.get_state(), gen.get_state())
    # Continuing training gives identical results.
    x, t = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 4])
    for model, optim in ((net, opt), (net2, opt2)):
        loss = model(x, t)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))


def test_optimizer_restores_by_name_when_param_order_changes(tmp_path):
    net, opt, _ = _trained()
    prefix = ckpt.save({"model": net, "optimizer": opt}, tmp_path / "o")
    net2, _, _ = _fresh()
    reversed_params = list(net2.parameters())[::-1]
    opt2 = torch.optim.Adam(reversed_params, lr=1e-2)
    ckpt.restore(prefix, {"model": net2, "optimizer": opt2})
    by_name = dict(net.named_parameters())
    for name, param in net2.named_parameters():
        assert torch.equal(opt2.state[param]["exp_avg"], opt.state[by_name[name]]["exp_avg"]), name


def test_bfloat16_and_other_dtypes(tmp_path):
    state = {"bf16": torch.randn(3, 2).to(torch.bfloat16), "f16": torch.randn(2).half(), "i8": torch.arange(4, dtype=torch.int8),
             "b": torch.tensor([True, False]), "c": torch.tensor([1 + 2j], dtype=torch.complex64),
             "f8": torch.tensor([1.0, 2.0]).to(torch.float8_e4m3fn)}
    prefix = ckpt.save(state, tmp_path / "d")
    target = {k: torch.zeros_like(v) for k, v in state.items()}
    ckpt.restore(prefix, target)
    for k in state:
        assert target[k].dtype == state[k].dtype
        assert torch.equal(target[k].view(torch.uint8), state[k].view(torch.uint8)), k


def test_non_contiguous_and_views(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"t": base.t(), "row": base[1]}
    prefix = ckpt.save(state, tmp_path / "v")
    loaded = ckpt.load(prefix)
    assert np.array_equal(loaded["t"], base.t().numpy()) and np.array_equal(loaded["row"], base[1].numpy())


def test_mismatch_is_reported_before_anything_changes(tmp_path):
    net, opt, _ = _trained()
    prefix = ckpt.save({"model": net}, tmp_path / "m")
    other = Net(hidden=6)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ckpt.errors.StateMismatchError) as info:
        ckpt.restore(prefix, {"model": other})
    message = str(info.value)
    assert "mismatched" in message and "model/fc1/weight" in message and "nothing was changed" in message
    assert info.value.mismatched and not info.value.missing
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_missing_and_unexpected_listed_with_hint(tmp_path):
    net, _, _ = _trained()
    prefix = ckpt.save({"model": net}, tmp_path / "n")
    with pytest.raises(ckpt.errors.StateMismatchError) as info:
        ckpt.restore(prefix, {"net": Net()})
    err = info.value
    assert "net/fc1/weight" in err.missing and "model/fc1/weight" in err.unexpected
    assert "map=" in str(err)


def test_non_strict_restores_what_matches(tmp_path):
    net, _, _ = _trained()
    prefix = ckpt.save({"model": net}, tmp_path / "s")
    partial = torch.nn.Module()
    partial.fc1 = torch.nn.Linear(4, 3)
    report = ckpt.restore(prefix, {"model": partial}, strict=False)
    assert isinstance(report, ckpt.RestoreReport) and not report.ok
    assert report.restored == ["model/fc1/bias", "model/fc1/weight"]
    assert "model/fc2/weight" in report.unexpected
    assert torch.equal(partial.fc1.weight, net.fc1.weight)


def test_rename_rules_dict_callable_and_regex(tmp_path):
    net, _, _ = _trained()
    prefix = ckpt.save({"model": net}, tmp_path / "r")
    # Strip a prefix with a regex rule: restore straight into a bare module.
    bare = Net()
    ckpt.restore(prefix, bare, map=[(r"^model/", "")])
    assert torch.equal(bare.fc2.bias, net.fc2.bias)
    # A dict picks a subset and renames it (TensorFlow's Saver({"v2": v2})).
    w = torch.zeros(3, 4)
    out = ckpt.restore(prefix, {"w": w}, map={"model/fc1/weight": "w"})
    assert torch.equal(out["w"], net.fc1.weight.detach())
    # A callable; None skips a name.
    sub = torch.nn.Linear(3, 2)
    ckpt.restore(prefix, {"head": sub},
                 map=lambda n: n.replace("model/fc2/", "head/") if n.startswith("model/fc2/") else None)
    assert torch.equal(sub.weight, net.fc2.weight)


def test_module_at_the_root_uses_its_own_names(tmp_path):
    net, _, _ = _trained()
    prefix = ckpt.save(net, tmp_path / "root")
    assert "fc1/weight" in ckpt.Reader(prefix)
    net2 = Net()
    ckpt.restore(prefix, net2)
    assert torch.equal(net2.bn.running_var, net.bn.running_var)


def test_containers_rebuild_on_load(tmp_path):
    Point = collections.namedtuple("Point", "x y")

    @dataclasses.dataclass
    class Config:
        lr: float
        name: str

    state = {"p": Point(np.arange(3), 2.5), "cfg": Config(0.1, "run"), "items": [1, (2.0, "a")], "none": None,
             "t": torch.ones(2)}
    prefix = ckpt.save(state, tmp_path / "t")
    loaded = ckpt.load(prefix)
    assert type(loaded["p"]).__name__ == "Point" and loaded["p"].y == 2.5 and loaded["p"].x.tolist() == [0, 1, 2]
    assert loaded["cfg"].lr == 0.1 and loaded["cfg"].name == "run"
    assert loaded["items"] == [1, (2.0, "a")] and loaded["none"] is None
    assert isinstance(loaded["t"], np.ndarray)
    restored = ckpt.restore(prefix, {"p": Point(np.zeros(3, np.int64), 0.0), "cfg": Config(0.0, ""),
                                     "items": [0, (0.0, "")], "none": None, "t": torch.zeros(2)})
    assert restored["p"] == Point(restored["p"].x, 2.5) and restored["cfg"] == Config(0.1, "run")
    assert restored["items"] == [1, (2.0, "a")]


def test_unsupported_values_are_all_reported(tmp_path):
    with pytest.raises(ckpt.errors.InvalidStateError) as info:
        ckpt.save({"a": torch.ones(2).to_sparse(), "b": object(), "c": {1, 2}}, tmp_path / "bad")
    message = str(info.value)
    assert "3 problem" in message and "'a'" in message and "'b'" in message and "'c'" in message
    assert not list(tmp_path.iterdir())


def test_rng_state_round_trip(tmp_path):
    import random

    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    prefix = ckpt.save({"x": np.zeros(1)}, tmp_path / "rng", rng=True)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    ckpt.restore(prefix, {"x": np.zeros(1)})
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_import_ckpt_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, ckpt; print(sorted(m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("order", [("fc", "fc.weight"), ("fc.weight", "fc")])
def test_a_name_that_is_both_a_tensor_and_a_scope_is_refused(tmp_path, order):
    torch = pytest.importorskip("torch")

    class Odd(torch.nn.Module):  # a hand-written state_dict with "fc" and "fc.weight" (nn.Module never makes one)
        def state_dict(self, *args, **kwargs):
            return collections.OrderedDict((name, torch.ones(2)) for name in order)

    with pytest.raises(ckpt.errors.InvalidStateError, match="'fc' is both a tensor and a scope"):
        ckpt.save(Odd(), tmp_path / "ck")
    assert not list(tmp_path.iterdir())  # refused before anything was written
