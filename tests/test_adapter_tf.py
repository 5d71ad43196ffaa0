"""TensorFlow and Keras adapter: variables in place, tensors, tf.Module trees, Keras models and optimizers.

Keras numbers layer names per process (``dense``, then ``dense_1``), so every Keras test saves one model and
restores into a *fresh* model built in the same process: the names ckpt writes must not depend on that counter.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ckpt  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

pytestmark = pytest.mark.tf


def same_bits(a, b) -> bool:
    """Equal dtype, shape and raw bytes (element-wise for string arrays, whose bytes are pointers)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object or b.dtype == object:
        return a.dtype == b.dtype and a.shape == b.shape and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ================================================================================================== variables


VARIABLE_VALUES = {
    "float32": np.array([[1.5, -0.0], [np.inf, 3.25]], np.float32),
    "bfloat16": np.array([1.5, -2.0, 0.0078125], ml_dtypes.bfloat16),
    "int64": np.array([-(2**62), 0, 2**62], np.int64),
    "bool": np.array([True, False, True]),
    "uint8": np.arange(5, dtype=np.uint8),
    "complex64": np.array([1 + 2j], np.complex64),
    "scalar": np.float64(2.5),
    "string": np.array([b"", "héllo".encode(), b"\x00\xff"], dtype=object),
}


def test_variables_round_trip_in_place(tmp_path):
    variables = {k: tf.Variable(v) for k, v in VARIABLE_VALUES.items()}
    prefix = ckpt.save(variables, tmp_path / "vars")

    loaded = ckpt.load(prefix)
    for k, v in VARIABLE_VALUES.items():
        assert same_bits(loaded[k], np.asarray(v, dtype=object if k == "string" else None)), k

    for k, var in variables.items():  # clobber every value
        var.assign(tf.zeros_like(var) if k != "string" else tf.constant([b"x"] * 3))
    restored = ckpt.restore(prefix, variables)
    for k, var in variables.items():
        assert restored[k] is var, "variables are restored in place"
        assert same_bits(var.numpy(), np.asarray(VARIABLE_VALUES[k], dtype=object if k == "string" else None)), k
    assert variables["bfloat16"].dtype == tf.bfloat16


def test_variable_shape_mismatch_changes_nothing(tmp_path):
    prefix = ckpt.save({"w": tf.Variable(tf.ones([2, 3])), "b": tf.Variable(tf.ones([3]))}, tmp_path / "c")
    w, b = tf.Variable(tf.zeros([3, 2])), tf.Variable(tf.zeros([3]))
    with pytest.raises(ckpt.errors.StateMismatchError, match=r"w: checkpoint float32\[2, 3\], state float32\[3, 2\]"):
        ckpt.restore(prefix, {"w": w, "b": b})
    assert not b.numpy().any(), "nothing is assigned when the comparison fails"


def test_tensor_restore_returns_a_new_constant(tmp_path):
    prefix = ckpt.save({"t": tf.constant([[1, 2], [3, 4]], tf.int32)}, tmp_path / "c")
    target = tf.zeros([2, 2], tf.int32)
    restored = ckpt.restore(prefix, {"t": target})["t"]
    assert isinstance(restored, tf.Tensor) and restored is not target
    assert restored.dtype == tf.int32 and same_bits(restored.numpy(), np.array([[1, 2], [3, 4]], np.int32))
    assert not target.numpy().any()


def test_random_generator_round_trip(tmp_path):
    gen = tf.random.Generator.from_seed(7)
    gen.normal([3])
    prefix = ckpt.save({"gen": gen}, tmp_path / "gen")
    expected = gen.normal([4]).numpy()

    fresh = tf.random.Generator.from_seed(99)
    assert ckpt.restore(prefix, {"gen": fresh})["gen"] is fresh
    assert same_bits(fresh.normal([4]).numpy(), expected)


# ================================================================================================== tf.Module


class Block(tf.Module):
    def __init__(self, n: int, seed: int):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal([n, n], seed=[seed, 0]))
        self.bias = tf.Variable(tf.fill([n], float(seed)))


