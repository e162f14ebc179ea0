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


# Removed patches are drawn mid grey with a thin darker grid at the patch
# borders: flat grey with straight lines every patch, which no photograph or
# digit shows, where black (the old colour) is the digits' background.
MASK_FILL = 128 / 255
MASK_LINE = 96 / 255


def spread_over_classes(labels, count=8):
    """Indices of `count` images taken in turn from each class (first of each, then
    second, ...), so a picture of held-out images shows several classes even when
    the split is stored in class order."""
    labels = np.asarray(labels)
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen = []
    while len(chosen) < min(count, len(labels)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop(0)))
    return np.asarray(chosen, "int64")


def mask_pixels(mask, grid, patch_size, scale=1):
    """Pixel maps of removed patches: `(removed, border)`, each `(N, H * scale, W * scale)`.

    `border` marks the outermost pixel rows and columns of each removed patch
    (only where a patch is at least 4 pixels wide on screen).
    """
    mask = np.asarray(mask, bool).reshape(-1, grid[0], grid[1])
    tile = patch_size * scale
    removed = np.repeat(np.repeat(mask, tile, 1), tile, 2)
    if tile < 4:
        return removed, np.zeros_like(removed)
    rows = np.arange(removed.shape[1]) % tile
    cols = np.arange(removed.shape[2]) % tile
    edge = ((rows == 0) | (rows == tile - 1))[:, None] | ((cols == 0) | (cols == tile - 1))[None]
    return removed, removed & edge[None]


def reconstruction_grid(
    model, images, noise=None, mean=None, std=None, value_range=(0.0, 1.0), scale=1, grey=True
):
    """Original | masked | reconstruction of each image, one image per row, in [0, 1].

    The originals are what the encoder sees: after the model's augmentation in
    inference mode (resize, normalisation), if it has one.

    Args:
        model: a `keras_mae.MaskedAutoencoder`.
        images: `(N, H, W, C)` model inputs (raw, if the model augments them).
        noise: optional `(N, L)` masking noise. Default: drawn from a numpy
            generator seeded with 0, so pictures of one model are comparable.
        mean, std: the normalisation of the model's inputs, on the [0, 1] scale,
            undone for the picture. Default: none.
        value_range: `(low, high)` of the un-normalised images, mapped to black
            and white. Defaults to (0.0, 1.0).
        scale: int, upscaling of each tile (small images need it).
        grey: bool, draw the removed patches mid grey (`MASK_FILL`) with a thin
            darker grid (`MASK_LINE`) at their borders, in colours no image
            content has; False leaves them at the masked input's zeros.
            Defaults to True.

    Returns:
        float array `(rows, cols, C)`.
    """
    images = np.asarray(images)
    if noise is None:
        noise = np.random.default_rng(0).random((len(images), model.num_patches))
    noise = np.asarray(noise, "float32")
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
        x = np.clip((x - low) / (high - low), 0.0, 1.0)
        return np.repeat(np.repeat(x, scale, 1), scale, 2)

    masked_unit = to_unit(masked)
    if grey:
        mask = ops.convert_to_numpy(model(images, noise=noise, training=False)["mask"])
        removed, border = mask_pixels(mask, model.encoder.grid_size, model.patch_size, scale)
        masked_unit = np.where(removed[..., None], MASK_FILL, masked_unit)
        masked_unit = np.where(border[..., None], MASK_LINE, masked_unit).astype("float32")
    return image_grid([to_unit(originals), masked_unit, to_unit(reconstruction)])


def save_reconstruction_grid(
    model,
    images,
    path,
    noise=None,
    value_range=(0.0, 1.0),
    scale=1,
    mean=None,
    std=None,
    grey=True,
):
    """Save original / masked / reconstruction, one held-out image per row, as a PNG.

    Args: as `reconstruction_grid`, and `path`, the PNG file.

    Returns:
        The grid, float `(rows, cols, C)` in [0, 1].
    """
    grid = reconstruction_grid(model, images, noise, mean, std, value_range, scale, grey)
    write_png(path, grid)
    return grid
