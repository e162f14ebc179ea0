"""Shared set-up of the data-parallel equivalence checks (run as subprocesses).

Every check trains the smallest MAE of tests/helpers/tiny.py (fixed initial
weights, fixed masking noise) for `STEPS` steps of global batch `GLOBAL_BATCH`,
once on one device and once data-parallel, and prints one JSON line
`RESULT {...}` with both loss histories and the largest weight difference. SGD
with momentum is the optimizer: its update is linear in the gradient, so a
wrong gradient reduction (a sum instead of a mean over replicas) shows as a
factor, while Adam would hide it behind its normalisation.
"""

import json

import numpy as np

GLOBAL_BATCH = 8
STEPS = 3
IMAGE_SHAPE = (8, 8, 1)
NUM_PATCHES = 4  # 8x8 images, 4x4 patches


def make_data():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(STEPS * GLOBAL_BATCH, *IMAGE_SHAPE)).astype("float32")
    noise = rng.uniform(size=(STEPS * GLOBAL_BATCH, NUM_PATCHES)).astype("float32")
    return images, noise


def make_model():
    """One block each side: the least that has every kind of layer a layout shards."""
    from tests.helpers.tiny import smallest_mae

    return smallest_mae()


def make_optimizer():
    import keras

    return keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)


def initial_weights():
    """The weights of a freshly built model with seed 0, as numpy arrays."""
    import keras

    keras.utils.set_random_seed(0)
    return [np.array(w) for w in make_model().get_weights()]


class LossHistory:
    """A keras callback recording the running loss after every batch."""

    def __new__(cls):
        import keras

        class _History(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.losses = []

            def on_train_batch_end(self, batch, logs=None):
                self.losses.append(float(logs["loss"]))

        return _History()


def fit_keras(model, images, noise, batch_size):
    """`fit` for `STEPS` steps in order; returns the per-step running losses."""
    history = LossHistory()
    model.fit(
        {"images": images, "noise": noise},
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[history],
    )
    return history.losses


def max_weight_difference(weights_a, weights_b):
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(weights_a, weights_b)
    )


def report(**values):
    print("RESULT " + json.dumps(values), flush=True)
