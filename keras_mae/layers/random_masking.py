import keras
from keras import ops


def num_kept(num_patches, mask_ratio):
    """Visible patches per sample: `int(L * (1 - mask_ratio))`, as the official code."""
    return int(num_patches * (1 - mask_ratio))


def check_mask_ratio(mask_ratio):
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise ValueError(
            f"mask_ratio must be a number in [0, 1). Received: mask_ratio={mask_ratio!r}"
        )
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(
            "mask_ratio is the fraction of patches removed and must be in [0, 1). "
            f"Received: mask_ratio={mask_ratio}"
        )


@keras.saving.register_keras_serializable(package="keras_mae")
class RandomMasking(keras.layers.Layer):
    """Per-sample random masking by argsort of uniform noise (MAE, Sec. 3).

    Each sample's tokens are shuffled by `argsort(noise)` (ascending) and the first
    `int(L * (1 - mask_ratio))` are kept. Noise comes from a
    `keras.random.SeedGenerator`, so the same `seed` gives the same masks, and
    successive calls give new ones. Passing `noise` makes masking deterministic with
    the official semantics (this is how the official and Hugging Face models are
    reproduced exactly).

    Args:
        mask_ratio: float in [0, 1), fraction of tokens removed. Defaults to 0.75.
        seed: int or None, seed of the noise generator.

    Call arguments:
        tokens: `(batch, L, dim)`.
        noise: optional `(batch, L)` float; smaller values are kept.

    Returns:
        A tuple `(visible, mask, ids_restore)`: `visible` `(batch, len_keep, dim)`
        in shuffled order, `mask` `(batch, L)` float with 1 for removed tokens in the
        original order, and `ids_restore` `(batch, L)` int32, the permutation that
        un-shuffles `concat(visible, removed)`.

    Example:
    >>> visible, mask, ids_restore = RandomMasking(0.75, seed=0)(np.ones((2, 16, 8)))
    >>> visible.shape, mask.shape
    ((2, 4, 8), (2, 16))
    """

    def __init__(self, mask_ratio=0.75, seed=None, **kwargs):
        # Inputs are not autocast: `noise` rounded to a half-precision compute
        # dtype would tie values, and the mask would no longer be the one it defines.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        check_mask_ratio(mask_ratio)
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, tokens, noise=None):
        if keras.backend.is_float_dtype(tokens.dtype):
            tokens = ops.cast(tokens, self.compute_dtype)
        num_patches = tokens.shape[1]
        len_keep = num_kept(num_patches, self.mask_ratio)
        if len_keep < 1:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} keeps no token out of {num_patches}: "
                "lower mask_ratio or use smaller patches."
            )
        if noise is None:
            noise = keras.random.uniform(
                (ops.shape(tokens)[0], num_patches), seed=self.seed_generator
            )
        elif tuple(noise.shape[1:]) != (num_patches,):
            raise ValueError(
                f"noise must have shape (batch, {num_patches}). "
                f"Received: noise.shape={tuple(noise.shape)}"
            )
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
