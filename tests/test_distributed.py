"""ckpt.distributed: DCP StorageWriter/StorageReader writing TensorFlow bundles from several gloo processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ckpt

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

from ckpt.distributed import BundleStorageReader, BundleStorageWriter  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from dist_worker import reference  # noqa: E402

TIMEOUT = 240  # a hang fails the test instead of blocking the suite


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(scenario: str, world: int, d: Path, *, allow_fail: bool = False) -> list[int]:
    """Run ``scenario`` of dist_worker.py on ``world`` gloo ranks; returns their exit codes."""
    port = _port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    procs = [subprocess.Popen([sys.executable, str(HERE / "dist_worker.py"), scenario, str(r), str(world), str(port),
                               str(d)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(world)]
    codes, outputs = [], []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            codes.append(p.returncode)
            outputs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if not allow_fail and any(codes):
        raise AssertionError(f"{scenario} on {world} ranks exited {codes}:\n" + "\n----\n".join(outputs))
    return codes


def assert_bitequal(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, name
    assert got.tobytes() == want.tobytes(), name


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A checkpoint saved by 4 ranks (sync save m.ckpt-1 and async save m.ckpt-2)."""
    d = tmp_path_factory.mktemp("dist")
    run_ranks("save", 4, d)
    return d


@pytest.mark.slow
class TestFourRankSave:
    def test_layout_one_data_file_per_rank(self, saved):
        names = sorted(os.listdir(saved))
        for step in (1, 2):
            assert [n for n in names if n.startswith(f"m.ckpt-{step}.")] == \
                [f"m.ckpt-{step}.data-0000{r}-of-00004" for r in range(4)] + [f"m.ckpt-{step}.index"]
        assert ckpt.latest(saved).endswith("m.ckpt-2")

    def test_ckpt_reads_whole_tensors(self, saved):
        for step in (1, 2):
            with ckpt.Reader(saved / f"m.ckpt-{step}") as r:
                assert sorted(r.keys()) == sorted(reference())
                for name, want in reference().items():
                    assert_bitequal(r[name], want, name)

    def test_sharded_tensors_are_slices_replicated_written_once(self, saved):
        from ckpt.tf.bundle import BundleReader

        with BundleReader(saved / "m.ckpt-2") as b:
            assert len(b.entry("rows").slices) == 4
            assert len(b.entry("cols").slices) == 4
            assert len(b.entry("grid").slices) == 4
            assert len(b.entry("uneven").slices) == 4
            repl = b.entry("repl")
            assert not repl.slices  # one whole entry, stored once
        total = sum(os.path.getsize(saved / f"m.ckpt-2.data-0000{r}-of-00004") for r in range(4))
        payload = sum(v.nbytes for v in reference().values())
        assert payload <= total < payload + 200  # + the small JSON record, no duplicate of "repl"

    def test_cli_inspect_and_verify(self, saved):
        env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
        outs = {}
        for cmd in ("inspect", "verify"):
            out = subprocess.run([sys.executable, "-m", "ckpt", cmd, str(saved / "m.ckpt-2")], env=env,
                                 capture_output=True, text=True, timeout=TIMEOUT)
            assert out.returncode == 0, out.stdout + out.stderr
            outs[cmd] = out.stdout
        assert all(name in outs["inspect"] for name in reference())
        assert outs["verify"].startswith("OK")

    def test_tensorflow_reads_merged_tensors(self, saved):
        tf = pytest.importorskip("tensorflow")
        r = tf.train.load_checkpoint(str(saved / "m.ckpt-2"))
        for name, want in reference().items():
            assert_bitequal(r.get_tensor(name), want, name)

    @pytest.mark.parametrize("world", [1, 2, 3])
    def test_resharded_load_reads_only_overlapping_bytes(self, saved, world):
        run_ranks("load", world, saved)
        for rank in range(world):
            got = json.loads((saved / f"load-{world}-{rank}.json").read_text())
            # Every byte read belongs to this rank's new shards; none is read twice.
            assert got["bytes_read"] == got["ideal"], got
            assert got["preadv"] == got["ideal"], got

    def test_single_process_load_without_dist(self, saved):
        state = {k: torch.zeros(v.shape, dtype=torch.from_numpy(v).dtype) for k, v in reference().items()}
        dcp.load(state, storage_reader=BundleStorageReader(saved / "m.ckpt-1"), no_dist=True)
        for name, want in reference().items():
            assert_bitequal(state[name].numpy(), want, name)


