from math import erf

import numpy as np
import pytest

import keras_mae
from tests.conftest import to_numpy


def roundtrip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


# --- RandomMasking ---------------------------------------------------------------


def official_masking(x, noise, mask_ratio):
    """The official `random_masking` in numpy: argsort ascending, keep the first int(L*(1-r))."""
    n, length, _ = x.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = np.argsort(noise, axis=1)
    ids_restore = np.argsort(ids_shuffle, axis=1)
    visible = np.take_along_axis(x, ids_shuffle[:, :len_keep, None], axis=1)
    mask = np.ones((n, length))
    mask[:, :len_keep] = 0
    mask = np.take_along_axis(mask, ids_restore, axis=1)
    return visible, mask, ids_restore


@pytest.mark.parametrize("mask_ratio", [0.75, 0.5, 0.6])
def test_masking_with_noise_follows_official_semantics(mask_ratio):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 10, 4)).astype("float32")
    noise = rng.random((3, 10)).astype("float32")
    visible, mask, ids_restore = keras_mae.RandomMasking(mask_ratio)(x, noise=noise)
    ref_visible, ref_mask, ref_restore = official_masking(x, noise, mask_ratio)
    np.testing.assert_array_equal(to_numpy(visible), ref_visible)
    np.testing.assert_array_equal(to_numpy(mask), ref_mask)
    np.testing.assert_array_equal(to_numpy(ids_restore), ref_restore)


def test_masking_keeps_exactly_len_keep_and_restore_inverts_shuffle():
    x = np.arange(2 * 16 * 3, dtype="float32").reshape(2, 16, 3)
    visible, mask, ids_restore = keras_mae.RandomMasking(0.75, seed=3)(x)
    visible, mask, ids_restore = map(to_numpy, (visible, mask, ids_restore))
    assert visible.shape == (2, 4, 3)
    np.testing.assert_array_equal(mask.sum(axis=1), [12, 12])
    for b in range(2):
        # The visible tokens are exactly the unmasked ones (each token is unique).
        kept = np.flatnonzero(mask[b] == 0)
        assert sorted((visible[b, :, 0] - b * 48) // 3) == sorted(kept)
        # Un-shuffling [visible, removed] by ids_restore gives the original order.
        removed = np.flatnonzero(mask[b] == 1)
        order = np.argsort(ids_restore[b])  # = ids_shuffle
        shuffled = x[b][order]
        np.testing.assert_array_equal(shuffled[:4], visible[b])
        np.testing.assert_array_equal(shuffled[ids_restore[b]], x[b])
        assert set(order[4:]) == set(removed)


def test_same_seed_same_masks_and_successive_calls_differ():
    x = np.zeros((4, 16, 2), "float32")
    first = keras_mae.RandomMasking(0.75, seed=7)
    second = keras_mae.RandomMasking(0.75, seed=7)
    a1, a2 = to_numpy(first(x)[1]), to_numpy(first(x)[1])
    b1, b2 = to_numpy(second(x)[1]), to_numpy(second(x)[1])
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)
    # Per-sample masks differ within a batch.
    assert len({tuple(row) for row in a1}) > 1


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, "0.75"])
def test_bad_mask_ratio(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        keras_mae.RandomMasking(ratio)


def test_masking_that_keeps_nothing_is_refused():
    with pytest.raises(ValueError, match="keeps no token out of 4"):
        keras_mae.RandomMasking(0.9)(np.zeros((1, 4, 2), "float32"))


def test_masking_config_roundtrip():
    layer = keras_mae.RandomMasking(0.6, seed=11)
    clone = roundtrip(layer)
    x = np.zeros((2, 10, 3), "float32")
    np.testing.assert_array_equal(to_numpy(layer(x)[1]), to_numpy(clone(x)[1]))


# --- ViTBlock --------------------------------------------------------------------


def numpy_block(x, weights, num_heads, eps=1e-6):
    """Pre-norm ViT block in float64 numpy, as the official `models_mae.py` (timm Block)."""
    (g1, b1, wqkv, bqkv, wp, bp, g2, b2, w1, c1, w2, c2) = [
        np.asarray(w, np.float64) for w in weights
    ]

    def layer_norm(v, g, b):
        mean = v.mean(-1, keepdims=True)
        var = v.var(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + eps) * g + b

    n, t, d = x.shape
    hd = d // num_heads
    qkv = (layer_norm(x, g1, b1) @ wqkv + bqkv).reshape(n, t, 3, num_heads, hd)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (n, h, t, hd)
    logits = q @ k.transpose(0, 1, 3, 2) * hd**-0.5
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    x = x + out @ wp + bp
    hidden = layer_norm(x, g2, b2) @ w1 + c1
    hidden = 0.5 * hidden * (1 + np.vectorize(erf)(hidden / np.sqrt(2)))  # exact GELU
    return x + hidden @ w2 + c2


def test_vit_block_matches_numpy_reference():
    block = keras_mae.ViTBlock(hidden_dim=16, num_heads=4, mlp_ratio=2.0)
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    block.build(x.shape)
    rng = np.random.default_rng(1)
    for w in block.weights:  # non-trivial LayerNorm and bias values too
        w.assign(rng.normal(scale=0.3, size=w.shape).astype("float32"))
    weights = [to_numpy(w) for w in block.weights]
    order = ["norm1", "qkv", "proj", "norm2", "fc1", "fc2"]
    assert [w.path.split("/")[-2] for w in block.weights][::2] == order
    np.testing.assert_allclose(
        to_numpy(block(x)), numpy_block(x.astype(np.float64), weights, 4), rtol=1e-4, atol=1e-5
    )


def test_vit_block_drop_path_only_in_training():
    block = keras_mae.ViTBlock(16, 4, drop_path_rate=0.5, seed=0)
    x = np.random.default_rng(0).normal(size=(64, 3, 16)).astype("float32")
    eval_a, eval_b = to_numpy(block(x)), to_numpy(block(x))
    np.testing.assert_array_equal(eval_a, eval_b)
    train = to_numpy(block(x, training=True))
    # Some samples drop a whole branch, so they differ from inference.
    differs = np.abs(train - eval_a).reshape(64, -1).max(axis=1) > 1e-6
    assert 0 < differs.sum() <= 64
    # Drop path drops a sample's whole branch, every token of it: where both
    # branches are dropped (p = 1/4) the sample comes out as it went in, and no
    # sample has some tokens passed through and others not.
    passed = np.abs(train - x).max(axis=-1) == 0  # (samples, tokens)
    assert np.all(passed.all(axis=1) == passed.any(axis=1))
    assert 4 <= passed.all(axis=1).sum() <= 32


def test_vit_block_validates_and_roundtrips():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        keras_mae.ViTBlock(hidden_dim=10, num_heads=3)
    roundtrip(keras_mae.ViTBlock(16, 2, mlp_ratio=3.0, layer_norm_epsilon=1e-5))


# --- PatchEncoder, ClassToken, TokenPooling, MAEDecoder --------------------------


def test_patch_encoder_is_a_linear_map_of_patches_plus_sincos():
    layer = keras_mae.PatchEncoder(patch_size=2, hidden_dim=8)
    images = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype("float32")
    tokens = to_numpy(layer(images))
    kernel, bias = to_numpy(layer.projection.kernel), to_numpy(layer.projection.bias)
    patches = images.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 12)
    expected = patches @ kernel + bias + keras_mae.sincos_position_table(8, (2, 3))
    np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-5)
    assert not layer.position_embedding.trainable
    clone = roundtrip(layer)
    clone.build(images.shape)
    assert clone.grid_size == (2, 3)