class Net(tf.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        self.layer = Block(2, seed)
        self.layers = [Block(3, seed + 1), Block(1, seed + 2)]
        self.heads = {"cls": Block(2, seed + 3)}
        self.step = tf.Variable(seed, dtype=tf.int64)
        self.tied = self.layer.kernel  # the same variable under a second name
        self.dense = keras.layers.Dense(2)  # a Keras layer inside a tf.Module
        self.dense.build((None, 3))


NET_NAMES = ["net/dense/bias", "net/dense/kernel", "net/heads/cls/bias", "net/heads/cls/kernel", "net/layer/bias",
             "net/layers/0/bias", "net/layers/0/kernel", "net/layers/1/bias", "net/layers/1/kernel", "net/step",
             "net/tied"]


def module_values(module: tf.Module) -> list[np.ndarray]:
    return [v.numpy() for v in module.variables] + [w.numpy() for w in module.dense.weights]


def test_module_names_follow_attribute_paths(tmp_path):
    net = Net()
    prefix = ckpt.save({"net": net}, tmp_path / "net")
    with ckpt.Reader(prefix) as reader:
        assert sorted(reader.keys()) == NET_NAMES
    loaded = ckpt.load(prefix)["net"]
    assert same_bits(loaded["layers"]["0"]["kernel"], net.layers[0].kernel.numpy())
    assert same_bits(loaded["layer"]["kernel"], net.layer.kernel.numpy()), "the tied name reads the shared tensor"


def test_module_restores_into_a_fresh_instance(tmp_path):
    net = Net(seed=0)
    prefix = ckpt.save({"net": net}, tmp_path / "net")
    fresh = Net(seed=10)
    assert ckpt.restore(prefix, {"net": fresh})["net"] is fresh
    for got, want in zip(module_values(fresh), module_values(net)):
        assert same_bits(got, want)
    assert fresh.tied is fresh.layer.kernel


def test_module_with_a_different_structure_is_rejected(tmp_path):
    prefix = ckpt.save({"net": Net()}, tmp_path / "net")
    other = Net()
    other.layers.append(Block(2, 5))
    with pytest.raises(ckpt.errors.StateMismatchError) as err:
        ckpt.restore(prefix, {"net": other})
    assert err.value.missing == ["net/layers/2/bias", "net/layers/2/kernel"]


# ================================================================================================== Keras models


def sequential_model() -> keras.Model:
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(3, 3),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(2),
    ])


def functional_model() -> keras.Model:
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


BUILDERS = {"sequential": sequential_model, "functional": functional_model}

MODEL_NAMES = [
    "model/batch_normalization/beta", "model/batch_normalization/gamma", "model/batch_normalization/moving_mean",
    "model/batch_normalization/moving_variance", "model/conv2d/bias", "model/conv2d/kernel", "model/dense/bias",
    "model/dense/kernel", "model/dense_1/bias", "model/dense_1/kernel",
]


def data(n: int = 32):
    rs = np.random.RandomState(0)
    return rs.randn(n, 6, 6, 1).astype(np.float32), rs.randn(n, 2).astype(np.float32)


def trained(model: keras.Model, epochs: int = 1) -> keras.Model:
    """``model`` compiled with Adam and fitted, so BatchNormalization statistics and slots are not initial."""
    x, y = data()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("kind", BUILDERS)
def test_keras_weights_restore_into_a_fresh_model(tmp_path, kind):
    model = trained(BUILDERS[kind]())
    prefix = ckpt.save({"model": model}, tmp_path / "model")
    with ckpt.Reader(prefix) as reader:
        assert sorted(reader.keys()) == MODEL_NAMES

    fresh = BUILDERS[kind]()  # same process: Keras names its layers dense_2, dense_3, ...
    assert {layer.name for layer in fresh.layers} != {layer.name for layer in model.layers}
    assert ckpt.restore(prefix, {"model": fresh})["model"] is fresh
    x, _ = data()
    assert np.array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))
    for got, want in zip(fresh.weights, model.weights):
        assert same_bits(got.numpy(), want.numpy()), want.path


def test_sequential_checkpoint_restores_into_functional_model(tmp_path):
    model = trained(sequential_model())
    prefix = ckpt.save({"model": model}, tmp_path / "model")
    fresh = functional_model()
    ckpt.restore(prefix, {"model": fresh})
    x, _ = data()
    assert np.array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))


def test_explicit_layer_names_and_dropout_seed_state(tmp_path):
    def build():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="encoder"), keras.layers.Dropout(0.5),
                                 keras.layers.Dense(2), keras.layers.Dense(1, name="logits")])

    model = build()
    prefix = ckpt.save({"model": model}, tmp_path / "model")
    with ckpt.Reader(prefix) as reader:
        assert sorted(reader.keys()) == ["model/dense/bias", "model/dense/kernel", "model/dropout/seed_generator_state",
                                         "model/encoder/bias", "model/encoder/kernel", "model/logits/bias",
                                         "model/logits/kernel"]
    fresh = build()
    ckpt.restore(prefix, {"model": fresh})
    x = np.ones((2, 4), np.float32)
    assert np.array_equal(fresh(x, training=True).numpy(), model(x, training=True).numpy()), "same dropout masks"


