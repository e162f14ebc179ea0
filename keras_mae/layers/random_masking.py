import math

import keras
import numpy as np
from keras import ops

from keras_mae import kernels
from keras_mae.kernels.concrete import host_values
from keras_mae.layers.checks import ChecksInputsFirst
from keras_mae.layers.checks import check_seed


def num_kept(num_patches, mask_ratio):
    """Visible patches per sample: `int(L * (1 - mask_ratio))`, as the official code."""
    return int(num_patches * (1 - mask_ratio))


def workable_mask_ratio(num_patches):
    """The largest two-decimal mask ratio that keeps one patch and masks one, or None."""
    if num_patches < 2:
        return None
    ratio = math.floor(100 * (1 - 1 / num_patches)) / 100
    return ratio if num_kept(num_patches, ratio) >= 1 else None


def check_mask_ratio(mask_ratio, num_patches=None, what="patch"):
    """Validate `mask_ratio` (0 < ratio < 1) and, given `num_patches`, that it
    keeps at least one patch visible and masks at least one.

    A ratio of 0 masks nothing: the loss (over masked patches only) is then
    exactly 0 and training changes no weight.
    """
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise ValueError(
            "mask_ratio must be a number in (0, 1), the fraction of patches masked "
            f"(e.g. 0.75). Received: mask_ratio={mask_ratio!r}"
        )
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(
            "mask_ratio is the fraction of patches removed and must be in (0, 1): 0 "
            "masks nothing (the loss is then 0 and nothing trains), 1 keeps nothing. "
            f"Received: mask_ratio={mask_ratio}. Use e.g. 0.75 (the paper's)."
        )
    if num_patches is None:
        return
    len_keep = num_kept(num_patches, mask_ratio)
    if 1 <= len_keep < num_patches:
        return
    workable = workable_mask_ratio(num_patches)
    plural = "patches" if what == "patch" else f"{what}s"
    advice = (
        f"use a mask_ratio in (0, {workable}] for {num_patches} {plural}"
        + (" (e.g. 0.75)" if workable >= 0.75 else "")
        + ", or smaller patches."
        if workable is not None
        else "use smaller patches (one patch cannot be both visible and masked)."
    )
    kept = f"int({num_patches} * (1 - {mask_ratio})) = {len_keep}"
    verb = "keeps" if len_keep < 1 else "masks"
    problem = f"{verb} no {what} out of {num_patches} ({kept} kept)"
    raise ValueError(f"mask_ratio={mask_ratio} {problem}; {advice}")


def check_noise_values(noise):
    """Refuse non-finite float `noise` whose values are in host memory.

    Noise on an accelerator is not read (a blocking copy each step, see
    `kernels.concrete.host_values`); `MaskedAutoencoder.fit` checks the noise
    it is given before training starts.
    """
    if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(noise.dtype)):
        return
    values = host_values(noise)
    if values is None:
        return
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        raise ValueError(
            f"noise holds {bad} non-finite value(s) (NaN or inf) out of {values.size}: "
            "the mask would be arbitrary. Pass finite noise, e.g. "
            "keras.random.uniform((batch, L)), or leave noise=None."
        )


def shape_of(value):
    """The shape of an array, tensor or nested list, as a tuple."""
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def check_noise(noise, tokens_shape):
    """`noise` must be `(batch, L)` for tokens `(batch, L, dim)`, and finite.

    Shapes are compared where they are known (always eagerly and under JAX;
    a TensorFlow graph may leave the batch open, and then `reshape_noise`'s
    reshape to `(batch, L)` fails at run time rather than broadcasting one
    mask over the batch). Values are checked where they are in host memory
    (`check_noise_values`).
    """
    batch, num_patches = tokens_shape[0], tokens_shape[1]
    shape = shape_of(noise)
    bad_rank = len(shape) != 2
    bad_length = not bad_rank and shape[1] is not None and shape[1] != num_patches
    bad_batch = not bad_rank and batch is not None and shape[0] is not None and shape[0] != batch
    if bad_rank or bad_length or bad_batch:
        raise ValueError(
            f"noise must have shape (batch, L) = ({batch}, {num_patches}): one row of "
            f"{num_patches} values per image (a noise of one row is not broadcast over "
            f"the batch). Received: noise.shape={shape} for {batch} image(s). Pass one "
            "row per image, e.g. keras.random.uniform((batch, L)), or leave noise=None "
            "to draw it from the layer's seed."
        )
    if hasattr(noise, "dtype"):
        check_noise_values(noise)


