"""MaskedAutoencoder(augmentation=...): preprocessing inside the compiled step."""

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.layers.patching import patchify
from keras_mae.models.masked_autoencoder import masked_patch_loss
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import PATCH_DIM
from tests.helpers.tiny import TINY
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_mae
from tests.helpers.tiny import tiny_noise

HEIGHT, WIDTH, CHANNELS = TINY["image_shape"]


def uint8_images(count=BATCH):
    return tiny_images(count, dtype="uint8")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_loss_regresses_the_augmented_images():
    """A deterministic augmentation (x / 255) on uint8 inputs gives the outputs and
    loss of the same model fed x / 255 directly."""
    images = uint8_images()
    noise = tiny_noise()
    plain = tiny_mae(norm_pix_loss=True)
    augmented = tiny_mae(norm_pix_loss=True, augmentation=keras.layers.Rescaling(1 / 255))
    augmented.set_weights(plain.get_weights())
    scaled = images.astype("float32") / 255
    want = plain({"images": scaled, "noise": noise})
    got = augmented({"images": images, "noise": noise})
    np.testing.assert_allclose(numpy(got["pred"]), numpy(want["pred"]), atol=1e-6)
    np.testing.assert_allclose(numpy(got["images"]), scaled, atol=1e-7)
    loss = augmented.compute_loss(x={"images": images, "noise": noise}, y_pred=got)
    # The target is the augmented image, normalised per patch (unbiased variance).
    target = numpy(patchify(scaled, TINY["patch_size"]))
    target = target.reshape(BATCH, NUM_PATCHES, PATCH_DIM).astype("float64")
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
        target.var(-1, ddof=1, keepdims=True) + 1e-6
    )
    expected = masked_patch_loss(target, numpy(want["pred"]), numpy(want["mask"]))
    np.testing.assert_allclose(float(numpy(loss)), float(numpy(expected)), rtol=1e-5)
    assert "images" not in want  # no augmentation: the documented outputs only


MEAN = [120.0, 110.0]  # one per channel; the variance is 60**2


def on_device_augmentation(seed=3):
    return keras.Sequential(
        [
            keras_mae.RandomResizedCrop(HEIGHT, WIDTH, scale=(0.3, 1.0), seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.Normalization(mean=MEAN, variance=[3600.0] * CHANNELS),
        ],
        name="augmentation",
    )


def test_random_augmentation_acts_in_training_only_and_fit_takes_uint8(tmp_path):
    mae = tiny_mae(augmentation=on_device_augmentation())
    images = uint8_images(16)
    noise = np.zeros((16, NUM_PATCHES), "float32")
    normalized = (images.astype("float32") - MEAN) / 60.0
    seen = numpy(mae({"images": images, "noise": noise}, training=False)["images"])
    np.testing.assert_allclose(seen, normalized, atol=1e-5)  # inference: normalise only
    first = numpy(mae({"images": images, "noise": noise}, training=True)["images"])
    second = numpy(mae({"images": images, "noise": noise}, training=True)["images"])
    assert not np.allclose(first, normalized) and not np.allclose(first, second)

    mae.compile(optimizer=keras.optimizers.AdamW(1e-3, beta_2=0.95))
    history = mae.fit(images, batch_size=8, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    path = str(tmp_path / "mae.keras")
    mae.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.augmentation, keras.Sequential)
    assert isinstance(loaded.augmentation.layers[0], keras_mae.RandomResizedCrop)
    np.testing.assert_allclose(
        numpy(loaded({"images": images, "noise": noise})["pred"]),
        numpy(mae({"images": images, "noise": noise})["pred"]),
        atol=1e-6,
    )


def test_bad_augmentation_is_refused():
    with pytest.raises(TypeError, match="augmentation must be a Keras layer"):
        tiny_mae(augmentation=lambda x: x)
    mae = tiny_mae(augmentation=keras.layers.Resizing(4, 4))
    with pytest.raises(ValueError, match=r"\(4, 4, 2\).*after the model's augmentation"):
        mae(uint8_images())