def test_keras_shape_mismatch_changes_nothing(tmp_path):
    prefix = ckpt.save({"model": sequential_model()}, tmp_path / "model")
    other = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3), keras.layers.BatchNormalization(),
                              keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(5)])
    before = [w.numpy() for w in other.weights]
    with pytest.raises(ckpt.errors.StateMismatchError, match=r"model/dense_1/kernel: checkpoint float32\[8, 2\]"):
        ckpt.restore(prefix, {"model": other})
    assert all(same_bits(w.numpy(), b) for w, b in zip(other.weights, before))


def test_unbuilt_keras_model_is_reported(tmp_path):
    prefix = ckpt.save({"model": sequential_model()}, tmp_path / "model")
    with pytest.raises(ckpt.errors.InvalidStateError, match="not built"):
        ckpt.restore(prefix, {"model": keras.Sequential([keras.layers.Dense(2)])})


# ================================================================================================== Keras optimizers


def test_optimizer_slots_are_named_after_their_parameters(tmp_path):
    model = trained(sequential_model())
    prefix = ckpt.save({"model": model, "optimizer": model.optimizer}, tmp_path / "train")
    with ckpt.Reader(prefix) as reader:
        names = set(reader.keys())
    assert {"optimizer/iteration", "optimizer/learning_rate", "optimizer/model/dense_1/kernel/momentum",
            "optimizer/model/dense_1/kernel/velocity", "optimizer/model/conv2d/bias/momentum"} <= names
    slots = [n for n in names if n.startswith("optimizer/model/")]
    assert len(slots) == 2 * len(model.trainable_variables)
    assert int(ckpt.load(prefix)["optimizer"]["iteration"]) == 4


def test_optimizer_state_round_trip_and_exact_continuation(tmp_path):
    keras.utils.set_random_seed(1)
    model = trained(sequential_model(), epochs=2)
    prefix = ckpt.save({"model": model, "optimizer": model.optimizer}, tmp_path / "train", step=8)

    keras.utils.set_random_seed(2)  # different initial weights
    fresh = sequential_model()
    fresh.compile(keras.optimizers.Adam(1e-2), "mse")
    assert not fresh.optimizer.built
    ckpt.restore(prefix, {"model": fresh, "optimizer": fresh.optimizer})
    assert fresh.optimizer.built
    assert len(fresh.optimizer.variables) == len(model.optimizer.variables)
    for got, want in zip(fresh.optimizer.variables, model.optimizer.variables):
        assert same_bits(got.numpy(), want.numpy()), want.path

    x, y = data()
    for m in (model, fresh):  # the uninterrupted run and the resumed one take the same two more epochs
        m.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert int(fresh.optimizer.iterations.numpy()) == 16
    for got, want in zip(fresh.weights, model.weights):
        assert same_bits(got.numpy(), want.numpy()), want.path


def test_unbuilt_optimizer_without_its_model_is_reported(tmp_path):
    model = trained(sequential_model())
    prefix = ckpt.save({"model": model, "optimizer": model.optimizer}, tmp_path / "train")
    opt = keras.optimizers.Adam()
    with pytest.raises(ckpt.errors.StateMismatchError, match="no model in the state has it"):
        ckpt.restore(prefix, {"optimizer": opt}, map=[(r"^model/.*", "")])


# ================================================================================================== TensorFlow reads it


def test_tensorflow_reads_the_documented_names(tmp_path):
    net = Net()
    model = trained(functional_model())
    variables = {"dense": {"kernel": tf.Variable(np.eye(3, dtype=np.float32)), "bias": tf.Variable([1.0, 2.0])}}
    prefix = ckpt.save({"vars": variables, "net": net, "model": model}, tmp_path / "all")

    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    assert same_bits(reader.get_tensor("vars/dense/kernel"), np.eye(3, dtype=np.float32))
    assert shapes["vars/dense/bias"] == [2]
    assert same_bits(reader.get_tensor("net/layers/0/kernel"), net.layers[0].kernel.numpy())
    assert same_bits(reader.get_tensor("model/conv2d/kernel"), model.layers[1].kernel.numpy())
    assert same_bits(reader.get_tensor("model/batch_normalization/moving_mean"),
                     model.layers[2].moving_mean.numpy())
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(prefix)
