"""The one tiny MAE configuration that unit tests share.

Non-square images with two channels (so nothing silently assumes square RGB),
a 2 x 3 patch grid and 16-wide tokens: every layer and model is built and
called in milliseconds on two CPU cores, on every backend.

- `TINY`: the `MaskedAutoencoder` constructor arguments.
- `TINY_ENCODER`: the subset an `MAEEncoder` takes.
- `TINY_DECODER`: the `MAEDecoder` arguments that `TINY` implies.
- `GRID_SIZE`, `NUM_PATCHES`, `PATCH_DIM`, `LEN_KEEP`: what follows from it.
- `BATCH`: the batch size of test data (one size keeps JAX's per-shape
  compilations of eager ops shared between tests).
- `tiny_mae`, `tiny_encoder`, `tiny_decoder`, `tiny_images`, `tiny_noise`.
"""

import numpy as np

import keras_mae

TINY = dict(
    image_shape=(8, 12, 2),
    patch_size=4,
    hidden_dim=16,
    num_layers=2,
    num_heads=2,
    decoder_hidden_dim=8,
    decoder_num_layers=1,
    decoder_num_heads=2,
)
ENCODER_KEYS = ("image_shape", "patch_size", "hidden_dim", "num_layers", "num_heads")
TINY_ENCODER = {key: TINY[key] for key in ENCODER_KEYS}

GRID_SIZE = (
    TINY["image_shape"][0] // TINY["patch_size"],
    TINY["image_shape"][1] // TINY["patch_size"],
)  # (2, 3)
NUM_PATCHES = GRID_SIZE[0] * GRID_SIZE[1]  # 6
PATCH_DIM = TINY["patch_size"] ** 2 * TINY["image_shape"][-1]  # 32
BATCH = 4
MASK_RATIO = 0.75  # MaskedAutoencoder's default
LEN_KEEP = int(NUM_PATCHES * (1 - MASK_RATIO))  # 1

TINY_DECODER = dict(
    grid_size=GRID_SIZE,
    patch_dim=PATCH_DIM,
    hidden_dim=TINY["decoder_hidden_dim"],
    num_layers=TINY["decoder_num_layers"],
    num_heads=TINY["decoder_num_heads"],
)


def tiny_mae(**overrides):
    return keras_mae.MaskedAutoencoder(**{**TINY, **overrides})


def tiny_encoder(**overrides):
    return keras_mae.MAEEncoder(**{**TINY_ENCODER, **overrides})


def tiny_decoder(**overrides):
    return keras_mae.MAEDecoder(**{**TINY_DECODER, **overrides})


def tiny_images(n=BATCH, seed=0, dtype="float32"):
    """`(n, 8, 12, 2)` images in [0, 1), or in [0, 255] for an integer `dtype`."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, 256, (n, *TINY["image_shape"])).astype(dtype)
    return rng.random((n, *TINY["image_shape"])).astype(dtype)


def tiny_noise(n=BATCH, seed=1):
    """`(n, 6)` masking noise: the `LEN_KEEP` smallest values of a row are kept."""
    return np.random.default_rng(seed).random((n, NUM_PATCHES)).astype("float32")


# The smallest MAE that trains: 8x8 grey images, 4 patches of 4x4, one block each
# side (the recipes' and fault tests' model; seed 1 fixes its masks).
SMALLEST = dict(
    image_shape=(8, 8, 1),
    patch_size=4,
    hidden_dim=8,
    num_layers=1,
    num_heads=2,
    decoder_hidden_dim=8,
    decoder_num_layers=1,
    decoder_num_heads=2,
    seed=1,
)


def smallest_mae(**overrides):
    """`SMALLEST` as a MaskedAutoencoder, with `overrides` (e.g. `augmentation=`)."""
    return keras_mae.MaskedAutoencoder(**{**SMALLEST, **overrides})
