"""Augmentation as Keras layers, to run inside a model's compiled step.

For images held in memory (numpy, uint8 or float), the recipes put the
augmentation in the model, as `MaskedAutoencoder(augmentation=...)` does, so
that it runs on the accelerator under every backend and `fit` moves raw
batches. Outside training the same layer is the evaluation transform: the
random layers pass images through, the crop resizes only images of another
size, and the normalisation stays.
"""

import keras

from keras_mae.data.statistics import default_mean_std
from keras_mae.layers.random_resized_crop import RandomResizedCrop


def image_augmentation(
    image_shape,
    scale=(0.08, 1.0),
    flip=True,
    mean=None,
    std=None,
    max_value=1.0,
    randaugment_magnitude=0,
    random_erasing=0.0,
    seed=None,
    input_shape=None,
    name="augmentation",
):
    """RandomResizedCrop, flip, RandAugment, random erasing and normalisation in order.

    The training transforms of the official recipes (RandomResizedCrop and a
    horizontal flip; for fine-tuning also RandAugment and random erasing),
    followed by mean/std normalisation, as a `keras.Sequential`. RandAugment
    (`keras.layers.RandAugment`, 2 ops, factor m / 10) and random erasing
    (`keras.layers.RandomErasing`) act on the un-normalised images, as in the
    tf.data pipeline (`keras_mae.data.finetune_augmentations`).

    Args:
        image_shape: `(H, W, C)` of the output (the encoder's input).
        scale: pair, the crop's area range as a fraction of the image: (0.2, 1)
            for pre-training, (0.08, 1) for the linear probe and fine-tuning.
            Defaults to (0.08, 1.0).
        flip: bool, random horizontal flips. Defaults to True.
        mean, std: per-channel normalisation on the [0, 1] scale. Default:
            ImageNet's for RGB, 0.5 / 0.5 for grey (the tf.data pipeline's).
            `mean=(0.0,), std=(1.0,)` keeps [0, 1] images as they are.
        max_value: float, the inputs' white: 255.0 for uint8 images, 1.0 for
            floats in [0, 1] (see `keras_mae.data.statistics.max_pixel_value`).
            Defaults to 1.0.
        randaugment_magnitude: float in [0, 10]; 0 turns RandAugment off.
            Defaults to 0.
        random_erasing: float in [0, 1], the erasing factor; 0 turns it off.
            Defaults to 0.0.
        seed: int or None, seed of every random layer.
        input_shape: `(H, W, C)` of the inputs, when they differ in size from
            `image_shape` (the crop resizes them). Defaults to `image_shape`.
        name: str. Defaults to `"augmentation"`.

    Returns:
        A built `keras.Sequential` from images of `input_shape` (any numeric
        dtype) to normalised float32 images of `image_shape`.

    Example:

    ```python
    augmentation = image_augmentation((32, 32, 3), scale=(0.2, 1.0), max_value=255.0)
    mae = keras_mae.MaskedAutoencoder.from_preset(
        "mae_vit_tiny_patch4", augmentation=augmentation)
    mae.fit(uint8_images, batch_size=256)  # cropped, flipped, normalised in the step
    ```
    """
    height, width, channels = tuple(image_shape)
    check_photometric(randaugment_magnitude, random_erasing)
    mean, std = channel_statistics(channels, mean, std)
    layers = [RandomResizedCrop(height, width, scale=scale, seed=seed, name="crop")]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="flip"))
    layers += photometric_layers(randaugment_magnitude, random_erasing, max_value, seed)
    layers.append(
        keras.layers.Normalization(
            mean=[m * max_value for m in mean],
            variance=[(s * max_value) ** 2 for s in std],
            name="normalization",
        )
    )
    augmentation = keras.Sequential(layers, name=name)
    augmentation.build((None, *tuple(input_shape or image_shape)))
    return augmentation


def check_photometric(randaugment_magnitude, random_erasing):
    """Refuse a RandAugment magnitude outside [0, 10] or an erasing factor outside [0, 1]."""
    if not 0 <= randaugment_magnitude <= 10:
        raise ValueError(
            "randaugment_magnitude must be in [0, 10] (0 turns RandAugment off). "
            f"Received: randaugment_magnitude={randaugment_magnitude}"
        )
    if not 0.0 <= random_erasing <= 1.0:
        raise ValueError(
            f"random_erasing must be in [0, 1]. Received: random_erasing={random_erasing}"
        )


def channel_statistics(channels, mean, std):
    """`(mean, std)` tuples of one value per channel; None takes the defaults."""
    default_mean, default_std = default_mean_std(channels)
    mean = default_mean if mean is None else tuple(mean)
    std = default_std if std is None else tuple(std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}). "
            f"Received: mean={mean}, std={std}"
        )
    return mean, std


def photometric_layers(randaugment_magnitude, random_erasing, max_value, seed):
    """RandAugment (2 ops, factor m / 10) and random erasing, those that are on, in order."""
    layers = []
    if randaugment_magnitude:
        layers.append(
            keras.layers.RandAugment(
                value_range=(0, max_value),
                num_ops=2,
                factor=randaugment_magnitude / 10,
                seed=seed,
                name="randaugment",
            )
        )
    if random_erasing:
        layers.append(
            keras.layers.RandomErasing(
                factor=random_erasing, value_range=(0, max_value), seed=seed, name="erasing"
            )
        )
    return layers
