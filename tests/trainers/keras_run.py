"""Child process of tests/test_trainers.py: a tiny deterministic Keras 3 run through ckpt.keras.

usage: keras_run.py BACKUP_DIR OUT.npz MODE   (MODE: plain | kill | resume)
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import keras
import tensorflow as tf

import ckpt.keras

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()


class Kill(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch == 1 and batch == 2:
            os._exit(3)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def main():
    backup, out, mode = sys.argv[1:4]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype("float32"), rng.normal(size=(40, 2)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    callback = ckpt.keras.BackupAndRestore(backup)
    callbacks = [callback] + ([Kill()] if mode == "kill" else [])
    model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks)
    if mode == "resume":
        assert callback.restored_epoch == 1, callback.restored_epoch
        reader = tf.train.load_checkpoint(ckpt.latest(backup))  # TensorFlow reads the backup
        assert any("kernel" in name for name in reader.get_variable_to_shape_map())
    weights = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    np.savez(out, **weights, iterations=np.asarray(model.optimizer.iterations))


if __name__ == "__main__":
    main()
