"""ckpt.summary against the real readers and writers: TensorBoard's EventAccumulator, TensorFlow's summary_iterator,
TF1/TF2 writers, torch.utils.tensorboard and tensorboardX; truncated and corrupted files; bad input."""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest

from ckpt.errors import ChecksumMismatchError, CheckpointError
from ckpt.summary import SummaryWriter, latest_scalars, read
from ckpt.summary._encode import histogram_fields

RNG = np.random.default_rng(0)
HIST = RNG.normal(size=500).astype(np.float32)
IMG = RNG.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
WAVE = (0.5 * np.sin(np.arange(1600) / 7.0)).astype(np.float32)
ODD_TAG = "loss/ä b\tc:[0]//<>"


def write_all(logdir):
    with SummaryWriter(logdir) as w:
        for step in range(3):
            w.scalar("loss", 1.0 / (step + 1), step)
        w.scalar(ODD_TAG, 7.0, 3)
        w.scalar("nan", float("nan"), 4)
        w.scalar("inf", float("-inf"), 4)
        w.histogram("weights", HIST, 5)
        w.image("img", IMG, 6)
        w.audio("sound", WAVE, 7, sample_rate=16000)
        w.text("notes", "hello **world** ✓", 8)
        w.hparams({"lr": 0.01, "optimizer": "adam", "layers": 3, "bn": True})
        w.graph(_graph_def())
        return w.files


def _graph_def():
    from ckpt.tf.protos import graph_pb2

    g = graph_pb2.GraphDef()
    node = g.node.add(name="x", op="Placeholder")
    node.attr["dtype"].type = 1
    g.node.add(name="y", op="Identity", input=["x"]).attr["T"].type = 1
    return g


def test_ckpt_reads_back_every_kind(tmp_path):
    write_all(tmp_path)
    rows = list(read(tmp_path))
    by = {}
    for r in rows:
        by.setdefault((r.tag, r.kind), []).append(r)
    assert [r.value for r in by[("loss", "scalar")]] == [1.0, 0.5, np.float32(1 / 3)]
    assert by[(ODD_TAG, "scalar")][0].value == 7.0
    assert math.isnan(by[("nan", "scalar")][0].value) and by[("inf", "scalar")][0].value == -math.inf
    h = by[("weights", "histogram")][0].value
    assert h.num == 500 and sum(h.counts) == 500 and h.min == HIST.min() and h.max == HIST.max()
    im = by[("img", "image")][0].value
    assert (im.height, im.width, im.colorspace) == (6, 7, 3)
    np.testing.assert_array_equal(im.array(), IMG)
    a = by[("sound", "audio")][0].value
    assert (a.sample_rate, a.num_channels, a.length_frames) == (16000, 1, 1600)
    assert by[("notes", "text")][0].value == "hello **world** ✓"
    hp = by[("_hparams_/session_start_info", "hparams")][0].value
    assert hp["hparams"] == {"lr": 0.01, "optimizer": "adam", "layers": 3, "bn": True}
    assert by[("", "graph")][0].value == _graph_def().SerializeToString(deterministic=True)
    assert {r.run for r in rows} == {"."}


