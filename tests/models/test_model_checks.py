"""The shared layer check (`tests/helpers/layer_test.py`) on the decoder and the models.

Weight and parameter counts are worked out by hand for the tiny configuration
(`tests/helpers/tiny.py`); outputs are checked against what they must be.
"""

import keras
import numpy as np

import keras_mae
from tests.conftest import to_numpy
from tests.helpers.layer_test import run_layer_test
from tests.helpers.tiny import BATCH as B
from tests.helpers.tiny import GRID_SIZE
from tests.helpers.tiny import LEN_KEEP
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import PATCH_DIM
from tests.helpers.tiny import TINY
from tests.helpers.tiny import TINY_DECODER
from tests.helpers.tiny import TINY_ENCODER
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_noise

DIM = TINY["hidden_dim"]  # 16
DECODER_DIM = TINY["decoder_hidden_dim"]  # 8


def block_params(dim, mlp_ratio=4.0):
    """A ViT block: two LayerNorms, qkv, projection, two MLP layers, with biases."""
    mlp = int(dim * mlp_ratio)
    return 4 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + 2 * dim * mlp + mlp + dim


# Encoder: patch projection (kernel, bias), cls token, 12 per block, final norm.
ENCODER_WEIGHTS = 2 + 1 + 12 * TINY["num_layers"] + 2  # 29
ENCODER_PARAMS = (PATCH_DIM * DIM + DIM) + DIM + TINY["num_layers"] * block_params(DIM) + 2 * DIM
# Decoder: embed (kernel, bias), mask token, 12 per block, norm, head (kernel, bias).
DECODER_WEIGHTS = 2 + 1 + 12 * TINY["decoder_num_layers"] + 2 + 2  # 19
DECODER_PARAMS = (
    (DIM * DECODER_DIM + DECODER_DIM)
    + DECODER_DIM
    + TINY["decoder_num_layers"] * block_params(DECODER_DIM)
    + 2 * DECODER_DIM
    + (DECODER_DIM * PATCH_DIM + PATCH_DIM)
)


def test_hand_counts():
    assert (ENCODER_WEIGHTS, DECODER_WEIGHTS) == (29, 19)
    # 528 + 16 + 2 * 3280 + 32; 136 + 8 + 872 + 16 + 288
    assert (ENCODER_PARAMS, DECODER_PARAMS) == (7136, 1320)


def official_mask(noise, len_keep=LEN_KEEP):
    return (np.argsort(np.argsort(noise, axis=1), axis=1) >= len_keep).astype("float32")


# --- MAEDecoder ------------------------------------------------------------------


def test_mae_decoder(tmp_path):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(B, 1 + LEN_KEEP, DIM)).astype("float32")
    ids_restore = np.argsort(np.argsort(tiny_noise(), axis=1), axis=1).astype("int32")
    decoder, pred = run_layer_test(
        keras_mae.MAEDecoder,
        {**TINY_DECODER, "layer_norm_epsilon": 1e-5, "attention_padding": None},
        (latent, ids_restore),
        expected_output_shape=(B, NUM_PATCHES, PATCH_DIM),
        expected_num_trainable_weights=DECODER_WEIGHTS,
        expected_num_non_trainable_weights=1,  # the decoder's sin-cos position table
        expected_num_trainable_params=DECODER_PARAMS,
        tmp_path=tmp_path,
    )
    assert decoder.grid_size == GRID_SIZE
    # Samples are decoded independently.
    alone = to_numpy(decoder(latent[1:], ids_restore[1:]))
    np.testing.assert_allclose(alone, pred[1:], rtol=1e-5, atol=1e-6)


# --- MAEEncoder ------------------------------------------------------------------


def test_mae_encoder(tmp_path):
    images = tiny_images()
    encoder, out = run_layer_test(
        keras_mae.MAEEncoder,
        TINY_ENCODER,
        images,
        expected_output_shape=(B, 1 + NUM_PATCHES, DIM),
        expected_num_trainable_weights=ENCODER_WEIGHTS,
        expected_num_non_trainable_weights=1,  # the sin-cos position table
        expected_num_trainable_params=ENCODER_PARAMS,
        tmp_path=tmp_path,
    )
    # The functional graph is the composition of its layers.
    x = encoder.patch_encoder(images)
    np.testing.assert_allclose(to_numpy(encoder.encode_tokens(x)), out, rtol=1e-5, atol=1e-5)


