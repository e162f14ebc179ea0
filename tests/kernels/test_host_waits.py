"""No host-device wait in a torch-backend training step, through `fit`.

`benchmarks/host_time.py`'s `TorchDispatchMode` counts the ops that make the
host wait for a GPU (`lift_fresh`: a Python or numpy value made a tensor, a
blocking host-to-device copy on CUDA; `_local_scalar_dense`: a device value
read on the host) in each step of `MaskedAutoencoder.fit`: with the
pre-training recipe's optimizer and schedule, with Keras' AdamW, with noise
given in the data, with the recipe's callbacks, and with the recipes' progress
bar drawing every step. The counter is checked to
see the waits of Keras' own step, so a zero is not a counter that sees nothing.
"""

import io
import os
import re
import sys

import keras
import numpy as np
import pytest

from keras_mae import kernels
from keras_mae.recipes.callbacks import ResumeHostRandomState
from keras_mae.recipes.callbacks import StopOnNonFiniteLoss
from keras_mae.recipes.optimizers import PretrainingAdamW
from keras_mae.recipes.progress import ProgressBar
from keras_mae.recipes.schedules import WarmupCosine
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_mae

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="host waits of an eager step: JAX and TensorFlow run a compiled step",
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 4


def host_time():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import host_time

    return host_time


def optimizer_named(name):
    if name == "recipe":
        return PretrainingAdamW(WarmupCosine(1e-3, total_steps=100, warmup_steps=5))
    return keras.optimizers.AdamW(1e-3, weight_decay=0.05, beta_2=0.95)


def waits_per_step(optimizer, noise=False, steps=3, callbacks=()):
    mae = tiny_mae(seed=0)
    mae.compile(optimizer=optimizer_named(optimizer))
    images = tiny_images(BATCH * steps, seed=1)
    x = images
    if noise:
        x = {"images": images, "noise": np.random.default_rng(2).random((len(images), NUM_PATCHES))}
        x["noise"] = x["noise"].astype("float32")
    mae.fit(x, batch_size=BATCH, epochs=1, verbose=0)  # the first step builds the optimizer
    per_step, counter = host_time().count_fit_waits(
        mae, x, BATCH, record_sites=True, verbose=0, shuffle=False, callbacks=list(callbacks)
    )
    return per_step, counter


@pytest.mark.parametrize("optimizer", ["recipe", "adamw"])
@pytest.mark.parametrize("noise", [False, True], ids=["drawn_noise", "given_noise"])
def test_training_step_makes_no_host_wait(optimizer, noise):
    per_step, counter = waits_per_step(optimizer, noise)
    assert len(per_step) == 3
    sites = "\n".join(f"{n} x {name}: {site}" for (name, site), n in counter.sites.items())
    assert per_step == [0, 0, 0], f"host waits per step {per_step}, from:\n{sites}"


def test_recipe_callbacks_make_no_host_wait(tmp_path):
    # The pre-training recipe's callbacks with batch hooks: the loss check and
    # the host random states' restore.
    callbacks = [StopOnNonFiniteLoss(), ResumeHostRandomState(str(tmp_path / "checkpoint"))]
    per_step, counter = waits_per_step("recipe", callbacks=callbacks)
    sites = "\n".join(f"{n} x {name}: {site}" for (name, site), n in counter.sites.items())
    assert per_step == [0, 0, 0], f"host waits per step {per_step}, from:\n{sites}"


def test_progress_bar_makes_no_host_wait():
    # Redrawn after every step (interval 0), each time with a loss copied to the host.
    stream = io.StringIO()
    callbacks = [StopOnNonFiniteLoss(), ProgressBar(stream, interval=0)]
    per_step, counter = waits_per_step("recipe", callbacks=callbacks)
    sites = "\n".join(f"{n} x {name}: {site}" for (name, site), n in counter.sites.items())
    assert per_step == [0, 0, 0], f"host waits per step {per_step}, from:\n{sites}"
    drawn = re.findall(r"\r(\d)/3 \[[=>.]+\] [0-9.]+ steps/s - ETA \S+ - loss: ", stream.getvalue())
    assert drawn == ["1", "2", "3"], stream.getvalue()


def test_counter_sees_the_waits_of_keras_own_step():
    saved = kernels.train_step.implementation
    kernels.train_step.implementation = kernels.train_step.reference
    try:
        per_step, counter = waits_per_step("recipe")
    finally:
        kernels.train_step.implementation = saved
    # Keras' step uploads the loss tracker's batch size, AdamW's constants and
    # the iteration count's increments every step.
    assert min(per_step) >= 4, per_step
    assert counter.counts["lift_fresh"] >= 4 * len(per_step)
