"""The step-level kernels equal their references on every backend.

- `train_step`: a few `fit` steps with the chosen step and with Keras' own, from
  the same weights, data and seed, end in the same weights, optimizer state,
  seed states and logged loss, for the optimizers and schedules the recipes
  use and for those the fast path leaves to Keras.
- `host_copy`: the value the reference reads, also after the tensor changes.
- `uniform_noise`: the same numbers and the same generator state as
  `keras.random.uniform`, draw after draw, also after the state is written
  from outside (a restored checkpoint).
"""

import keras
import numpy as np
import pytest

from keras_mae import kernels
from keras_mae.recipes.optimizers import PretrainingAdamW
from keras_mae.recipes.schedules import WarmupCosine
from tests.conftest import to_numpy
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_mae

BATCH = 4
STEPS = 3


def optimizer_named(name):
    if name == "pretraining_adamw_schedule":
        return PretrainingAdamW(WarmupCosine(1e-2, total_steps=10, warmup_steps=2))
    if name == "adamw":
        return keras.optimizers.AdamW(1e-2, weight_decay=0.1, beta_2=0.95)
    if name == "adam":
        return keras.optimizers.Adam(1e-2)
    if name == "adamw_clipnorm":  # left to Keras' step
        return keras.optimizers.AdamW(1e-2, clipnorm=0.5)
    if name == "sgd":  # left to Keras' step
        return keras.optimizers.SGD(1e-2, momentum=0.9)
    raise ValueError(name)


def trained_state(step, optimizer, images, noise=None):
    """Everything `fit` changes, after STEPS steps with `step` as the train_step kernel."""
    saved = kernels.train_step.implementation
    kernels.train_step.implementation = step
    try:
        keras.utils.set_random_seed(0)
        mae = tiny_mae(num_layers=1, seed=3)
        mae.compile(optimizer=optimizer_named(optimizer))
        x = images if noise is None else {"images": images, "noise": noise}
        history = mae.fit(x, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    finally:
        kernels.train_step.implementation = saved
    return (
        [to_numpy(v) for v in mae.trainable_variables + mae.non_trainable_variables],
        [to_numpy(v) for v in mae.optimizer.variables],
        history.history["loss"],
    )


# Where the chosen step is Keras' own (JAX, TensorFlow), one case checks that
# the model's `train_step` hands its arguments on (JAX: `(state, data)`).
OPTIMIZERS = (
    ["pretraining_adamw_schedule", "adamw", "adam", "adamw_clipnorm", "sgd"]
    if kernels.train_step.is_fast_path
    else ["pretraining_adamw_schedule"]
)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_chosen_train_step_equals_keras_step(optimizer):
    images = tiny_images(BATCH * STEPS, seed=1)
    fast = trained_state(kernels.train_step.implementation, optimizer, images)
    reference = trained_state(kernels.train_step.reference, optimizer, images)
    (fast_vars, fast_opt, fast_loss), (ref_vars, ref_opt, ref_loss) = fast, reference
    assert len(fast_vars) == len(ref_vars) and len(fast_opt) == len(ref_opt)
    for a, b in zip(fast_vars + fast_opt, ref_vars + ref_opt):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fast_loss, ref_loss, rtol=1e-6)
    # The step did train: the weights moved from their initial values.
    keras.utils.set_random_seed(0)
    initial = [to_numpy(v) for v in tiny_mae(num_layers=1, seed=3).trainable_variables]
    assert max(float(np.abs(a - b).max()) for a, b in zip(fast_vars, initial)) > 1e-4


@pytest.mark.skipif(
    not kernels.train_step.is_fast_path, reason="the chosen step is Keras' own on this backend"
)
def test_chosen_train_step_equals_keras_step_with_given_noise():
    images = tiny_images(BATCH * STEPS, seed=1)
    noise = np.random.default_rng(2).random((BATCH * STEPS, 6)).astype("float32")
    fast = trained_state(kernels.train_step.implementation, "adamw", images, noise)
    reference = trained_state(kernels.train_step.reference, "adamw", images, noise)
    for a, b in zip(fast[0] + fast[1], reference[0] + reference[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def draws(uniform, seed_generator, shape, count):
    return [to_numpy(uniform(shape, seed_generator)) for _ in range(count)]


def test_uniform_noise_equals_keras_uniform_draw_after_draw():
    fast_generator = keras.random.SeedGenerator(7)
    reference_generator = keras.random.SeedGenerator(7)
    fast = draws(kernels.uniform_noise.implementation, fast_generator, (3, 5), 4)
    reference = draws(kernels.uniform_noise.reference, reference_generator, (3, 5), 4)
    for a, b in zip(fast, reference):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(fast[0], fast[1])  # each draw is new
    assert 0.0 <= min(a.min() for a in fast) and max(a.max() for a in fast) < 1.0
    np.testing.assert_array_equal(
        to_numpy(fast_generator.state), to_numpy(reference_generator.state)
    )


def test_uniform_noise_follows_a_state_written_from_outside():
    fast_generator = keras.random.SeedGenerator(7)
    draws(kernels.uniform_noise.implementation, fast_generator, (2, 4), 2)
    # As a restored checkpoint does: the state is assigned.
    fast_generator.state.assign(np.array([11, 40], dtype="int32"))
    reference_generator = keras.random.SeedGenerator(11)
    reference_generator.state.assign(np.array([11, 40], dtype="int32"))
    fast = draws(kernels.uniform_noise.implementation, fast_generator, (2, 4), 2)
    reference = draws(kernels.uniform_noise.reference, reference_generator, (2, 4), 2)
    for a, b in zip(fast, reference):
        np.testing.assert_array_equal(a, b)
    # A draw through Keras in between is seen too.
    keras.random.uniform((1,), seed=fast_generator)
    keras.random.uniform((1,), seed=reference_generator)
    np.testing.assert_array_equal(
        to_numpy(kernels.uniform_noise.implementation((2, 4), fast_generator)),
        to_numpy(kernels.uniform_noise.reference((2, 4), reference_generator)),
    )


def test_host_copy_holds_the_value_at_the_copy():
    variable = keras.Variable(np.array([1.5, -2.0], dtype="float32"))
    copy = kernels.host_copy(variable.value)
    expected = kernels.host_copy.reference(variable.value).value()
    variable.assign(np.zeros(2, dtype="float32"))  # after the copy began
    for _ in range(1000):
        if copy.ready():
            break
    np.testing.assert_array_equal(copy.value(), expected)
    np.testing.assert_array_equal(expected, [1.5, -2.0])
