"""Resampling of a position table to another patch grid (MAE fine-tuning)."""

import numpy as np


def bicubic_matrix(in_size, out_size):
    """`(out, in)` weights of 1-D bicubic resampling, as torch's
    `F.interpolate(mode="bicubic", align_corners=False)` (cubic a = -0.75,
    half-pixel centres, border samples repeated)."""
    a = -0.75
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        x = scale * (i + 0.5) - 0.5
        x0 = int(np.floor(x))
        t = x - x0
        weights = (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        )
        for k, w in enumerate(weights):
            matrix[i, min(max(x0 - 1 + k, 0), in_size - 1)] += w
    return matrix


def resample_position_table(table, grid_size, source_grid=None):
    """Resample a patch position table to another grid, bicubic, as the official
    `interpolate_pos_embed` of MAE fine-tuning.

    Args:
        table: `(L, D)` array, rows in row-major grid order (no cls row).
        grid_size: tuple `(new_h, new_w)`.
        source_grid: tuple `(h, w)` of `table`; defaults to the square grid.

    Returns:
        `(new_h * new_w, D)` float32 array.
    """
    table = np.asarray(table, dtype=np.float64)
    length, dim = table.shape
    if source_grid is None:
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(
                f"cannot resample a position table of {length} rows: it is not a "
                "square grid. Build the model with the checkpoint's image size."
            )
        source_grid = (side, side)
    grid = table.reshape(source_grid[0], source_grid[1], dim)
    rows = bicubic_matrix(source_grid[0], grid_size[0])  # (new_h, h)
    cols = bicubic_matrix(source_grid[1], grid_size[1])  # (new_w, w)
    out = np.einsum("ah,hwd,bw->abd", rows, grid, cols)  # (new_h, new_w, D)
    return out.reshape(-1, dim).astype("float32")
