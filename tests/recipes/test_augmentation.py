"""`image_augmentation`: the training transforms as Keras layers, whose inference
mode is exactly the evaluation transform (normalisation, resize if needed)."""

import numpy as np
import pytest

from keras_mae.recipes.augmentation import image_augmentation
from tests.conftest import to_numpy


def test_inference_mode_is_the_normalisation_of_the_inputs_scale():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (3, 8, 8, 3)).astype("uint8")
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    augmentation = image_augmentation((8, 8, 3), mean=mean, std=std, max_value=255.0)
    expected = (raw / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(
        to_numpy(augmentation(raw, training=False)), expected, rtol=1e-5, atol=1e-5
    )
    # The default normalisation is the tf.data pipeline's (0.5 / 0.5 for grey).
    grey = rng.random((2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(image_augmentation((8, 8, 1))(grey, training=False)),
        (grey - 0.5) / 0.5,
        rtol=1e-5,
        atol=1e-6,
    )


def test_training_mode_crops_and_flips_within_the_inputs_range():
    images = np.tile(np.arange(16, dtype="float32")[None, None, :, None] / 15.0, (4, 16, 1, 1))
    augmentation = image_augmentation(
        (8, 8, 1), scale=(0.2, 0.5), mean=(0.0,), std=(1.0,), seed=0, input_shape=(16, 16, 1)
    )
    out = to_numpy(augmentation(images, training=True))
    assert out.shape == (4, 8, 8, 1)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out[0], out[1])  # each image its own crop
    # A horizontal ramp stays a ramp, rising or (flipped) falling along each row.
    steps = np.diff(out[..., 0], axis=2)
    assert np.all((steps >= -1e-6).all(axis=(1, 2)) | (steps <= 1e-6).all(axis=(1, 2)))
    # Outside training the 16x16 inputs are resized whole.
    assert to_numpy(augmentation(images, training=False)).shape == (4, 8, 8, 1)


def test_randaugment_and_erasing_run_and_stay_finite():
    raw = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    augmentation = image_augmentation(
        (8, 8, 3), max_value=255.0, randaugment_magnitude=9, random_erasing=1.0, seed=0
    )
    assert [layer.name for layer in augmentation.layers] == [
        "crop",
        "flip",
        "randaugment",
        "erasing",
        "normalization",
    ]
    out = to_numpy(augmentation(raw, training=True))
    assert out.shape == (2, 8, 8, 3) and np.isfinite(out).all()


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="one value per channel"):
        image_augmentation((8, 8, 3), mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="randaugment_magnitude"):
        image_augmentation((8, 8, 3), randaugment_magnitude=12)
