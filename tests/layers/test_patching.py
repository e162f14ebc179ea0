import numpy as np
import pytest
from keras import ops

from keras_mae.layers.patching import check_image_shape
from keras_mae.layers.patching import patchify
from keras_mae.layers.patching import sincos_position_table
from keras_mae.layers.patching import unpatchify
from tests.conftest import to_numpy


def reference_patchify(images, p):
    """The official patchify, written for NHWC with explicit loops."""
    n, h, w, c = images.shape
    out = np.zeros((n, (h // p) * (w // p), p * p * c), images.dtype)
    for row in range(h // p):
        for col in range(w // p):
            patch = images[:, row * p : (row + 1) * p, col * p : (col + 1) * p, :]
            out[:, row * (w // p) + col] = patch.reshape(n, -1)  # (p, p, C) order
    return out


def test_patchify_matches_official_order_on_non_square_multichannel():
    images = np.random.default_rng(0).normal(size=(2, 8, 12, 5)).astype("float32")
    patches = to_numpy(patchify(ops.convert_to_tensor(images), 4))
    assert patches.shape == (2, 6, 80)
    np.testing.assert_array_equal(patches, reference_patchify(images, 4))


def test_unpatchify_inverts_patchify():
    images = np.random.default_rng(1).normal(size=(3, 6, 10, 2)).astype("float32")
    patches = patchify(ops.convert_to_tensor(images), 2)
    restored = to_numpy(unpatchify(patches, (3, 5), 2, 2))
    np.testing.assert_array_equal(restored, images)


def reference_sincos(dim, grid_h, grid_w):
    """The official `get_2d_sincos_pos_embed` (`util/pos_embed.py`), float64, per position."""
    quarter = dim // 4
    omega = [1.0 / 10000 ** (i / quarter) for i in range(quarter)]
    table = np.zeros((grid_h * grid_w, dim))
    for row in range(grid_h):
        for col in range(grid_w):
            index = row * grid_w + col
            for half, pos in ((0, col), (1, row)):  # first half: column index
                base = half * dim // 2
                for i, w in enumerate(omega):
                    table[index, base + i] = np.sin(pos * w)
                    table[index, base + quarter + i] = np.cos(pos * w)
    return table


@pytest.mark.parametrize("dim,grid", [(16, (3, 5)), (32, (4, 4)), (8, (2, 7))])
def test_sincos_table_matches_float64_reference(dim, grid):
    table = sincos_position_table(dim, grid)
    assert table.dtype == np.float32
    np.testing.assert_allclose(table, reference_sincos(dim, *grid), rtol=0, atol=1e-7)


def test_sincos_table_first_half_is_column_index():
    table = sincos_position_table(8, (2, 3))
    # Same column, different rows: first half equal, second half differs.
    np.testing.assert_array_equal(table[0, :4], table[3, :4])
    assert not np.allclose(table[0, 4:], table[3, 4:])


def test_sincos_table_needs_dim_multiple_of_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_table(6, (2, 2))


@pytest.mark.parametrize(
    "shape,patch,message",
    [
        ((30, 32, 3), 4, r"image size \(30, 32\) is not divisible by patch_size=4"),
        ((32, 32), 4, "image_shape must be"),
        ((32, 32, 0), 4, "channels"),
        ((32, 32, 3), 0, "patch_size must be a positive integer"),
    ],
)
def test_bad_image_shapes_are_explained(shape, patch, message):
    with pytest.raises(ValueError, match=message):
        check_image_shape(shape, patch)
