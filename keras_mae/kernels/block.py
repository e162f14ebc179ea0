"""The two residual branches of a ViT block, with a direct PyTorch path.

Under eager PyTorch each `keras.ops` call wraps a small torch call in Python
(argument conversion, dtype standardisation, symbolic-tensor checks), so at
MAE widths the attention branch's 11 calls and the MLP branch's 6 make the
training step's host time, not its arithmetic. The PyTorch implementations
call torch directly on the sublayers' variables (`F.layer_norm`,
`torch.addmm` on Keras' `(in, out)` kernels, `F.scaled_dot_product_attention`
on `(batch, heads, tokens, head_dim)` views, exact `F.gelu`), and
`call_block` skips the block's own `Layer.__call__`.

Dtypes are those of the sublayers' own calls inside the block's autocast
scope: Dense kernels and biases in the compute dtype (float32 variables cast
under `mixed_bfloat16`), a LayerNorm's gamma and beta uncast, its statistics
in at least float32 and its result in the compute dtype, as Keras' layers
compute them. The Dense values are cast here rather than read off the
current autocast scope, so that a branch that `keras.remat` recomputes in
the backward pass (outside any scope) computes in the dtype of its forward
pass. Whatever this path does not cover runs the reference: quantized or
LoRA Dense layers, non-plain LayerNorms, explicit token padding, inputs
not in the block's compute dtype.
"""

import weakref

import keras
from keras import ops

from keras_mae.kernels.attention import attention
from keras_mae.kernels.gelu import gelu
from keras_mae.kernels.kernel import Kernel
from keras_mae.kernels.layer_norm import is_plain
from keras_mae.kernels.layer_norm import layer_norm
from keras_mae.kernels.sublayer import call_sublayer


def reference_attention_branch(block, rows, tokens):
    """`Attention(LN(rows))` of a `ViTBlock` on `(batch * tokens, hidden_dim)` rows.

    LayerNorm, the fused qkv projection (laid out q | k | v, heads split
    inside each), softmax attention per head and the output projection.
    """
    qkv = call_sublayer(block.qkv, layer_norm(block.norm1, rows))  # (B * N, 3D)
    qkv = ops.reshape(qkv, (-1, tokens, 3, block.num_heads, block.head_dim))
    # One unstack rather than three slices: its gradient is a single stack,
    # where each slice's gradient zero-fills a full qkv-sized tensor (torch).
    q, k, v = ops.unstack(qkv, 3, axis=2)  # (B, N, heads, hd) each
    out = attention(q, k, v, block.attention_padding)  # (B, N, heads, hd)
    out = ops.reshape(out, (-1, block.hidden_dim))  # (B * N, D)
    return call_sublayer(block.proj, out)


def reference_mlp_branch(block, rows):
    """`MLP(LN(rows))` of a `ViTBlock`: LayerNorm, fc1, exact GELU, fc2."""
    hidden = call_sublayer(block.fc1, layer_norm(block.norm2, rows))  # (B * N, mlp_dim)
    return call_sublayer(block.fc2, gelu(hidden))


def reference_call_block(block, x, training=None):
    """`block(x, training=training)`: a `ViTBlock` through its full `__call__`."""
    return block(x, training=training)


# Dense layer -> its (kernel, bias) variables. `Dense.kernel` is a property
# that resolves quantized and LoRA kernels on every access; for a plain Dense
# it is always the same variable.
plain_dense_variables = weakref.WeakKeyDictionary()


def dense_variables(layer):
    """`(kernel, bias)` of a Dense layer that is a plain `x @ kernel + bias`, else None."""
    if layer.quantization_mode is not None or layer.lora_enabled:
        return None
    found = plain_dense_variables.get(layer)
    if found is None:
        if layer.bias is None or layer.activation is not keras.activations.linear:
            return None
        found = plain_dense_variables[layer] = (layer.kernel, layer.bias)
    return found


def attention_variables(block):
    """The qkv and proj `(kernel, bias)` variables when the attention branch has
    a direct path (plain LayerNorm and Dense layers, no explicit padding)."""
    padding = block.attention_padding
    if (padding is not None and padding != "auto") or not is_plain(block.norm1):
        return None  # "auto" pads only under JAX
    qkv, proj = dense_variables(block.qkv), dense_variables(block.proj)
    return None if qkv is None or proj is None else (*qkv, *proj)


def mlp_variables(block):
    """The fc1 and fc2 `(kernel, bias)` variables when the MLP branch has a direct path."""
    if not is_plain(block.norm2):
        return None
    fc1, fc2 = dense_variables(block.fc1), dense_variables(block.fc2)
    return None if fc1 is None or fc2 is None else (*fc1, *fc2)


def cast_values(variables, dtype):
    """The Dense variables' values in the compute dtype `dtype`, as the
    block's autocast scope gives them to the Dense layers' own calls.

    Cast here rather than read off the current scope: a branch that
    `remat` recomputes in the backward pass runs outside any scope, and
    must save the tensors of its forward pass.
    """
    values = [variable.value for variable in variables]
    return [v if v.dtype is dtype else v.to(dtype) for v in values]


