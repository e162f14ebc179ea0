"""Pictures of reconstructions, written as PNG with numpy and zlib only."""

import struct
import zlib

import numpy as np
from keras import ops


def write_png(path, image):
    """Write an image to a PNG file.

    Args:
        path: str, the file to write.
        image: array `(H, W)`, `(H, W, 1)` or `(H, W, 3)`, uint8, or float in [0, 1]
            (clipped).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        color_type, channels = 0, 1
    elif image.ndim == 3 and image.shape[-1] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(
            f"write_png takes (H, W), (H, W, 1) or (H, W, 3) images. Received: {image.shape}"
        )
    height, width = image.shape[:2]
    rows = image.reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def image_grid(columns, scale=1, gap=2):
    """Tile equally sized image batches side by side, one row per image.

    Args:
        columns: list of arrays `(N, H, W, C)` in [0, 1], e.g. originals, masked
            inputs and reconstructions.
        scale: int, nearest-neighbour upscaling of every image.
        gap: int, white pixels between tiles.

    Returns:
        float array `(rows, cols, C)`.
    """
    columns = [np.repeat(np.repeat(np.asarray(c), scale, 1), scale, 2) for c in columns]
    n, h, w, c = columns[0].shape
    grid = np.ones((n * (h + gap) + gap, len(columns) * (w + gap) + gap, c), "float32")
    for j, column in enumerate(columns):
        for i in range(n):
            top, left = gap + i * (h + gap), gap + j * (w + gap)
            grid[top : top + h, left : left + w] = column[i]
    return grid


def reconstruction_grid(
    model, images, noise=None, mean=None, std=None, value_range=(0.0, 1.0), scale=1, grey=False
):
    """Original | masked | reconstruction of each image, one image per row, in [0, 1].

    The originals are what the encoder sees: after the model's augmentation in
    inference mode (resize, normalisation), if it has one.

    Args:
        model: a `keras_mae.MaskedAutoencoder`.
        images: `(N, H, W, C)` model inputs (raw, if the model augments them).
        noise: optional `(N, L)` masking noise.
        mean, std: the normalisation of the model's inputs, on the [0, 1] scale,
            undone for the picture. Default: none.
        value_range: `(low, high)` of the un-normalised images, mapped to black
            and white. Defaults to (0.0, 1.0).
        scale: int, upscaling of each tile (small images need it).
        grey: bool, show the removed patches grey instead of black.

    Returns:
        float array `(rows, cols, C)`.
    """
    masked, reconstruction = model.reconstruct(images, noise=noise)
    augmentation = getattr(model, "augmentation", None)
    originals = images if augmentation is None else augmentation(images, training=False)
    low, high = value_range

    def to_unit(x):
        x = np.asarray(ops.convert_to_numpy(x), "float32")
        if std is not None:
            x = x * np.asarray(std, "float32")
        if mean is not None:
            x = x + np.asarray(mean, "float32")
        return np.clip((x - low) / (high - low), 0.0, 1.0)

    masked_unit = to_unit(masked)
    if grey:
        removed = np.asarray(ops.convert_to_numpy(masked)) == 0
        masked_unit = np.where(removed, 0.5, masked_unit)
    return image_grid([to_unit(originals), masked_unit, to_unit(reconstruction)], scale=scale)


def save_reconstruction_grid(
    model, images, path, noise=None, value_range=(0.0, 1.0), scale=1, mean=None, std=None
):
    """Save original / masked / reconstruction, one held-out image per row, as a PNG.

    Args: as `reconstruction_grid`, and `path`, the PNG file.

    Returns:
        The grid, float `(rows, cols, C)` in [0, 1].
    """
    grid = reconstruction_grid(model, images, noise, mean, std, value_range, scale)
    write_png(path, grid)
    return grid
