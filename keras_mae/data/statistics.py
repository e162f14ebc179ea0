"""Normalisation statistics, without TensorFlow (shared by tf.data and in-model augmentation)."""

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_mean_std(channels):
    """The default normalisation on the [0, 1] scale: ImageNet's for RGB, 0.5 / 0.5 otherwise."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.5,) * channels


def max_pixel_value(images):
    """The value of white in `images`: 255 for integer arrays (uint8), 1.0 for floats in [0, 1]."""
    return 255.0 if np.issubdtype(np.asarray(images).dtype, np.integer) else 1.0


def pixel_mean_std(images):
    """Per-channel mean and standard deviation of `images` `(N, H, W, C)` on the [0, 1] scale.

    Integer images (uint8) are divided by 255 first, so the result can be given
    as `mean` and `std` to the recipes whatever the images' dtype.

    Returns:
        A tuple `(mean, std)` of tuples of `C` floats.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"pixel_mean_std takes images of shape (N, H, W, C). Received shape {images.shape}"
        )
    pixels = images.reshape(-1, images.shape[-1]).astype("float64") / max_pixel_value(images)
    return tuple(float(m) for m in pixels.mean(0)), tuple(float(s) for s in pixels.std(0))
