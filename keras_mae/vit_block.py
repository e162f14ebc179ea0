import functools

import keras
from keras import ops

# Pad each attention call to a multiple of this many tokens, masking the padded
# keys (None: never; "auto": where it enables cuDNN flash attention). See
# `set_attention_padding`.
ATTENTION_PADDING = {"multiple": "auto"}
AUTO_MULTIPLE = 64  # cuDNN flash attention's sequence-length granule (JAX)


def set_attention_padding(multiple):
    """Pad attention to a multiple of `multiple` tokens in every `ViTBlock`.

    cuDNN flash attention (the JAX GPU path of `keras.ops.dot_product_attention`)
    rejects sequence lengths such as MAE's 50 encoder and 197 decoder tokens at
    ViT-B/16; zero-padding queries, keys and values to a supported length and
    masking the padded keys makes them eligible, and the padded rows are
    dropped afterwards, so outputs are those of the unpadded attention. It
    costs the extra tokens' work and is meant for GPUs with flash attention;
    on CPUs it only slows things down. Set it before the model is traced.

    On one H100 (ViT-B/16 MAE, batch 256, bf16, JAX) padding to 64 raised the
    training step from 3,092 to 4,150 images/s and lowered peak memory from
    23.9 to 18.1 GiB (BENCHMARKS.md).

    Args:
        multiple: int >= 2; None to switch padding off; or "auto" (the
            default): 64 under the JAX backend on a GPU with float16/bfloat16
            attention inputs (where cuDNN flash attention applies), none
            elsewhere.

    Example:
    >>> keras_mae.vit_block.set_attention_padding(64)  # GPU + flash attention
    """
    if multiple is None or multiple == "auto":
        ATTENTION_PADDING["multiple"] = multiple
        return
    if isinstance(multiple, (bool, str)) or int(multiple) != multiple or multiple < 2:
        raise ValueError(
            "multiple must be an integer >= 2, None or 'auto'. "
            f"Received: multiple={multiple!r}"
        )
    ATTENTION_PADDING["multiple"] = int(multiple)


@functools.lru_cache(maxsize=None)
def jax_gpu_available():
    """Whether the JAX backend runs on a GPU (asked once)."""
    try:
        return bool(keras.distribution.list_devices("gpu"))
    except (RuntimeError, ValueError):  # no GPU platform
        return False


def attention_padding_multiple(dtype):
    """The padding multiple in force for attention inputs of `dtype` (or None)."""
    multiple = ATTENTION_PADDING["multiple"]
    if multiple != "auto":
        return multiple
    # Cheapest test first: eager torch asks this in every block of every step.
    if keras.backend.backend() != "jax":
        return None
    half = keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16")
    return AUTO_MULTIPLE if half and jax_gpu_available() else None


