"""Manager and meta graphs: PREFIX.meta is written once per manager (TensorFlow's write_meta_graph), or on request."""

from __future__ import annotations

import pytest

import ckpt
import ckpt.graph

torch = pytest.importorskip("torch")


def test_meta_graph_written_once_per_manager_unless_asked(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    graph = ckpt.graph.from_torch(net, torch.zeros(1, 3))
    manager = ckpt.Manager(tmp_path, max_to_keep=10)
    for step in (1, 2, 3):
        manager.save(step, {"model": net}, graph=graph)
    manager.save(4, {"model": net}, graph=graph, write_meta_graph=True)
    manager.save(5, {"model": net}, graph=graph, write_meta_graph=False)
    assert sorted(p.name for p in tmp_path.glob("*.meta")) == ["ckpt-1.meta", "ckpt-4.meta"]
    listed = [op.name for op in ckpt.graph.load(tmp_path / "ckpt-1.meta").operations]
    assert "model/0/weight" in listed or "0/weight" in listed or any(n.endswith("weight") for n in listed)
    # A new manager on the same directory writes it again on its first save.
    ckpt.Manager(tmp_path, max_to_keep=10).save(6, {"model": net}, graph=graph)
    assert (tmp_path / "ckpt-6.meta").exists()


def test_meta_of_deleted_checkpoint_goes_with_it(tmp_path):
    net = torch.nn.Linear(2, 2)
    graph = ckpt.graph.from_torch(net, torch.zeros(1, 2))
    manager = ckpt.Manager(tmp_path, max_to_keep=1)
    manager.save(1, {"model": net}, graph=graph)
    manager.save(2, {"model": net})
    assert not (tmp_path / "ckpt-1.meta").exists() and not (tmp_path / "ckpt-1.index").exists()