def test_mae_encoder_with_every_argument(tmp_path):
    images = tiny_images()
    kwargs = {
        **TINY_ENCODER,
        "mlp_ratio": 2.0,
        "layer_norm_epsilon": 1e-5,
        "drop_path_rate": 0.1,
        "attention_padding": 8,
        "name": "backbone",
    }
    encoder, out = run_layer_test(
        keras_mae.MAEEncoder,
        kwargs,
        images,
        expected_output_shape=(B, 1 + NUM_PATCHES, DIM),
        expected_num_trainable_weights=ENCODER_WEIGHTS,
        expected_num_non_trainable_weights=1,
        expected_num_trainable_params=ENCODER_PARAMS
        - TINY["num_layers"] * (block_params(DIM) - block_params(DIM, 2.0)),
        call_kwargs={"training": False},
        tmp_path=tmp_path,
        # The same graph as the plain encoder's: its gradients and mixed precision.
        run_mixed_precision_check=False,
        run_gradient_check=False,
    )
    assert encoder.name == "backbone"
    assert [block.drop_path_rate for block in encoder.blocks] == [0.0, 0.1]
    # Padding the attention and drop path at inference change nothing.
    plain = keras_mae.MAEEncoder(
        **TINY_ENCODER, mlp_ratio=2.0, layer_norm_epsilon=1e-5, attention_padding=None
    )
    plain.set_weights(encoder.get_weights())
    np.testing.assert_allclose(to_numpy(plain(images)), out, rtol=1e-5, atol=1e-5)


# --- MaskedAutoencoder -----------------------------------------------------------

MAE_SHAPES = {
    "pred": (B, NUM_PATCHES, PATCH_DIM),
    "mask": (B, NUM_PATCHES),
    "ids_restore": (B, NUM_PATCHES),
    "latent": (B, 1 + LEN_KEEP, DIM),
}
MAE_DTYPES = {"pred": "float32", "mask": "float32", "ids_restore": "int32", "latent": "float32"}
MIXED_DTYPES = {**MAE_DTYPES, "pred": "bfloat16", "mask": "bfloat16", "latent": "bfloat16"}
MAE_COUNTS = dict(
    expected_num_trainable_weights=ENCODER_WEIGHTS + DECODER_WEIGHTS,  # 48
    expected_num_non_trainable_weights=2,  # the encoder's and the decoder's tables
    expected_num_trainable_params=ENCODER_PARAMS + DECODER_PARAMS,  # 8456
)


def test_masked_autoencoder_with_noise(tmp_path):
    images, noise = tiny_images(), tiny_noise()
    mae, out = run_layer_test(
        keras_mae.MaskedAutoencoder,
        {**TINY, "norm_pix_loss": True, "seed": 1},
        {"images": images, "noise": noise},
        expected_output_shape=MAE_SHAPES,
        expected_output_dtype=MAE_DTYPES,
        expected_mixed_precision_dtype=MIXED_DTYPES,
        call_kwargs={"training": False},
        tmp_path=tmp_path,
        **MAE_COUNTS,
    )
    np.testing.assert_array_equal(out["mask"], official_mask(noise))
    np.testing.assert_array_equal(out["ids_restore"], np.argsort(np.argsort(noise, 1), 1))
    # The encoder backbone shares the model's weights.
    mae_weights = {id(w) for w in mae.weights}
    assert all(id(w) in mae_weights for w in mae.encoder.weights)


