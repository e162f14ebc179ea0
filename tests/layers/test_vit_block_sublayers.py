"""`ViTBlock` computes what its sublayers' public `__call__` computes.

The block works on (B * N, D) rows and goes through `keras_mae.kernels`
(sublayers' `call` directly under eager PyTorch, its own LayerNorm and GELU
arithmetic under XLA; each kernel is checked against its reference in
tests/kernels). These tests pin that the block as a whole changes nothing
beyond float rounding: it must equal the same computation written with the
sublayers' `__call__` on (B, N, D) tensors, in float32 and under
`mixed_bfloat16` (where the autocast scope the sublayers rely on is the
block's), and a quantized block must still go through the quantized kernels.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
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
    block = keras_mae.ViTBlock(16, 4, mlp_ratio=2.0, dtype=dtype)
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
