"""The shared layer check (`tests/helpers/layer_test.py`) on every public layer.

Each case also pins numbers: weight and parameter counts worked out by hand
for the tiny configuration, and outputs against what the layer must compute.
"""

import keras
import numpy as np
import pytest

import keras_mae
from tests.conftest import to_numpy
from tests.helpers.layer_test import run_layer_test
from tests.helpers.tiny import BATCH as B
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import TINY
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_noise

DIM = TINY["hidden_dim"]  # 16
HEADS = TINY["num_heads"]  # 2
PATCH = TINY["patch_size"]  # 4
TOKENS = 1 + NUM_PATCHES  # 7: cls + 6 patches


def vit_block_params(dim, mlp_ratio=4.0):
    """Two LayerNorms, qkv, output projection and the two MLP layers, with biases."""
    mlp = int(dim * mlp_ratio)
    norms = 2 * 2 * dim
    attention = (dim * 3 * dim + 3 * dim) + (dim * dim + dim)
    return norms + attention + (dim * mlp + mlp) + (mlp * dim + dim)


def test_hand_counted_vit_block_params():
    # 64 + (768 + 48) + (256 + 16) + (1024 + 64) + (1024 + 16)
    assert vit_block_params(16) == 3280


def tokens(batch=B, length=TOKENS, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, DIM)).astype("float32")


def test_class_token(tmp_path):
    x = tokens(length=NUM_PATCHES)
    layer, out = run_layer_test(
        keras_mae.ClassToken,
        {},
        x,
        expected_output_shape=(B, TOKENS, DIM),
        expected_num_trainable_weights=1,
        expected_num_trainable_params=DIM,
        tmp_path=tmp_path,
    )
    np.testing.assert_array_equal(out[:, 1:], x)
    np.testing.assert_array_equal(out[:, 0], np.broadcast_to(to_numpy(layer.token)[0], (B, DIM)))


def test_patch_encoder(tmp_path):
    images = tiny_images()
    layer, out = run_layer_test(
        keras_mae.PatchEncoder,
        {"patch_size": PATCH, "hidden_dim": DIM},
        images,
        expected_output_shape=(B, NUM_PATCHES, DIM),
        expected_num_trainable_weights=2,  # projection kernel and bias
        expected_num_non_trainable_weights=1,  # the sin-cos position table
        expected_num_trainable_params=PATCH * PATCH * 2 * DIM + DIM,  # 528
        tmp_path=tmp_path,
    )
    # (B, 8, 12, 2) -> a 2 x 3 grid of (4, 4, 2) patches, row-major.
    patches = images.reshape(B, 2, 4, 3, 4, 2).transpose(0, 1, 3, 2, 4, 5).reshape(B, 6, 32)
    kernel, bias = to_numpy(layer.projection.kernel), to_numpy(layer.projection.bias)
    table = keras_mae.sincos_position_table(DIM, (2, 3))
    np.testing.assert_allclose(out, patches @ kernel + bias + table, rtol=1e-5, atol=1e-5)


def official_mask(noise, mask_ratio):
    len_keep = int(noise.shape[1] * (1 - mask_ratio))
    ids_restore = np.argsort(np.argsort(noise, axis=1), axis=1)
    return (ids_restore >= len_keep).astype("float32"), ids_restore


def test_random_masking_with_noise(tmp_path):
    x, noise = tokens(length=NUM_PATCHES), tiny_noise()
    _, (visible, mask, ids_restore) = run_layer_test(
        keras_mae.RandomMasking,
        {"mask_ratio": 0.5, "seed": 3},
        (x, noise),
        expected_output_shape=((B, 3, DIM), (B, NUM_PATCHES), (B, NUM_PATCHES)),
        expected_output_dtype=("float32", "float32", "int32"),
        expected_mixed_precision_dtype=("bfloat16", "bfloat16", "int32"),
        tmp_path=tmp_path,
    )
    expected_mask, expected_restore = official_mask(noise, 0.5)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(ids_restore, expected_restore)
    keep = np.argsort(noise, axis=1)[:, :3]
    np.testing.assert_array_equal(visible, np.take_along_axis(x, keep[:, :, None], axis=1))


def test_random_masking_from_its_seed():
    # Fresh layers of one config draw the same masks (the config check compares them).
    _, (_, mask, _) = run_layer_test(
        keras_mae.RandomMasking,
        {"mask_ratio": 0.75, "seed": 3},
        tokens(length=NUM_PATCHES),
        expected_output_shape=((B, 1, DIM), (B, NUM_PATCHES), (B, NUM_PATCHES)),
        expected_output_dtype=("float32", "float32", "int32"),
        expected_mixed_precision_dtype=("bfloat16", "bfloat16", "int32"),
        deterministic=False,
    )
    np.testing.assert_array_equal(mask.sum(axis=1), [5] * B)


# (constructor arguments, call arguments, whether to check the gradients: the
# variants that compute the plain block's graph have its gradients)
BLOCK_CASES = {
    "plain": ({}, {}, True),
    "mlp_ratio": ({"mlp_ratio": 2.0, "layer_norm_epsilon": 1e-5}, {}, False),
    "drop_path_inference": ({"drop_path_rate": 0.2, "seed": 4}, {"training": False}, False),
    "padded_attention": ({"attention_padding": 8}, {}, True),
    "no_padding": ({"attention_padding": None}, {}, False),
}


