"""A pretrained image classifier end to end without TensorFlow: JPEG bytes in, the top 5 labels out.

The test builds, with TensorFlow, a graph in the style of 2015's ``classify_image_graph_def.pb`` (Inception v3 as
TensorFlow's image-recognition tutorial shipped it): a string placeholder ``DecodeJpeg/contents``, ``DecodeJpeg``,
``Cast``, ``ExpandDims``, ``ResizeBilinear``, ``Sub``/``Mul`` normalisation, convolutions with
``BatchNormWithGlobalNormalization``, an average pool ``pool_3`` and ``softmax``, frozen to a ``.pb``; and the
two label files the archive ships. JPEGs are made in the test. ckpt's probabilities must match TensorFlow's
(1e-5); decoded pixels and resized images are compared with TensorFlow's kernels.
"""

from __future__ import annotations

import io
import itertools
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

import ckpt.graph  # noqa: E402
from ckpt.cli.main import main as cli_main  # noqa: E402
from ckpt.errors import CorruptCheckpointError, FeedError, UnsupportedError  # noqa: E402

TOL = 1e-5
N_CLASSES = 12
SYNSETS = {1: "n01440764", 2: "n01443537", 3: "n01484850", 5: "n01491361", 7: "n01494475", 8: "n02123045",
           9: "n02124075", 10: "n02127052", 11: "n04522168"}
