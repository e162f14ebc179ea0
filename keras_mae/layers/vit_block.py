import keras
from keras import ops

from keras_mae import kernels


@keras.saving.register_keras_serializable(package="keras_mae")
class ViTBlock(keras.layers.Layer):
    """Pre-norm transformer block of ViT / MAE.

    `x + Attention(LN(x))`, then `x + MLP(LN(x))`. Attention has one fused qkv
    projection with bias (laid out q | k | v, heads split inside each, as the
    official checkpoints), runs through `keras.ops.dot_product_attention` (fused or
    flash kernels where the backend has them), and an output projection with bias.
    The MLP is `dim -> mlp_ratio * dim -> dim` with exact (erf) GELU.

    Args:
        hidden_dim: int, token width.
        num_heads: int, attention heads; must divide `hidden_dim`.
        mlp_ratio: float, MLP width over `hidden_dim`. Defaults to 4.0.
        layer_norm_epsilon: float. Defaults to 1e-6 (the official value).
        drop_path_rate: float in [0, 1), stochastic depth of both residual
            branches, applied only in training. Defaults to 0.0.
        seed: int or None, seed of the drop-path generator.
        attention_padding: `"auto"`, None or int >= 2: zero-pad the tokens of
            each attention call to a multiple of this many (padded keys
            masked, outputs unchanged), which lets cuDNN flash attention run;
            `"auto"` pads to 64 under JAX on a GPU with half-precision inputs
            and nowhere else. See `keras_mae.kernels.attention`. Defaults to
            `"auto"`.
        remat: bool, activation checkpointing (`keras.remat`): the attention
            and MLP branches keep only their inputs for the backward pass and
            are recomputed there, trading one more forward pass of the block
            for the memory of its qkv, attention weights and MLP activations.
            Drop path stays outside, so the recomputation draws nothing new
            and the gradients are those of the plain block. Defaults to False.

    Call arguments:
        x: `(batch, tokens, hidden_dim)`.
        training: bool, enables drop path.

    Returns:
        `(batch, tokens, hidden_dim)`.

    Example:
    >>> tuple(ViTBlock(hidden_dim=32, num_heads=4)(np.zeros((2, 5, 32))).shape)
    (2, 5, 32)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        drop_path_rate=0.0,
        seed=None,
        attention_padding="auto",
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim < 1 or num_heads < 1 or hidden_dim % num_heads:
            raise ValueError(
                "hidden_dim must be a positive multiple of num_heads. "
                f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive. Received: mlp_ratio={mlp_ratio}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(
                f"drop_path_rate must be in [0, 1). Received: drop_path_rate={drop_path_rate}"
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.layer_norm_epsilon = layer_norm_epsilon
        self.drop_path_rate = drop_path_rate
        self.seed = seed
        if not isinstance(remat, bool):
            raise TypeError(f"remat must be True or False. Received: remat={remat!r}")
        self.attention_padding = kernels.check_attention_padding(attention_padding)
        self.remat = remat
        self.head_dim = hidden_dim // num_heads
        self.mlp_dim = int(hidden_dim * mlp_ratio)

        def dense(units, name):
            return keras.layers.Dense(units, dtype=self.dtype_policy, name=name)

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name=name
            )

        self.norm1 = norm("norm1")
        self.qkv = dense(3 * hidden_dim, "qkv")
        self.proj = dense(hidden_dim, "proj")
        self.norm2 = norm("norm2")
        self.fc1 = dense(self.mlp_dim, "fc1")
        self.fc2 = dense(hidden_dim, "fc2")
        if drop_path_rate > 0:
            self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        for layer in (self.norm1, self.qkv, self.proj, self.norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.mlp_dim))

    def attended(self, rows, tokens):
        """The attention branch, `Attention(LN(rows))`."""
        return kernels.attention_branch(self, rows, tokens)

    def transformed(self, rows):
        """The MLP branch, `MLP(LN(rows))`."""
        return kernels.mlp_branch(self, rows)

    def drop_path(self, rows, tokens, training):
        if not training or self.drop_path_rate == 0:
            return rows
        keep = 1.0 - self.drop_path_rate
        samples = ops.reshape(rows, (-1, tokens, self.hidden_dim))
        shape = (ops.shape(samples)[0], 1, 1)
        draw = kernels.uniform_noise(shape, self.seed_generator, dtype=rows.dtype)
        kept = samples * ops.cast(draw < keep, rows.dtype) / keep
        return ops.reshape(kept, (-1, self.hidden_dim))

    def call(self, x, training=None):
        # Rows (B * N, D) rather than (B, N, D): every Dense is then a plain 2-D
        # matmul. With 3-D inputs XLA:CPU recomputed the chain of residual
        # gradients in every block (the JAX CPU step took 1.5x as long); the
        # reshapes are free on every backend.
        tokens = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
        rows = ops.reshape(x, (-1, self.hidden_dim))  # (B * N, D)
        attended = lambda r: self.attended(r, tokens)  # noqa: E731
        transformed = self.transformed
        if self.remat:
            attended, transformed = keras.remat(attended), keras.remat(transformed)
        rows = rows + self.drop_path(attended(rows), tokens, training)
        rows = rows + self.drop_path(transformed(rows), tokens, training)
        return ops.reshape(rows, (-1, tokens, self.hidden_dim))  # (B, N, D)

    def attention_weights(self, x):
        """The softmax attention weights of this block for inputs `x`.

        Recomputes q and k from `LN(x)` (the attention's own input), outside
        `call`, so the training path is untouched: `softmax(q k^T / sqrt(hd))`
        per head.

        Args:
            x: `(batch, tokens, hidden_dim)`, the block's input.

        Returns:
            `(batch, num_heads, tokens, tokens)` float32, each row summing to 1
            (row: the attending token, column: the attended one).
        """
        tokens = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
        rows = kernels.layer_norm(self.norm1, ops.reshape(x, (-1, self.hidden_dim)))
        qkv = self.qkv(rows)  # (B * N, 3D)
        qkv = ops.reshape(qkv, (-1, tokens, 3, self.num_heads, self.head_dim))
        q, k, _ = ops.unstack(ops.cast(qkv, "float32"), 3, axis=2)  # (B, N, heads, hd)
        q = ops.transpose(q, (0, 2, 1, 3))  # (B, heads, N, hd)
        k = ops.transpose(k, (0, 2, 3, 1))  # (B, heads, hd, N)
        logits = ops.matmul(q, k) / float(self.head_dim) ** 0.5  # (B, heads, N, N)
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "drop_path_rate": self.drop_path_rate,
                "seed": self.seed,
                "attention_padding": self.attention_padding,
                "remat": self.remat,
            }
        )
        return config