def torch_layer_norm(torch, F):
    """`normed(norm, x)`: a plain LayerNorm's call in torch."""
    statistics_dtypes = (torch.float32, torch.float64)

    def normed(norm, x):
        """Keras' `LayerNormalization.call`: statistics in at least float32,
        gamma and beta in that dtype, the result in `x`'s dtype."""
        x32 = x if x.dtype in statistics_dtypes else x.float()
        gamma, beta = norm.gamma.value, norm.beta.value
        if gamma.dtype is not x32.dtype:
            gamma, beta = gamma.to(x32.dtype), beta.to(x32.dtype)
        out = F.layer_norm(x32, x32.shape[-1:], gamma, beta, norm.epsilon)
        return out if out.dtype is x.dtype else out.to(x.dtype)

    return normed


def torch_attention_function(torch, F, normed, in_compute_dtype):
    """The attention branch in torch, or its reference where the direct path
    does not cover the block."""

    def attention_rows(block, rows, tokens, qkv_kernel, qkv_bias, proj_kernel, proj_bias):
        qkv = torch.addmm(qkv_bias, normed(block.norm1, rows), qkv_kernel)  # (B * N, 3D)
        qkv = qkv.view(-1, tokens, 3, block.num_heads, block.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, hd) views
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
        out = out.transpose(1, 2).reshape(-1, block.hidden_dim)  # (B * N, D)
        return torch.addmm(proj_bias, out, proj_kernel)

    def attention_branch(block, rows, tokens):
        variables = attention_variables(block)
        if variables is None or not in_compute_dtype(block, rows):
            return reference_attention_branch(block, rows, tokens)
        return attention_rows(block, rows, tokens, *cast_values(variables, rows.dtype))

    return attention_branch


def torch_mlp_function(torch, F, normed, in_compute_dtype):
    """The MLP branch in torch, or its reference where the direct path does
    not cover the block."""

    def mlp_rows(block, rows, fc1_kernel, fc1_bias, fc2_kernel, fc2_bias):
        hidden = torch.addmm(fc1_bias, normed(block.norm2, rows), fc1_kernel)
        return torch.addmm(fc2_bias, F.gelu(hidden), fc2_kernel)  # exact (erf) GELU

    def mlp_branch(block, rows):
        variables = mlp_variables(block)
        if variables is None or not in_compute_dtype(block, rows):
            return reference_mlp_branch(block, rows)
        return mlp_rows(block, rows, *cast_values(variables, rows.dtype))

    return mlp_branch


def torch_call_function(torch, dtypes, in_compute_dtype):
    """`call_block` in torch: the block's `call` without `Layer.__call__`."""

    def call_block(block, x, training=None):
        """`block.call(x, training)`, without `Layer.__call__` where that changes nothing.

        `Layer.__call__` converts the input to the compute dtype, resolves
        `training` from the calling layer, opens the autocast scope of a
        mixed policy, records a graph node for symbolic inputs and applies a
        `keras.RematScope` the block was made in. Here the input is already a
        tensor in the compute dtype, `training` is explicit, the branches cast
        the Dense values to the compute dtype themselves and no remat mode is
        set, or the full call runs.
        """
        # Keras' `Layer._remat_mode`: the `keras.RematScope` mode the layer was
        # made in, which its `__call__` applies.
        if (
            training is None
            or not isinstance(x, torch.Tensor)
            or x.is_meta
            or x.ndim != 3
            or not in_compute_dtype(block, x)
            or getattr(block, "_remat_mode", None) is not None
        ):
            return reference_call_block(block, x, training)
        attention, mlp = attention_variables(block), mlp_variables(block)
        if attention is None or mlp is None:
            return reference_call_block(block, x, training)
        # The current autocast scope casts to the compute dtype or not at all
        # (a mixed block called outside any layer): the branches' casts then
        # give what the block's own scope would.
        if attention[0].value.dtype not in (x.dtype, dtypes.get(block.variable_dtype)):
            return reference_call_block(block, x, training)
        return block.call(x, training=training)

    return call_block


def torch_functions():
    """The PyTorch implementations `(attention_branch, mlp_branch, call_block)`."""
    import torch
    import torch.nn.functional as F

    dtypes = {
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float32": torch.float32,
        "float64": torch.float64,
    }

    def in_compute_dtype(block, rows):
        return rows.dtype is dtypes.get(block.compute_dtype)

    normed = torch_layer_norm(torch, F)
    return (
        torch_attention_function(torch, F, normed, in_compute_dtype),
        torch_mlp_function(torch, F, normed, in_compute_dtype),
        torch_call_function(torch, dtypes, in_compute_dtype),
    )


if keras.backend.backend() == "torch":
    torch_attention_branch, torch_mlp_branch, torch_call_block = torch_functions()
    implementations = {
        "attention": {"torch": torch_attention_branch},
        "mlp": {"torch": torch_mlp_branch},
        "call": {"torch": torch_call_block},
    }
else:
    implementations = {"attention": {}, "mlp": {}, "call": {}}

attention_branch = Kernel(
    "attention_branch", reference_attention_branch, **implementations["attention"]
)
mlp_branch = Kernel("mlp_branch", reference_mlp_branch, **implementations["mlp"])
call_block = Kernel("call_block", reference_call_block, **implementations["call"])
