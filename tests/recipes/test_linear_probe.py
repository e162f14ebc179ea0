import numpy as np

import keras_mae
from keras_mae.data import ArraySource
from keras_mae.recipes.linear_probe import build_linear_probe
from keras_mae.recipes.linear_probe import linear_probe
from tests.conftest import to_numpy


def tiny_encoder():
    return keras_mae.MAEEncoder((8, 8, 1), patch_size=4, hidden_dim=8, num_layers=1, num_heads=2)


def separable_source(count, seed):
    """Bright-top vs bright-bottom images (unchanged by horizontal flips)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.random((count, 8, 8, 1)).astype("float32") * 0.2
    images[labels == 0, :4] += 0.8
    images[labels == 1, 4:] += 0.8
    return ArraySource(images, labels)


def test_probe_model_is_frozen_encoder_cls_bn_dense():
    encoder = tiny_encoder()
    model = build_linear_probe(encoder, num_classes=3)
    assert not encoder.trainable
    # Only the Dense head trains: BatchNorm has no affine parameters.
    assert sorted(v.path for v in model.trainable_variables) == [
        "probe/probe_head/bias",
        "probe/probe_head/kernel",
    ]
    norm = model.get_layer("probe").get_layer("probe_norm")
    assert (norm.center, norm.scale, norm.epsilon) == (False, False, 1e-6)
    images = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    # Inference: BN with its initial statistics (mean 0, var 1) is the identity.
    cls = to_numpy(encoder(images))[:, 0]
    head = model.get_layer("probe").get_layer("probe_head")
    expected = cls / np.sqrt(1 + 1e-6) @ to_numpy(head.kernel) + to_numpy(head.bias)
    np.testing.assert_allclose(
        to_numpy(model(images, training=False)), expected, rtol=1e-4, atol=1e-6
    )


def test_probe_on_cached_features_learns_a_separable_task():
    encoder = tiny_encoder()
    result = linear_probe(
        # LARS moves a weight by lr x 0.001 x its norm per step: it needs the
        # large learning rate of the official batch (0.1 x 16384 / 256 = 6.4).
        encoder,
        separable_source(64, 0),
        separable_source(32, 1),
        epochs=40,
        batch_size=16,
        base_learning_rate=100.0,
        warmup_epochs=2,
    )
    assert result["accuracy"] >= 0.9


def test_augmented_probe_trains_only_the_head():
    encoder = tiny_encoder()
    before = [to_numpy(w).copy() for w in encoder.weights]
    result = linear_probe(
        encoder,
        separable_source(32, 0),
        separable_source(16, 1),
        epochs=2,
        batch_size=16,
        base_learning_rate=100.0,
        warmup_epochs=1,
        cache_features=False,
    )
    model = result["model"]
    assert len(result["history"]["loss"]) == 2 and all(np.isfinite(result["history"]["loss"]))
    for b, w in zip(before, encoder.weights):  # the encoder never changes
        np.testing.assert_array_equal(b, to_numpy(w))
    kernel = to_numpy(model.get_layer("probe").get_layer("probe_head").kernel)
    assert np.std(kernel) > 0.0
    assert 0.0 <= result["accuracy"] <= 1.0