def test_patch_encoder_initialisation_is_official_xavier():
    # xavier-uniform on the (out, C*p*p) view: limit sqrt(6 / (C*p*p + D)).
    layer = keras_mae.PatchEncoder(patch_size=4, hidden_dim=64)
    layer.build((None, 32, 32, 3))
    kernel = to_numpy(layer.projection.kernel)
    limit = np.sqrt(6 / (48 + 64))
    assert kernel.shape == (48, 64)
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.95 * limit


def test_class_token_and_pooling():
    tokens = np.random.default_rng(0).normal(size=(2, 4, 8)).astype("float32")
    layer = keras_mae.ClassToken()
    out = to_numpy(layer(tokens))
    np.testing.assert_array_equal(out[:, 1:], tokens)
    np.testing.assert_array_equal(out[0, 0], to_numpy(layer.token)[0, 0])
    assert 0 < np.std(to_numpy(layer.token)) < 0.1  # normal(std=0.02) init
    np.testing.assert_array_equal(to_numpy(keras_mae.TokenPooling("cls")(out)), out[:, 0])
    np.testing.assert_allclose(
        to_numpy(keras_mae.TokenPooling("mean")(out)), tokens.mean(axis=1), rtol=1e-6
    )
    assert roundtrip(keras_mae.TokenPooling("mean")).mode == "mean"
    with pytest.raises(ValueError, match="'cls' or 'mean'"):
        keras_mae.TokenPooling("max")


def test_decoder_unshuffles_mask_tokens_into_place():
    decoder = keras_mae.MAEDecoder((2, 2), patch_dim=4, hidden_dim=8, num_layers=1, num_heads=2)
    latent = np.random.default_rng(0).normal(size=(1, 2, 6)).astype("float32")  # cls + 1
    ids_restore = np.array([[2, 0, 3, 1]], "int32")  # patch 1 was kept
    decoder(latent, ids_restore)
    # Capture the block input: tokens in original order (+ positions).
    seen = {}
    original_call = decoder.blocks[0].call

    def spy(x, training=None):
        seen["x"] = to_numpy(x)
        return original_call(x, training=training)

    decoder.blocks[0].call = spy
    decoder(latent, ids_restore)
    x = seen["x"][0] - np.concatenate(
        [np.zeros((1, 8)), keras_mae.sincos_position_table(8, (2, 2))]
    )
    embedded = latent[0] @ to_numpy(decoder.embed.kernel) + to_numpy(decoder.embed.bias)
    mask_token = to_numpy(decoder.mask_token)[0, 0]
    np.testing.assert_allclose(x[0], embedded[0], atol=1e-5)  # cls first
    np.testing.assert_allclose(x[2], embedded[1], atol=1e-5)  # kept patch 1
    for removed in (1, 3, 4):
        np.testing.assert_allclose(x[removed], mask_token, atol=1e-5)
    clone = roundtrip(decoder)
    assert clone.grid_size == (2, 2)
