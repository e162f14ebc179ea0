import math

import keras
from keras import ops

from keras_mae import kernels

TRIES = 10


def check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")


def check_range(name, value):
    """`value` must be a pair `(low, high)` with `0 < low <= high`."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair of numbers (low, high). Received: {name}={value!r}"
        ) from None
    if not 0.0 < low <= high or not math.isfinite(high):
        raise ValueError(f"{name} must satisfy 0 < low <= high. Received: {name}={value!r}")
    return (low, high)


def candidate_sizes(image_height, image_width, area_draws, ratio_draws, *, scale, ratio, math_ops):
    """torchvision's candidate crop sizes, from uniform draws in [0, 1).

    A candidate covers `s * H * W` with `s` uniform in `scale`, and its aspect
    ratio `r` is log-uniform in `ratio`: `w = round(sqrt(s * H * W * r))`,
    `h = round(sqrt(s * H * W / r))`. It fits when `0 < w <= W` and `0 < h <= H`.

    This layer and the tf.data pipeline (`keras_mae.data.random_resized_crop_box`)
    both size their candidates here, but each draws its own numbers: the layer
    `(batch, 22)` from its `SeedGenerator` with one offset for the chosen box,
    the pipeline `(4, 10)` per image from a stateless `(seed, element)` with an
    offset per candidate, and its fallback works in float32 on image sizes
    known only inside the graph. Sharing the draws would change every crop
    either one makes (and the batches a resumed run has recorded), so two
    samplers remain.

    Args:
        image_height, image_width: floats, or float32 scalar tensors.
        area_draws, ratio_draws: uniform draws in [0, 1), of one shape.
        scale, ratio: pairs `(low, high)`.
        math_ops: the namespace of `exp`, `sqrt` and `round`: `keras.ops` here,
            `tf.math` in the pipeline (which runs under every backend).

    Returns:
        `(crop_height, crop_width, fits)`, of the draws' shape: float sizes and
        a bool mask.
    """
    area = image_height * image_width
    target_area = area * (scale[0] + (scale[1] - scale[0]) * area_draws)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = math_ops.exp(log_low + (log_high - log_low) * ratio_draws)
    crop_w = math_ops.round(math_ops.sqrt(target_area * aspect))
    crop_h = math_ops.round(math_ops.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= image_width) & (crop_h <= image_height)
    return crop_h, crop_w, fits


def fallback_box(image_height, image_width, ratio):
    """torchvision's fallback: the centre crop with the aspect ratio clamped to `ratio`.

    Returns:
        `(top, left, crop_height, crop_width)` Python ints.
    """
    in_ratio = image_width / image_height
    if in_ratio < ratio[0]:
        crop_w = image_width
        crop_h = int(round(crop_w / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_h = image_height
        crop_w = int(round(crop_h * ratio[1]))
    else:
        crop_h, crop_w = image_height, image_width
    return (image_height - crop_h) // 2, (image_width - crop_w) // 2, crop_h, crop_w


def crop_and_resize(images, boxes, height, width):
    """Crop one box per image and resize it bilinearly to `(height, width)`.

    As torchvision (crop, then resize) and `tf.image.resize` with half-pixel
    centres and no antialiasing: output column `x` samples the crop at
    `left + (x + 0.5) * crop_width / width - 0.5`, clamped to the crop (likewise
    for rows), so pixels outside the box never leak into the output. Separable:
    two gathers of rows, two of columns, batched over images.

    Args:
        images: `(batch, H, W, C)` tensor of any numeric dtype.
        boxes: `(top, left, crop_height, crop_width)`, each a `(batch,)` int
            tensor, the box inside each image.
        height, width: ints, the output size.

    Returns:
        `(batch, height, width, C)` float32.
    """
    images = ops.cast(images, "float32")
    image_height, image_width, channels = images.shape[1], images.shape[2], images.shape[3]
    top, left, crop_h, crop_w = (ops.cast(b, "float32") for b in boxes)
    batch_index = ops.arange(ops.shape(images)[0], dtype="int32")[:, None]  # (batch, 1)

    def sample_points(start, length, size, stride):
        # Source coordinates of the output's pixel centres, clamped to the crop.
        coord = (
            start[:, None]
            + (ops.arange(size, dtype="float32") + 0.5) * (length / size)[:, None]
            - 0.5
        )
        last = (start + length - 1.0)[:, None]
        coord = ops.clip(coord, start[:, None], last)  # (batch, size)
        low = ops.floor(coord)
        frac = coord - low
        high = ops.minimum(low + 1.0, last)
        low = batch_index * stride + ops.cast(low, "int32")  # rows of the flattened batch
        high = batch_index * stride + ops.cast(high, "int32")
        return low, high, frac

    low, high, frac = sample_points(top, crop_h, height, image_height)
    rows = ops.reshape(images, (-1, image_width, channels))  # (batch * H, W, C)
    frac = frac[:, :, None, None]
    images = ops.take(rows, low, axis=0) * (1.0 - frac) + ops.take(rows, high, axis=0) * frac
    # (batch, height, W, C)

    low, high, frac = sample_points(left, crop_w, width, image_width)
    columns = ops.reshape(ops.transpose(images, (0, 2, 1, 3)), (-1, height, channels))
    frac = frac[:, :, None, None]
    images = ops.take(columns, low, axis=0) * (1.0 - frac) + ops.take(columns, high, axis=0) * frac
    return ops.transpose(images, (0, 2, 1, 3))  # (batch, height, width, C)


@keras.saving.register_keras_serializable(package="keras_mae")
class RandomResizedCrop(keras.layers.Layer):
    """Random crop of a random area and aspect ratio, resized (MAE pre-training).

    The augmentation of the official MAE pre-training, torchvision's
    `RandomResizedCrop`, as a layer that runs on the accelerator under every
    backend. Per image, ten candidate boxes are drawn at once: an area of
    `s * H * W` with `s ~ U(scale)` and an aspect ratio `r` log-uniform in `ratio`
    give `w = round(sqrt(s * H * W * r))`, `h = round(sqrt(s * H * W / r))`; the
    first candidate with `0 < w <= W` and `0 < h <= H` is taken, at a uniformly
    drawn integer offset. If none fits, the centre crop with the aspect ratio
    clamped into `ratio` is taken (torchvision's fallback). The box is then
    resized to `(height, width)`.

    Differences from the official recipe: interpolation is bilinear (the official
    one is bicubic via PIL) and downscaling is not antialiased. For host-side
    input pipelines, `keras_mae.data.random_resized_crop` sizes its candidates
    the same way (`candidate_sizes`) from its own stateless draws, in tf.data
    (bicubic by default).

    Outside training, images whose size is already `(height, width)` are returned
    unchanged (cast); others are resized whole, bilinearly.

    Args:
        height: int, output height.
        width: int, output width.
        scale: pair of floats `(low, high)`, `0 < low <= high`, the range of the
            crop's area as a fraction of the image's. Defaults to `(0.2, 1.0)`.
        ratio: pair of floats `(low, high)`, `0 < low <= high`, the range of the
            crop's width / height, sampled log-uniformly. Defaults to
            `(3 / 4, 4 / 3)`.
        seed: int or None, seed of the box generator.

    Call arguments:
        images: `(batch, H, W, C)` of any numeric dtype (e.g. uint8); `H` and `W`
            must be known when the layer is called.
        training: bool; crops only when True.

    Returns:
        `(batch, height, width, C)` in the layer's compute dtype (float32 by
        default), on the input's scale (values are not rescaled).

    Example:
    >>> images = np.random.randint(0, 256, (2, 32, 32, 3), dtype="uint8")
    >>> tuple(RandomResizedCrop(16, 16, seed=0)(images, training=True).shape)
    (2, 16, 16, 3)
    """

    def __init__(self, height, width, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        check_size("height", height)
        check_size("width", width)
        self.height = height
        self.width = width
        self.scale = check_range("scale", scale)
        self.ratio = check_range("ratio", ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def crop_boxes(self, batch_size, image_height, image_width):
        """Draw one crop box per image (the sampling described in the class).

        Args:
            batch_size: int or scalar int tensor.
            image_height, image_width: ints, the input size.

        Returns:
            `(top, left, crop_height, crop_width)`, each a `(batch_size,)` int32
            tensor; the box is `images[top:top + crop_height, left:left + crop_width]`.
        """
        draws = kernels.uniform_noise(
            (batch_size, 2 * TRIES + 2), self.seed_generator
        )  # (batch, 22)
        crop_h, crop_w, fits = candidate_sizes(
            float(image_height),
            float(image_width),
            draws[:, :TRIES],
            draws[:, TRIES : 2 * TRIES],
            scale=self.scale,
            ratio=self.ratio,
            math_ops=ops,
        )  # (batch, tries)

        # The first candidate that fits (TRIES where none does).
        first = ops.min(ops.where(fits, ops.arange(TRIES)[None, :], TRIES), axis=1)
        any_fits = first < TRIES
        first = ops.minimum(first, TRIES - 1)[:, None]
        crop_w = ops.take_along_axis(crop_w, first, axis=1)[:, 0]  # (batch,)
        crop_h = ops.take_along_axis(crop_h, first, axis=1)[:, 0]
        # floor(u * n) is in {0..n-1}; the minimum guards against u * n rounding up to n.
        top = ops.minimum(
            ops.floor(draws[:, -2] * (image_height - crop_h + 1)), image_height - crop_h
        )
        left = ops.minimum(
            ops.floor(draws[:, -1] * (image_width - crop_w + 1)), image_width - crop_w
        )

        fallback = fallback_box(image_height, image_width, self.ratio)
        box = [
            ops.cast(ops.where(any_fits, sampled, float(fb)), "int32")
            for sampled, fb in zip((top, left, crop_h, crop_w), fallback)
        ]
        return tuple(box)

    def call(self, images, training=None):
        image_height, image_width = images.shape[1], images.shape[2]
        if image_height is None or image_width is None:
            raise ValueError(
                "RandomResizedCrop needs the image height and width to be known when "
                f"called. Received: images.shape={tuple(images.shape)}"
            )
        images = ops.cast(images, "float32")
        if training:
            boxes = self.crop_boxes(ops.shape(images)[0], image_height, image_width)
            out = crop_and_resize(images, boxes, self.height, self.width)
        elif (image_height, image_width) == (self.height, self.width):
            out = images
        else:
            out = ops.image.resize(
                images,
                (self.height, self.width),
                interpolation="bilinear",
                antialias=False,
                data_format="channels_last",
            )
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "scale": self.scale,
                "ratio": self.ratio,
                "seed": self.seed,
            }
        )
        return config