@pytest.mark.tf
def test_tensorboard_event_accumulator_reads_every_kind(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import metadata as hp_metadata
    from tensorboard.util import tensor_util

    write_all(tmp_path)
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={k: 0 for k in
                                                            (ea.SCALARS, ea.HISTOGRAMS, ea.IMAGES, ea.AUDIO,
                                                             ea.TENSORS, ea.COMPRESSED_HISTOGRAMS)})
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("loss")] == [(0, 1.0), (1, 0.5), (2, np.float32(1 / 3))]
    assert acc.Scalars(ODD_TAG)[0].value == 7.0
    assert math.isnan(acc.Scalars("nan")[0].value) and acc.Scalars("inf")[0].value == -math.inf
    hv = acc.Histograms("weights")[0].histogram_value
    want = histogram_fields(HIST)
    assert list(hv.bucket_limit) == want["bucket_limit"] and list(hv.bucket) == want["bucket"]
    assert (hv.min, hv.max, hv.num) == (want["min"], want["max"], 500)
    img = acc.Images("img")[0]
    assert (img.height, img.width) == (6, 7)
    import tensorflow as tf
    np.testing.assert_array_equal(tf.io.decode_png(img.encoded_image_string).numpy(), IMG)
    au = acc.Audio("sound")[0]
    decoded, rate = tf.audio.decode_wav(au.encoded_audio_string)
    assert int(rate) == 16000 and au.content_type == "audio/wav"
    np.testing.assert_allclose(decoded.numpy()[:, 0], WAVE, atol=1 / 32767)
    text = tensor_util.make_ndarray(acc.Tensors("notes")[0].tensor_proto)
    assert text.item().decode() == "hello **world** ✓"
    assert acc.PluginTagToContent("text") == {"notes": b""}
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = hp_metadata.parse_session_start_info_plugin_data(content)
    assert info.hparams["lr"].number_value == 0.01 and info.hparams["optimizer"].string_value == "adam"
    assert info.hparams["bn"].bool_value is True and info.hparams["layers"].number_value == 3
    assert acc.Graph().node[1].name == "y"


@pytest.mark.tf
def test_summary_iterator_reads_the_same_values(tmp_path):
    tf = pytest.importorskip("tensorflow")
    files = write_all(tmp_path)
    events = list(tf.compat.v1.train.summary_iterator(str(files[0])))
    assert events[0].file_version == "brain.Event:2"
    values = {(v.tag, e.step): v for e in events if e.HasField("summary") for v in e.summary.value}
    assert values[("loss", 1)].simple_value == 0.5
    assert values[(ODD_TAG, 3)].simple_value == 7.0
    assert math.isnan(values[("nan", 4)].simple_value)
    assert values[("weights", 5)].histo.num == 500
    assert values[("img", 6)].image.encoded_image_string.startswith(b"\x89PNG")
    assert tf.make_ndarray(values[("notes", 8)].tensor).item().decode() == "hello **world** ✓"
    assert any(e.HasField("graph_def") for e in events)