def padded_attention(q, k, v, multiple):
    """`dot_product_attention` over tokens zero-padded to a multiple of `multiple`."""
    tokens = q.shape[1]
    padded = -(-tokens // multiple) * multiple
    if padded == tokens:
        return ops.dot_product_attention(q, k, v)
    widths = ((0, 0), (0, padded - tokens), (0, 0), (0, 0))
    q, k, v = (ops.pad(t, widths) for t in (q, k, v))  # (B, padded, heads, hd)
    keys_valid = ops.arange(padded) < tokens
    mask = ops.broadcast_to(keys_valid[None, None, None, :], (1, 1, padded, padded))
    return ops.dot_product_attention(q, k, v, mask=mask)[:, :tokens]


def call_sublayer(layer, x):
    """`layer(x)` for a built sublayer of a block, without `Layer.__call__`.

    Under eager PyTorch every `Layer.__call__` costs tens of microseconds of
    Python (input conversion, signature binding, call context, name and autocast
    scopes); six per block were a third of the host time of the forward pass
    of an MAE training step. The calling block has already converted the input
    to its compute dtype and entered its autocast scope, which its sublayers
    share (same dtype policy), so `layer.call(x)` computes the same numbers.
    Quantized or rematerialized sublayers take the full `__call__`.
    """
    if layer.quantization_mode is not None or getattr(layer, "_remat_mode", None):
        return layer(x)
    return layer.call(x)


def layer_norm(layer, x):
    """`layer(x)` for a built `LayerNormalization` sublayer of a block.

    Under JAX and TensorFlow this centres once and scales after:
    `(x - mean) * rsqrt(mean((x - mean)^2) + eps) * gamma + beta`. Keras'
    own arithmetic (`x * inv + (beta - mean * inv)` with `inv = rsqrt(var) *
    gamma`, the variance a second pass) leaves XLA several more (rows, D)
    temporaries in the forward and backward passes (6% of the JAX CPU
    training step). Same statistics in at least float32, same casts, same
    rounding of a mixed-precision gamma. Under PyTorch Keras calls the fused
    `F.layer_norm` kernel, used as is.
    """
    plain = layer.center and layer.scale and not layer.rms_scaling and layer.axis == [-1]
    if keras.backend.backend() == "torch" or not plain:
        return call_sublayer(layer, x)
    compute = keras.backend.result_type(x.dtype, "float32")
    x32 = ops.cast(x, compute)
    centred = x32 - ops.mean(x32, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
    out = centred * ops.rsqrt(variance + layer.epsilon)
    out = out * ops.cast(layer.gamma, compute) + ops.cast(layer.beta, compute)
    return ops.cast(out, x.dtype)


def gelu(x):
    """Exact (erf) GELU, `x / 2 * (1 + erf(x / sqrt(2)))`: torch's formula.

    Under JAX and TensorFlow `ops.gelu(approximate=False)` goes through erfc,
    which XLA expands into two polynomial branches and an exponential; erf is
    one clamped rational polynomial. Under PyTorch, Keras' fused kernel.
    """
    if keras.backend.backend() == "torch":
        return ops.gelu(x, approximate=False)
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


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

    Call arguments:
        x: `(batch, tokens, hidden_dim)`.
        training: bool, enables drop path.

    Returns:
        `(batch, tokens, hidden_dim)`.

    Example:
    >>> ViTBlock(hidden_dim=32, num_heads=4)(np.zeros((2, 5, 32))).shape
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

    def attention(self, rows, tokens):
        qkv = call_sublayer(self.qkv, rows)  # (B * N, 3D)
        qkv = ops.reshape(qkv, (-1, tokens, 3, self.num_heads, self.head_dim))
        # One unstack rather than three slices: its gradient is a single stack,
        # where each slice's gradient zero-fills a full qkv-sized tensor (torch).
        q, k, v = ops.unstack(qkv, 3, axis=2)  # (B, N, heads, hd) each
        multiple = attention_padding_multiple(q.dtype)
        if multiple and isinstance(tokens, int):
            out = padded_attention(q, k, v, multiple)
        else:
            out = ops.dot_product_attention(q, k, v)  # (B, N, heads, hd)
        out = ops.reshape(out, (-1, self.hidden_dim))  # (B * N, D)
        return call_sublayer(self.proj, out)

    def mlp(self, rows):
        hidden = gelu(call_sublayer(self.fc1, rows))
        return call_sublayer(self.fc2, hidden)

    def drop_path(self, rows, tokens, training):
        if not training or self.drop_path_rate == 0:
            return rows
        keep = 1.0 - self.drop_path_rate
        samples = ops.reshape(rows, (-1, tokens, self.hidden_dim))
        shape = (ops.shape(samples)[0], 1, 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator, dtype=rows.dtype)
        kept = samples * ops.cast(draw < keep, rows.dtype) / keep
        return ops.reshape(kept, (-1, self.hidden_dim))

    def call(self, x, training=None):
        # The block works on (B * N, D) rows: every Dense is then a plain 2-D
        # matmul, whose weight gradient contracts one axis. With (B, N, D)
        # inputs XLA:CPU transposes each residual-stream gradient for those
        # weight gradients and fuses the whole chain of residual additions from
        # the last block into every transpose, recomputing it per block: the
        # JAX CPU training step took 1.5x as long. The reshapes are free.
        tokens = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
        rows = ops.reshape(x, (-1, self.hidden_dim))
        attended = self.attention(layer_norm(self.norm1, rows), tokens)
        rows = rows + self.drop_path(attended, tokens, training)
        rows = rows + self.drop_path(self.mlp(layer_norm(self.norm2, rows)), tokens, training)
        return ops.reshape(rows, (-1, tokens, self.hidden_dim))

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
            }
        )
        return config