HUMAN = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark", "n01491361": "tiger shark, Galeocerdo cuvieri",
         "n01494475": "hammerhead, hammerhead shark", "n02123045": "tabby, tabby cat", "n02124075": "Egyptian cat",
         "n02127052": "lynx, catamount", "n04522168": "vase", "n09999999": "not in the label map"}


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _jpeg(h: int, w: int, *, subsampling: int = 2, quality: int = 85, mode: str = "RGB", seed: int = 0,
          progressive: bool = False) -> bytes:
    """A photo-like JPEG: smooth gradients plus noise (so every DCT coefficient matters)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w, 1), yy * 255 // max(h, 1), (xx + yy) * 5 % 256], -1).astype(np.float64)
    img = np.clip(img + rng.normal(0, 30, img.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    if mode == "L":
        im = im.convert("L")
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, subsampling=subsampling, progressive=progressive)
    return out.getvalue()


# ----------------------------------------------------------------------------------------------- DecodeJpeg


IMAGES = {
    "4:2:0 odd size": dict(h=37, w=53, subsampling=2, quality=50),
    "4:2:2": dict(h=37, w=53, subsampling=1, quality=75),
    "4:4:4": dict(h=31, w=29, subsampling=0, quality=95),
    "4:2:0 even size": dict(h=64, w=48, subsampling=2, quality=95),
    "gray": dict(h=33, w=17, mode="L", quality=30),
    "progressive": dict(h=40, w=41, subsampling=2, quality=80, progressive=True),
    "tiny 4:2:0": dict(h=2, w=3, subsampling=2, quality=90),
    "bigger 4:2:0": dict(h=120, w=91, subsampling=2, quality=85),
}


@pytest.mark.tf
@pytest.mark.parametrize("image", list(IMAGES))
def test_decode_jpeg_is_tensorflows_bit_for_bit(tf, image):
    data = _jpeg(**IMAGES[image])
    tested = 0
    for channels, ratio, fancy, dct in itertools.product((0, 1, 3), (1, 2, 4, 8), (True, False),
                                                        ("", "INTEGER_FAST", "INTEGER_ACCURATE")):
        expected = tf.io.decode_jpeg(data, channels=channels, ratio=ratio, fancy_upscaling=fancy,
                                     dct_method=dct).numpy()
        try:
            got = ckpt.graph.decode_jpeg(data, channels=channels, ratio=ratio, fancy_upscaling=fancy, dct_method=dct)
        except UnsupportedError as exc:  # the documented gaps, never a wrong picture
            assert "INTEGER_ACCURATE' with fancy_upscaling=False" in str(exc) or "scaled by" in str(exc), exc
            continue
        assert got.dtype == np.uint8 and got.shape == expected.shape, (channels, ratio, fancy, dct)
        assert np.array_equal(got, expected), (channels, ratio, fancy, dct, int(np.abs(
            got.astype(int) - expected).max()))
        tested += 1
    assert tested >= (30 if image.startswith("tiny") else 60)  # ratio 4 and 8 of a 3x2 image: not exact
    # The default (TensorFlow's "" = INTEGER_FAST with fancy upsampling) is always supported.
    assert np.array_equal(ckpt.graph.decode_jpeg(data, channels=3), tf.io.decode_jpeg(data, channels=3).numpy())


def test_decode_jpeg_bad_input_is_a_clear_error():
    data = _jpeg(40, 40)
    with pytest.raises(FeedError, match="not a JPEG"):
        ckpt.graph.decode_jpeg(b"\x89PNG\r\n\x1a\n" + data)
    with pytest.raises(FeedError, match="invalid JPEG data"):
        ckpt.graph.decode_jpeg(data[: len(data) // 2])
    with pytest.raises(FeedError, match="invalid JPEG data"):
        ckpt.graph.decode_jpeg(data[:20])
    with pytest.raises(UnsupportedError, match="channels=4"):
        ckpt.graph.decode_jpeg(data, channels=4)
    # Headers claiming 60000x60000 or 9000x9000 pixels over a few hundred bytes: refused before any pixel buffer
    # is allocated (a uniform progressive 4000x3000 JPEG, the most compressible, holds ~170 pixels per byte).
    sof = data.index(b"\xff\xc0")
    for side in (60000, 9000):
        huge = data[:sof + 5] + side.to_bytes(2, "big") * 2 + data[sof + 9:]
        with pytest.raises(FeedError, match="invalid JPEG data"):
            ckpt.graph.decode_jpeg(huge)
    im = Image.fromarray(np.zeros((8, 8, 4), np.uint8), "CMYK")
    out = io.BytesIO()
    im.save(out, "JPEG")
    with pytest.raises(UnsupportedError, match="CMYK"):
        ckpt.graph.decode_jpeg(out.getvalue())


# ----------------------------------------------------------------------------------------------- resizing


@pytest.mark.tf
@pytest.mark.parametrize("op", ["ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic"])
def test_resize_matches_tensorflow(tf, op):
    """TF1 semantics: legacy corners, align_corners, half_pixel_centers; up and down; integer and float images."""
    g = tf.Graph()
    rng = np.random.default_rng(1)
    cases = []
    with g.as_default():
        for dtype, (h, w), (oh, ow), (align, half) in itertools.product(
                (tf.float32, tf.uint8, tf.int32), ((5, 7), (1, 1), (13, 4)), ((1, 1), (3, 11), (10, 14), (25, 9)),
                ((False, False), (True, False), (False, True))):
            x = tf.compat.v1.placeholder(dtype, [None, h, w, 3])
            y = getattr(tf.raw_ops, op)(images=x, size=[oh, ow], align_corners=align, half_pixel_centers=half)
            value = (rng.random((2, h, w, 3)) * 255).astype(dtype.as_numpy_dtype)
            cases.append((x.op.name, y.name, value))
        with tf.compat.v1.Session(graph=g) as sess:
            expected = sess.run([c[1] for c in cases], {c[0] + ":0": c[2] for c in cases})
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs=cases[0][1])
    for (x_name, y_name, value), want in zip(cases, expected):
        got = module.run(y_name, {x_name + ":0": value}).numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)  # float32 lerps of values up to 255


# ----------------------------------------------------------------------------------------------- the classifier


def _label_files(d):
    label_map = d / "imagenet_2012_challenge_label_map_proto.pbtxt"
    lines = ["# -*- protobuffer -*-", "# LabelMap from ImageNet 2012 full data set UID to int32 target class.", ""]
    for target, synset in SYNSETS.items():
        lines += ["entry {", f"  target_class: {target}", f'  target_class_string: "{synset}"', "}"]
    label_map.write_text("\n".join(lines) + "\n")
    human = d / "imagenet_synset_to_human_label_map.txt"
    human.write_text("".join(f"{k}\t{v}\n" for k, v in HUMAN.items()))
    return label_map, human


@pytest.fixture(scope="module")
def classifier(tf, tmp_path_factory):
    """classify_image_graph_def.pb in miniature, frozen from variables with convert_variables_to_constants."""
    v1 = tf.compat.v1
    d = tmp_path_factory.mktemp("inception")
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(3)
        contents = v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        image = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
        cast = tf.cast(image, tf.float32, name="Cast")
        expanded = tf.expand_dims(cast, 0, name="ExpandDims")
        resized = tf.raw_ops.ResizeBilinear(images=expanded, size=tf.constant([29, 29], name="ResizeBilinear/size"),
                                            align_corners=False, name="ResizeBilinear")
        x = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        channels = 3
        for i, (depth, stride, padding) in enumerate([(8, 2, "VALID"), (16, 1, "SAME"), (16, 2, "VALID")]):
            name = "conv" if i == 0 else f"conv_{i}"
            with v1.variable_scope(name):
                w = v1.get_variable("conv2d_params", [3, 3, channels, depth],
                                    initializer=v1.truncated_normal_initializer(stddev=0.3))
                conv = tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding=padding, name="Conv2D")
                mean = v1.get_variable("moving_mean", [depth], initializer=v1.random_normal_initializer(0, 0.2))
                var = v1.get_variable("moving_variance", [depth],
                                      initializer=v1.random_uniform_initializer(0.5, 1.5))
                beta = v1.get_variable("beta", [depth], initializer=v1.random_normal_initializer(0, 0.1))
                gamma = v1.get_variable("gamma", [depth], initializer=v1.random_uniform_initializer(0.8, 1.2))
                # BatchNormWithGlobalNormalization is gone from GraphDef version 9 on; 2015's graph is version 8.
                # A stand-in with its inputs is built here and becomes the real op in the frozen GraphDef below.
                bn = tf.raw_ops.IdentityN(input=[conv, mean, var, beta, gamma], name="batchnorm")[0]
                x = tf.nn.relu(bn, name="CONV")
            channels = depth
        if x.shape[1] > 1:
            x = tf.nn.max_pool2d(x, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="VALID", name="pool")
        size = int(x.shape[1])
        pool = tf.nn.avg_pool2d(x, ksize=[1, size, size, 1], strides=[1, 1, 1, 1], padding="VALID", name="pool_3")
        flat = tf.reshape(pool, [-1, channels], name="pool_3/_reshape")
        with v1.variable_scope("softmax"):
            w = v1.get_variable("weights", [channels, N_CLASSES],
                                initializer=v1.truncated_normal_initializer(stddev=1.0))
            b = v1.get_variable("biases", [N_CLASSES], initializer=v1.random_normal_initializer(0, 0.5))
            logits = tf.add(tf.matmul(flat, w), b, name="logits")
        tf.nn.softmax(logits, name="softmax_out")  # "softmax" is taken by the scope; renamed below
        images = {name: _jpeg(h, w, seed=i, quality=q, subsampling=s)
                  for i, (name, h, w, q, s) in enumerate([("cat.jpg", 60, 80, 85, 2), ("fish.jpg", 41, 33, 60, 2),
                                                           ("vase.jpg", 48, 48, 95, 0)])}
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["softmax_out"])
    for node in frozen.node:
        if node.name == "softmax_out":
            node.name = "softmax"
        if node.op == "IdentityN":
            node.op = "BatchNormWithGlobalNormalization"
            node.attr.pop("T")
            node.attr["T"].type = tf.float32.as_datatype_enum
            node.attr["variance_epsilon"].f = 1e-3
            node.attr["scale_after_normalization"].b = True
    frozen.versions.producer = 8
    pb = d / "classify_image_graph_def.pb"
    pb.write_bytes(frozen.SerializeToString())
    for name, data in images.items():
        (d / name).write_bytes(data)
    label_map, human = _label_files(d)
    # TensorFlow runs the frozen file, as a user downloads it.
    g2 = tf.Graph()
    with g2.as_default():
        v1.import_graph_def(frozen, name="")
        with v1.Session(graph=g2) as sess:
            expected = {name: sess.run(["softmax:0", "pool_3:0", "Mul:0"], {"DecodeJpeg/contents:0": data})
                        for name, data in images.items()}
    return {"dir": d, "pb": pb, "images": images, "expected": expected, "labels": (label_map, human)}


@pytest.mark.tf
def test_classifier_gives_tensorflows_probabilities_from_jpeg_bytes(classifier):
    types = {op.type for op in ckpt.graph.load(classifier["pb"]).operations}
    assert {"DecodeJpeg", "Cast", "ExpandDims", "ResizeBilinear", "Sub", "Mul", "Conv2D",
            "BatchNormWithGlobalNormalization", "AvgPool", "Softmax"} <= types
    module = ckpt.graph.to_torch(classifier["pb"])
    assert module.outputs == ["softmax:0"] and module.inputs == ["DecodeJpeg/contents:0"]
    for name, data in classifier["images"].items():
        softmax, pool_3, mul = classifier["expected"][name]
        with torch.no_grad():
            got = module(data)  # JPEG bytes straight in, as sess.run({"DecodeJpeg/contents:0": data})
            got_pool, got_mul = module.run(["pool_3:0", "Mul:0"], {"DecodeJpeg/contents:0": data})
        np.testing.assert_allclose(got_mul.numpy(), mul, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(got_pool.numpy(), pool_3, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(got.numpy(), softmax, rtol=TOL, atol=TOL)
        assert got.argmax().item() == softmax.argmax()
    # Feeding the decoded, normalised image cuts the decoder off: no string, no Pillow needed on that path.
    mul = classifier["expected"]["cat.jpg"][2]
    with torch.no_grad():
        np.testing.assert_allclose(module.run("softmax:0", {"Mul:0": mul}).numpy(),
                                   classifier["expected"]["cat.jpg"][0], rtol=TOL, atol=TOL)
    # Strings in, strings out; bad bytes name the operation.
    assert module.run("DecodeJpeg/contents:0", {"DecodeJpeg/contents:0": b"abc"})[()] == b"abc"
    with pytest.raises(FeedError, match="DecodeJpeg.*not a JPEG"):
        module(b"GIF89a....")
    with pytest.raises(FeedError, match="string tensor"):
        module(torch.zeros(3))


@pytest.mark.tf
def test_top5_with_human_labels(classifier):
    label_map, human = classifier["labels"]
    labels = ckpt.graph.load_labels(label_map, human)
    assert labels == {k: HUMAN[v] for k, v in SYNSETS.items()}
    softmax = classifier["expected"]["cat.jpg"][0]
    (top,) = ckpt.graph.top_k(softmax, 5, labels)
    order = np.argsort(-softmax[0])[:5]
    assert [i for i, _, _ in top] == order.tolist()
    assert [score for _, score, _ in top] == [float(softmax[0][i]) for i in order]
    assert [label for *_, label in top] == [labels.get(int(i), "") for i in order]
    # One label per line (a retrained model's output_labels.txt).
    plain = classifier["dir"] / "output_labels.txt"
    plain.write_text("".join(f"label {i}\n" for i in range(N_CLASSES)))
    assert ckpt.graph.load_labels(plain) == {i: f"label {i}" for i in range(N_CLASSES)}
    with pytest.raises(CorruptCheckpointError, match="needs a file mapping class indices"):
        ckpt.graph.load_labels(human)
    bad = classifier["dir"] / "bad.pbtxt"
    bad.write_text("entry { nothing }\n")
    with pytest.raises(CorruptCheckpointError, match="no 'entry"):
        ckpt.graph.load_labels(bad)


@pytest.mark.tf
def test_cli_classify_image_top5(classifier, capsys):
    label_map, human = classifier["labels"]
    labels = ckpt.graph.load_labels(label_map, human)
    d = classifier["dir"]
    for name in classifier["images"]:
        softmax = classifier["expected"][name][0][0]
        code = cli_main(["run", str(classifier["pb"]), "--feed", f"DecodeJpeg/contents:0=@{d / name}",
                         "--fetch", "softmax:0", "--top", "5", "--labels", str(label_map), "--labels", str(human),
                         "--json"])
        assert code == 0
        rows = json.loads(capsys.readouterr().out)["top"]["softmax:0"]
        assert len(rows) == 1 and len(rows[0]) == 5
        order = np.argsort(-softmax)[:5]
        assert [r["class"] for r in rows[0]] == order.tolist()
        np.testing.assert_allclose([r["score"] for r in rows[0]], softmax[order], rtol=TOL, atol=TOL)
        assert [r["label"] for r in rows[0]] == [labels.get(int(i), "") for i in order]
    # The text form, as classify_image.py prints it.
    assert cli_main(["run", str(classifier["pb"]), "--feed", f"DecodeJpeg/contents:0=@{d / 'cat.jpg'}",
                     "--top", "3", "--labels", str(label_map), "--labels", str(human)]) == 0
    out = capsys.readouterr().out.splitlines()
    softmax = classifier["expected"]["cat.jpg"][0][0]
    best = int(np.argmax(softmax))
    assert out[0] == "softmax:0:"
    label, _, score = out[1].rpartition(" (score = ")
    assert label == f"  {labels.get(best) or f'class {best}'}" and score.endswith(")")
    assert abs(float(score[:-1]) - softmax[best]) <= 1e-5 + 5e-6  # printed with 5 decimals
    assert len(out) == 4
    # Feeding an intermediate tensor from a .npy cuts the graph there: no DecodeJpeg involved.
    np.save(d / "mul.npy", classifier["expected"]["cat.jpg"][2])
    assert cli_main(["run", str(classifier["pb"]), "--feed", f"Mul:0={d / 'mul.npy'}", "--fetch", "pool_3:0",
                     "--json"]) == 0
    value = json.loads(capsys.readouterr().out)["outputs"]["pool_3:0"]["value"]
    np.testing.assert_allclose(np.array(value), classifier["expected"]["cat.jpg"][1], rtol=TOL, atol=TOL)


@pytest.mark.tf
def test_resize_to_a_huge_size_is_refused_before_allocating(tf):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4, 4, 3], name="x")
        size = tf.compat.v1.placeholder(tf.int32, [2], name="size")
        tf.raw_ops.ResizeBilinear(images=x, size=size, name="resized")
    module = ckpt.graph.to_torch(g.as_graph_def(), outputs="resized:0")
    image = np.ones((1, 4, 4, 3), np.float32)
    assert module.run("resized:0", {"x:0": image, "size:0": [2, 3]}).shape == (1, 2, 3, 3)
    with pytest.raises(FeedError, match="more than 2,147,483,648 bytes"):
        module.run("resized:0", {"x:0": image, "size:0": [100000, 100000]})
    with pytest.raises(FeedError, match="size must be 2 positive numbers"):
        module.run("resized:0", {"x:0": image, "size:0": [0, 3]})