@pytest.mark.slow
def test_killed_rank_leaves_previous_checkpoint_latest(tmp_path):
    codes = run_ranks("kill", 2, tmp_path, allow_fail=True)
    assert codes[1] == -9
    assert ckpt.latest(tmp_path).endswith("m.ckpt-1")
    assert not (tmp_path / "m.ckpt-2.index").exists()
    with ckpt.Reader(tmp_path / "m.ckpt-1") as r:
        assert_bitequal(r["grid"], reference()["grid"], "grid")
    assert (tmp_path / "error-0.txt").exists()  # the survivor raised instead of hanging


@pytest.mark.slow
def test_enospc_on_one_rank_raises_on_all(tmp_path):
    run_ranks("enospc", 2, tmp_path)
    for rank in range(2):
        assert "No space left" in (tmp_path / f"error-{rank}.txt").read_text()
    assert not (tmp_path / "m.ckpt-2.index").exists()
    # Nothing of step 2 has a final name; step 3 (after the failure) committed normally.
    assert not [n for n in os.listdir(tmp_path) if n.startswith("m.ckpt-2.") and ".tmp-" not in n]
    assert ckpt.latest(tmp_path).endswith("m.ckpt-3")



# --------------------------------------------------------------------------------------- one process, no dist


def test_objects_are_json_not_pickle(tmp_path):
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "opt": {"lr": 0.1, "betas": (0.9, 0.99)},
             "step": 3}
    dcp.save(state, storage_writer=BundleStorageWriter(tmp_path / "c"), no_dist=True)
    record = ckpt.Reader(tmp_path / "c").record
    assert record["distributed"]["objects"] == {"opt.lr": 0.1, "opt.betas": [0.9, 0.99], "step": 3}
    out = {"w": torch.zeros(2, 3), "opt": {"lr": 0.0, "betas": None}, "step": 0}
    dcp.load(out, storage_reader=BundleStorageReader(tmp_path / "c"), no_dist=True)
    assert out["step"] == 3 and out["opt"]["lr"] == 0.1 and list(out["opt"]["betas"]) == [0.9, 0.99]
    assert torch.equal(out["w"], state["w"])


def test_non_json_object_is_refused(tmp_path):
    with pytest.raises(BaseException, match="cannot be stored in a ckpt bundle"):
        dcp.save({"w": torch.zeros(2), "bad": {1, 2}}, storage_writer=BundleStorageWriter(tmp_path / "c"),
                 no_dist=True)
    assert not (tmp_path / "c.index").exists()
    assert not os.listdir(tmp_path) or all("tmp" not in n for n in os.listdir(tmp_path))


def test_existing_checkpoint_is_not_overwritten(tmp_path):
    dcp.save({"w": torch.ones(2)}, storage_writer=BundleStorageWriter(tmp_path / "c"), no_dist=True)
    with pytest.raises(BaseException, match="already exists"):
        dcp.save({"w": torch.zeros(2)}, storage_writer=BundleStorageWriter(tmp_path / "c"), no_dist=True)
    assert np.array_equal(ckpt.Reader(tmp_path / "c")["w"], np.ones(2, np.float32))


def test_reads_tensorflow_partitioned_variable_pieces(tmp_path):
    """A partitioned tensor written by the bundle writer (TensorFlow's layout) loads, read in parts."""
    from ckpt.tf.bundle import BundleWriter

    full = np.arange(30, dtype=np.float32).reshape(6, 5)
    with BundleWriter(str(tmp_path / "p")) as w:
        w.add_slice("w", (6, 5), ((0, 4), (0, -1)), full[:4])
        w.add_slice("w", (6, 5), ((4, 2), (0, -1)), full[4:])
        w.finish()
    out = {"w": torch.zeros(6, 5)}
    reader = BundleStorageReader(tmp_path / "p")
    dcp.load(out, storage_reader=reader, no_dist=True)
    assert_bitequal(out["w"].numpy(), full, "w")
    assert reader.bytes_read == full.nbytes


def test_import_ckpt_does_not_import_torch():
    code = "import sys, ckpt, ckpt.distributed; assert 'torch' not in sys.modules, 'torch imported'"
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=TIMEOUT)


def test_read_box_counts_only_the_box(tmp_path):
    from ckpt.distributed import read_box
    from ckpt.tf.bundle import BundleReader

    full = np.arange(4 * 6 * 5, dtype=np.int32).reshape(4, 6, 5)
    ckpt.save({"t": full}, tmp_path / "b")
    with BundleReader(tmp_path / "b") as b:
        entry = b.entry("t")
        for start, lengths in [((1, 2, 0), (2, 3, 5)), ((0, 0, 1), (4, 6, 2)), ((3, 5, 4), (1, 1, 1)),
                               ((0, 0, 0), (4, 6, 5))]:
            got, n = read_box(b, entry, start, lengths)
            want = full[tuple(slice(s, s + k) for s, k in zip(start, lengths))]
            assert_bitequal(got, want, str(start))
            assert n == want.nbytes