@pytest.mark.tf
def test_histogram_buckets_match_tensorflow_v1(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from ckpt.tf.protos import summary_pb2

    values = np.concatenate([HIST, [0.0, 1e-13, -3e5, 1.0]]).astype(np.float64)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        op = tf.compat.v1.summary.histogram("h", tf.constant(values))
        theirs = summary_pb2.Summary.FromString(sess.run(op)).value[0].histo
    ours = histogram_fields(values)
    assert list(theirs.bucket_limit) == ours["bucket_limit"]
    assert list(theirs.bucket) == ours["bucket"]
    assert (theirs.min, theirs.max, theirs.num) == (ours["min"], ours["max"], ours["num"])
    assert theirs.sum == pytest.approx(ours["sum"], rel=1e-12)
    assert theirs.sum_squares == pytest.approx(ours["sum_squares"], rel=1e-12)


@pytest.mark.tf
def test_reads_what_tensorflow_1_and_2_write(tmp_path):
    tf = pytest.importorskip("tensorflow")
    v2 = tmp_path / "tf2"
    writer = tf.summary.create_file_writer(str(v2))
    with writer.as_default():
        for step in range(3):
            tf.summary.scalar("loss", 0.25 * step, step=step)
        tf.summary.histogram("w", HIST, step=3, buckets=5)
        tf.summary.image("img", IMG[None], step=4)
        tf.summary.text("notes", "tf2 text", step=5)
        tf.summary.audio("sound", WAVE[None, :, None], 8000, step=6)
    writer.close()
    v1 = tmp_path / "tf1"
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        fw = tf.compat.v1.summary.FileWriter(str(v1), sess.graph)
        ops = tf.compat.v1.summary.merge([tf.compat.v1.summary.scalar("acc", tf.constant(0.75)),
                                          tf.compat.v1.summary.histogram("h", tf.constant(HIST)),
                                          tf.compat.v1.summary.image("im", tf.constant(IMG[None]))])
        fw.add_summary(sess.run(ops), global_step=9)
        fw.close()
    rows = list(read(tmp_path))
    got = {(r.run, r.tag, r.kind): r for r in rows}
    assert [r.value for r in rows if r.run == "tf2" and r.tag == "loss"] == [0.0, 0.25, 0.5]
    h2 = got[("tf2", "w", "histogram")].value
    assert sum(h2.counts) == 500 and len(h2.counts) == 5 and h2.lefts[0] == pytest.approx(HIST.min())
    np.testing.assert_array_equal(got[("tf2", "img", "image")].value.array(), IMG)
    assert got[("tf2", "notes", "text")].value == "tf2 text"
    assert got[("tf2", "sound", "audio")].value.sample_rate == 8000
    assert got[("tf1", "acc", "scalar")].value == 0.75 and got[("tf1", "acc", "scalar")].step == 9
    assert got[("tf1", "h", "histogram")].value.num == 500
    np.testing.assert_array_equal(next(r for k, r in got.items() if k[0] == "tf1" and k[2] == "image").value.array(), IMG)
    assert ("tf1", "", "graph") in got


def _other_writer(module, logdir):
    w = module.SummaryWriter(str(logdir))
    for step in range(3):
        w.add_scalar("loss", 1.5 - step, step)
    w.add_histogram("w", HIST, 3)
    w.add_image("img", IMG, 4, dataformats="HWC")
    w.add_text("notes", "from " + module.__name__, 5)
    if module.__name__ != "tensorboardX":  # tensorboardX encodes audio with soundfile, not installed
        w.add_audio("sound", WAVE, 6, sample_rate=8000)
    w.add_hparams({"lr": 0.1, "opt": "sgd"}, {"hp/metric": 1.0})
    w.close()


@pytest.mark.parametrize("module_name", ["torch.utils.tensorboard", "tensorboardX"])
def test_reads_torch_and_tensorboardx(tmp_path, module_name):
    module = pytest.importorskip(module_name)
    _other_writer(module, tmp_path)
    rows = list(read(tmp_path))
    scalars = [(r.step, r.value) for r in rows if r.tag == "loss" and r.kind == "scalar"]
    assert scalars == [(0, 1.5), (1, 0.5), (2, -0.5)]
    kinds = {r.kind for r in rows}
    assert {"scalar", "histogram", "image", "text", "hparams"} <= kinds
    if module_name != "tensorboardX":
        a = next(r.value for r in rows if r.kind == "audio")
        assert (a.sample_rate, a.length_frames) == (8000, 1600)
    h = next(r.value for r in rows if r.kind == "histogram")
    assert h.num == 500 and sum(h.counts) == 500
    np.testing.assert_array_equal(next(r.value for r in rows if r.kind == "image").array(), IMG)
    assert next(r.value for r in rows if r.kind == "text") == "from " + module_name
    starts = [r.value for r in rows if r.kind == "hparams" and r.value["type"] == "session_start_info"]
    assert starts and starts[0]["hparams"] == {"lr": 0.1, "opt": "sgd"}


def test_truncated_last_record_is_skipped_and_bad_crc_is_refused(tmp_path):
    files = write_all(tmp_path)
    data = files[0].read_bytes()
    whole = [repr(r) for r in read(tmp_path)]  # repr: NaN != NaN
    for cut in (1, 5, 13, 40):
        files[0].write_bytes(data[:-cut])
        rows = [repr(r) for r in read(tmp_path)]
        assert rows == whole[:len(rows)] and len(rows) >= len(whole) - 1
    bad = bytearray(data)
    bad[200] ^= 0x55
    files[0].write_bytes(bytes(bad))
    with pytest.raises(ChecksumMismatchError, match=files[0].name):
        list(read(tmp_path))


def test_file_being_written_is_read_while_open(tmp_path):
    w = SummaryWriter(tmp_path, max_queue=1)
    w.scalar("a", 1.0, 0)
    with open(w.path, "ab") as f:  # a record whose header made it to disk and its body did not
        f.write(struct.pack("<Q", 100)[:6])
    assert [r.value for r in read(tmp_path)] == [1.0]
    w.close()


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path):
    with SummaryWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="'img'.*dimensions"):
            w.image("img", np.zeros((2, 2, 2, 3), np.uint8))
        with pytest.raises(ValueError, match="channels"):
            w.image("img", np.zeros((2, 2, 5), np.uint8))
        with pytest.raises(TypeError, match="dtype complex128"):
            w.image("img", np.zeros((2, 2, 3), np.complex128))
        with pytest.raises(ValueError, match="outside 0..255"):
            w.image("img", np.full((2, 2), 300, np.int32), dataformats="HW")
        with pytest.raises(ValueError, match="NaN"):
            w.image("img", np.full((2, 2), np.nan), dataformats="HW")
        with pytest.raises(TypeError, match="not a number"):
            w.scalar("s", "abc")
        with pytest.raises(TypeError, match="tag must be a str"):
            w.scalar(3, 1.0)
        with pytest.raises(ValueError, match="sample_rate"):
            w.audio("a", WAVE, sample_rate=0)
        with pytest.raises(TypeError, match="hparam 'x'"):
            w.hparams({"x": [1, 2]})
        w.image("chw", np.zeros((3, 2, 4), np.float32), 1, dataformats="CHW")
        w.scalar("", 1.0)  # an empty tag is recorded as it is
    rows = list(read(tmp_path))
    assert [(r.tag, r.kind) for r in rows] == [("chw", "image"), ("", "scalar")]
    assert (rows[0].value.height, rows[0].value.width) == (2, 4)
    with pytest.raises(CheckpointError, match="closed"):
        w.scalar("late", 1.0)


