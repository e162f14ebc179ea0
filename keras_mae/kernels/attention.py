import functools
import re

import keras
from keras import ops

from keras_mae.kernels.kernel import Kernel

# cuDNN flash attention's sequence-length granule (JAX).
FLASH_MULTIPLE = 64

# The name scope of the JAX path, as it shows in an XLA op's `op_name`:
# ".../block_0/attention/dot_general", or "transpose(jvp(attention))/..." when
# the scope is the outermost one.
PROFILE_SCOPE = re.compile(r"(^|[/(])attention[/)]")


def check_attention_padding(padding):
    """Validate an `attention_padding` argument; returns it.

    Args:
        padding: `"auto"`, None, or an int >= 2.
    """
    if padding is None or padding == "auto":
        return padding
    if isinstance(padding, (bool, str, float)) or int(padding) != padding or padding < 2:
        raise ValueError(
            "attention_padding must be 'auto', None (no padding) or an integer "
            f">= 2 (pad tokens to a multiple of it). Received: attention_padding={padding!r}"
        )
    return int(padding)


@functools.cache
def jax_gpu_available():
    """Whether the JAX backend runs on a GPU (asked once)."""
    try:
        return bool(keras.distribution.list_devices("gpu"))
    except (RuntimeError, ValueError):  # no GPU platform
        return False


def auto_padding(dtype):
    """`"auto"` under JAX: 64 for float16/bfloat16 inputs on a GPU, where cuDNN
    flash attention applies and rejects lengths such as MAE's 50 and 197
    tokens; no padding elsewhere."""
    half = keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16")
    return FLASH_MULTIPLE if half and jax_gpu_available() else None


def padded_attention(q, k, v, multiple):
    """`dot_product_attention` over tokens zero-padded to a multiple of `multiple`.

    The padded keys are masked out and the padded query rows dropped, so the
    result is that of the unpadded attention.
    """
    tokens = q.shape[1]
    padded = -(-tokens // multiple) * multiple
    if padded == tokens:
        return ops.dot_product_attention(q, k, v)
    widths = ((0, 0), (0, padded - tokens), (0, 0), (0, 0))
    q, k, v = (ops.pad(t, widths) for t in (q, k, v))  # (B, padded, heads, hd)
    keys_valid = ops.arange(padded) < tokens
    mask = ops.broadcast_to(keys_valid[None, None, None, :], (1, 1, padded, padded))
    return ops.dot_product_attention(q, k, v, mask=mask)[:, :tokens]  # (B, N, heads, hd)


def unpadded_or_padded(q, k, v, multiple):
    if multiple and isinstance(q.shape[1], int):
        return padded_attention(q, k, v, multiple)
    return ops.dot_product_attention(q, k, v)  # (B, N, heads, hd)


def reference_attention(q, k, v, padding="auto"):
    """Softmax attention of `(batch, tokens, heads, head_dim)` inputs.

    `keras.ops.dot_product_attention` (fused or flash kernels where the backend
    has them), with the tokens optionally zero-padded to a multiple of
    `padding` first: cuDNN flash attention (the JAX GPU path) rejects MAE's
    token counts, and padding makes them eligible, which on a GPU outweighs
    the extra tokens' work (on a CPU it does not).

    Args:
        q, k, v: `(batch, tokens, heads, head_dim)`.
        padding: `"auto"` (64 under JAX on a GPU for float16/bfloat16 inputs,
            none elsewhere), None (never), or an int >= 2.

    Returns:
        `(batch, tokens, heads, head_dim)`.
    """
    return unpadded_or_padded(q, k, v, None if padding == "auto" else padding)


def jax_attention(q, k, v, padding="auto"):
    """The reference, with `"auto"` padding resolved by `auto_padding`.

    Traced under the name scope `attention`, so that its XLA ops (and those
    of its gradient) carry it in their HLO `op_name` (`PROFILE_SCOPE`) and a
    profile can add them up (`benchmarks/profile_xla_cpu.py`); names change
    nothing else.
    """
    multiple = auto_padding(q.dtype) if padding == "auto" else padding
    with keras.name_scope("attention"):
        return unpadded_or_padded(q, k, v, multiple)


attention = Kernel("attention", reference_attention, jax=jax_attention)
