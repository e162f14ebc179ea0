from keras import ops

from keras_mae.kernels.kernel import Kernel

SQRT_HALF = 0.7071067811865476


def reference_gelu(x):
    """Exact (erf) GELU, `x / 2 * (1 + erf(x / sqrt(2)))`, as Keras computes it."""
    return ops.gelu(x, approximate=False)


def erf_gelu(x):
    """The same function through `erf`.

    Keras' exact GELU goes through `erfc` under JAX and TensorFlow, which XLA
    expands into two polynomial branches and an exponential; `erf` is one
    clamped rational polynomial.
    """
    return 0.5 * x * (1.0 + ops.erf(x * SQRT_HALF))


gelu = Kernel("gelu", reference_gelu, jax=erf_gelu, tensorflow=erf_gelu)
