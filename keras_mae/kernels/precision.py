"""Which compute dtypes the running backend and device can train in.

XLA on the CPU has no float16 matrix product: under JAX, a float16 (or
`mixed_float16`) model on a CPU fails at its first step with `The precision
'F16_F16_F32' is not supported by dot_general on CPU`. bfloat16 works there, as
float16 does on a GPU and under TensorFlow and PyTorch on a CPU. Models call
`check_compute_dtype` when they are built, so the choice is refused before any
work instead of in the middle of `fit`.
"""

import functools

import keras


@functools.cache
def jax_on_cpu():
    """Whether the JAX backend computes on the CPU (asked once)."""
    import jax

    return jax.default_backend() == "cpu"


def unsupported_compute_dtype(compute_dtype):
    """Why `compute_dtype` cannot be trained in here, or None when it can."""
    dtype = keras.backend.standardize_dtype(compute_dtype)
    if dtype == "float16" and keras.backend.backend() == "jax" and jax_on_cpu():
        return "cannot run under JAX on a CPU (XLA has no float16 dot_general there)"
    return None


def check_compute_dtype(dtype_policy, owner="the model"):
    """Refuse a dtype policy whose compute dtype the backend and device cannot run.

    Args:
        dtype_policy: a `keras.DTypePolicy` (e.g. `layer.dtype_policy`).
        owner: what the policy belongs to, for the message.

    Raises:
        ValueError: float16 compute (`"float16"`, `"mixed_float16"`) under JAX
            on a CPU; the message names `"mixed_bfloat16"`, which works there.
    """
    reason = unsupported_compute_dtype(dtype_policy.compute_dtype)
    if reason is None:
        return
    raise ValueError(
        f"dtype={dtype_policy.name!r} computes {owner} in "
        f"{dtype_policy.compute_dtype}, which {reason}: its first training step would "
        "fail. Use dtype='mixed_bfloat16' (or 'bfloat16', or 'float32') on "
        "this device, or run float16 on a GPU."
    )
