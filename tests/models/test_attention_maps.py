"""The attention maps equal a float64 numpy computation from the blocks' weights.

The numpy side starts from the first block's input (patch tokens plus the cls
token, from Keras) and runs every block itself, in float64, from each block's
kernel and bias values: LayerNorm, qkv, per-head softmax(q k^T / sqrt(hd)),
projection, exact GELU MLP. Its weights, cls maps and rollout (heads' mean
plus identity, rows renormalised, multiplied through the blocks) must equal
the package's.
"""

import math

import keras
import numpy as np
import pytest

from keras_mae.models import attention_maps
from tests.conftest import to_numpy
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import GRID_SIZE
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import TINY
from tests.helpers.tiny import tiny_encoder
from tests.helpers.tiny import tiny_images

# Three blocks: a middle one that is neither `layer=0` nor `layer=-1`, and a rollout
# of three factors.
NUM_LAYERS = 3
TOKENS = NUM_PATCHES + 1  # the cls token first, then the patches row-major
TOLERANCE = 1e-5

erf = np.vectorize(math.erf)


def f64(variable):
    return to_numpy(variable).astype("float64")


def layer_norm(norm, x):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + norm.epsilon) * f64(norm.gamma) + f64(norm.beta)


def dense(layer, x):
    return x @ f64(layer.kernel) + f64(layer.bias)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_blocks(encoder, x):
    """Per-block attention weights `(B, heads, T, T)`, float64, from the weights."""
    batch, tokens, dim = x.shape
    heads = encoder.num_heads
    head_dim = dim // heads
    weights = []
    for block in encoder.blocks:
        qkv = dense(block.qkv, layer_norm(block.norm1, x)).reshape(batch, tokens, 3, heads, -1)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, T, hd)
        w = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim))
        weights.append(w)
        out = (w @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, dim)
        x = x + dense(block.proj, out)
        hidden = dense(block.fc1, layer_norm(block.norm2, x))
        x = x + dense(block.fc2, 0.5 * hidden * (1 + erf(hidden / math.sqrt(2))))
    return weights


def numpy_rollout(weights):
    result = np.eye(weights[0].shape[-1])
    for w in weights:
        a = w.mean(1) + np.eye(w.shape[-1])
        result = (a / a.sum(-1, keepdims=True)) @ result
    return result


@pytest.fixture
def case():
    encoder = tiny_encoder(num_layers=NUM_LAYERS)
    rng = np.random.default_rng(0)
    for block in encoder.blocks:  # sharper attention than the initialisation's
        block.qkv.kernel.assign(rng.normal(scale=0.6, size=block.qkv.kernel.shape))
        block.qkv.bias.assign(rng.normal(scale=0.2, size=block.qkv.bias.shape))
    images = tiny_images()
    x0 = to_numpy(encoder.class_token(encoder.patch_encoder(images))).astype("float64")
    return encoder, images, numpy_blocks(encoder, x0)


def test_attention_weights_per_block_and_head(case):
    encoder, images, expected = case
    weights = attention_maps.attention_weights(encoder, images)
    assert len(weights) == NUM_LAYERS
    for got, want in zip(weights, expected):
        assert tuple(got.shape) == (BATCH, TINY["num_heads"], TOKENS, TOKENS)
        np.testing.assert_allclose(to_numpy(got), want, atol=TOLERANCE, rtol=0)
    # Not uniform: the test would not see a transposed or unscaled softmax otherwise.
    assert expected[-1].max() > 0.2


def test_cls_attention_is_the_cls_row_over_the_patch_grid(case):
    encoder, images, expected = case
    for layer in (0, -1):
        maps = to_numpy(attention_maps.cls_attention(encoder, images, layer=layer))
        assert maps.shape == (BATCH, TINY["num_heads"], *GRID_SIZE)  # (batch, heads, 2, 3)
        want = expected[layer][:, :, 0, 1:].reshape(maps.shape)  # patches row-major
        np.testing.assert_allclose(maps, want, atol=TOLERANCE, rtol=0)
    with pytest.raises(ValueError, match="one of the encoder's 3 blocks .*Received: layer=3"):
        attention_maps.cls_attention(encoder, images, layer=NUM_LAYERS)


def test_attention_rollout(case):
    encoder, images, expected = case
    want = numpy_rollout(expected)
    got = to_numpy(attention_maps.attention_rollout(encoder, images))
    np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    maps = to_numpy(attention_maps.rollout_map(encoder, images))
    assert maps.shape == (BATCH, *GRID_SIZE)
    np.testing.assert_allclose(maps, want[:, 0, 1:].reshape(maps.shape), atol=TOLERANCE, rtol=0)


def test_attention_maps_leave_the_encoder_unchanged(case):
    encoder, images, _ = case
    before = to_numpy(encoder(images))
    attention_maps.attention_weights(encoder, images)
    np.testing.assert_array_equal(to_numpy(encoder(images)), before)
    # The functional graph is the one it was: no extra outputs or layers.
    assert [layer.name for layer in encoder.layers] == [
        "images",
        "patch_encoder",
        "class_token",
        "block_0",
        "block_1",
        "block_2",
        "norm",
    ]
    assert len(keras.Model(encoder.inputs, encoder.outputs).outputs) == 1
