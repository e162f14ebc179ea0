"""What Keras users feed a MaskedAutoencoder, and the first line they read back.

- Keras' data utilities (`keras.utils.image_dataset_from_directory`,
  `keras.utils.PyDataset`, generators, `tf.data`, arrays) of float images on
  a 0-255 scale are refused before the first step, with `/ 255` or
  `Rescaling(1 / 255)` as the way out; on the [0, 1] scale they train. The
  first batch's values are looked at once, on the host.
- Non-finite pixels: in the first batch, refused before any work; in a
  later batch, the non-finite-loss stop says whether that batch's images
  held them (the data) or not (the training diverged).
- An error raised by a call's checks (noise, image shape, channels, a dict's
  keys, integer pixels) has the message on its first line, not Keras'
  "Exception encountered when calling ...": logs often show only that line.
"""

import os

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.data import ArraySource
from keras_mae.data.arrays import EpochBatches
from keras_mae.data.arrays import epoch_order
from keras_mae.models.checks import check_data
from keras_mae.models.checks import element_images
from keras_mae.recipes.callbacks import NonFiniteLossError
from keras_mae.recipes.callbacks import StopOnNonFiniteLoss
from keras_mae.recipes.defaults import PretrainSettings
from keras_mae.recipes.pretrain import fit_inputs
from keras_mae.recipes.pretrain import pretrain
from keras_mae.recipes.pretrain import training_batch_images
from tests.conftest import to_numpy
from tests.faults.test_bad_inputs import assert_unchanged
from tests.faults.test_bad_inputs import weights_of
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import SMALLEST
from tests.helpers.tiny import SQUARE
from tests.helpers.tiny import TINY
from tests.helpers.tiny import square_mae
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_mae
from tests.helpers.tiny import tiny_noise

SHAPE = SQUARE["image_shape"]  # RGB, as image_dataset_from_directory reads


