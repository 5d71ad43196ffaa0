"""The seed's workflows across frameworks, against the real TensorFlow 1 Saver:

* a checkpoint TensorFlow writes for the seed regression resumes in the NumPy and PyTorch versions;
* PyTorch state saved by ckpt is restored by ``tf.compat.v1.train.Saver`` into TensorFlow variables via a name map.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import ckpt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "regression.py"


def _example():
    spec = importlib.util.spec_from_file_location("regression_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tf_regression(directory: Path, steps: int, resume: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The seed's TF1 program: train `steps` steps (after restoring when `resume`), save with the Saver."""
    reg = _example()
    x, y = reg.make_data()
    graph = tf.Graph()
    with graph.as_default():
        alpha = tf.compat.v1.get_variable("alpha", initializer=np.zeros([1], np.float32))
        beta = tf.compat.v1.get_variable(
            "beta", initializer=np.random.RandomState(1234).uniform(-1.0, 1.0, size=[1]).astype(np.float32))
        global_step = tf.compat.v1.train.get_or_create_global_step()
        loss = tf.reduce_mean(tf.square(x * beta + alpha - y))
        train = tf.compat.v1.train.GradientDescentOptimizer(reg.LEARNING_RATE).minimize(loss, global_step=global_step)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            if resume:
                saver.restore(sess, tf.train.latest_checkpoint(str(directory)))
            else:
                sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(steps):
                sess.run(train)
            saver.save(sess, str(directory / "regressionModel.ckpt"), global_step=global_step)
            return sess.run(alpha), sess.run(beta)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_tensorflow_checkpoint_resumes_in_numpy_and_torch(tmp_path, framework):
    if framework == "torch":
        pytest.importorskip("torch")
    reg = _example()
    _tf_regression(tmp_path, 25)
    latest = ckpt.latest(tmp_path)
    assert latest == str(tmp_path / "regressionModel.ckpt-25")

    model = reg.make_model(framework)
    ckpt.restore(latest, model.state)  # TF's names: alpha, beta, global_step
    tf_alpha = tf.train.load_checkpoint(latest).get_tensor("alpha")
    assert model.values()[0] == float(tf_alpha[0]) and model.values()[2] == 25

    x, y = reg.make_data()
    loss_before = float(np.mean((x * model.values()[1] + model.values()[0] - y) ** 2))
    reg.train(model, 51, quiet=True)
    alpha, beta, step = model.values()
    assert step == 76
    assert float(np.mean((x * beta + alpha - y) ** 2)) < loss_before
    # TensorFlow continuing from the same checkpoint lands on the same values (up to float32 rounding order).
    tf_alpha, tf_beta = _tf_regression(tmp_path, 51, resume=True)
    np.testing.assert_allclose([alpha, beta], [tf_alpha[0], tf_beta[0]], rtol=1e-5)

    # ... and ckpt's checkpoint of the resumed model restores back into TensorFlow's graph.
    prefix = ckpt.save(model.state, tmp_path / "ours" / "regressionModel.ckpt", step=step)
    graph = tf.Graph()
    with graph.as_default():
        a = tf.compat.v1.get_variable("alpha", shape=[1])
        b = tf.compat.v1.get_variable("beta", shape=[1])
        gs = tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, prefix)
            assert sess.run(a)[0] == np.float32(alpha) and sess.run(b)[0] == np.float32(beta)
            assert sess.run(gs) == 76


def test_torch_state_restores_into_tensorflow_variables_through_a_name_map(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    prefix = ckpt.save({"model": model}, tmp_path / "torch_run", step=7)
    reader = tf.train.load_checkpoint(prefix)
    assert set(reader.get_variable_to_shape_map()) >= {"model/0/weight", "model/0/bias", "model/2/weight"}

    x = np.random.RandomState(0).randn(5, 3).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    graph = tf.Graph()
    with graph.as_default():
        # TensorFlow's own names for the same layers; the Saver's dict is the name map (checkpoint name -> var).
        w1 = tf.compat.v1.get_variable("dense/weight", shape=[4, 3])
        b1 = tf.compat.v1.get_variable("dense/bias", shape=[4])
        w2 = tf.compat.v1.get_variable("dense_1/weight", shape=[2, 4])
        b2 = tf.compat.v1.get_variable("dense_1/bias", shape=[2])
        out = tf.matmul(tf.tanh(tf.matmul(x, w1, transpose_b=True) + b1), w2, transpose_b=True) + b2
        saver = tf.compat.v1.train.Saver({"model/0/weight": w1, "model/0/bias": b1,
                                          "model/2/weight": w2, "model/2/bias": b2})
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            assert np.array_equal(sess.run(w1), model[0].weight.detach().numpy())
            np.testing.assert_allclose(sess.run(out), expected, rtol=1e-5, atol=1e-6)
