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


def save_reconstruction_grid(model, images, path, noise=None, value_range=(0.0, 1.0), scale=1):
    """Save original / masked / reconstruction, one held-out image per row.

    Args:
        model: a `keras_mae.MaskedAutoencoder`.
        images: `(N, H, W, C)` model inputs.
        path: str, the PNG file.
        noise: optional `(N, L)` masking noise.
        value_range: `(low, high)` of the images, mapped to black and white (for
            mean/std-normalised inputs pass their range).
        scale: int, upscaling of each tile (small images need it).
    """
    masked, reconstruction = model.reconstruct(images, noise=noise)
    low, high = value_range

    def to_unit(x):
        return (np.asarray(ops.convert_to_numpy(x), "float32") - low) / (high - low)

    grid = image_grid([to_unit(images), to_unit(masked), to_unit(reconstruction)], scale=scale)
    write_png(path, np.clip(grid, 0.0, 1.0))
    return grid