def test_rotation_names_and_global_step(tmp_path):
    clock = iter(range(1_700_000_000, 1_700_001_000)).__next__
    with SummaryWriter(tmp_path, max_file_bytes=200, max_queue=1, clock=clock) as w:
        for i in range(20):
            w.global_step = i
            w.scalar("x", float(i))
    assert len(w.files) > 2 and all(p.exists() for p in w.files)
    for p in w.files:
        parts = p.name.split(".")
        assert p.name.startswith("events.out.tfevents.17000") and parts[3].isdigit() and len(parts[3]) == 10
        assert str(os.getpid()) in parts
    rows = list(read(tmp_path))
    assert [(r.step, r.value) for r in rows] == [(i, float(i)) for i in range(20)]
    assert latest_scalars(tmp_path)[0].value == 19.0


def test_flush_makes_events_visible(tmp_path):
    w = SummaryWriter(tmp_path, max_queue=100, flush_secs=1e9)
    w.scalar("a", 1.0, 0)
    assert list(read(tmp_path)) == []
    w.flush()
    assert [r.value for r in read(tmp_path)] == [1.0]
    w.close()
    w.close()


def test_cli_prints_latest_scalars(tmp_path, capsys):
    from ckpt.cli.main import main

    write_all(tmp_path / "run1")
    assert main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run1" in out and "loss" in out and "0.333333" in out and "nan" in out
    assert main(["summary", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    loss = next(r for r in doc["scalars"] if r["tag"] == "loss")
    assert loss == {"run": "run1", "tag": "loss", "step": 2, "wall_time": loss["wall_time"],
                    "value": float(np.float32(1 / 3))}
    assert next(r for r in doc["scalars"] if r["tag"] == "nan")["value"] == "NaN"
    assert main(["summary", str(tmp_path / "missing")]) == 2
