import keras
from keras import ops

from keras_mae import kernels
from keras_mae.layers.checks import check_transformer
from keras_mae.layers.patching import sincos_position_table
from keras_mae.layers.vit_block import ViTBlock


@keras.saving.register_keras_serializable(package="keras_mae")
class MAEDecoder(keras.layers.Layer):
    """The MAE decoder: fill in mask tokens, un-shuffle, and predict patch pixels.

    Projects the encoded tokens to `hidden_dim`, appends one shared learned mask
    token per removed patch, un-shuffles them into the original patch order with
    `ids_restore` (the cls token stays first), adds the fixed sin-cos decoder
    position table, runs `num_layers` blocks and a LayerNorm, and predicts the
    `patch_dim = p * p * C` values of every patch with a per-token linear head.
    See https://arxiv.org/abs/2111.06377.

    Args:
        grid_size: tuple `(H / p, W / p)`, the patch grid.
        patch_dim: int, values per patch, `p * p * C`.
        hidden_dim: int, decoder width (multiple of 4 and of `num_heads`).
            Defaults to 512.
        num_layers: int, decoder blocks. Defaults to 8.
        num_heads: int. Defaults to 16.
        mlp_ratio: float. Defaults to 4.0.
        layer_norm_epsilon: float. Defaults to 1e-6.
        attention_padding: `"auto"`, None or int >= 2; see
            `keras_mae.ViTBlock`. Defaults to `"auto"`.
        remat: bool, activation checkpointing in every block; see
            `keras_mae.ViTBlock`. Defaults to False.

    Call arguments:
        latent: `(batch, 1 + len_keep, encoder_dim)`, encoder output, cls first.
        ids_restore: `(batch, L)` int, from `RandomMasking`.

    Returns:
        `(batch, L, patch_dim)`, predictions for every patch in the original order.

    Example:
    >>> decoder = MAEDecoder((4, 4), patch_dim=48, hidden_dim=32, num_layers=1,
    ...                      num_heads=4)
    >>> _, _, ids_restore = keras_mae.RandomMasking(0.75)(np.zeros((2, 16, 8)))
    >>> tuple(decoder(np.zeros((2, 5, 64)), ids_restore).shape)
    (2, 16, 48)
    """

    def __init__(
        self,
        grid_size,
        patch_dim,
        hidden_dim=512,
        num_layers=8,
        num_heads=16,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        attention_padding="auto",
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_transformer(hidden_dim, num_layers, num_heads, mlp_ratio, layer_norm_epsilon)
        if hidden_dim < 4 or hidden_dim % 4:
            raise ValueError(
                "decoder hidden_dim must be a positive multiple of 4 for the sin-cos "
                f"position table. Received: hidden_dim={hidden_dim}"
            )
        if num_layers < 1:
            raise ValueError(
                f"decoder num_layers must be at least 1. Received: num_layers={num_layers}"
            )
        self.grid_size = tuple(grid_size)
        self.patch_dim = patch_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_padding = attention_padding
        self.remat = remat
        self.num_patches = self.grid_size[0] * self.grid_size[1]

        self.embed = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="embed")
        self.blocks = [
            ViTBlock(
                hidden_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                layer_norm_epsilon=layer_norm_epsilon,
                attention_padding=attention_padding,
                remat=remat,
                dtype=self.dtype_policy,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.head = keras.layers.Dense(patch_dim, dtype=self.dtype_policy, name="head")

    def build(self, latent_shape, ids_restore_shape=None):
        self.embed.build(latent_shape)
        self.mask_token = self.add_weight(
            name="mask_token",
            shape=(1, 1, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.num_patches, self.hidden_dim),
            initializer="zeros",
            trainable=False,
        )
        self.position_embedding.assign(sincos_position_table(self.hidden_dim, self.grid_size))
        token_shape = (None, None, self.hidden_dim)
        for block in self.blocks:
            block.build(token_shape)
        self.norm.build(token_shape)
        self.head.build(token_shape)

    def call(self, latent, ids_restore, training=None):
        x = kernels.call_sublayer(self.embed, latent)  # (B, 1 + K, Dd)
        cls, visible = x[:, :1], x[:, 1:]
        num_removed = self.num_patches - visible.shape[1]
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype),
            (ops.shape(x)[0], num_removed, self.hidden_dim),
        )
        x = ops.concatenate([visible, mask_tokens], axis=1)  # (B, L, Dd), shuffled
        x = ops.take_along_axis(x, ids_restore[:, :, None], axis=1)  # original order
        x = x + ops.cast(self.position_embedding, x.dtype)
        x = ops.concatenate([cls, x], axis=1)  # (B, 1 + L, Dd)
        for block in self.blocks:
            x = kernels.call_block(block, x, training)
        x = kernels.layer_norm(self.norm, x)[:, 1:]  # (B, L, Dd), cls dropped
        return kernels.call_sublayer(self.head, x)  # (B, L, patch_dim)

    def compute_output_shape(self, latent_shape, ids_restore_shape=None):
        return (latent_shape[0], self.num_patches, self.patch_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "grid_size": self.grid_size,
                "patch_dim": self.patch_dim,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "attention_padding": self.attention_padding,
                "remat": self.remat,
            }
        )
        return config
