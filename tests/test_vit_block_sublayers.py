"""`ViTBlock`'s fast paths compute what its sublayers' public `__call__` computes.

The block calls its sublayers' `call` directly (`vit_block.call_sublayer`,
host time under eager PyTorch), works on (B * N, D) rows and, under XLA,
writes the LayerNorm and GELU arithmetic itself (`vit_block.layer_norm`,
`vit_block.gelu`). These tests pin that none of it changes the numbers beyond
float rounding: the block must equal the same computation written with the
sublayers' `__call__` on (B, N, D) tensors, in float32 and under
`mixed_bfloat16` (where the autocast scope the sublayers rely on is the
block's); `layer_norm` must equal float64 numpy and Keras' `LayerNormalization`
in values and gradients; `gelu` must equal the erf GELU and its derivative; and
a quantized block must still go through the quantized kernels.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_mae import vit_block
from tests.backend_grads import function_grads
from tests.conftest import to_numpy


class ReferenceBlock(keras.layers.Layer):
    """The block written with each sublayer's full `__call__` (the old code path).

    A layer of the block's dtype policy, so that its own `__call__` converts the
    input and opens the autocast scope as the block's does.
    """

    def __init__(self, block):
        super().__init__(dtype=block.dtype_policy)
        self.block = block

    def call(self, x):
        return reference_block(self.block, x)


def reference_block(block, x):
    h = block.norm1(x)
    qkv = ops.reshape(block.qkv(h), (-1, x.shape[1], 3, block.num_heads, block.head_dim))
    q, k, v = ops.unstack(qkv, 3, axis=2)
    out = ops.reshape(ops.dot_product_attention(q, k, v), (-1, x.shape[1], block.hidden_dim))
    x = x + block.proj(out)
    return x + block.fc2(ops.gelu(block.fc1(block.norm2(x)), approximate=False))


def randomised_block(dtype):
    block = vit_block.ViTBlock(16, 4, mlp_ratio=2.0, dtype=dtype)
    block.build((None, 5, 16))
    rng = np.random.default_rng(1)
    for w in block.weights:  # non-trivial LayerNorm and bias values too
        w.assign(rng.normal(scale=0.3, size=w.shape).astype("float32"))
    return block


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_block_equals_its_sublayers_called_in_full(dtype):
    block = randomised_block(dtype)
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    out = block(x)
    assert keras.backend.standardize_dtype(out.dtype) == block.compute_dtype
    expected = ReferenceBlock(block)(x)
    # float32: rounding only; bfloat16: a rounding difference in float32 may
    # flip the last bit of a bfloat16 intermediate (2^-8 relative).
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    np.testing.assert_allclose(
        to_numpy(ops.cast(out, "float32")),
        to_numpy(ops.cast(expected, "float32")),
        rtol=tolerance,
        atol=tolerance,
    )
    # A bfloat16 block really computes in bfloat16: it differs from float32.
    if dtype != "float32":
        full = randomised_block("float32")
        assert np.abs(to_numpy(full(x)) - to_numpy(ops.cast(out, "float32"))).max() > 1e-4


def test_quantized_block_uses_the_quantized_kernels():
    block = randomised_block("float32")
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    before = to_numpy(block(x))
    for dense in (block.qkv, block.proj, block.fc1, block.fc2):
        dense.quantize("int8")  # what `Model.quantize` does to each Dense
    assert block.qkv.quantization_mode == "int8"
    after = to_numpy(block(x))
    np.testing.assert_allclose(after, to_numpy(ReferenceBlock(block)(x)), rtol=1e-5, atol=1e-5)
    # int8 weights change the output a little, so the quantized path did run.
    assert 0 < np.abs(after - before).max() < 0.5


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_layer_norm_equals_keras_layer_normalization(dtype):
    norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype)
    norm.build((None, 16))
    rng = np.random.default_rng(0)
    for w in norm.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    # An offset and a scale that a one-pass variance would get wrong.
    x = ops.cast(rng.normal(size=(40, 16)) * 3.0 + 50.0, norm.compute_dtype)

    class Ours(keras.layers.Layer):  # the block's autocast scope and casts
        def call(self, x):
            return vit_block.layer_norm(norm, x)

    ours = Ours(dtype=dtype)
    out, expected = ours(x), norm(x)
    assert keras.backend.standardize_dtype(out.dtype) == norm.compute_dtype
    out, expected = (to_numpy(ops.cast(t, "float32")) for t in (out, expected))
    if dtype == "float32":
        # float64 numpy is the reference for both (float32 rounding of the
        # statistics at this offset: a few 1e-6).
        x64 = to_numpy(x).astype(np.float64)
        gamma, beta = (to_numpy(w).astype(np.float64) for w in (norm.gamma, norm.beta))
        centred = x64 - x64.mean(-1, keepdims=True)
        exact = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-6) * gamma + beta
        np.testing.assert_allclose(out, exact, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(expected, exact, rtol=2e-5, atol=2e-5)
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-2, atol=1e-2)
    if dtype == "float32":
        cotangent = ops.convert_to_tensor(rng.normal(size=(40, 16)).astype("float32"))
        grads = [
            function_grads(lambda x, f=f: ops.sum(f(x) * cotangent), x, norm.trainable_weights)
            for f in (ours, norm)
        ]
        for a, b in zip(*grads):  # input, gamma, beta
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_gelu_is_exact_erf_gelu_with_its_derivative():
    x = np.linspace(-8.0, 8.0, 2001).astype("float32")
    x64 = x.astype(np.float64)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x64 / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x64**2) / math.sqrt(2.0 * math.pi)
    np.testing.assert_allclose(to_numpy(vit_block.gelu(x)), x64 * cdf, rtol=1e-6, atol=1e-6)
    (grad,) = function_grads(lambda t: ops.sum(vit_block.gelu(t)), x, [])
    np.testing.assert_allclose(grad, cdf + x64 * pdf, rtol=1e-5, atol=1e-5)