def test_convert_dcp_directory_to_bundle_and_back(tmp_path):
    """`ckpt convert` of a DCP FileSystemWriter checkpoint (pickled .metadata: only with --allow-pickle)."""
    state = {"model": {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.arange(3)},
             "bf": torch.linspace(-2, 2, 7).to(torch.bfloat16), "step": 5}
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(tmp_path / "dcp")), no_dist=True)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    cmd = [sys.executable, "-m", "ckpt", "convert", str(tmp_path / "dcp"), str(tmp_path / "b.ckpt")]
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert refused.returncode != 0 and "pickle" in refused.stderr and not (tmp_path / "b.ckpt.index").exists()
    done = subprocess.run(cmd + ["--allow-pickle"], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    with ckpt.Reader(tmp_path / "b.ckpt") as r:
        assert sorted(r.keys()) == ["bf", "model.b", "model.w"]
        assert_bitequal(r["model.w"], state["model"]["w"].numpy(), "w")
        assert r.record["distributed"]["objects"] == {"step": 5}
    back = subprocess.run([sys.executable, "-m", "ckpt", "convert", str(tmp_path / "b.ckpt"), str(tmp_path / "dcp2"),
                           "--format", "dcp"], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert back.returncode == 0, back.stderr
    out = {"model": {"w": torch.zeros(3, 4), "b": torch.zeros(3, dtype=torch.int64)},
           "bf": torch.zeros(7, dtype=torch.bfloat16), "step": 0}
    dcp.load(out, storage_reader=dcp.FileSystemReader(str(tmp_path / "dcp2")), no_dist=True)
    assert torch.equal(out["model"]["w"], state["model"]["w"]) and torch.equal(out["model"]["b"], state["model"]["b"])
    assert torch.equal(out["bf"].view(torch.int16), state["bf"].view(torch.int16)) and out["step"] == 5


def test_ckpt_save_and_restore_dtensors_on_a_one_process_mesh(tmp_path):
    """A DTensor used to make ckpt.save fail with a raw RuntimeError; now it saves through ckpt.distributed."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_port()}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        net = torch.nn.Linear(3, 2)
        with torch.no_grad():
            net.weight.copy_(torch.arange(6.0).reshape(2, 3))
            net.bias.copy_(torch.tensor([0.5, -0.5]))
        state = {"w": distribute_tensor(torch.arange(8.0).reshape(4, 2), mesh, [Shard(0)]),
                 "r": distribute_tensor(torch.arange(3), mesh, [Replicate()]), "net": net, "step": 4}
        prefix = ckpt.save(state, tmp_path / "m.ckpt", step=4)
        assert prefix.endswith("m.ckpt-4") and ckpt.latest(tmp_path) == prefix
        plain = ckpt.load(prefix, flat=True)  # a non-distributed reader sees full tensors
        assert_bitequal(plain["w"], np.arange(8.0, dtype=np.float32).reshape(4, 2), "w")
        assert_bitequal(plain["net/weight"], np.arange(6.0, dtype=np.float32).reshape(2, 3), "net/weight")
        into = {"w": distribute_tensor(torch.zeros(4, 2), mesh, [Shard(1)]),
                "r": distribute_tensor(torch.zeros(3, dtype=torch.int64), mesh, [Replicate()]),
                "net": torch.nn.Linear(3, 2), "step": 0}
        got = ckpt.restore(prefix, into)
        assert torch.equal(into["w"].full_tensor(), torch.arange(8.0).reshape(4, 2))
        assert torch.equal(into["r"].full_tensor(), torch.arange(3))
        assert torch.equal(into["net"].weight, net.weight) and torch.equal(into["net"].bias, net.bias)
        assert got["step"] == 4
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_adam_save_restore_continues_bit_identically(tmp_path):
    run_ranks("fsdp", 2, tmp_path)
    prefix = (tmp_path / "fsdp-ok").read_text()
    flat = ckpt.load(prefix, flat=True)  # a plain process reads the full tensors
    assert flat["model/0.weight"].shape == (8, 4) and flat["model/2.bias"].shape == (3,)
    assert any(k.startswith("optim/state/") and k.endswith("exp_avg") for k in flat)


@pytest.mark.slow
def test_ranks_disagreeing_on_the_step_all_raise(tmp_path):
    run_ranks("disagree", 2, tmp_path)
    for rank in range(2):
        text = (tmp_path / f"error-{rank}.txt").read_text()
        assert "disagree" in text and "m.ckpt-10" in text and "m.ckpt-11" in text
    assert not [n for n in os.listdir(tmp_path) if n.startswith("m.ckpt-")]
