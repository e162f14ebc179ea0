import keras
from keras import ops

from keras_mae.kernels.kernel import Kernel
from keras_mae.kernels.sublayer import direct_call


def reference_layer_norm(layer, x):
    """`layer(x)` for a built `keras.layers.LayerNormalization`."""
    return layer(x)


def is_plain(layer):
    return layer.center and layer.scale and not layer.rms_scaling and layer.axis == [-1]


def centred_layer_norm(layer, x):
    """LayerNorm that centres once and scales after.

    `(x - mean) * rsqrt(mean((x - mean)^2) + eps) * gamma + beta`. Keras' own
    arithmetic (`x * inv + (beta - mean * inv)` with `inv = rsqrt(var) *
    gamma`, the variance a second pass) leaves XLA several more (rows, D)
    temporaries in the forward and backward passes. Same statistics in at
    least float32, same casts, same rounding of a mixed-precision gamma.
    """
    if not is_plain(layer):
        return layer(x)
    compute = keras.backend.result_type(x.dtype, "float32")
    x32 = ops.cast(x, compute)
    centred = x32 - ops.mean(x32, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
    out = centred * ops.rsqrt(variance + layer.epsilon)
    out = out * ops.cast(layer.gamma, compute) + ops.cast(layer.beta, compute)
    return ops.cast(out, x.dtype)


layer_norm = Kernel(
    "layer_norm",
    reference_layer_norm,
    jax=centred_layer_norm,
    tensorflow=centred_layer_norm,
    torch=direct_call,  # Keras' layer calls torch's fused F.layer_norm
)
