"""The tiny MAE configurations that tests share: `TINY`, `SQUARE`, `SMALLEST`.

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

Two variants, for tests that cannot use `TINY`:

- `SQUARE`: `TINY` on 16x16 RGB images (a 4 x 4 grid), for the layouts that
  only know square RGB images: Hugging Face ViTMAE and the official MAE
  checkpoints. `square_hf_config` gives it in transformers' `ViTMAEConfig` names.
- `SMALLEST`: the smallest MAE that trains, for recipes and fault tests.
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


def encoder_config(config):
    """The `MAEEncoder` arguments of a `MaskedAutoencoder` configuration."""
    return {key: config[key] for key in ENCODER_KEYS}


TINY_ENCODER = encoder_config(TINY)

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


# TINY on square RGB images: Hugging Face's ViTMAE and the official checkpoints
# take square images only (one `image_size`, a square position table), and
# RGB is what their pixel layout (`num_channels=3`, `in_chans=3`) assumes.
SQUARE = {**TINY, "image_shape": (16, 16, 3)}
SQUARE_ENCODER = encoder_config(SQUARE)
SQUARE_GRID = SQUARE["image_shape"][0] // SQUARE["patch_size"]  # 4 patches a side
SQUARE_PATCHES = SQUARE_GRID**2  # 16


def square_mae(**overrides):
    return keras_mae.MaskedAutoencoder(**{**SQUARE, **overrides})


def square_encoder(**overrides):
    return keras_mae.MAEEncoder(**{**SQUARE_ENCODER, **overrides})


def square_hf_config(**changes):
    """`SQUARE` as `transformers.ViTMAEConfig` arguments (a `config.json`'s keys)."""
    config = dict(
        image_size=SQUARE["image_shape"][0],
        patch_size=SQUARE["patch_size"],
        num_channels=SQUARE["image_shape"][-1],
        hidden_size=SQUARE["hidden_dim"],
        num_hidden_layers=SQUARE["num_layers"],
        num_attention_heads=SQUARE["num_heads"],
        intermediate_size=4 * SQUARE["hidden_dim"],  # mlp_ratio 4
        decoder_hidden_size=SQUARE["decoder_hidden_dim"],
        decoder_num_hidden_layers=SQUARE["decoder_num_layers"],
        decoder_num_attention_heads=SQUARE["decoder_num_heads"],
        decoder_intermediate_size=4 * SQUARE["decoder_hidden_dim"],
    )
    return {**config, **changes}


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


def smallest_encoder(**overrides):
    return keras_mae.MAEEncoder(**{**encoder_config(SMALLEST), **overrides})