def reshape_noise(noise, tokens):
    """`noise` as `(batch, L)` where the batch is not static (after `check_noise`)."""
    batch, num_patches = tokens.shape[0], tokens.shape[1]
    if batch is None or noise.shape[0] is None:
        noise = ops.reshape(noise, (ops.shape(tokens)[0], num_patches))
    return noise


@keras.saving.register_keras_serializable(package="keras_mae")
class RandomMasking(ChecksInputsFirst, keras.layers.Layer):
    """Per-sample random masking by argsort of uniform noise (MAE, Sec. 3).

    Each sample's tokens are shuffled by `argsort(noise)` (ascending) and the first
    `int(L * (1 - mask_ratio))` are kept. Noise comes from a
    `keras.random.SeedGenerator`, so the same `seed` gives the same masks, and
    successive calls give new ones. Passing `noise` makes masking deterministic with
    the official semantics (this is how the official and Hugging Face models are
    reproduced exactly).

    Args:
        mask_ratio: float in (0, 1), fraction of tokens removed; it must keep
            at least one token of each sample and remove at least one.
            Defaults to 0.75.
        seed: int or None, seed of the noise generator.

    Call arguments:
        tokens: `(batch, L, dim)`.
        noise: optional `(batch, L)` float, exactly one finite row per sample
            (a single row is not broadcast); smaller values are kept.

    Returns:
        A tuple `(visible, mask, ids_restore)`: `visible` `(batch, len_keep, dim)`
        in shuffled order, `mask` `(batch, L)` float with 1 for removed tokens in the
        original order, and `ids_restore` `(batch, L)` int32, the permutation that
        un-shuffles `concat(visible, removed)`.

    Example:
    >>> visible, mask, ids_restore = RandomMasking(0.75, seed=0)(np.ones((2, 16, 8)))
    >>> tuple(visible.shape), tuple(mask.shape)
    ((2, 4, 8), (2, 16))
    """

    def __init__(self, mask_ratio=0.75, seed=None, **kwargs):
        # Inputs are not autocast: `noise` rounded to a half-precision compute
        # dtype would tie values, and the mask would no longer be the one it defines.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        check_mask_ratio(mask_ratio)
        check_seed("seed", seed)
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def check_inputs(self, tokens, noise=None, **kwargs):
        """Before Keras wraps the call (`ChecksInputsFirst`): the errors' first
        line is the message."""
        tokens_shape = shape_of(tokens)
        check_mask_ratio(self.mask_ratio, tokens_shape[1], what="token")
        if noise is not None:
            check_noise(noise, tokens_shape)

    def call(self, tokens, noise=None):
        if keras.backend.is_float_dtype(tokens.dtype):
            tokens = ops.cast(tokens, self.compute_dtype)
        num_patches = tokens.shape[1]
        len_keep = num_kept(num_patches, self.mask_ratio)
        if noise is None:
            noise = kernels.uniform_noise((ops.shape(tokens)[0], num_patches), self.seed_generator)
        else:
            noise = reshape_noise(noise, tokens)
        ids_shuffle = ops.cast(ops.argsort(noise, axis=1), "int32")  # (B, L)
        ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=1), "int32")  # (B, L)
        ids_keep = ids_shuffle[:, :len_keep]  # (B, len_keep)
        visible = ops.take_along_axis(tokens, ids_keep[:, :, None], axis=1)
        mask = ops.cast(ids_restore >= len_keep, self.compute_dtype)  # (B, L)
        return visible, mask, ids_restore

    def compute_output_shape(self, input_shape):
        batch, num_patches, dim = input_shape
        len_keep = num_kept(num_patches, self.mask_ratio)
        return (batch, len_keep, dim), (batch, num_patches), (batch, num_patches)

    def compute_output_spec(self, tokens, noise=None):
        # Keras' default gives every output the compute dtype; ids_restore is int32.
        visible, mask, ids_restore = self.compute_output_shape(tokens.shape)
        is_float = keras.backend.is_float_dtype(tokens.dtype)
        return (
            keras.KerasTensor(visible, dtype=self.compute_dtype if is_float else tokens.dtype),
            keras.KerasTensor(mask, dtype=self.compute_dtype),
            keras.KerasTensor(ids_restore, dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"mask_ratio": self.mask_ratio, "seed": self.seed})
        return config