def write_image_folder(root, per_class=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        os.makedirs(root / name)
        for i in range(per_class):
            pixels = rng.integers(0, 256, SHAPE).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return keras.utils.image_dataset_from_directory(
        root, image_size=SHAPE[:2], batch_size=BATCH, shuffle=False, verbose=False
    )


class Batches(keras.utils.PyDataset):
    def __init__(self, images):
        super().__init__()
        self.images = images

    def __len__(self):
        return len(self.images) // BATCH

    def __getitem__(self, index):
        return self.images[index * BATCH : (index + 1) * BATCH]


def batches_of(images):
    for start in range(0, len(images), BATCH):
        yield (images[start : start + BATCH],)


def forms(folder, scale):
    """Each form of data Keras' `fit` takes, of `2 * BATCH` images times `scale`."""
    import tensorflow as tf

    images = np.random.default_rng(1).random((2 * BATCH, *SHAPE)).astype("float32")
    images = images * scale
    folder = write_image_folder(folder).map(lambda x, y: (x * (scale / 255), y))
    return {
        "image_dataset_from_directory": folder,
        "PyDataset": Batches(images),
        "generator": batches_of(images),
        "tf.data": tf.data.Dataset.from_tensor_slices(images).batch(BATCH),
        "array": images,
    }


def test_keras_data_utilities_on_a_0_255_scale_are_refused_with_the_fix(tmp_path):
    mae = square_mae()
    mae.compile(optimizer=keras.optimizers.AdamW(1e-3))
    before = weights_of(mae)
    for name, data in forms(tmp_path, 255.0).items():
        with pytest.raises(ValueError) as error:
            mae.fit(data, epochs=1, verbose=0)
        first = str(error.value).splitlines()[0]
        assert "0-255 scale" in first, (name, first)
        assert "Rescaling(1 / 255)" in first and "/ 255" in first, (name, first)
        assert int(to_numpy(mae.optimizer.iterations)) == 0
    assert_unchanged(mae, before)
    # The folder as image_dataset_from_directory reads it: 0-255 floats, refused.
    with pytest.raises(ValueError, match=r"the first batch reaches 2\d\d;"):
        check_data(mae, write_image_folder(tmp_path / "raw"))
    # A normalising augmentation takes them as they are.
    mae.augmentation = keras.Sequential([keras.layers.Rescaling(1 / 255)])
    assert check_data(mae, forms(tmp_path / "again", 255.0)["array"]) is not None


def test_keras_data_utilities_on_the_unit_scale_train_every_batch(tmp_path):
    mae = square_mae(seed=0)
    mae.compile(optimizer=keras.optimizers.AdamW(1e-3))
    data = forms(tmp_path, 1.0)
    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
    for name in ("image_dataset_from_directory", "generator"):
        steps.clear()
        history = mae.fit(data[name], epochs=1, verbose=0, shuffle=False, callbacks=[counter])
        loss = history.history["loss"][0]
        # Pixels in [0, 1] give a loss below 1 (0-255 pixels give thousands).
        assert np.isfinite(loss) and loss < 1.0, (name, loss)
        # The generator's first batch, looked at, is trained on too.
        assert steps == [0, 1], (name, steps)


def test_non_finite_pixels_in_the_first_batch_are_refused_before_any_work(tmp_path):
    mae = square_mae()
    mae.compile(optimizer=keras.optimizers.AdamW(1e-3))
    before = weights_of(mae)
    images = np.random.default_rng(0).random((2 * BATCH, *SHAPE)).astype("float32")
    images[1, 2, 3, 0] = np.nan
    images[2, 0, 0, 1] = np.inf
    for data in (images, Batches(images), batches_of(images)):
        with pytest.raises(ValueError) as error:
            mae.fit(data, epochs=1, verbose=0)
        first = str(error.value).splitlines()[0]
        assert "2 non-finite pixel value(s)" in first and "np.isfinite" in first
    assert_unchanged(mae, before)


def stop_message(images):
    """The message of the non-finite-loss stop at epoch 2, batch 3, whose images are
    `images` (None: the stop is not told the batch)."""
    seen = []

    def batch_images(epoch, batch):
        seen.append((epoch, batch))
        return images

    stop = StopOnNonFiniteLoss(None if images is None else batch_images)
    stop.on_epoch_begin(1)
    stop.on_train_batch_end(0, {"loss": np.float32(0.5)})
    with pytest.raises(NonFiniteLossError) as error:
        stop.on_train_batch_end(2, {"loss": np.float32(np.nan)})
        stop.on_epoch_end(1)
    assert seen == ([] if images is None else [(1, 2)])  # looked at once, that batch
    return str(error.value)


def test_a_non_finite_loss_names_its_cause():
    images = tiny_images()
    damaged = images.copy()
    damaged[0, 0, 0, 0] = np.nan
    data = stop_message(damaged)
    assert data.startswith("the training loss became nan at epoch 2, batch 3; stopping.")
    assert "hold 1 non-finite value(s) (NaN or inf)" in data
    assert "the data is the cause, not the learning rate" in data
    assert "Lower the learning rate" not in data
    diverged = stop_message(images)
    assert "images are finite: the training diverged. Lower the learning rate" in diverged
    unknown = stop_message(None)
    assert "Check that batch's images for NaN or inf" in unknown
    assert "Lower the learning rate" in unknown


def smallest_images(n=16):
    return np.random.default_rng(0).random((n, *SMALLEST["image_shape"])).astype("float32")


def test_the_stop_looks_at_the_batch_fit_was_given():
    """`training_batch_images` draws again the batch `fit` saw, on both paths."""
    mae = keras_mae.MaskedAutoencoder(**SMALLEST)
    images = smallest_images()
    settings = PretrainSettings(epochs=3, batch_size=4, seed=5, mean=(0.5,), std=(0.5,))
    at = training_batch_images(mae, images, settings)
    fed = EpochBatches(images, 4, 3, initial_epoch=1, seed=5)
    np.testing.assert_array_equal(at(2, 3), fed[4 + 3][0])
    source = ArraySource((images * 255).astype("uint8"), np.zeros(16, "int64"))
    at = training_batch_images(mae, source, settings)
    stream, _ = fit_inputs(mae, source, settings, 1)
    batches = [to_numpy(element_images(element)) for element in stream.take(6)]
    np.testing.assert_array_equal(to_numpy(at(2, 1)), batches[4 + 1])


def test_pretrain_names_a_damaged_image_met_mid_epoch(tmp_path):
    # The recipe looks at the first 256 images and fit at its first batch before
    # any work: the damaged image is past both, in the first epoch's second batch.
    images = smallest_images(264)
    order = epoch_order(len(images), 0, 0)
    damaged = next(i for i in order[132:] if i >= 256)
    images[damaged, 1, 1, 0] = np.nan
    mae = keras_mae.MaskedAutoencoder(**SMALLEST)
    with pytest.raises(NonFiniteLossError) as error:
        pretrain(mae, images, epochs=2, batch_size=132, output_dir=str(tmp_path), verbose=0)
    message = str(error.value)
    assert "epoch 1, batch 2" in message and "hold 1 non-finite value(s)" in message
    assert not os.path.exists(tmp_path / "checkpoint" / "variables.npz")


def built_patch_encoder(images):
    layer = keras_mae.PatchEncoder(patch_size=TINY["patch_size"], hidden_dim=16)
    layer(images)
    return layer


def call_errors():
    mae = tiny_mae()
    images = tiny_images()
    wrong_size = np.zeros((BATCH, 8, 8, 2), "float32")
    return {
        "noise of rank 1": (
            lambda: mae({"images": images, "noise": np.zeros((BATCH,), "float32")}),
            ["noise.shape=(4,)", "Pass one row per image"],
        ),
        "noise of the wrong length": (
            lambda: mae(images, noise=tiny_noise()[:, :5]),
            ["noise.shape=(4, 5)", "Pass one row per image"],
        ),
        "non-finite noise": (
            lambda: mae(images, noise=np.full((BATCH, 6), np.nan, "float32")),
            ["24 non-finite", "Pass finite noise"],
        ),
        "masking layer noise": (
            lambda: keras_mae.RandomMasking(0.75)(np.ones((2, 16, 8)), noise=np.zeros((2,))),
            ["noise.shape=(2,)", "Pass one row per image"],
        ),
        "image size": (lambda: mae(wrong_size), ["(8, 8, 2)", "Resize or convert"]),
        "channels": (
            lambda: mae(np.zeros((BATCH, 8, 12, 3), "float32")),
            ["3 channel(s)", "Resize or convert"],
        ),
        "one image": (lambda: mae(images[0]), ["(8, 12, 2)", "Resize or convert"]),
        "dict keys": (lambda: mae({"image": images}), ["['image']", "'images'"]),
        "integer pixels": (
            lambda: mae(images.astype("uint8")),
            ["uint8", "Rescaling(1 / 255)"],
        ),
        "encoder image size": (
            lambda: keras_mae.MAEEncoder(
                **{k: TINY[k] for k in ("image_shape", "patch_size", "hidden_dim")},
                num_layers=1,
                num_heads=2,
            )(wrong_size),
            ["(8, 8, 2)", "Resize or convert"],
        ),
        "patch encoder image size": (
            lambda: built_patch_encoder(images)(wrong_size),
            ["(8, 12)", "received images of size (8, 8)", "Resize the images"],
        ),
        "reconstruct": (lambda: mae.reconstruct(wrong_size), ["(8, 8, 2)", "Resize"]),
        "predict": (lambda: mae.predict(wrong_size, verbose=0), ["(8, 8, 2)", "Resize"]),
    }


def test_the_first_line_of_each_call_error_names_the_value_and_the_fix():
    for name, (call, words) in call_errors().items():
        with pytest.raises(ValueError) as error:
            call()
        first = str(error.value).splitlines()[0]
        assert "Exception encountered" not in first, (name, first)
        for word in words:
            assert word in first, (name, word, first)


def test_pretrain_refuses_0_255_floats_before_any_work(tmp_path):
    mae = keras_mae.MaskedAutoencoder(**SMALLEST)
    with pytest.raises(ValueError, match=r"train_data are floats on a 0-255 scale") as error:
        pretrain(
            mae, smallest_images() * 255, epochs=1, batch_size=4, output_dir=str(tmp_path / "run")
        )
    assert "Rescaling(1 / 255)" in str(error.value).splitlines()[0]
    assert not os.path.exists(tmp_path / "run")
    assert getattr(mae, "optimizer", None) is None


def test_the_recipes_refuse_a_keras_dataset_with_the_way_to_give_it():
    import tensorflow as tf

    from keras_mae.recipes.finetune import finetune
    from keras_mae.recipes.linear_probe import linear_probe

    images = np.zeros((BATCH, *SMALLEST["image_shape"]), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(BATCH, "int64"))).batch(2)
    mae = keras_mae.MaskedAutoencoder(**SMALLEST)
    calls = {
        "train_data must be in-memory": lambda: pretrain(mae, dataset, epochs=1, batch_size=2),
        "train must be (images, labels)": lambda: linear_probe(mae.encoder, dataset, dataset),
        "train must be (images, labels) ": lambda: finetune(mae.encoder, dataset, dataset),
    }
    for start, call in calls.items():
        with pytest.raises(TypeError) as error:
            call()
        first = str(error.value).splitlines()[0]
        assert first.startswith(start.strip()) and "Received: " in first, first
        assert "load_source('folder:PATH', 'train')" in first, first
    assert getattr(mae, "optimizer", None) is None
