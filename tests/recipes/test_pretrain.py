"""`keras_mae.recipes.pretrain.pretrain`: the official optimizer and schedule,
resumed from its own checkpoint, and the saved model and encoder."""

import os
import shutil

import keras
import numpy as np
import pytest

from keras_mae.data import ArraySource
from keras_mae.recipes.pretrain import pretrain
from tests.conftest import to_numpy
from tests.helpers.tiny import smallest_mae

EPOCHS, BATCH = 3, 8
# The two-epoch run on arrays that two tests continue or refuse to shorten, built once.
pytestmark = pytest.mark.xdist_group("test_pretrain")


def tiny_mae(augmentation=None):
    return smallest_mae(augmentation=augmentation)


def images(count=32):
    return np.random.default_rng(0).random((count, 8, 8, 1)).astype("float32")


class StopAfterEpoch(keras.callbacks.Callback):
    """Dies after `epoch` completed (and was checkpointed), like a killed run."""

    def __init__(self, epoch):
        super().__init__()
        self.stop_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.stop_epoch:
            raise KeyboardInterrupt


def run(directory, train_data, callbacks=None, epochs=EPOCHS, allow_new_settings=False):
    keras.utils.set_random_seed(0)
    mae = tiny_mae()
    summary = pretrain(
        mae,
        train_data,
        epochs=epochs,
        batch_size=BATCH,
        base_learning_rate=0.32,  # peak lr 0.01 at batch 8
        warmup_epochs=1,
        output_dir=str(directory),
        verbose=0,
        callbacks=callbacks,
        allow_new_settings=allow_new_settings,
    )
    return mae, summary


def state(mae):
    return [to_numpy(v) for v in mae.variables + mae.optimizer.variables]


def test_pretrain_resumes_where_an_interrupted_run_stopped(tmp_path):
    source = ArraySource(images())
    reference, full = run(tmp_path / "reference", source)
    assert (full["initial_epoch"], full["epochs"], full["steps_per_epoch"]) == (0, 3, 4)
    assert full["peak_learning_rate"] == pytest.approx(0.32 * BATCH / 256)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", source, callbacks=[StopAfterEpoch(1)])
    keras.utils.clear_session(free_memory=False)
    resumed, summary = run(tmp_path / "resumed", source)
    assert (summary["initial_epoch"], summary["epochs"]) == (2, 3)
    assert len(summary["history"]["loss"]) == 1
    assert int(to_numpy(resumed.optimizer.iterations)) == 12
    for got, want in zip(state(resumed), state(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The finished run's model and encoder, saved beside the checkpoint.
    encoder = keras.models.load_model(tmp_path / "resumed" / "encoder.keras")
    x = images(2)
    np.testing.assert_allclose(
        to_numpy(encoder(x)), to_numpy(reference.encoder(x)), rtol=1e-5, atol=1e-6
    )
    assert os.path.exists(tmp_path / "resumed" / "mae.keras")
    assert os.listdir(tmp_path / "resumed" / "checkpoint")


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """`(directory, summary)` of a 2-epoch run on arrays; tests copy the directory to change it."""
    directory = tmp_path_factory.mktemp("two_epochs")
    _, summary = run(directory, images(), epochs=2)
    return directory, summary


def test_pretrain_on_arrays_continues_weights_optimizer_and_schedule(tmp_path, two_epochs):
    directory, first = two_epochs
    assert (first["initial_epoch"], first["epochs"]) == (0, 2)
    assert first["last_loss"] < first["first_loss"]
    shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
    mae, second = run(tmp_path, images(), epochs=EPOCHS, allow_new_settings=True)  # 2 -> 3
    assert (second["initial_epoch"], second["epochs"]) == (2, 3)
    assert int(to_numpy(mae.optimizer.iterations)) == 3 * 4
    # The schedule's end: the cosine is at 0 after the last step.
    assert float(to_numpy(mae.optimizer.learning_rate)) == pytest.approx(0.0, abs=1e-9)


def test_pretrain_refuses_a_checkpoint_from_a_longer_run(two_epochs):
    directory, _ = two_epochs
    before = sorted(os.listdir(directory))
    with pytest.raises(ValueError, match="holds 2 epochs"):
        run(directory, images(), epochs=1)
    assert sorted(os.listdir(directory)) == before  # refused before any write


def test_pretrain_on_a_source_needs_a_model_without_augmentation():
    mae = tiny_mae(augmentation=keras.layers.Identity())
    with pytest.raises(ValueError, match="without augmentation"):
        pretrain(mae, ArraySource(images()), epochs=1, batch_size=BATCH)
    with pytest.raises(TypeError, match="load_source"):
        pretrain(tiny_mae(), [1, 2, 3], epochs=1, batch_size=BATCH)