@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
def test_vit_block(case, tmp_path):
    kwargs, call_kwargs, gradients = BLOCK_CASES[case]
    x = tokens()
    layer, out = run_layer_test(
        keras_mae.ViTBlock,
        {"hidden_dim": DIM, "num_heads": HEADS, **kwargs},
        x,
        expected_output_shape=(B, TOKENS, DIM),
        expected_num_trainable_weights=12,  # 6 sublayers, each a kernel/gamma and a bias/beta
        expected_num_trainable_params=vit_block_params(DIM, kwargs.get("mlp_ratio", 4.0)),
        call_kwargs=call_kwargs,
        tmp_path=tmp_path,
        run_gradient_check=gradients,
    )
    # Every variant computes what the plain block computes with the same weights.
    plain = keras_mae.ViTBlock(
        DIM,
        HEADS,
        mlp_ratio=kwargs.get("mlp_ratio", 4.0),
        layer_norm_epsilon=kwargs.get("layer_norm_epsilon", 1e-6),
        attention_padding=None,
    )
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(out, to_numpy(plain(x)), rtol=1e-5, atol=1e-5)


def test_vit_block_drop_path_in_training():
    x = tokens(batch=16)
    _, out = run_layer_test(
        keras_mae.ViTBlock,
        {"hidden_dim": DIM, "num_heads": HEADS, "drop_path_rate": 0.5, "seed": 4},
        x,
        expected_output_shape=(16, TOKENS, DIM),
        expected_num_trainable_weights=12,
        expected_num_trainable_params=vit_block_params(DIM),
        call_kwargs={"training": True},
        deterministic=False,
        # The keep draws are in the compute dtype: bfloat16 draws drop other samples.
        run_mixed_precision_check=False,
    )
    # A sample that drops both branches (p = 1/4) comes out exactly as it went in;
    # drop path acts on whole samples, so no sample passes only some tokens through.
    passed = np.abs(out - x).max(axis=-1) == 0  # (samples, tokens)
    np.testing.assert_array_equal(passed.all(axis=1), passed.any(axis=1))
    assert 0 < passed.all(axis=1).sum() < 16


@pytest.mark.parametrize("mode", ["cls", "mean"])
def test_token_pooling(mode, tmp_path):
    x = tokens()
    _, out = run_layer_test(
        keras_mae.TokenPooling,
        {"mode": mode},
        x,
        expected_output_shape=(B, DIM),
        tmp_path=tmp_path,
    )
    expected = x[:, 0] if mode == "cls" else x[:, 1:].mean(axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_random_resized_crop_inference_resizes(tmp_path):
    images = tiny_images(dtype="uint8")  # (B, 8, 12, 2)
    _, out = run_layer_test(
        keras_mae.RandomResizedCrop,
        {"height": 4, "width": 6, "scale": (0.3, 1.0), "seed": 5},
        images,
        expected_output_shape=(B, 4, 6, 2),
        call_kwargs={"training": False},
        tmp_path=tmp_path,
    )
    # Halving with half-pixel centres samples between pixels 2i and 2i + 1:
    # exactly the mean of each 2 x 2 block.
    pooled = images.astype("float64").reshape(B, 4, 2, 6, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out, pooled, atol=1e-4)


def test_random_resized_crop_in_training():
    images = tiny_images(dtype="uint8")
    _, out = run_layer_test(
        keras_mae.RandomResizedCrop,
        {"height": 8, "width": 12, "ratio": (0.5, 2.0), "seed": 5},
        images,
        expected_output_shape=(B, 8, 12, 2),
        call_kwargs={"training": True},
        deterministic=False,
    )
    # Bilinear resampling of a crop stays within the input's range; crops differ.
    assert out.min() >= 0 and out.max() <= 255
    assert not np.array_equal(out, images.astype("float32"))


# --- The check itself fails on the faults it is for -------------------------------


class ForgetfulScale(keras.layers.Layer):
    """Scales its input, but its config forgets `offset`, and it is not registered."""

    def __init__(self, factor=2.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.offset = offset

    def call(self, x):
        return x * self.factor + self.offset

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class UnregisteredScale(ForgetfulScale):
    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


def test_the_check_catches_a_config_that_misses_an_argument():
    with pytest.raises(AssertionError, match=r"misses constructor arguments \['offset'\]"):
        run_layer_test(ForgetfulScale, {"factor": 3.0}, tokens(), (B, TOKENS, DIM))


def test_the_check_catches_an_unregistered_class():
    with pytest.raises(AssertionError, match="keras_mae>UnregisteredScale"):
        run_layer_test(UnregisteredScale, {"factor": 3.0}, tokens(), (B, TOKENS, DIM))


def test_random_masking_under_mixed_precision_masks_by_the_float32_noise():
    # 0.5 and 0.501 are one value in bfloat16: rounded noise would tie them, and
    # the kept token would no longer be the one the noise selects.
    x = tokens(batch=1, length=4)
    noise = np.array([[0.501, 0.5, 0.9, 0.8]], "float32")
    for policy in ("float32", "mixed_bfloat16"):
        visible, mask, ids_restore = keras_mae.RandomMasking(0.75, dtype=policy)(x, noise)
        np.testing.assert_array_equal(to_numpy(mask), [[1, 0, 1, 1]])
        np.testing.assert_array_equal(to_numpy(ids_restore), [[1, 0, 3, 2]])
        np.testing.assert_allclose(to_numpy(visible).astype("float32"), x[:, 1:2], atol=1e-2)
