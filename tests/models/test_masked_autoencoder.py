import os

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.models.masked_autoencoder import masked_patch_loss
from keras_mae.models.masked_autoencoder import normalize_patches
from tests.conftest import to_numpy
from tests.helpers.tiny import TINY

# The save tests share one trained model (a module-scoped fixture).
pytestmark = pytest.mark.xdist_group("test_masked_autoencoder")


def tiny_mae(**overrides):
    return keras_mae.MaskedAutoencoder(**{**TINY, "seed": 1, **overrides})


def images_and_noise(n=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, *TINY["image_shape"])).astype("float32")
    return images, rng.random((n, 6)).astype("float32")


def numpy_loss(images, pred, mask, norm_pix, p=4):
    n, h, w, c = images.shape
    target = images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    target = target.reshape(n, -1, p * p * c).astype(np.float64)
    if norm_pix:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, keepdims=True, ddof=1)  # unbiased, as torch's var
        target = (target - mean) / np.sqrt(var + 1e-6)
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum(), target


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_matches_official_formula_and_is_zero_at_target(norm_pix):
    mae = tiny_mae(norm_pix_loss=norm_pix)
    images, noise = images_and_noise()
    out = mae(images, noise=noise)
    pred, mask = to_numpy(out["pred"]), to_numpy(out["mask"])
    loss = float(to_numpy(mae.compute_loss(images, y_pred=out)))
    expected, target = numpy_loss(images, pred, mask, norm_pix)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    perfect = {**out, "pred": keras.ops.convert_to_tensor(target.astype("float32"))}
    assert float(to_numpy(mae.compute_loss(images, y_pred=perfect))) < 1e-10


def test_loss_counts_only_masked_patches():
    target = np.zeros((1, 4, 3), "float32")
    pred = np.array([[[1.0] * 3, [2.0] * 3, [3.0] * 3, [4.0] * 3]], "float32")
    mask = np.array([[0, 1, 0, 1]], "float32")
    # Masked patches 1 and 3: (4 + 16) / 2.
    assert float(to_numpy(masked_patch_loss(target, pred, mask))) == pytest.approx(10.0)
    patches = np.array([[[1.0, 2.0, 3.0, 6.0]]], "float32")
    normed = to_numpy(normalize_patches(patches))
    np.testing.assert_allclose(normed.mean(), 0, atol=1e-6)
    np.testing.assert_allclose(normed.std(ddof=1), 1, rtol=1e-5)


def test_call_outputs_are_consistent_with_noise():
    mae = tiny_mae()
    images, noise = images_and_noise()
    out = mae(images, noise=noise)
    len_keep = int(6 * 0.25)
    assert to_numpy(out["pred"]).shape == (4, 6, 32)
    np.testing.assert_array_equal(to_numpy(out["mask"]).sum(1), [6 - len_keep] * 4)
    np.testing.assert_array_equal(
        to_numpy(out["mask"]), (np.argsort(np.argsort(noise, 1), 1) >= len_keep)
    )
    again = mae({"images": images, "noise": noise})
    np.testing.assert_array_equal(to_numpy(out["pred"]), to_numpy(again["pred"]))


def test_same_seed_same_masks_and_steps_draw_new_ones():
    images, _ = images_and_noise()
    a, b = tiny_mae(seed=5), tiny_mae(seed=5)
    a1, a2 = to_numpy(a(images)["mask"]), to_numpy(a(images)["mask"])
    np.testing.assert_array_equal(a1, to_numpy(b(images)["mask"]))
    assert not np.array_equal(a1, a2)


def test_encoder_backbone_equals_the_mae_encoder_path_without_masking():
    # Increasing noise keeps the first patches in order, so the MAE's latent must
    # be the backbone's layers run on those patches; and the backbone on every
    # patch is the same layers without masking (a mask_ratio of 0 is refused).
    mae = tiny_mae(mask_ratio=0.5)
    images, _ = images_and_noise()
    noise = np.tile(np.linspace(0, 1, 6, dtype="float32"), (4, 1))
    latent = to_numpy(mae(images, noise=noise)["latent"])
    tokens = mae.encoder.patch_encoder(images)  # (4, 6, 16)
    kept = to_numpy(mae.encoder.encode_tokens(tokens[:, :3]))
    np.testing.assert_allclose(kept, latent, rtol=1e-5, atol=1e-6)
    every = to_numpy(mae.encoder.encode_tokens(tokens))
    np.testing.assert_allclose(to_numpy(mae.encoder(images)), every, rtol=1e-5, atol=1e-6)
    # Shared weights, not copies.
    mae_ids = {id(w) for w in mae.weights}
    assert all(id(w) in mae_ids for w in mae.encoder.weights)


OFFICIAL = {
    "mae_vit_base_patch16": (111_655_680, 85_647_360),
    "mae_vit_large_patch16": (329_239_296, 303_099_904),
    "mae_vit_huge_patch14": (656_613_964, 630_435_840),
}


@pytest.mark.backend_free
@pytest.mark.parametrize("name", ["mae_vit_base_patch16"])
def test_official_preset_parameter_counts(name):
    # Counts need shapes, not values: the variables are created uninitialised
    # (drawing ViT-H's 657M initial values costs seconds).
    with keras.StatelessScope(initialize_variables=False):
        mae = keras_mae.MaskedAutoencoder.from_preset(name)
    total = sum(int(np.prod(w.shape)) for w in mae.trainable_weights)
    encoder = sum(int(np.prod(w.shape)) for w in mae.encoder.trainable_weights)
    assert (total, encoder) == OFFICIAL[name]


