import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.data import ArraySource
from keras_mae.recipes.finetune import build_classifier
from keras_mae.recipes.finetune import finetune
from tests.conftest import to_numpy
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import SMALLEST
from tests.helpers.tiny import smallest_encoder

# SMALLEST, the recipes' model, with two blocks: a layer decay d scales block_0 by d**2,
# and a classifier at another resolution has a second block to compare.
SHAPE = SMALLEST["image_shape"]


def two_block_encoder():
    return smallest_encoder(num_layers=2)


def test_classifier_copies_encoder_and_pools_patch_tokens():
    encoder = two_block_encoder()
    model = build_classifier(encoder, num_classes=3, drop_path_rate=0.2)
    backbone = model.get_layer(index=1)
    assert backbone is not encoder and backbone.drop_path_rate == 0.2
    for a, b in zip(encoder.weights, backbone.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    images = np.random.default_rng(0).random((BATCH, *SHAPE)).astype("float32")
    tokens = to_numpy(encoder(images))
    pooled = tokens[:, 1:].mean(axis=1)  # patch tokens, no cls
    mean = pooled.mean(-1, keepdims=True)
    normed = (pooled - mean) / np.sqrt(pooled.var(-1, keepdims=True) + 1e-6)
    head = model.get_layer("head")
    expected = normed @ to_numpy(head.kernel) + to_numpy(head.bias)
    np.testing.assert_allclose(to_numpy(model(images)), expected, rtol=1e-4, atol=1e-6)
    assert np.std(to_numpy(head.kernel)) < 1e-4  # init std 2e-5


def test_classifier_at_another_resolution_uses_the_new_grid():
    encoder = two_block_encoder()
    model = build_classifier(encoder, 2, image_shape=(16, 12, 1))
    backbone = model.get_layer(index=1)
    assert backbone.grid_size == (4, 3)
    table = keras_mae.sincos_position_table(SMALLEST["hidden_dim"], (4, 3))
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
    images = rng.random((96, *SHAPE)).astype("float32") * 0.2
    images[labels == 0, :4] += 0.8  # bright top vs bright bottom: flips keep the label
    images[labels == 1, 4:] += 0.8
    train = ArraySource(images[:64], labels[:64])
    test = ArraySource(images[64:], labels[64:])
    result = finetune(
        two_block_encoder(),
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


def separable_arrays(count, seed):
    """Bright-top vs bright-bottom uint8 images (unchanged by horizontal flips)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.random((count, *SHAPE)) * 0.2
    images[labels == 0, :4] += 0.8
    images[labels == 1, 4:] += 0.8
    return np.round(np.clip(images, 0, 1) * 255).astype("uint8"), labels


def test_in_memory_finetune_augments_and_mixes_inside_the_step_and_learns():
    from keras_mae.recipes.finetune import AugmentedClassifier

    result = finetune(
        two_block_encoder(),
        separable_arrays(64, 0),
        separable_arrays(32, 1),
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
    model = result["model"]
    assert isinstance(model, AugmentedClassifier)
    layers = [layer.name for layer in model.augmentation.layers]
    assert layers == ["crop", "flip", "erasing", "normalization"]
    multipliers = model.optimizer.learning_rate_multipliers
    assert multipliers["block_0/qkv/kernel"] == pytest.approx(0.75**2)
    assert multipliers["head/kernel"] == pytest.approx(1.0)
    # The crop and the mixing drew their randomness inside the compiled step.
    for generator in (model.augmentation.get_layer("crop").seed_generator, model.seed_generator):
        fresh = keras.random.SeedGenerator(0).state
        assert not np.array_equal(to_numpy(generator.state), to_numpy(fresh))


def test_augmented_classifier_smooths_labels_and_evaluates_through_the_augmentation(tmp_path):
    from keras_mae.recipes.augmentation import image_augmentation
    from keras_mae.recipes.finetune import AugmentedClassifier

    classifier = build_classifier(two_block_encoder(), 3)
    augmentation = image_augmentation(SHAPE, mean=(0.5,), std=(0.25,), max_value=255.0)
    model = AugmentedClassifier(classifier, 3, augmentation, label_smoothing=0.3, seed=1)
    images, _ = separable_arrays(4, 0)
    labels = np.array([0, 2, 1, 2])
    out = model({"images": images, "labels": labels}, training=True)
    expected = np.full((4, 3), 0.1)
    expected[np.arange(4), labels] = 0.8  # 0.7 + 0.3 / 3
    np.testing.assert_allclose(to_numpy(out["labels"]), expected, rtol=1e-6)
    # Outside training: the normalisation alone, then the classifier.
    normalised = (images.astype("float32") / 255.0 - 0.5) / 0.25
    logits = to_numpy(model.predict(images, verbose=0))
    np.testing.assert_allclose(logits, to_numpy(classifier(normalised)), rtol=1e-4, atol=1e-6)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(to_numpy(loaded.predict(images, verbose=0)), logits, atol=1e-6)
    assert (loaded.num_classes, loaded.label_smoothing) == (3, 0.3)


def test_augmented_classifier_mixes_images_and_labels_alike():
    from keras_mae.recipes.finetune import AugmentedClassifier

    model = AugmentedClassifier(build_classifier(two_block_encoder(), 2), 2, mixup=0.8, seed=0)
    images, _ = separable_arrays(8, 0)
    images = images.astype("float32") / 255.0
    labels = np.arange(8) % 2
    mixed_images, mixed_labels = (
        to_numpy(x) for x in model.mix(images, model.smoothed_one_hot(labels))
    )
    # MixUp: each image is w * itself + (1 - w) * a partner, and so is its label.
    np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, rtol=1e-6)
    share = mixed_labels[:, 0]  # class 0 (bright top) in each mixed image
    assert not np.allclose(share, np.round(share))  # some pairs really mixed
    contrast = mixed_images[:, :4].mean((1, 2, 3)) - mixed_images[:, 4:].mean((1, 2, 3))
    np.testing.assert_allclose(contrast, 0.8 * (2 * share - 1), atol=0.05)


def test_finetune_asks_for_one_place_for_randaugment():
    arrays = separable_arrays(16, 0)
    own = keras.layers.Identity()
    with pytest.raises(ValueError, match="randaugment_magnitude=0"):
        finetune(two_block_encoder(), arrays, arrays, epochs=1, augmentation=own)
