import numpy as np
import pytest

import keras_mae
from keras_mae.data import ArraySource
from keras_mae.recipes.finetune import build_classifier
from keras_mae.recipes.finetune import finetune
from tests.conftest import to_numpy


def tiny_encoder():
    return keras_mae.MAEEncoder((8, 8, 1), patch_size=4, hidden_dim=8, num_layers=2, num_heads=2)


def test_classifier_copies_encoder_and_pools_patch_tokens():
    encoder = tiny_encoder()
    model = build_classifier(encoder, num_classes=3, drop_path_rate=0.2)
    backbone = model.get_layer(index=1)
    assert backbone is not encoder and backbone.drop_path_rate == 0.2
    for a, b in zip(encoder.weights, backbone.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    images = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    tokens = to_numpy(encoder(images))
    pooled = tokens[:, 1:].mean(axis=1)  # patch tokens, no cls
    mean = pooled.mean(-1, keepdims=True)
    normed = (pooled - mean) / np.sqrt(pooled.var(-1, keepdims=True) + 1e-6)
    head = model.get_layer("head")
    expected = normed @ to_numpy(head.kernel) + to_numpy(head.bias)
    np.testing.assert_allclose(to_numpy(model(images)), expected, rtol=1e-4, atol=1e-6)
    assert np.std(to_numpy(head.kernel)) < 1e-4  # init std 2e-5


def test_classifier_at_another_resolution_uses_the_new_grid():
    encoder = tiny_encoder()
    model = build_classifier(encoder, 2, image_shape=(16, 12, 1))
    backbone = model.get_layer(index=1)
    assert backbone.grid_size == (4, 3)
    table = keras_mae.sincos_position_table(8, (4, 3))
    np.testing.assert_allclose(to_numpy(backbone.patch_encoder.position_embedding), to_numpy(table))
    np.testing.assert_array_equal(
        to_numpy(backbone.blocks[1].fc1.kernel), to_numpy(encoder.blocks[1].fc1.kernel)
    )
    assert model(np.zeros((1, 16, 12, 1), "float32")).shape == (1, 2)
    with pytest.raises(ValueError, match="channel"):
        build_classifier(encoder, 2, image_shape=(8, 8, 3))


def test_finetune_runs_the_full_recipe_and_learns():
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 2
    images = rng.random((96, 8, 8, 1)).astype("float32") * 0.2
    images[labels == 0, :4] += 0.8  # bright top vs bright bottom: flips keep the label
    images[labels == 1, 4:] += 0.8
    train = ArraySource(images[:64], labels[:64])
    test = ArraySource(images[64:], labels[64:])
    result = finetune(
        tiny_encoder(),
        train,
        test,
        epochs=10,
        batch_size=16,
        base_learning_rate=0.05,
        layer_decay=0.75,
        warmup_epochs=1,
        mixup=0.8,
        cutmix=1.0,
        random_erasing=0.25,
        randaugment_magnitude=0,  # RandAugment on 8x8 grey images is mostly noise
    )
    assert result["accuracy"] >= 0.8
    optimizer = result["model"].optimizer
    multipliers = optimizer.learning_rate_multipliers
    assert multipliers["block_0/qkv/kernel"] == pytest.approx(0.75**2)
    assert multipliers["head/kernel"] == pytest.approx(1.0)
