"""Patch bookkeeping shared by the model, the loss and the pictures.

A patch flattens as (p, p, C), channel last, and patches run row-major over the
(H / p, W / p) grid, exactly as the official MAE code orders them.
"""

import numpy as np
from keras import ops


def check_image_shape(image_shape, patch_size):
    """Validate `(H, W, C)` against `patch_size`; return the grid `(H/p, W/p)`."""
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(
            f"patch_size must be a positive integer. Received: patch_size={patch_size!r}"
        )
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(
            f"image_shape must be (height, width, channels). Received: image_shape={image_shape!r}"
        )
    height, width, channels = image_shape
    for name, value in (("height", height), ("width", width), ("channels", channels)):
        if value is None or int(value) != value or value < 1:
            raise ValueError(
                f"image_shape needs a positive integer {name}. "
                f"Received: image_shape={tuple(image_shape)!r}"
            )
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size ({height}, {width}) is not divisible by "
            f"patch_size={patch_size}: use an image size that is a multiple of "
            "the patch size, or another patch size."
        )
    return height // patch_size, width // patch_size


def patchify(images, patch_size):
    """Cut images into flattened patches.

    Args:
        images: `(batch, H, W, C)`, with H and W multiples of `patch_size`.
        patch_size: int, the side `p` of a square patch.

    Returns:
        `(batch, (H/p) * (W/p), p * p * C)`.
    """
    _, height, width, channels = images.shape
    p = patch_size
    grid_h, grid_w = height // p, width // p
    x = ops.reshape(images, (-1, grid_h, p, grid_w, p, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, h, w, p, p, C)
    return ops.reshape(x, (-1, grid_h * grid_w, p * p * channels))


def unpatchify(patches, grid_size, patch_size, channels):
    """Inverse of `patchify`: `(batch, L, p*p*C)` -> `(batch, H, W, C)`."""
    grid_h, grid_w = grid_size
    p = patch_size
    x = ops.reshape(patches, (-1, grid_h, grid_w, p, p, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, h, p, w, p, C)
    return ops.reshape(x, (-1, grid_h * p, grid_w * p, channels))


def sincos_position_table(dim, grid_size):
    """The fixed 2-D sin-cos position table of MAE, as float32 numpy.

    The first half of the channels encodes the column index and the second half
    the row index; each half is `[sin(pos * w), cos(pos * w)]` with
    `w_i = 1 / 10000 ** (i / (dim / 4))`. Rows follow the row-major patch order.
    There is no cls row (the official cls row is zeros).

    Returns:
        `(grid_h * grid_w, dim)` float32 array.
    """
    if dim % 4:
        raise ValueError(
            f"the 2-D sin-cos position table needs a dimension divisible by 4. Received: dim={dim}"
        )
    grid_h, grid_w = grid_size
    rows, cols = np.meshgrid(
        np.arange(grid_h, dtype=np.float64),
        np.arange(grid_w, dtype=np.float64),
        indexing="ij",
    )
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def embed(positions):
        angles = np.outer(positions.reshape(-1), omega)  # (L, dim/4)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    table = np.concatenate([embed(cols), embed(rows)], axis=1)  # (L, dim)
    return table.astype("float32")