def test_masked_autoencoder_from_its_seed():
    # No noise: fresh models of one config (seed 1) draw the same masks. The
    # gradients and mixed precision are those of the case above.
    _, out = run_layer_test(
        keras_mae.MaskedAutoencoder,
        {**TINY, "seed": 1},
        tiny_images(),
        expected_output_shape=MAE_SHAPES,
        expected_output_dtype=MAE_DTYPES,
        call_kwargs={"training": False},
        deterministic=False,
        run_mixed_precision_check=False,
        run_gradient_check=False,
        **MAE_COUNTS,
    )
    np.testing.assert_array_equal(out["mask"].sum(axis=1), [NUM_PATCHES - LEN_KEEP] * B)


def augmentation(seed=2):
    return keras.Sequential(
        [
            keras_mae.RandomResizedCrop(*TINY["image_shape"][:2], scale=(0.3, 1.0), seed=seed),
            keras.layers.Rescaling(1 / 255),
        ],
        name="augmentation",
    )


def test_masked_autoencoder_with_augmentation_at_inference(tmp_path):
    images, noise = tiny_images(dtype="uint8"), tiny_noise()
    _, out = run_layer_test(
        keras_mae.MaskedAutoencoder,
        {**TINY, "seed": 1, "augmentation": augmentation()},
        {"images": images, "noise": noise},
        expected_output_shape={**MAE_SHAPES, "images": (B, *TINY["image_shape"])},
        expected_output_dtype={**MAE_DTYPES, "images": "float32"},
        # The augmentation keeps its own (float32) policy.
        expected_mixed_precision_dtype={**MIXED_DTYPES, "images": "float32"},
        call_kwargs={"training": False},
        tmp_path=tmp_path,
        run_gradient_check=False,  # the augmentation has no weights: as without it
        **MAE_COUNTS,
    )
    # Outside training the crop is the identity: the encoder sees x / 255.
    np.testing.assert_allclose(out["images"], images.astype("float32") / 255, atol=1e-7)
    np.testing.assert_array_equal(out["mask"], official_mask(noise))


def test_masked_autoencoder_with_augmentation_in_training():
    # Crops are drawn in training; fresh models of one config crop alike.
    images, noise = tiny_images(dtype="uint8"), tiny_noise()
    _, out = run_layer_test(
        keras_mae.MaskedAutoencoder,
        {**TINY, "seed": 1, "augmentation": augmentation()},
        {"images": images, "noise": noise},
        expected_output_shape={**MAE_SHAPES, "images": (B, *TINY["image_shape"])},
        expected_output_dtype={**MAE_DTYPES, "images": "float32"},
        call_kwargs={"training": True},
        deterministic=False,
        run_mixed_precision_check=False,  # as at inference
        run_gradient_check=False,
        **MAE_COUNTS,
    )
    assert not np.allclose(out["images"], images.astype("float32") / 255)
    assert 0 <= out["images"].min() and out["images"].max() <= 1
    np.testing.assert_array_equal(out["mask"], official_mask(noise))


def test_mixed_precision_masked_autoencoder_masks_by_the_float32_noise():
    # Near ties in bfloat16 (0.5 and 0.501) across the keep boundary: the model
    # keeps the patch the float32 noise selects, as the float32 model does.
    noise = np.tile(np.array([[0.501, 0.5, 0.9, 0.8, 0.7, 0.6]], "float32"), (B, 1))
    data = {"images": tiny_images(), "noise": noise}
    for policy in ("float32", "mixed_bfloat16"):
        mae = keras_mae.MaskedAutoencoder(**TINY, dtype=policy)
        out = mae(data, training=False)
        np.testing.assert_array_equal(to_numpy(out["mask"]), official_mask(noise))
        np.testing.assert_array_equal(to_numpy(out["mask"])[:, 1], 0)


def test_mixed_precision_encoder_reloads_with_its_policy(tmp_path):
    encoder = keras_mae.MAEEncoder(**TINY_ENCODER, dtype="mixed_bfloat16")
    images = tiny_images()
    tokens = encoder(images)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.dtype_policy.name == "mixed_bfloat16"
    assert all(block.compute_dtype == "bfloat16" for block in reloaded.blocks)
    again = reloaded(images)
    assert keras.backend.standardize_dtype(again.dtype) == "bfloat16"
    np.testing.assert_array_equal(to_numpy(again), to_numpy(tokens))
