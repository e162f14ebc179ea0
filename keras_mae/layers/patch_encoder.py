import keras
from keras import ops

from keras_mae import kernels
from keras_mae.layers.checks import ChecksInputsFirst
from keras_mae.layers.patching import check_image_shape
from keras_mae.layers.patching import patchify
from keras_mae.layers.patching import sincos_position_table


@keras.saving.register_keras_serializable(package="keras_mae")
class PatchEncoder(ChecksInputsFirst, keras.layers.Layer):
    """Embed image patches and add the fixed 2-D sin-cos position table.

    A strided projection (kernel = stride = `patch_size`), written as a linear
    layer over flattened `(p, p, C)` patches so that its initialisation is the
    official xavier-uniform on the `(out, C * p * p)` view. Any channel count and
    non-square images work; height and width must be multiples of `patch_size`.
    See https://arxiv.org/abs/2111.06377.

    The position table is a non-trainable weight (saved with the model, as in
    the official checkpoints) that holds no cls row.

    Args:
        patch_size: int, side of a square patch.
        hidden_dim: int, token width; a multiple of 4 (sin-cos table).

    Call arguments:
        images: `(batch, H, W, C)`.

    Returns:
        `(batch, (H/p) * (W/p), hidden_dim)`.

    Example:
    >>> layer = PatchEncoder(patch_size=4, hidden_dim=32)
    >>> tuple(layer(np.zeros((2, 8, 12, 3))).shape)
    (2, 6, 32)
    """

    def __init__(self, patch_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        check_image_shape((patch_size, patch_size, 1), patch_size)
        if hidden_dim < 4 or hidden_dim % 4:
            raise ValueError(
                "hidden_dim must be a positive multiple of 4 for the sin-cos "
                f"position table. Received: hidden_dim={hidden_dim}"
            )
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.projection = keras.layers.Dense(
            hidden_dim,
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        self.grid_size = check_image_shape(tuple(input_shape[1:]), self.patch_size)
        channels = input_shape[-1]
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.projection.build((None, None, self.patch_size**2 * channels))
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.num_patches, self.hidden_dim),
            initializer="zeros",
            trainable=False,
        )
        self.position_embedding.assign(sincos_position_table(self.hidden_dim, self.grid_size))

    def check_inputs(self, images, *args, **kwargs):
        """Before Keras wraps the call (`ChecksInputsFirst`), once built: images of
        the size it was built for (its position table has one row per patch)."""
        if not self.built or not hasattr(images, "shape"):
            return
        expected = (*(g * self.patch_size for g in self.grid_size),)
        if tuple(images.shape[1:3]) != expected:
            raise ValueError(
                f"this PatchEncoder was built for images of size {expected} (its "
                f"position table has {self.num_patches} rows); received images of size "
                f"{tuple(images.shape[1:3])}. Resize the images to {expected}, or build "
                "another PatchEncoder for this size."
            )

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        patches = patchify(images, self.patch_size)  # (B, L, p * p * C)
        tokens = kernels.call_sublayer(self.projection, patches)  # (B, L, D)
        return tokens + ops.cast(self.position_embedding, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        num_patches = (height // self.patch_size) * (width // self.patch_size)
        return (input_shape[0], num_patches, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "hidden_dim": self.hidden_dim})
        return config
