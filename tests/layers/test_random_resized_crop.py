import math

import keras
import numpy as np
import pytest

from keras_mae.layers.random_resized_crop import RandomResizedCrop
from keras_mae.layers.random_resized_crop import crop_and_resize
from tests.conftest import to_numpy


def bilinear_weights(in_size, out_size):
    """Half-pixel-centre bilinear taps along one axis, clamped to the input."""
    coord = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    coord = np.clip(coord, 0, in_size - 1)
    low = np.floor(coord).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, coord - low


def reference_crop_resize(image, box, height, width):
    """torchvision's RandomResizedCrop resize step in numpy: crop, then bilinear resize."""
    top, left, crop_h, crop_w = (int(v) for v in box)
    crop = image[top : top + crop_h, left : left + crop_w].astype("float64")
    low, high, frac = bilinear_weights(crop_h, height)
    crop = crop[low] * (1 - frac)[:, None, None] + crop[high] * frac[:, None, None]
    low, high, frac = bilinear_weights(crop_w, width)
    return crop[:, low] * (1 - frac)[None, :, None] + crop[:, high] * frac[None, :, None]


def torchvision_fallback(image_height, image_width, ratio):
    """torchvision.transforms.RandomResizedCrop.get_params, after ten failed tries."""
    in_ratio = float(image_width) / float(image_height)
    if in_ratio < min(ratio):
        w = image_width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = image_height
        w = int(round(h * max(ratio)))
    else:
        w, h = image_width, image_height
    return (image_height - h) // 2, (image_width - w) // 2, h, w


def boxes_numpy(layer, batch, image_height, image_width):
    return np.stack([to_numpy(b) for b in layer.crop_boxes(batch, image_height, image_width)], 1)


def test_reference_matches_tf_image_resize():
    # The numpy reference itself against tf.image.resize (bilinear, half-pixel, no antialias).
    tf = pytest.importorskip("tensorflow")
    image = np.random.default_rng(0).random((7, 9, 2)).astype("float32")
    for size in [(4, 5), (11, 13), (7, 9)]:
        expected = tf.image.resize(image, size, method="bilinear", antialias=False).numpy()
        np.testing.assert_allclose(
            reference_crop_resize(image, (0, 0, 7, 9), *size), expected, atol=1e-5
        )


@pytest.mark.parametrize(
    "size, boxes",
    [
        ((6, 8), [(0, 0, 6, 8), (1, 2, 4, 5)]),  # identity, and a box resized up
        ((5, 3), [(2, 1, 4, 6), (0, 3, 6, 5)]),  # downscaling
        ((9, 11), [(3, 4, 2, 3), (5, 7, 1, 1)]),  # strong upscaling, a 1x1 box
    ],
)
def test_crop_and_resize_matches_numpy_reference(size, boxes):
    images = np.random.default_rng(1).random((2, 6, 8, 3)).astype("float32")
    boxes = np.array(boxes, dtype="int32")
    out = to_numpy(crop_and_resize(images, tuple(boxes.T), *size))
    assert out.dtype == np.float32 and out.shape == (2, *size, 3)
    for image, box, result in zip(images, boxes, out):
        np.testing.assert_allclose(result, reference_crop_resize(image, box, *size), atol=1e-5)


def test_crop_and_resize_identity_box_is_exact_and_box_does_not_leak():
    images = np.random.default_rng(2).random((1, 6, 8, 3)).astype("float32")
    full = tuple(np.array([[v] for v in (0, 0, 6, 8)], dtype="int32"))
    np.testing.assert_array_equal(to_numpy(crop_and_resize(images, full, 6, 8)), images)
    # A constant box inside a noisy image stays constant when upscaled: the
    # samples next to its edges are clamped to the box, not read from outside.
    images[0, 2:4, 3:6] = 0.25
    box = tuple(np.array([[v] for v in (2, 3, 2, 3)], dtype="int32"))
    np.testing.assert_allclose(to_numpy(crop_and_resize(images, box, 7, 9)), 0.25, atol=1e-7)


