"""JAX DataParallel / TensorFlow MirroredStrategy: `pretrain` through `model.fit` resumes exactly.

Run by tests/distribute/test_fit_resume.py in a subprocess (device counts are
fixed when a framework starts), with `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_force_host_platform_device_count=2`, or with
`KERAS_BACKEND=tensorflow` (2 logical CPU devices):

    python tests/helpers/distributed_fit_resume_check.py OUTPUT_DIR

Under `runner.start("data_parallel")` (JAX) or `runner.start("mirrored")`
(TensorFlow) it pre-trains the smallest MAE of tests/helpers/tiny.py for 3
epochs once without a break, and once stopped after epoch 1 (as `TimeLimit`
stops a run) then continued by the same call, and prints `RESULT {...}`: the
replica count, the callbacks' batch losses of both runs and which final
checkpoint arrays differ.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

BACKEND = os.environ["KERAS_BACKEND"]
if BACKEND == "tensorflow":
    from keras_mae.distribute import tf_distribution

    tf_distribution.split_cpu(2)  # before any TensorFlow op

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mae.distribute import runner  # noqa: E402
from keras_mae.recipes.pretrain import pretrain  # noqa: E402
from tests.helpers import distributed_common as common  # noqa: E402
from tests.helpers.tiny import smallest_mae  # noqa: E402

KIND = {"jax": "data_parallel", "tensorflow": "mirrored"}[BACKEND]
EPOCHS = 3


class StopAfter(keras.callbacks.Callback):
    """Stops training at the end of epoch `epochs`, as `TimeLimit` does."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


def replicas():
    if BACKEND == "jax":
        return len(keras.distribution.distribution().device_mesh.devices.ravel())
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def train(output_dir, images, stop_after=None):
    run = runner.start(KIND)  # before the model exists
    count = replicas()
    keras.utils.set_random_seed(0)
    mae = smallest_mae(seed=0)
    losses = common.LossHistory()
    callbacks = [losses] + ([StopAfter(stop_after)] if stop_after else [])
    pretrain(
        mae,
        images,
        epochs=EPOCHS,
        batch_size=8,
        base_learning_rate=1e-2,
        warmup_epochs=1,
        output_dir=output_dir,
        verbose=0,
        callbacks=callbacks,
        run=run,
    )
    return losses.losses, count


def checkpoint_arrays(output_dir):
    with np.load(os.path.join(output_dir, "checkpoint", "variables.npz")) as arrays:
        return {
            name: arrays[name] for name in arrays.files if name.startswith(("model/", "optimizer/"))
        }


def main():
    output_dir = sys.argv[1]
    images = np.random.default_rng(0).uniform(size=(48, 8, 8, 1)).astype("float32")
    whole, killed = os.path.join(output_dir, "whole"), os.path.join(output_dir, "stopped")
    whole_losses, count = train(whole, images)
    first_losses, _ = train(killed, images, stop_after=1)
    resumed_losses, _ = train(killed, images)
    expected, resumed = checkpoint_arrays(whole), checkpoint_arrays(killed)
    common.report(
        replicas=count,
        whole_losses=whole_losses,
        first_losses=first_losses,
        resumed_losses=resumed_losses,
        arrays=len(expected),
        optimizer_arrays=sum(name.startswith("optimizer/") for name in expected),
        different=sorted(
            name
            for name in expected
            if name not in resumed or expected[name].tobytes() != resumed[name].tobytes()
        ),
        max_difference=max(
            float(np.max(np.abs(expected[n].astype("float64") - resumed[n].astype("float64"))))
            for n in expected
            if n in resumed and expected[n].shape == resumed[n].shape
        ),
    )


if __name__ == "__main__":
    main()