@pytest.mark.backend_free
@pytest.mark.parametrize("name", ["mae_vit_large_patch16", "mae_vit_huge_patch14"])
def test_large_official_preset_parameter_counts(name):
    test_official_preset_parameter_counts(name)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'mae_vit_giant'.*mae_vit_base_patch16"):
        keras_mae.MaskedAutoencoder.from_preset("mae_vit_giant")


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"image_shape": (30, 32, 3), "patch_size": 4}, r"image size \(30, 32\) is not divisible"),
        ({"mask_ratio": 1.0}, r"mask_ratio .* must be in \(0, 1\)"),
        ({"mask_ratio": -0.5}, r"must be in \(0, 1\)"),
        ({"mask_ratio": 0.0}, r"must be in \(0, 1\): 0 masks nothing"),
        ({"mask_ratio": 0.95}, "keeps no patch out of 6"),
    ],
)
def test_bad_constructor_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_mae(**overrides)


def test_wrong_channel_count_fails_before_training():
    mae = tiny_mae()
    mae.compile(optimizer="adam")
    before = [to_numpy(w).copy() for w in mae.trainable_weights]
    wrong = np.zeros((4, 8, 12, 3), "float32")
    with pytest.raises(ValueError, match=r"images have 3 channel\(s\) but the model expects 2"):
        mae.fit(wrong, epochs=1, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match=r"do not match the model.*\(batch, 8, 12, 2\)"):
        mae(np.zeros((4, 12, 8, 2), "float32"))
    after = [to_numpy(w) for w in mae.trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_official_initialisation():
    mae = keras_mae.MaskedAutoencoder(**{**TINY, "hidden_dim": 64, "num_heads": 4})
    block = mae.encoder.blocks[0]
    qkv = to_numpy(block.qkv.kernel)
    limit = np.sqrt(6 / (64 + 192))  # xavier-uniform on (3D, D)
    assert np.abs(qkv).max() <= limit and np.abs(qkv).max() > 0.9 * limit
    assert not to_numpy(block.qkv.bias).any()
    np.testing.assert_array_equal(to_numpy(block.norm1.gamma), 1)
    for token in (mae.encoder.class_token.token, mae.decoder.mask_token):
        values = to_numpy(token)
        assert values.shape[:2] == (1, 1) and 0.005 < values.std() < 0.05


def train(mae, data, epochs=8, **fit_kwargs):
    mae.compile(optimizer=keras.optimizers.AdamW(3e-3, beta_2=0.95))
    return mae.fit(data, epochs=epochs, verbose=0, **fit_kwargs).history["loss"]


def test_fit_lowers_the_loss_from_numpy():
    images, _ = images_and_noise(n=32)
    losses = train(tiny_mae(), images, batch_size=8)
    assert losses[-1] < 0.6 * losses[0], losses


def test_fit_from_tf_data_with_labels_ignored():
    tf = pytest.importorskip("tensorflow")
    images, _ = images_and_noise(n=32)
    labels = np.arange(32) % 3
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    mae = tiny_mae()
    losses = train(mae, ds)
    assert losses[-1] < 0.6 * losses[0], losses
    only_images = tf.data.Dataset.from_tensor_slices(images).batch(8)
    assert np.isfinite(mae.fit(only_images, epochs=1, verbose=0).history["loss"]).all()


def test_config_roundtrip():
    mae = tiny_mae(norm_pix_loss=True, mask_ratio=0.5)
    clone = keras_mae.MaskedAutoencoder.from_config(mae.get_config())
    assert clone.get_config() == mae.get_config()
    encoder = mae.encoder
    assert (
        keras_mae.MAEEncoder.from_config(encoder.get_config()).get_config() == encoder.get_config()
    )


@pytest.fixture(scope="module")
def trained_mae():
    """A norm_pix_loss MAE after one epoch of fit (read only by the tests)."""
    keras.utils.set_random_seed(0)
    mae = tiny_mae(norm_pix_loss=True)
    images, _ = images_and_noise()
    train(mae, images, epochs=1, batch_size=2)
    return mae


@pytest.mark.parametrize("fmt", ["keras", "weights.h5"])
def test_save_and_load_reproduce_outputs(tmp_path, fmt, trained_mae):
    mae = trained_mae
    images, noise = images_and_noise()
    expected = mae(images, noise=noise)
    path = os.path.join(tmp_path, f"mae.{fmt}")
    if fmt == "keras":
        mae.save(path)
        loaded = keras.models.load_model(path)
        assert isinstance(loaded, keras_mae.MaskedAutoencoder)
        assert loaded.norm_pix_loss
    else:
        mae.save_weights(path)
        loaded = tiny_mae(norm_pix_loss=True)
        loaded.load_weights(path)
    got = loaded(images, noise=noise)
    for key in ("pred", "mask", "latent"):
        np.testing.assert_array_equal(to_numpy(got[key]), to_numpy(expected[key]))
    np.testing.assert_array_equal(
        to_numpy(loaded.compute_loss(images, y_pred=got)),
        to_numpy(mae.compute_loss(images, y_pred=expected)),
    )


def test_reconstruct_keeps_visible_patches():
    mae = tiny_mae()
    images, noise = images_and_noise()
    masked, reconstruction = map(to_numpy, mae.reconstruct(images, noise=noise))
    mask = to_numpy(mae(images, noise=noise)["mask"])  # (B, 6) over a 2 x 3 grid
    pixel_mask = np.repeat(np.repeat(mask.reshape(4, 2, 3), 4, 1), 4, 2)[..., None]
    np.testing.assert_allclose(
        reconstruction * (1 - pixel_mask), images * (1 - pixel_mask), atol=1e-6
    )
    np.testing.assert_array_equal(masked * pixel_mask, 0)
    assert not np.allclose(reconstruction * pixel_mask, images * pixel_mask)