def test_boxes_lie_inside_and_respect_scale_and_ratio():
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    image_height, image_width = 32, 24
    layer = RandomResizedCrop(8, 8, scale=scale, ratio=ratio, seed=0)
    top, left, h, w = boxes_numpy(layer, 4000, image_height, image_width).T
    assert (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= image_height).all() and (left + w <= image_width).all()
    # w = round(w'), h = round(h') with w' h' = s A: |w h - s A| <= (w + h) / 2 + 1/4.
    area = image_height * image_width
    slack = 0.5 * (w + h) + 0.25
    assert (h * w >= scale[0] * area - slack).all()
    assert (h * w <= scale[1] * area + slack).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    # The centre crop is the fallback; 32x24 has in-range aspect 0.75, so it is
    # the whole image, which the tries rarely give.
    assert (h * w == area).mean() < 0.1


def test_area_and_log_ratio_are_uniform_when_every_try_fits():
    # On 64x64, scale <= 0.3 always fits, so the first try is the sample.
    layer = RandomResizedCrop(8, 8, scale=(0.1, 0.3), ratio=(1 / 2, 2), seed=1)
    _, _, h, w = boxes_numpy(layer, 4000, 64, 64).T
    fraction = h * w / 64**2
    assert abs(fraction.mean() - 0.2) < 0.01
    assert fraction.min() < 0.11 and fraction.max() > 0.29
    log_ratio = np.log(w / h)
    assert abs(log_ratio.mean()) < 0.03
    assert log_ratio.min() < math.log(1 / 2) + 0.1 and log_ratio.max() > math.log(2) - 0.1


def test_offsets_are_uniform_over_all_positions():
    # scale 1/4 and ratio 1 on 16x16: always an 8x8 box, at any of 9x9 offsets.
    layer = RandomResizedCrop(4, 4, scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=2)
    top, left, h, w = boxes_numpy(layer, 2700, 16, 16).T
    assert (h == 8).all() and (w == 8).all()
    for offsets in (top, left):
        counts = np.bincount(offsets, minlength=9)
        assert len(counts) == 9
        assert (np.abs(counts - 300) < 100).all(), counts


@pytest.mark.parametrize(
    "image_size, scale, ratio",
    [
        ((32, 4), (0.9, 1.0), (3 / 4, 4 / 3)),  # too tall: w = W, h = round(W / 0.75)
        ((4, 32), (0.9, 1.0), (3 / 4, 4 / 3)),  # too wide: h = H, w = round(H * 4 / 3)
        ((8, 8), (1.5, 2.0), (3 / 4, 4 / 3)),  # no area fits: the whole image
        ((10, 7), (0.5, 1.0), (5.0, 6.0)),  # impossible ratio
    ],
)
def test_fallback_is_torchvision_centre_crop(image_size, scale, ratio):
    layer = RandomResizedCrop(4, 4, scale=scale, ratio=ratio, seed=3)
    boxes = boxes_numpy(layer, 64, *image_size)
    expected = torchvision_fallback(*image_size, ratio)
    np.testing.assert_array_equal(boxes, np.tile(expected, (64, 1)))


def test_training_call_crops_the_sampled_boxes_uint8():
    images = np.random.default_rng(3).integers(0, 256, (5, 12, 10, 3), dtype="uint8")
    # Same seed, same draws: the boxes `crop_boxes` gives are the ones `call` uses.
    boxes = boxes_numpy(RandomResizedCrop(7, 9, seed=4), 5, 12, 10)
    out = RandomResizedCrop(7, 9, seed=4)(images, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    out = to_numpy(out)
    assert out.shape == (5, 7, 9, 3)
    for image, box, result in zip(images, boxes, out):
        np.testing.assert_allclose(result, reference_crop_resize(image, box, 7, 9), atol=1e-3)


def test_same_seed_same_output_and_new_boxes_each_call():
    images = np.random.default_rng(4).random((3, 16, 16, 1)).astype("float32")
    first = RandomResizedCrop(8, 8, seed=5)
    second = RandomResizedCrop(8, 8, seed=5)
    a = to_numpy(first(images, training=True))
    np.testing.assert_array_equal(a, to_numpy(second(images, training=True)))
    assert not np.allclose(a, to_numpy(first(images, training=True)))
    layer = RandomResizedCrop(8, 8, seed=6)
    assert not np.array_equal(boxes_numpy(layer, 16, 16, 16), boxes_numpy(layer, 16, 16, 16))


def test_inference_is_identity_or_whole_image_resize():
    images = np.random.default_rng(5).integers(0, 256, (2, 6, 8, 3), dtype="uint8")
    layer = RandomResizedCrop(6, 8, seed=0)
    for out in (layer(images), layer(images, training=False)):
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        np.testing.assert_array_equal(to_numpy(out), images.astype("float32"))
    floats = images.astype("float32") / 255
    for size in [(4, 5), (9, 13)]:
        out = to_numpy(RandomResizedCrop(*size)(floats))
        for image, result in zip(floats, out):
            np.testing.assert_allclose(
                result, reference_crop_resize(image, (0, 0, 6, 8), *size), atol=1e-5
            )


def test_compute_dtype_follows_policy():
    images = np.zeros((1, 6, 6, 3), dtype="uint8")
    layer = RandomResizedCrop(4, 4, seed=0, dtype="mixed_bfloat16")
    assert keras.backend.standardize_dtype(layer(images, training=True).dtype) == "bfloat16"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(height=0, width=4), "Received: height=0"),
        (dict(height=4, width=2.5), "Received: width=2.5"),
        (dict(height=4, width=4, scale=(0.5, 0.2)), r"Received: scale=\(0.5, 0.2\)"),
        (dict(height=4, width=4, scale=(0.0, 1.0)), r"Received: scale=\(0.0, 1.0\)"),
        (dict(height=4, width=4, scale=0.5), "Received: scale=0.5"),
        (dict(height=4, width=4, ratio=(-1, 2)), r"Received: ratio=\(-1, 2\)"),
        (dict(height=4, width=4, ratio=(1, 2, 3)), r"Received: ratio=\(1, 2, 3\)"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomResizedCrop(**kwargs)


def test_config_roundtrip_sequential_and_keras_file(tmp_path):
    layer = RandomResizedCrop(5, 7, scale=(0.3, 0.9), ratio=(0.5, 2.0), seed=11, name="crop")
    config = layer.get_config()
    for key, value in dict(height=5, width=7, scale=(0.3, 0.9), ratio=(0.5, 2.0), seed=11).items():
        assert config[key] == value
    clone = RandomResizedCrop.from_config(config)
    assert clone.get_config() == config

    inputs = keras.Input((10, 12, 2), dtype="uint8")
    assert RandomResizedCrop(5, 7)(inputs).shape == (None, 5, 7, 2)
    model = keras.Sequential([keras.Input((10, 12, 2)), layer])
    assert model.compute_output_shape((None, 10, 12, 2)) == (None, 5, 7, 2)
    images = np.random.default_rng(6).random((3, 10, 12, 2)).astype("float32")
    path = str(tmp_path / "crop.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.layers[0].get_config() == config
    np.testing.assert_allclose(to_numpy(restored(images)), to_numpy(model(images)), atol=1e-6)
    # Symbolic spatial size is fine in a functional model's shape inference.
    assert layer.compute_output_shape((None, None, None, 2)) == (None, 5, 7, 2)


def test_jit_compiled_fit_advances_the_seed_state():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            RandomResizedCrop(8, 8, seed=0),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    # XLA on TF and JAX; torch.compile is too slow for a unit test.
    model.compile(optimizer="sgd", loss="mse", jit_compile=keras.backend.backend() != "torch")
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (16, 12, 12, 3), dtype="uint8")
    targets = rng.random((16, 2)).astype("float32")
    state = to_numpy(model.layers[0].seed_generator.state).copy()
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(to_numpy(model.layers[0].seed_generator.state), state)
    assert model.predict(images[:2], verbose=0).shape == (2, 2)
